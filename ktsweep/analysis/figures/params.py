"""The point parameters at one slice of a cube, read from the cube alone.

The cube carries every point parameter: a grid axis's label, or a coordinate (scalar when
fixed, along the axes that set it when tied or derived); the steps each run used are the
``gamma0_*`` variables. :func:`params_at` reads them at a slice into a :class:`Params`
record with the attribute names of docs/science/quantities.md, which the formulas of
:mod:`ktsweep.model.theory` and :mod:`ktsweep.model.spectra` read (they read attributes, so
the record stands in for the point without validating or rebuilding one). Every theory or
spectrum value a figure shows goes through this module.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import fields
from typing import Any

import numpy as np
import xarray as xr

from ktsweep.model import theory
from ktsweep.model.cubespec import Flag
from ktsweep.model.params import Point
from ktsweep.model.quantities import step_size_variable
from ktsweep.model.spectra import target_energy

_KINDS = {f.name: str(f.type) for f in fields(Point)}
"""Each parameter's declared type, to give integers back as int (the cube stores numbers as
float64, NaN where unset)."""


def _point_property(name: str) -> property:
    """:class:`Point`'s property ``name``, to be read on another record with the attributes
    it uses."""
    prop = inspect.getattr_static(Point, name)
    if not isinstance(prop, property):
        raise TypeError(f"Point.{name} is not a property")
    return property(prop.fget)


class Params(Mapping[str, Any]):
    """Read-only point parameters at one slice (None where the point leaves one unset): a
    mapping (what :mod:`ktsweep.model.theory` reads) whose values are also attributes (what
    :mod:`ktsweep.model.spectra` reads), with
    the point's derived sizes (``rank_t``, ``rank_s``, ``aligned``) from :class:`Point`'s own
    definitions. ``gamma0_t`` / ``gamma0_s`` are the initial steps the runs used, and
    ``tuned_s`` says whether the student's was tuned from a list."""

    rank_t = _point_property("rank_t")
    rank_s = _point_property("rank_s")
    aligned = _point_property("aligned")

    def __init__(self, values: Mapping[str, Any]):
        self._values = dict(values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)


def _python(name: str, value: Any) -> Any:
    """A cube value as the point holds it: None for NaN or '', int for integer parameters."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str):
        return value or None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        kind = _KINDS.get(name, "float")
        if kind.startswith("int") and "float" not in kind and math.isfinite(value):
            return int(value)
    return value


def params_at(ds: xr.Dataset, at: Mapping[str, Any]) -> Params:
    """The parameters at the slice ``at`` (labels of grid axes): axis labels and parameter
    coordinates, plus the initial step each run used there (``gamma0_*``: NaN unless one
    step serves the whole slice) and whether it was tuned from a list (``tuned_*``)."""
    values: dict[str, Any] = {}
    for name in _KINDS:
        if name in ("gamma0_t", "gamma0_s"):
            continue
        if name in at:
            values[name] = _python(name, at[name])
        elif name in ds.coords:
            coord = ds.coords[name]
            coord = coord.sel({k: v for k, v in at.items() if k in coord.dims})
            if coord.ndim == 0:
                values[name] = _python(name, coord.values[()])
    axes = [str(d) for d in ds.dims if d in at]
    for run in ("t", "s"):
        var = step_size_variable(f"gamma0_{run}", axes)
        if var in ds.data_vars:
            steps = np.unique(np.asarray(
                ds[var].sel({k: v for k, v in at.items() if k in ds[var].dims}).values, float))
            steps = steps[np.isfinite(steps)]
            values[f"gamma0_{run}"] = float(steps[0]) if steps.size == 1 else math.nan
        edge = f"tune_edge_{run}"
        if edge in ds.data_vars:
            flags = ds[edge].sel({k: v for k, v in at.items() if k in ds[edge].dims})
            values[f"tuned_{run}"] = bool((flags != Flag.UNDETERMINED).any())
    return Params(values)


def untrained_modes(p: Params) -> np.ndarray:
    """The untrained per-mode excess risk ½ e_i (length d) of the point."""
    return 0.5 * target_energy(p)  # type: ignore[arg-type]


def predictions(p: Params) -> dict[str, theory.Prediction]:
    """docs/science/rates.md's exponents that apply at the point (theory.predictions)."""
    return theory.predictions(p)


def late_scope(p: Params) -> str:
    """'' where Theorem 5's late law is derived for the point, else why not."""
    return theory.w2s_late_scope(p)


def crossover(p: Params) -> float:
    """The derived crossover N_× of the late law (NaN where undefined or the student's step
    was tuned per point)."""
    if getattr(p, "tuned_s", False) or not np.isfinite(p.gamma0_s):
        return math.nan
    return theory.w2s_crossover(p)


SAMPLE_AXES = ("N", "n", "gamma0_t", "gamma0_s")
"""Axes that change no spectrum, target or predicted exponent (only sample sizes and steps)."""


def _spread(da: xr.DataArray, axes: list[str]) -> np.ndarray:
    """``da`` (whose dimensions are among ``axes``) as a NumPy array over ``axes`` (length 1
    along the axes it does not vary on)."""
    own = [a for a in axes if a in da.dims]
    return np.asarray(da.transpose(*own).values).reshape(
        [da.sizes[a] if a in own else 1 for a in axes])


def _reduced(da: xr.DataArray, axes: list[str], how: Callable[[np.ndarray], np.ndarray]
             ) -> np.ndarray:
    """``how`` (a reduction along the last axis) of ``da`` over its dimensions not in
    ``axes``, per combination of those in ``axes`` (as :func:`_spread` lays them out). The
    variable is read once, whole."""
    own = [a for a in axes if a in da.dims]
    rest = [d for d in da.dims if d not in own]
    v = np.asarray(da.transpose(*own, *rest).values)
    v = how(v.reshape(*(da.sizes[a] for a in own), -1))
    return v.reshape([da.sizes[a] if a in own else 1 for a in axes])


def _one_step(v: np.ndarray) -> np.ndarray:
    """The step a slab's runs used (last axis: the slab): its one finite value, NaN when
    there is none or several."""
    v = v.astype(np.float64)
    finite = np.isfinite(v)
    lo = np.where(finite, v, np.inf).min(axis=-1)
    hi = np.where(finite, v, -np.inf).max(axis=-1)
    return np.where(finite.any(axis=-1) & (lo == hi), lo, np.nan)


def _any(v: np.ndarray) -> np.ndarray:
    """Whether any run of a slab (last axis) has the flag set."""
    return np.asarray(v.any(axis=-1))


def over_parameters(ds: xr.Dataset, axes: list[str],
                    compute: Callable[[Params], Any]) -> list[tuple[dict[str, Any], Any]]:
    """``compute`` at every combination of the labels of ``axes`` other than
    :data:`SAMPLE_AXES` (other axes at their first label): (the labels, the value).

    Each combination's :class:`Params` are those :func:`params_at` reads there; each
    coordinate and step variable is read once for all combinations (a 10^7-point cube has
    10^5 of them, and reading the cube per combination takes hours)."""
    axes = [a for a in axes if a not in SAMPLE_AXES]
    labels = [[v.item() if hasattr(v, "item") else v for v in ds[a].values] for a in axes]
    shape = tuple(len(v) for v in labels)
    coords = {name: np.broadcast_to(_spread(ds.coords[name], axes), shape)
              for name in _KINDS if name not in ("gamma0_t", "gamma0_s", *axes)
              and name in ds.coords and set(ds.coords[name].dims) <= set(axes)}
    runs: list[tuple[str, np.ndarray | None, np.ndarray | None]] = []
    present = [d for d in ds.dims if d in axes]
    for run in ("t", "s"):
        var, edge = step_size_variable(f"gamma0_{run}", present), f"tune_edge_{run}"
        steps = (np.broadcast_to(_reduced(ds[var], axes, _one_step), shape)
                 if var in ds.data_vars else None)
        tuned = (np.broadcast_to(_reduced(ds[edge] != Flag.UNDETERMINED, axes, _any), shape)
                 if edge in ds.data_vars else None)
        runs.append((run, steps, tuned))
    out = []
    for index in itertools.product(*(range(k) for k in shape)):
        at = {a: labels[i][j] for i, (a, j) in enumerate(zip(axes, index, strict=True))}
        values: dict[str, Any] = {}
        for name in _KINDS:
            if name in at and name not in ("gamma0_t", "gamma0_s"):
                values[name] = _python(name, at[name])
            elif name in coords:
                values[name] = _python(name, coords[name][index])
        for run, steps, tuned in runs:
            if steps is not None:
                values[f"gamma0_{run}"] = float(steps[index])
            if tuned is not None:
                values[f"tuned_{run}"] = bool(tuned[index])
        out.append((at, compute(Params(values))))
    return out


def untrained_over(ds: xr.Dataset, axes: list[str]) -> xr.DataArray:
    """The untrained per-mode risk ½ e_i over the parameter axes among ``axes`` and ``mode``
    (NaN past a point's d)."""
    width = ds.sizes["mode"]
    rows = over_parameters(ds, axes, untrained_modes)
    dims = [a for a in axes if a not in SAMPLE_AXES]
    shape = [ds.sizes[a] for a in dims]
    data = np.full((*shape, width), np.nan)
    for i, (_, e) in enumerate(rows):
        index = np.unravel_index(i, shape) if shape else ()
        data[index][: len(e)] = e[:width]
    coords = {a: ds[a].values for a in dims}
    coords["mode"] = ds["mode"].values
    return xr.DataArray(data, coords=coords, dims=[*dims, "mode"])
