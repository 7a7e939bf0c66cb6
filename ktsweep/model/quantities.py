"""Names, descriptions and derived ratios of the per-point quantities (docs/science/quantities.md).

Every engine returns a mapping name → array with a leading point dimension; this module
names the per-point quantities; :mod:`ktsweep.model.cubespec` says how each is stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

RISKS = ("risk_teacher", "risk_direct", "risk_t2s", "risk_ceiling")
RATIOS = ("der", "pgr", "w2s_ratio")
SCALARS = RISKS + RATIOS
MODE_RISKS = ("mode_teacher", "mode_direct", "mode_t2s", "mode_ceiling")
CURVES = ("curve_teacher", "curve_t2s")
STEP_SIZES = ("gamma0_t", "gamma0_s", "gamma0_direct", "gamma0_ceiling")
RUN_STEP_SIZE = {"teacher": "gamma0_t", "direct": "gamma0_direct", "t2s": "gamma0_s",
                 "ceiling": "gamma0_ceiling"}
"""The :data:`STEP_SIZES` quantity holding the initial step each of the four runs used."""
TUNE_EDGES = ("tune_edge_t", "tune_edge_s", "tune_edge_direct", "tune_edge_ceiling")
"""Per run: 1 when ``{tune: [...]}`` chose an end of its list, 0 inside, NaN when not tuned."""
SPECTRUM_FITS = tuple(f"spectrum_{k}_{m}" for m in "ts"
                      for k in ("alpha", "alpha_se", "fit_first", "fit_last"))
"""Per point and model with a spectrum file: fitted α, its standard error and the first and
last eigenvalue index of the fit (NaN for a power-law spectrum; docs/science/spectra.md)."""
GEOMETRY = ("alignment_bias", "alignment_bias_closed")
"""Lemma 2's static alignment bias ½E‖Π_S Π_T^⊥ w*‖² from the projectors and in closed form
(NaN where there is none: a Haar mixing); per point, from the parameters alone."""


def step_size_variable(name: str, axes: Iterable[str]) -> str:
    """The cube variable holding the step size a run used: ``name``, or ``name_used`` when
    ``name`` (``gamma0_t``, ``gamma0_s``) is also a grid axis, whose coordinate holds the
    requested value (a number or a γ0 map)."""
    return f"{name}_used" if name in set(axes) else name


PGR_RTOL = 1e-12
SCHEMA_VERSION = 8
"""Version of the cube's variable set: bump it whenever an estimator adds, drops or changes
the meaning of an output, so old cubes are set aside and recomputed, never mixed (what each
version changed: docs/user/cube.md, "Schema versions")."""

def with_ratios(out: dict[str, np.ndarray], suffix: str = "") -> dict[str, np.ndarray]:
    """Add der, pgr and w2s_ratio computed from the four risks (in place, returned)."""
    rt, rd, rs, rc = (np.asarray(out[k + suffix], dtype=np.float64) for k in RISKS)
    with np.errstate(all="ignore"):
        out["der" + suffix] = rd / rs
        out["w2s_ratio" + suffix] = rs / rt
        gap = rt - rc
        tiny = np.abs(gap) <= PGR_RTOL * np.maximum(np.abs(rt), np.abs(rc))
        out["pgr" + suffix] = np.where(tiny, np.nan, (rt - rs) / np.where(tiny, 1.0, gap))
    return out


def assemble(n: int, parts: Iterable[tuple[Sequence[int], dict[str, np.ndarray]]]
             ) -> dict[str, np.ndarray]:
    """Results computed for subsets of n points, reassembled in input order.

    Per-mode arrays (``mode_*``) of parts with a smaller ``d`` are padded with NaN to the
    widest; points a part did not cover read NaN (numbers) or "" (text).
    """
    parts = list(parts)
    width = {k: max(v.shape[1] for _, r in parts for kk, v in r.items() if kk == k)
             for _, r in parts for k in r if k.startswith("mode_")}
    out: dict[str, np.ndarray] = {}
    for idx, res in parts:
        for k, v in res.items():
            if k in width and v.shape[1] < width[k]:
                v = np.concatenate([v, np.full((v.shape[0], width[k] - v.shape[1]), np.nan)],
                                   axis=1)
            text = v.dtype.kind == "U"
            if k not in out:
                out[k] = np.full((n,) + v.shape[1:], "" if text else np.nan,
                                 dtype=v.dtype if text else np.float64)
            elif text and v.dtype.itemsize > out[k].dtype.itemsize:
                out[k] = out[k].astype(v.dtype)
            out[k][np.asarray(idx, dtype=int)] = v
    return out
