"""Read access to a finished cube for the analysis stages (fits, figures).

One place knows how a cube maps back to its sweep: the layout stored in its attributes, the
grid axes in the cube's own order, the estimators present, and the full parameter point behind
any set of axis values.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import xarray as xr

from ktsweep.model.cubespec import Status
from ktsweep.model.params import Point, make_point
from ktsweep.sweep.layout import Layout, point_values

OK = Status.OK
"""The status code of a computed, non-diverged point."""

EXTRA_DIMS = ("estimator", "mode", "step")


def grid_axes(ds: xr.Dataset) -> list[str]:
    """The cube's grid axes in its own dimension order (whatever wrote it)."""
    for var in ds.data_vars.values():
        return [d for d in var.dims if d not in EXTRA_DIMS]
    return list(Layout.from_json(ds.attrs["ktsweep_config"]).axes)


class CubeView:
    """A cube with its layout; subclasses add the array access their stage needs."""

    def __init__(self, ds: xr.Dataset):
        self.ds = ds
        self.layout = Layout.from_json(ds.attrs["ktsweep_config"])
        self.axes = grid_axes(ds)
        self.methods = [str(m) for m in ds["estimator"].values] if "estimator" in ds.dims else []

    def has(self, name: str) -> bool:
        return name in self.ds.data_vars

    def masked(self, name: str, estimator: str | None = None) -> xr.DataArray:
        """``name`` for one estimator, NaN wherever that estimator's status is not ok.

        The one status mask of the analysis (``ds.where(status == ok)``): fits and figures
        read every per-estimator value through it. Without an estimator (bounds, step sizes,
        standard errors) the variable is returned as stored.
        """
        da = self.ds[name]
        if estimator is None:
            return da
        if "estimator" in da.dims:
            da = da.sel(estimator=estimator)
        if self.has("status"):
            da = da.where(self.ds["status"].sel(estimator=estimator) == OK)
        return da

    def value(self, axis: str, label: Any) -> Any:
        """The config's value behind a coordinate label (γ0 maps are text in the cube)."""
        return self.layout.axes[axis][int(self.ds.indexes[axis].get_loc(label))]

    def slices(self, data: xr.DataArray | xr.Dataset, dims: Sequence[str]
               ) -> Iterator[tuple[dict[str, Any], xr.DataArray | xr.Dataset]]:
        """Every combination of the grid axes ``dims``: (their config values, the slice).

        xarray's groupby over the stacked ``dims``; with no dims the data itself is the one
        slice.
        """
        dims = list(dims)
        if not dims:
            yield {}, data
            return
        for _, sub in data.stack(_slice=dims).groupby("_slice"):
            sub = sub.isel(_slice=0)
            yield {d: self.value(d, sub[d].item()) for d in dims}, sub.drop_vars(
                ["_slice", *dims])

    def point(self, values: dict[str, Any]) -> Point:
        """The full point at ``values`` (axis → value; other axes at their last value), with
        the fixed and tied parameters. Raises ParameterError where that point is invalid."""
        axis_values = {a: v[-1] for a, v in self.layout.axes.items()}
        axis_values.update(values)
        return make_point(point_values(self.layout.fixed, axis_values,
                                       self.layout.tie))
