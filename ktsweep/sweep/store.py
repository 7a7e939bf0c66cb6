"""The result cubes: content-addressed zarr stores, committed chunk by chunk, verifiable.

Layout of ``results/NAME/``::

    cubes/<key>.zarr          one cube per identity (:func:`cube_key`), never overwritten
    cubes/<key>.staging/      per-task results of chunks not yet committed (immutable .npz)
    cubes/<key>.commits/      init.json and one commit record per chunk (Snakemake's markers)
    cube.zarr -> cubes/<key>.zarr   symlink to the cube of the last finished sweep

A cube directory appears under its final name only once complete (built under a temporary
name, then renamed). A chunk's values become visible only with its status: the commit writes
every other variable, syncs them, then ``status``/``bound_status``; its record lists each
chunk file with size, mtime and SHA-256 so damage is found by name (:func:`verify`). Every
chunk also carries a crc32c checksum that zarr checks on every read. Points not computed
read as NaN with status 0 (missing). The store knows nothing of the engines.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from ktsweep.model.cubespec import RISK_NOTE, STATUS_VARS, VarSpec, coordinate_attrs
from ktsweep.model.cubespec import variables as spec_variables
from ktsweep.model.quantities import SCHEMA_VERSION
from ktsweep.sweep import integrity
from ktsweep.sweep.integrity import IntegrityError, StoreError
from ktsweep.sweep.layout import Layout, coordinate

# xarray and dask.array are imported by the functions that use them: a chunk job (read, stage,
# commit) needs neither, and importing them cost each job about a second of its start-up
if TYPE_CHECKING:
    import xarray as xr
    from zarr.core.array_spec import ArrayConfigParams

WRITE: ArrayConfigParams = {"write_empty_chunks": True}
"""Every chunk of a committed block exists as a file, so a missing file means damage."""


def _array(group: zarr.Group, name: str) -> zarr.Array:
    """The array ``name`` of a cube (whose root group holds arrays only)."""
    node = group[name]
    if not isinstance(node, zarr.Array):
        raise StoreError(f"{name}: a group where the cube holds an array")
    return node


def failpoint(name: str) -> None:
    """Fault injection (benchmarks/fault_injection.py): with ``KTSWEEP_FAILPOINT=NAME:FLAG``
    the whole process group is killed at the point ``NAME``, once (the flag file records
    it). Inert without the variable. Points: init, values, status, stage, publish."""
    spec = os.environ.get("KTSWEEP_FAILPOINT", "")
    want, _, flag = spec.partition(":")
    if want != name or not flag or os.path.exists(flag):
        return
    Path(flag).write_text(name)
    os.killpg(os.getpgid(0), signal.SIGKILL)


# -- names and places ---------------------------------------------------------------------
def cube_key(layout: Layout) -> str:
    """Identity of a cube: what changes its numbers (the result key) and its shape."""
    ident = {"result": layout.result_key(), "schema": SCHEMA_VERSION,
             "axes": {a: [str(coordinate([v])[0]) for v in vals]
                      for a, vals in layout.axes.items()},
             "methods": list(layout.methods), "chunks": list(layout.chunks)}
    mc = layout.config.mc
    if "mc" in layout.methods and (mc.subgrid or mc.stride):  # which points Monte Carlo owes
        ident["mc_points"] = {"subgrid": {a: [str(coordinate([v])[0]) for v in vals]
                                          for a, vals in mc.subgrid.items()},
                              "stride": dict(mc.stride)}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def cube_path(layout: Layout, root: str | os.PathLike = "results") -> Path:
    """Where the cube of ``layout`` lives (content-addressed)."""
    return Path(root) / layout.name / "cubes" / f"{cube_key(layout)}.zarr"


def link_path(layout: Layout, root: str | os.PathLike = "results") -> Path:
    """The path users open: a symlink to the cube of the last finished sweep."""
    return Path(root) / layout.name / "cube.zarr"


def _real(cube: str | os.PathLike) -> Path:
    """The cube's own path (results/NAME/cube.zarr is a symlink to it)."""
    p = Path(cube)
    return p.resolve() if p.is_symlink() else p


def commits_dir(cube: str | os.PathLike) -> Path:
    p = _real(cube)
    return p.with_name(p.name.removesuffix(".zarr") + ".commits")


def staging_dir(cube: str | os.PathLike) -> Path:
    p = _real(cube)
    return p.with_name(p.name.removesuffix(".zarr") + ".staging")


def variables(layout: Layout) -> dict[str, VarSpec]:
    """The cube's variables for this layout (see :mod:`ktsweep.model.cubespec`)."""
    out = layout.config.outputs
    return spec_variables(layout.methods, out.modes, out.curves, tuple(layout.axes))


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
    import dask.array as da
    import xarray as xr

    axes = list(layout.axes)
    coords: dict[str, Any] = {a: coordinate(v) for a, v in layout.axes.items()}
    extra = {"estimator": np.array(layout.estimators, dtype=object),
             "mode": np.arange(1, layout.d_max + 1), "step": layout.checkpoints}
    coords.update(extra)
    data = {}
    for name, spec in variables(layout).items():
        shape = layout.shape + tuple(len(extra[d]) for d in spec.dims)
        chunks = layout.chunks + tuple(len(extra[d]) for d in spec.dims)
        arr = da.full(shape, spec.fill, dtype=spec.dtype, chunks=chunks)
        data[name] = (tuple(axes) + spec.dims, arr, dict(spec.attrs))
    for name, (dims, values) in layout.parameter_coords().items():
        coords[name] = (dims, values, coordinate_attrs(name, axis=False))
    ds = xr.Dataset(data, coords=coords)
    ds["mode"].attrs.update(long_name="mode index i",
                            description="eigen-mode index i (lambda_i = i^-alpha)")
    ds["step"].attrs.update(long_name="SGD steps",
                            description="SGD steps taken (learning-curve checkpoint)")
    ds["estimator"].attrs.update(
        long_name="estimator", description="exact expected risk or Monte Carlo mean")
    for a in axes:
        ds[a].attrs.update(coordinate_attrs(a, axis=True))
    ds.attrs.update({
        "title": f"ktsweep result cube '{layout.name}'",
        "ktsweep_schema": SCHEMA_VERSION,
        "ktsweep_config": layout.to_json(),
        "ktsweep_result_key": layout.result_key(),
        "ktsweep_cube_key": cube_key(layout),
        "risk_convention": RISK_NOTE,
        "mc_device_requested": layout.config.mc.device,
        **_provenance(),
    })
    if layout.spectrum_files():  # path → SHA-256 of each spectrum file the numbers came from
        ds.attrs["ktsweep_spectrum_files"] = json.dumps(layout.spectrum_files())
    return ds


INNER_BYTES = 1 << 20
"""About the size of a zarr chunk inside a shard: what a reader (dask) loads at once."""


def inner_chunks(shard: tuple[int, ...], grid_dims: int, itemsize: int,
                 target: int = INNER_BYTES) -> tuple[int, ...]:
    """The chunk shape inside a shard (one job's block): the shard itself when it is small,
    else its grid dimensions cut, from the first, to divisors of their shard length until a
    chunk holds about ``target`` bytes (the per-mode and per-step dimensions stay whole)."""
    inner = list(shard)
    for i in range(grid_dims):
        size = math.prod(inner) * itemsize
        if size <= target:
            break
        rest = size // inner[i]  # bytes of one index of this dimension
        fits = max(1, target // max(rest, 1))
        inner[i] = max(k for k in range(1, shard[i] + 1) if shard[i] % k == 0 and k <= fits)
    return tuple(inner)


def _encoding(ds: xr.Dataset, grid_dims: int) -> dict[str, dict[str, Any]]:
    """zstd and a crc32c checksum on every array (coordinates too); each data variable is
    sharded by job block (one file per job and variable, whatever the grid's size) and
    chunked inside the shard for readers (:func:`inner_chunks`)."""
    enc: dict[str, dict[str, Any]] = {}
    for key, var in ds.variables.items():
        name = str(key)
        if var.dtype == object:
            continue  # text coordinates: xarray picks their codec
        enc[name] = {"compressors": [ZstdCodec(level=3), Crc32cCodec()]}
        if name in ds.data_vars:
            assert var.chunks is not None  # template() makes every data variable a dask array
            shard = tuple(c[0] for c in var.chunks)
            enc[name]["shards"] = shard
            enc[name]["chunks"] = inner_chunks(shard, grid_dims, var.dtype.itemsize)
            if var.dtype == np.int8:
                enc[name]["_FillValue"] = None
    return enc


# -- reading ---------------------------------------------------------------------------------
def read_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """Attributes of an existing cube; :class:`StoreError` with the fix if it is unreadable."""
    p = Path(path)
    if not p.exists():
        raise StoreError(f"no cube at {p}: run the sweep first (snakemake --cores N)")
    try:
        return dict(zarr.open_group(str(p), mode="r", use_consolidated=False).attrs)
    except Exception as err:  # zarr raises several types for a broken store
        raise StoreError(f"{p} is not a readable zarr store ({type(err).__name__}: {err}); "
                         f"run `ktsweep check {p.parent.parent} --repair` or move it aside and "
                         "rerun the sweep to rebuild it") from None


def _consolidated(path: Path) -> bool:
    try:
        return "consolidated_metadata" in json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return False


def open_cube(path: str | os.PathLike, check: bool = True) -> xr.Dataset:
    """Open a cube as an xarray Dataset (lazy), checking that it is an intact ktsweep cube.

    ``check`` compares the cube's skeleton (metadata, consolidated metadata included, and
    coordinates) with its record first, so edited metadata is an error naming the file, never
    rescaled numbers. Every read then goes through :class:`~ktsweep.sweep.integrity.
    VerifiedStore`: a chunk file whose content differs from its commit record raises an error
    naming the variable and the chunk, so no damaged value is returned as a number.
    """
    import xarray as xr
    from zarr.storage import LocalStore

    cube = _real(path)
    attrs = read_attrs(cube)
    if "ktsweep_config" not in attrs:
        raise StoreError(f"{path} is a zarr store but not a ktsweep cube (no ktsweep_config "
                         "attribute)")
    layout = Layout.from_json(attrs["ktsweep_config"])
    commits = commits_dir(cube)
    if check:
        found = integrity.inspect(cube, {}, commits, STATUS_VARS)
        if not (commits / integrity.SKELETON).exists():
            found.skeleton += check_metadata(cube, layout)
        if found.skeleton:
            more = f" (and {len(found.skeleton) - 3} more)" if len(found.skeleton) > 3 else ""
            raise StoreError(f"cube {path} is damaged: " + "; ".join(found.skeleton[:3]) + more
                             + "; run `ktsweep check RESULTS_FOLDER --repair`, then rerun the "
                             "sweep")
    store = integrity.VerifiedStore(LocalStore(str(cube), read_only=True), commits,
                                    layout.chunk_grid, variables(layout))
    try:
        return xr.open_zarr(store, consolidated=_consolidated(cube))
    except IntegrityError as err:
        raise StoreError(f"cube {path}: {err}") from None
    except Exception as err:
        raise StoreError(f"cube {path} cannot be opened ({type(err).__name__}: {err}); run "
                         "`ktsweep check` on its results folder") from None


def layout_of(path: str | os.PathLike) -> Layout:
    """The layout a cube was created for (its ``ktsweep_config`` attribute), read from the
    recorded copy of its root metadata when the live one is damaged."""
    cube = _real(path)
    try:
        attrs = read_attrs(cube)
    except StoreError as err:
        copy = commits_dir(cube) / integrity.SKELETON_COPIES / "zarr.json"
        try:
            attrs = json.loads(copy.read_text())["attributes"]
        except (OSError, ValueError, KeyError):
            raise err from None
    if "ktsweep_config" not in attrs:
        raise StoreError(f"{path} is a zarr store but not a ktsweep cube")
    return Layout.from_json(attrs["ktsweep_config"])


# -- creation ----------------------------------------------------------------------------------
def init_cube(layout: Layout, path: str | os.PathLike) -> str:
    """Create the cube for ``layout`` at ``path`` unless a complete one is already there.

    The new cube is built under a temporary name and renamed into place, so a cube under
    its final name is always complete; its skeleton is recorded before the rename. Points
    already committed in a sibling cube with the same result key (another grid of the same
    physics) are copied in; siblings are never modified. A cube whose metadata is damaged
    beyond repair is set aside, never deleted.
    """
    p = Path(path)
    commits = commits_dir(p)
    if p.exists():
        found = health(p, layout)
        if not found.skeleton:
            if not (commits / integrity.SKELETON).exists():  # its records were deleted
                record_skeleton(p, layout)
                return "unchanged; its skeleton recorded again"
            return "unchanged"
        if found.restorable:
            return "metadata restored: " + "; ".join(integrity.restore_skeleton(p, commits))
        aside = integrity.set_aside(p, commits, "damaged")
        note = f"; damaged cube set aside at {aside} ({found.skeleton[0]})"
    else:
        note = ""
    p.parent.mkdir(parents=True, exist_ok=True)
    for stale in p.parent.glob(f".{p.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)  # a killed init's half-built cube
    shutil.rmtree(commits, ignore_errors=True)  # records of a cube no longer there
    tmp = p.with_name(f".{p.name}.tmp-{uuid.uuid4().hex[:8]}")
    new = template(layout)
    new.to_zarr(tmp, mode="w-", compute=False, encoding=_encoding(new, len(layout.axes)),
                consolidated=False)
    copied = ""
    source = _best_sibling(p, layout, new)
    if source is not None:
        n = _copy_committed(open_cube(source, check=False), layout, tmp)  # verified: sibling
        copied = f"; {n} committed points copied from {source.name}"
    _fsync_tree(tmp)
    integrity.write_skeleton(tmp, commits, variables(layout))
    failpoint("init")
    os.rename(tmp, p)
    _fsync_dir(p.parent)
    return "created" + copied + note


def _best_sibling(p: Path, layout: Layout, new: xr.Dataset) -> Path | None:
    """The verified cube beside ``p`` with the same physics sharing most committed points."""
    best, score = None, 0
    for other in sorted(p.parent.glob("*.zarr")):
        if other == p or other.name.startswith("."):
            continue
        try:
            attrs = read_attrs(other)
            if attrs.get("ktsweep_result_key") != layout.result_key():
                continue
            if not health(other, full=True).ok:
                continue  # a damaged cube is never a source of numbers
            old = open_cube(other, check=False)
        except StoreError:
            continue
        sel = _overlap(old, new)
        if sel is None or "status" not in old.data_vars and "bound_status" not in old:
            continue
        name = "status" if "status" in old.data_vars else "bound_status"
        n = int((old[name].isel(dict(zip(old[name].dims, sel[0], strict=False))) != 0).sum())
        if n > score:
            best, score = other, n
    return best


def _overlap(old: xr.Dataset, new: xr.Dataset) -> tuple[list, list] | None:
    """Index arrays (old, new) of the grid coordinates both cubes hold, or None."""
    sel_old, sel_new = [], []
    for dim in [d for d in new.dims if d not in ("estimator", "mode", "step")]:
        if dim not in old.dims:
            return None
        a, b = np.asarray(old[dim].values), np.asarray(new[dim].values)
        _, ia, ib = np.intersect1d(a, b, return_indices=True)
        if not len(ia):
            return None
        sel_old.append(ia)
        sel_new.append(ib)
    return sel_old, sel_new


def _copy_committed(old: xr.Dataset, layout: Layout, path: Path) -> int:
    """Copy the values of points both cubes hold into the new cube at ``path``, job block by
    job block: each block that receives a committed point is written whole (every variable,
    fill values where the source had none, status last), so "committed => every chunk file
    exists" holds and memory stays near one block. Returns the points copied with a nonzero
    status."""
    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    specs = variables(layout)
    order = commit_order(specs)
    extra_new = {"estimator": np.array(layout.estimators, dtype=object),
                 "mode": np.arange(1, layout.d_max + 1), "step": layout.checkpoints}
    extra = {}  # dimension -> (index in old, index in new) of the labels both hold
    for dim, b in extra_new.items():
        if dim in old.dims:
            a = np.asarray(old[dim].values)
            _, ia, ib = np.intersect1d(a, b, return_indices=True)
            extra[dim] = (ia, ib)
    count = 0
    for chunk in layout.chunk_ids():
        sl = layout.chunk_slices(chunk)
        at_old, at_new = [], []
        for axis, cut in zip(layout.axes, sl, strict=True):
            if axis not in old.dims:
                return 0
            here = coordinate(layout.axes[axis])[cut]
            _, ib, ia = np.intersect1d(here, np.asarray(old[axis].values), return_indices=True)
            at_new.append(ib)
            at_old.append(ia)
        if any(not len(i) for i in at_new):
            continue
        block = empty_block(layout, chunk)
        for name in order:
            if name not in old.data_vars:
                continue
            dims = specs[name].dims
            if any(d not in extra for d in dims):
                continue
            src = old[name].isel(dict(zip(old[name].dims, at_old + [extra[d][0] for d in dims],
                                          strict=True))).values
            block[name][np.ix_(*at_new, *(extra[d][1] for d in dims))] = src
        statuses = [block[n] for n in STATUS_VARS if n in block]
        if not any((x != 0).any() for x in statuses):
            continue  # nothing committed here: the block stays unwritten
        for name in order:
            _array(group, name).with_config(WRITE)[sl] = block[name]
        count += int((statuses[0] != 0).sum())
    return count


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for f in files:
            _fsync_file(Path(dirpath) / f)
        _fsync_dir(Path(dirpath))


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot sync a directory
        _fsync_file(path)


# -- chunk blocks --------------------------------------------------------------------------
def _chunk_coords(layout: Layout, chunk: str, spec: VarSpec) -> tuple[int, ...]:
    idx = int(chunk[1:])
    return tuple(int(i) for i in np.unravel_index(idx, layout.chunk_grid)) + (0,) * len(spec.dims)


def chunk_files(cube: str | os.PathLike, layout: Layout, chunk: str) -> dict[str, Path]:
    """Variable → the file holding that variable's values for ``chunk``: zarr v3's default
    chunk key, ``NAME/c/i/j/…`` (the encoding every cube is written with; a test holds it to
    zarr's own), computed without reading any metadata, so a cube whose metadata is damaged
    can still be inspected chunk by chunk."""
    return {name: Path(cube).joinpath(name, "c", *map(str, _chunk_coords(layout, chunk, spec)))
            for name, spec in variables(layout).items()}


def commit_order(names: Iterable[str]) -> list[str]:
    """The order a block is written in: every value, then the status variables (a point's
    values become visible with its status)."""
    names = list(names)
    return [n for n in names if n not in STATUS_VARS] + [n for n in STATUS_VARS if n in names]


def empty_block(layout: Layout, chunk: str) -> dict[str, np.ndarray]:
    """A chunk's block with nothing computed (fill values, every status missing)."""
    sl = layout.chunk_slices(chunk)
    base = tuple(s.stop - s.start for s in sl)
    extra = {"estimator": len(layout.estimators), "mode": layout.d_max,
             "step": len(layout.checkpoints)}
    return {n: np.full(base + tuple(extra[d] for d in s.dims), s.fill, dtype=s.dtype)
            for n, s in variables(layout).items()}


def read_block(path: str | os.PathLike, layout: Layout, chunk: str
               ) -> tuple[dict[str, np.ndarray], list[str]]:
    """A chunk's committed values, and the damage found (then the block reads as empty).

    Values of a block without status files were never committed and are not read. A block
    whose status was committed must have every variable's chunk file, readable (crc32c
    checked by zarr); otherwise no value of it is trusted and all its points are recomputed.
    """
    group = zarr.open_group(str(path), mode="r", use_consolidated=False)
    sl = layout.chunk_slices(chunk)
    files = chunk_files(path, layout, chunk)
    if not integrity.committed(files, STATUS_VARS):  # never committed: trust none of it
        return empty_block(layout, chunk), []
    block, damage = {}, []
    for name in variables(layout):
        if not files[name].exists():
            damage.append(f"{name}: chunk file missing")
            continue
        try:
            block[name] = np.asarray(_array(group, name)[sl])
        except Exception as err:
            damage.append(f"{name}: unreadable ({type(err).__name__}: {err})")
    if damage:
        return empty_block(layout, chunk), damage
    return block, []


def commit_block(path: str | os.PathLike, layout: Layout, chunk: str,
                 block: Mapping[str, np.ndarray]) -> dict[str, list]:
    """Write a chunk's block: values, sync, then status last; returns the commit manifest.

    The chunk's old files go first (status first, so a kill leaves it uncommitted): the block
    replaces them whole, and a shard at the grid's edge would otherwise be read back and
    patched, which fails on a damaged file (the one a repair reset it for)."""
    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    sl = layout.chunk_slices(chunk)
    files = chunk_files(path, layout, chunk)
    for name in [*STATUS_VARS, *files]:
        if name in files:
            files[name].unlink(missing_ok=True)
    names = commit_order(block)
    for i, name in enumerate(names):
        if name in STATUS_VARS and names[i - 1] not in STATUS_VARS:
            for other in names[:i]:
                _fsync_file(files[other])  # every value durable before any status
            failpoint("values")
        _array(group, name).with_config(WRITE)[sl] = block[name]
    for name in STATUS_VARS:
        if name in files:
            _fsync_file(files[name])
    return manifest(path, files)


def manifest(cube: str | os.PathLike, files: Mapping[str, Path]) -> dict[str, list]:
    """Relative path → [size, mtime_ns, sha256] of each file (the chunk's commit record)."""
    return {str(path.relative_to(cube)): integrity.entry(path) for path in files.values()}


def write_record(cube: str | os.PathLike, chunk: str, record: Mapping[str, Any]) -> Path:
    """Write a chunk's commit record (also the workflow's marker) atomically."""
    path = commits_dir(cube) / f"{chunk}.json"
    integrity.write_json_atomic(path, dict(record))
    return path


def reset_chunk(cube: str | os.PathLike, layout: Layout, chunk: str) -> None:
    """Mark a chunk uncomputed: drop its status files and commit record (values stay hidden)."""
    files = chunk_files(_real(cube), layout, chunk)
    integrity.reset_chunk(commits_dir(cube), [f for n, f in files.items() if n in STATUS_VARS],
                          chunk)


# -- staging: work kept per dask task --------------------------------------------------------
def stage(cube: str | os.PathLike, chunk: str, positions: list[int],
          results: Mapping[str, Mapping[str, np.ndarray]]) -> Path:
    """Persist one finished task (method → name → array) as an immutable file."""
    folder = staging_dir(cube) / chunk
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"positions": np.asarray(positions, dtype=np.int64)}
    for method, res in results.items():
        for k, v in res.items():
            arrays[f"{method}/{k}"] = np.asarray(v)
    final = folder / f"{uuid.uuid4().hex}.npz"
    tmp = folder / f".{final.name}.tmp"
    with open(tmp, "wb") as fh:
        # allow_pickle is numpy's default, named so that no key of ``arrays`` can stand for it
        np.savez(fh, allow_pickle=True, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, final)
    _fsync_dir(folder)
    failpoint("stage")
    return final


def staged(cube: str | os.PathLike, chunk: str
           ) -> Iterator[tuple[Path, list[int], dict[str, dict[str, np.ndarray]]]]:
    """Finished tasks of a chunk not yet committed: (file, positions, results)."""
    folder = staging_dir(cube) / chunk
    for f in sorted(folder.glob("*.npz")) if folder.exists() else []:
        try:
            with np.load(f, allow_pickle=False) as z:
                positions = [int(i) for i in z["positions"]]
                results: dict[str, dict[str, np.ndarray]] = {}
                for key in z.files:
                    if "/" in key:
                        method, name = key.split("/", 1)
                        results.setdefault(method, {})[name] = z[key]
        except Exception:  # written by rename, so only outside damage gets here
            f.unlink(missing_ok=True)
            continue
        yield f, positions, results


def clear_staging(cube: str | os.PathLike, chunk: str, files: list[Path]) -> None:
    for f in files:
        f.unlink(missing_ok=True)
    folder = staging_dir(cube) / chunk
    for junk in folder.glob(".*.tmp"):
        junk.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # left when another writer is still staging
        folder.rmdir()


def check_compatible(path: str | os.PathLike, layout: Layout) -> None:
    """Refuse to write a layout's chunks into a cube made for another identity."""
    attrs = read_attrs(path)
    if attrs.get("ktsweep_cube_key") != cube_key(layout):
        raise StoreError(f"cube {path} was made for another config (cube key "
                         f"{attrs.get('ktsweep_cube_key')} != {cube_key(layout)}); run the "
                         "workflow (it creates the right cube) instead of a single job")


# -- verification --------------------------------------------------------------------------
def check_metadata(path: str | os.PathLike, layout: Layout | None = None) -> list[str]:
    """Structural check: root and every variable's metadata readable, axes as laid out (the
    check where no skeleton record exists yet, and before a cube is reused)."""
    p = Path(path)
    try:
        attrs = read_attrs(p)
        layout = layout or Layout.from_json(attrs["ktsweep_config"])
    except (StoreError, KeyError, ValueError) as err:
        return [f"root metadata: {err}"]
    if attrs.get("ktsweep_cube_key") != cube_key(layout):
        return [f"root metadata: cube key {attrs.get('ktsweep_cube_key')} does not match "
                f"its config ({cube_key(layout)})"]
    problems = []
    group = zarr.open_group(str(p), mode="r", use_consolidated=False)
    for name in variables(layout):
        try:
            group[name]
        except Exception as err:
            problems.append(f"variable {name}: metadata missing or unreadable "
                            f"({type(err).__name__})")
    for axis, values in layout.axes.items():
        try:
            got = np.asarray(_array(group, axis)[:])
            want = coordinate(values)
            same = (np.array_equal(got.astype(np.float64), want) if want.dtype.kind == "f"
                    else [str(x) for x in got] == [str(x) for x in want])
        except Exception as err:
            problems.append(f"coordinate {axis}: unreadable ({type(err).__name__})")
            continue
        if not same:
            problems.append(f"coordinate {axis}: values differ from the config")
    return problems


def health(path: str | os.PathLike, layout: Layout | None = None, full: bool = False
           ) -> integrity.Health:
    """What is damaged in a cube: its skeleton (metadata and coordinates) and every chunk
    against their records (:mod:`ktsweep.sweep.integrity`; reads only). ``full`` hashes every
    file; otherwise only files whose size or mtime changed are hashed."""
    cube = _real(path)
    commits = commits_dir(cube)
    layout = layout or layout_of(cube)
    recorded = (commits / integrity.SKELETON).exists()
    structure = [] if recorded else check_metadata(cube, layout)
    files = {chunk: chunk_files(cube, layout, chunk) for chunk in layout.chunk_ids()}
    found = integrity.inspect(cube, files, commits, STATUS_VARS, full=full, structure=structure)
    if structure:
        found.restorable = False
    return found


def verify(path: str | os.PathLike, full: bool = True) -> dict[str, Any]:
    """:func:`health` as a plain report (``problems`` by variable and chunk,
    ``damaged_chunks``, ``uncommitted_chunks``, ``unrecorded_chunks``, ``stale``)."""
    return health(path, full=full).to_dict()


def repair(path: str | os.PathLike, found: integrity.Health | Mapping[str, Any],
           layout: Layout | None = None) -> list[str]:
    """Make the damage found recomputable: metadata restored from its recorded copies (or the
    cube set aside, never deleted, when they cannot restore it), damaged chunks reset so the
    next run recomputes them. Stale record times are refreshed. Returns what was done."""
    cube = _real(path)
    commits = commits_dir(cube)
    if isinstance(found, Mapping):
        found = health(cube, layout, full=True)
    done = []
    if found.skeleton:
        if not found.restorable:
            aside = integrity.set_aside(cube, commits, "damaged")
            return [f"cube metadata damaged ({found.skeleton[0]}) with no intact copy: set "
                    f"aside at {aside}; the next run rebuilds it"]
        done += integrity.restore_skeleton(cube, commits)
    layout = layout or layout_of(cube)
    for chunk in found.damaged:
        reset_chunk(cube, layout, chunk)
        done.append(f"chunk {chunk} reset: the next run recomputes it")
    if found.stale:
        n = integrity.refresh(cube, commits, found)
        done.append(f"{n} record lines given the files' new times (same content)")
    return done


def record_skeleton(cube: str | os.PathLike, layout: Layout) -> None:
    """Record the cube's skeleton as it is now (after ktsweep itself wrote it)."""
    cube = _real(cube)
    integrity.write_skeleton(cube, commits_dir(cube), variables(layout))


def collectable(root: str | os.PathLike) -> tuple[Path | None, list[tuple[Path, int]]]:
    """What ``ktsweep gc results/NAME`` may remove: every cube, record and staging folder
    under ``cubes/`` but those of the cube ``cube.zarr`` links to, and legacy cubes, each with
    its size in bytes; and the cube in use (None when nothing is linked yet)."""
    root = Path(root)
    cubes = root / "cubes"
    live = (root / "cube.zarr").resolve() if (root / "cube.zarr").is_symlink() else None
    keep: set[Path] = set()
    if live is not None:
        stem = live.name.removesuffix(".zarr")
        keep = {live, *(live.with_name(stem + s) for s in (".commits", ".staging"))}
    paths = [p for p in sorted(cubes.iterdir()) if p.resolve() not in keep] \
        if cubes.exists() else []
    paths += sorted(root.glob("cube.legacy-*.zarr"))
    return live, [(p, sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
                   if p.is_dir() else p.stat().st_size) for p in paths]


def remove_collectable(paths: Iterable[Path]) -> None:
    """Remove what :func:`collectable` listed (on the user's confirmation)."""
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def link(cube: str | os.PathLike, at: str | os.PathLike) -> None:
    """Point ``at`` (results/NAME/cube.zarr) at ``cube`` atomically; an old real directory
    there (a cube from before content addressing) is set aside, never deleted."""
    at, cube = Path(at), Path(cube)
    if at.exists() and not at.is_symlink():
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S")
        os.rename(at, at.with_name(f"cube.legacy-{stamp}.zarr"))
    tmp = at.with_name(f".{at.name}.link-{uuid.uuid4().hex[:8]}")
    os.symlink(os.path.relpath(cube, at.parent), tmp)
    os.replace(tmp, at)


def is_consolidated(cube: str | os.PathLike) -> bool:
    """Whether the cube's root metadata already holds consolidated metadata."""
    return _consolidated(_real(cube))


def consolidate(cube: str | os.PathLike) -> None:
    """Write consolidated metadata (once the sweep is complete) so readers open it in one go."""
    zarr.consolidate_metadata(str(cube))
