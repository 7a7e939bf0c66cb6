"""Theorem 4's n₀: the first student sample count at which weak-to-strong generalisation occurs.

An analysis-level quantity, read from a finished cube with an ``n`` axis: for every other grid
point, the smallest ``n`` of the axis whose ``w2s_ratio = risk_t2s / risk_teacher`` is below 1
(status ok). It is a grid value, so it brackets the true n₀ between that ``n`` and the one
before it (``n0_below``); NaN where no ``n`` of the axis shows W2S, or where the first one
does (no lower bracket: ``n0_below`` NaN). See docs/science/geometry.md.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ktsweep.analysis.cubeview import CubeView


def w2s_onset(ds: xr.Dataset, estimator: str | None = None) -> xr.Dataset:
    """``n0`` (first n with w2s_ratio < 1) and ``n0_below`` (the n before it) over the grid's
    other axes, for ``estimator`` (default: exact if present, else the first)."""
    view = CubeView(ds)
    if "n" not in view.axes:
        raise ValueError("n0 needs an n axis: this cube's grid axes are "
                         + ", ".join(view.axes))
    method = estimator or view.preferred
    ratio = view.masked("w2s_ratio", method).sortby("n")
    ns = np.asarray(ratio["n"].values, dtype=np.float64)
    below = (ratio < 1.0).transpose("n", ...).values
    first = np.argmax(below, axis=0)
    found = below.any(axis=0)
    n0 = np.where(found, ns[first], np.nan)
    prev = np.where(found & (first > 0), ns[np.maximum(first - 1, 0)], np.nan)
    dims = [d for d in ratio.transpose("n", ...).dims if d != "n"]
    coords = {d: ratio[d] for d in dims}
    return xr.Dataset({"n0": (dims, n0), "n0_below": (dims, prev)}, coords=coords,
                      attrs={"estimator": method})
