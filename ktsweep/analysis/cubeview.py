"""Read access to a finished cube for the analysis stages (fits, claims, figures).

One place knows how a cube is read: its grid axes in the cube's own order, the estimators
present and the one analysis prefers, the status mask, and every point parameter by name from
the cube's coordinates (the store writes each parameter that is not an axis as a coordinate
along the axes that set it), so that analysis never rebuilds a point.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from ktsweep.model.cubespec import Status
from ktsweep.model.params import PARAMETERS
from ktsweep.model.quantities import step_size_variable
from ktsweep.sweep.layout import Layout

OK = Status.OK
"""The status code of a computed, non-diverged point."""

EXTRA_DIMS = ("estimator", "mode", "step")
STEP_PARAMETERS = ("gamma0_t", "gamma0_s")
"""The γ0 parameters: not coordinates; the steps the runs used are data variables."""


def grid_axes(ds: xr.Dataset) -> list[str]:
    """The cube's grid axes in its own dimension order (whatever wrote it)."""
    for var in ds.data_vars.values():
        return [str(d) for d in var.dims if d not in EXTRA_DIMS]
    return list(Layout.from_json(ds.attrs["ktsweep_config"]).axes)


def preferred_estimator(methods: Sequence[str]) -> str | None:
    """The estimator analysis reads where one is enough: exact if present, else the first."""
    return "exact" if "exact" in methods else (methods[0] if methods else None)


def _python(value: Any) -> Any:
    """A coordinate element as a plain Python value (float or str)."""
    value = value.item() if isinstance(value, np.generic) else value
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


class CubeView:
    """A cube with its layout; subclasses add the array access their stage needs."""

    def __init__(self, ds: xr.Dataset):
        self.ds = ds
        self.layout = Layout.from_json(ds.attrs["ktsweep_config"])
        self.axes = grid_axes(ds)
        self.methods = [str(m) for m in ds["estimator"].values] if "estimator" in ds.dims else []
        self.preferred = preferred_estimator(self.methods)
        self._params = {name: (tuple(str(d) for d in ds.coords[name].dims),
                               np.asarray(ds.coords[name].values))
                        for name in PARAMETERS if name in ds.coords}
        self._loaded: dict[str, np.ndarray] = {}

    def has(self, name: str) -> bool:
        return name in self.ds.data_vars

    def masked(self, name: str, estimator: str | None = None) -> xr.DataArray:
        """``name`` for one estimator, NaN wherever that estimator's status is not ok.

        The one status mask of the analysis (``ds.where(status == ok)``): fits, claims and
        figures read every per-estimator value through it. Without an estimator (bounds, step
        sizes, standard errors) the variable is returned as stored.
        """
        da = self.ds[name]
        if estimator is None:
            return da
        if "estimator" in da.dims:
            da = da.sel(estimator=estimator)
        if self.has("status"):
            da = da.where(self.ds["status"].sel(estimator=estimator) == OK)
        return da

    def coord(self, name: str) -> xr.DataArray:
        """A parameter's values over the grid axes that set it (a scalar where fixed)."""
        return self.ds.coords[name]

    def positions(self, labels: Mapping[str, Any]) -> dict[str, int]:
        """Axis labels (as the cube's coordinates hold them) → their positions."""
        return {a: int(self.ds.indexes[a].get_loc(v)) for a, v in labels.items()}

    def params_at(self, pos: Mapping[str, int]) -> dict[str, Any]:
        """Every point parameter the cube's coordinates carry at grid positions ``pos`` (axis →
        index; an axis not given is read at its last value), as
        :mod:`ktsweep.model.theory` takes them: numbers as floats (NaN: unset), text as text
        ("": unset). The γ0 parameters are not among them (:meth:`step_used`)."""
        out = {}
        for name, (dims, values) in self._params.items():
            out[name] = _python(values[tuple(pos.get(d, -1) for d in dims)])
        return out

    def params(self, labels: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`params_at` at axis labels."""
        return self.params_at(self.positions(labels))

    def loaded(self, name: str) -> np.ndarray:
        """A grid variable (no estimator dimension) as a NumPy array in :attr:`axes` order,
        read once."""
        if name not in self._loaded:
            self._loaded[name] = np.asarray(
                self.ds[name].transpose(*self.axes).values, dtype=np.float64)
        return self._loaded[name]

    def step_used(self, role: str, pos: Mapping[str, int]) -> np.ndarray:
        """The initial steps run ``role`` (``t``: teacher, ``s``: T2S student) used at grid
        positions ``pos`` (every value along the axes not given), finite values only."""
        name = step_size_variable(f"gamma0_{role}", self.axes)
        if not self.has(name):
            return np.array([])
        g = self.loaded(name)[tuple(pos.get(a, slice(None)) for a in self.axes)]
        g = np.asarray(g, dtype=np.float64).reshape(-1)
        return g[np.isfinite(g)]
