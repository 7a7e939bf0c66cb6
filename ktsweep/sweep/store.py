"""The result cube: one chunked zarr store that opens as an xarray Dataset.

Dimensions are the grid axes (coordinates = axis values), ``method`` (exact, mc), ``mode``
and ``step``. Zarr chunks along the grid axes are the sweep's job blocks, so concurrent
jobs write disjoint chunk files; every chunk file is written atomically by zarr. Points not
computed read as NaN with ``status`` 0 (missing). The store knows nothing of the engines:
it maps result names to variables and blocks to regions.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from ktsweep.engines.bounds import BOUND_NAMES
from ktsweep.model.quantities import (
    CURVES,
    LONG_NAMES,
    MODE_RISKS,
    RATIOS,
    RISKS,
    SCHEMA_VERSION,
    STATUS,
    STEP_SIZES,
    TUNE_EDGES,
    step_size_variable,
)
from ktsweep.sweep.layout import Layout, coordinate

_RISK_NOTE = "risks carry the 1/2 factor: (1/2)||u - theta*||^2 (noise floor excluded)"


class StoreError(RuntimeError):
    """The cube on disk is missing, broken or belongs to another sweep; says how to fix it."""


def cube_path(layout: Layout, root: str | os.PathLike = "results") -> Path:
    return Path(root) / layout.name / "cube.zarr"


def variables(layout: Layout) -> dict[str, tuple[tuple[str, ...], str]]:
    """Variable name → (extra dims after the grid axes, dtype) for this layout."""
    est = bool(layout.estimators)
    mc = "mc" in layout.methods
    out: dict[str, tuple[tuple[str, ...], str]] = {}
    if est:
        for k in RISKS + RATIOS:
            out[k] = (("estimator",), "float64")
        out["status"] = (("estimator",), "int8")
        for k in STEP_SIZES:
            out[step_size_variable(k, layout.axes)] = ((), "float64")
        for k in TUNE_EDGES:
            out[k] = ((), "float64")
        if layout.config.outputs.modes:
            for k in MODE_RISKS:
                out[k] = (("estimator", "mode"), "float32")
        if layout.config.outputs.curves:
            for k in CURVES:
                out[k] = (("estimator", "step"), "float32")
    if mc:
        for k in RISKS + RATIOS:
            out[f"{k}_se"] = ((), "float64")
        if layout.config.outputs.modes:
            for k in MODE_RISKS:
                out[f"{k}_se"] = (("mode",), "float32")
        if layout.config.outputs.curves:
            for k in CURVES:
                out[f"{k}_se"] = (("step",), "float32")
    if "bound" in layout.methods:
        for k in BOUND_NAMES:
            out[k] = ((), "float64")
        out["bound_status"] = ((), "int8")
        if not est:
            for k in STEP_SIZES:
                out[step_size_variable(k, layout.axes)] = ((), "float64")
            for k in TUNE_EDGES:
                out[k] = ((), "float64")
    return out


def _long_name(name: str) -> str:
    base = name[:-3] if name.endswith("_se") else name
    text = LONG_NAMES.get(base, base.replace("_", " "))
    if base.startswith(("bound_", "kstar_", "sandwich_")):
        text = {
            "bound_t2s": "Theorem 1 transfer upper bound on risk_t2s (min over delta)",
            "bound_t2s_delta": "delta minimising the transfer bound",
            "bound_t2s_holds": "1 if exact risk_t2s <= bound_t2s",
            "bound_status": "0 missing, 1 computed",
            "kstar_t2s": "student cutoff k*_S(delta) of the transfer bound",
        }.get(base, base.replace("_", " ") + " (docs/science/bounds.md)")
    if base.startswith("scope_"):
        text = f"1 if the {base[6:]} run is in the proofs' scope (batch 1, geometric, planned " \
               "for the run)"
    if name == "step_condition":
        text = "1 if every gamma0 satisfies the proofs' step-size condition"
    return f"Monte Carlo standard error of {text}" if name.endswith("_se") else text


def _provenance() -> dict[str, Any]:
    def version(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "absent"

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, cwd=Path(__file__).parent,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", ""
    return {
        "code_version": (commit or "unknown") + ("-dirty" if dirty else ""),
        "package_versions": json.dumps({p: version(p) for p in (
            "ktsweep", "numpy", "torch", "xarray", "zarr", "dask", "snakemake")}),
        "host": platform.node(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def template(layout: Layout) -> xr.Dataset:
    """The empty cube (lazy arrays of fill values) with coordinates, chunks and attributes."""
    axes = list(layout.axes)
    coords: dict[str, Any] = {a: coordinate(v) for a, v in layout.axes.items()}
    extra = {"estimator": np.array(layout.estimators, dtype=object),
             "mode": np.arange(1, layout.d_max + 1), "step": layout.checkpoints}
    coords.update(extra)
    data = {}
    for name, (dims, dtype) in variables(layout).items():
        shape = layout.shape + tuple(len(extra[d]) for d in dims)
        chunks = layout.chunks + tuple(len(extra[d]) for d in dims)
        fill = 0 if dtype == "int8" else np.nan
        arr = da.full(shape, fill, dtype=dtype, chunks=chunks)
        attrs = {"long_name": _long_name(name)}
        if name.startswith(("risk_", "mode_", "curve_")):
            attrs["units"] = "excess risk (1/2 convention)"
            attrs["note"] = _RISK_NOTE
        if name in ("status", "bound_status"):
            attrs["flag_values"] = list(range(len(STATUS)))
            attrs["flag_meanings"] = " ".join(STATUS)
        data[name] = (tuple(axes) + dims, arr, attrs)
    ds = xr.Dataset(data, coords=coords)
    ds["mode"].attrs["long_name"] = "eigen-mode index i (lambda_i = i^-alpha)"
    ds["step"].attrs["long_name"] = "SGD steps taken (learning-curve checkpoint)"
    ds["estimator"].attrs["long_name"] = "estimator: exact expected risk or Monte Carlo mean"
    for a in axes:
        ds[a].attrs["long_name"] = f"grid axis {a} (docs/science/quantities.md)"
    ds.attrs.update({
        "title": f"ktsweep result cube '{layout.name}'",
        "ktsweep_schema": SCHEMA_VERSION,
        "ktsweep_config": layout.to_json(),
        "ktsweep_result_key": layout.result_key(),
        "ktsweep_layout_key": layout.layout_key(),
        "fixed": json.dumps(layout.fixed, sort_keys=True),
        "risk_convention": _RISK_NOTE,
        "mc_device": layout.config.mc.device,
        **_provenance(),
    })
    return ds


def _encoding(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    enc: dict[str, dict[str, Any]] = {}
    for name, var in ds.data_vars.items():
        enc[name] = {"chunks": tuple(c[0] for c in var.chunks) if var.chunks else None}
        if var.dtype == np.int8:
            enc[name]["_FillValue"] = None
    return enc


def _write_template(ds: xr.Dataset, path: Path) -> None:
    ds.to_zarr(path, mode="w", compute=False, encoding=_encoding(ds), consolidated=False)


def read_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """Attributes of an existing cube; :class:`StoreError` with the fix if it is unreadable."""
    p = Path(path)
    if not p.exists():
        raise StoreError(f"no cube at {p}: run the sweep first (snakemake --cores N)")
    try:
        return dict(zarr.open_group(str(p), mode="r").attrs)
    except Exception as err:  # zarr raises several types for a broken store
        raise StoreError(f"{p} is not a readable zarr store ({err}); move it aside and rerun "
                         "the sweep to rebuild it") from None


def open_cube(path: str | os.PathLike) -> xr.Dataset:
    """Open a cube as an xarray Dataset (lazy), checking that it is a ktsweep cube."""
    attrs = read_attrs(path)
    if "ktsweep_config" not in attrs:
        raise StoreError(f"{path} is a zarr store but not a ktsweep cube (no ktsweep_config "
                         "attribute)")
    try:
        return xr.open_zarr(path, consolidated=False)
    except Exception as err:
        raise StoreError(f"cube {path} cannot be opened ({err}); move it aside and rerun") from None


def init_cube(layout: Layout, path: str | os.PathLike) -> str:
    """Create the cube for ``layout``, or adapt an existing one keeping its results.

    Returns what happened: ``created``, ``unchanged``, ``extended`` (same physics, new axis
    values or methods: existing points copied over) or ``replaced`` (incompatible settings:
    the old cube is kept beside it under a backup name, never deleted).
    """
    p = Path(path)
    _recover_swap(p)
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        _write_template(template(layout), p)
        return "created"
    attrs = read_attrs(p)
    if attrs.get("ktsweep_layout_key") == layout.layout_key():
        return "unchanged"
    new = template(layout)
    if attrs.get("ktsweep_result_key") != layout.result_key():
        backup = p.with_name(f"cube.{attrs.get('ktsweep_result_key', 'unknown')}.zarr")
        if backup.exists():
            shutil.rmtree(backup)
        p.rename(backup)
        _write_template(new, p)
        return f"replaced (previous cube kept at {backup})"
    old = open_cube(p)
    tmp = p.with_name(p.name + ".new")
    if tmp.exists():
        shutil.rmtree(tmp)
    _write_template(new, tmp)
    _copy_overlap(old, new, tmp)
    old.close()
    aside = p.with_name(p.name + ".old")
    p.rename(aside)
    tmp.rename(p)
    shutil.rmtree(aside)
    return "extended"


def _recover_swap(p: Path) -> None:
    """Finish or undo an interrupted :func:`init_cube` swap (kill between two renames)."""
    aside, tmp = p.with_name(p.name + ".old"), p.with_name(p.name + ".new")
    if not p.exists() and aside.exists():
        aside.rename(p)
    elif p.exists() and aside.exists():
        shutil.rmtree(aside)
    if tmp.exists():
        shutil.rmtree(tmp)


def _copy_overlap(old: xr.Dataset, new: xr.Dataset, path: Path) -> None:
    """Copy every value of ``old`` whose coordinates also exist in ``new`` into ``path``.

    Works in slabs along the first dimension (one new chunk length at a time), so memory
    stays near one slab of the variable, not the whole variable.
    """
    group = zarr.open_group(str(path), mode="r+")
    for name in new.data_vars:
        if name not in old.data_vars:
            continue
        var_old, var_new = old[name], new[name]
        sel_old, sel_new = [], []
        for dim in var_new.dims:
            if dim not in var_old.dims:
                break
            a, b = np.asarray(var_old[dim].values), np.asarray(var_new[dim].values)
            common, ia, ib = np.intersect1d(a, b, return_indices=True)
            sel_old.append(ia)
            sel_new.append(ib)
        else:
            if any(len(s) == 0 for s in sel_old):
                continue
            slab = var_new.chunks[0][0] if var_new.chunks else len(sel_old[0])
            for lo in range(0, len(sel_old[0]), slab):
                part_old = [sel_old[0][lo:lo + slab], *sel_old[1:]]
                part_new = (sel_new[0][lo:lo + slab], *sel_new[1:])
                values = var_old.isel(dict(zip(var_new.dims, part_old, strict=True))).values
                group[name].set_orthogonal_selection(part_new, values)


def read_block(path: str | os.PathLike, layout: Layout, chunk: str,
               names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Current values of a chunk's block for the given variables (all by default)."""
    group = zarr.open_group(str(path), mode="r")
    sl = layout.chunk_slices(chunk)
    return {n: np.asarray(group[n][sl]) for n in (names or list(variables(layout)))}


def write_block(path: str | os.PathLike, layout: Layout, chunk: str,
                block: Mapping[str, np.ndarray]) -> None:
    """Write whole chunk blocks (one zarr chunk per variable, atomically per file)."""
    group = zarr.open_group(str(path), mode="r+")
    sl = layout.chunk_slices(chunk)
    for name, values in block.items():
        group[name][sl] = values


def check_compatible(path: str | os.PathLike, layout: Layout) -> None:
    """Refuse to write a layout's chunks into a cube made for another layout."""
    attrs = read_attrs(path)
    if attrs.get("ktsweep_layout_key") != layout.layout_key():
        raise StoreError(f"cube {path} was laid out for another config (layout "
                         f"{attrs.get('ktsweep_layout_key')} != {layout.layout_key()}); "
                         "run the workflow (it re-initialises the cube) instead of a single job")
