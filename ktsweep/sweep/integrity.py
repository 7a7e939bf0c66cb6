"""Whether a cube holds what its records say: records, inspection, repair, verified reads.

A cube's ``<key>.commits/`` folder holds its records:

- ``skeleton.json``: size, mtime and SHA-256 of every file that is not a chunk of a data
  variable (each ``zarr.json``, consolidated metadata included, and the coordinate arrays),
  with a copy of each file under ``skeleton/``. Written when the cube is created and whenever
  ktsweep itself changes one of them (publishing), so an edit made by anything else is
  damage, and damage is restored from the copies instead of rebuilding the cube.
- ``cNNNNN.json``: a chunk's commit record, the same three facts for each of its chunk files.

**The hash is the truth, size and mtime a cache** (as git's index treats them): a file whose
size and mtime equal its record's is taken as intact; one whose size or mtime differ is hashed,
and equal content is intact (a copy, a restore, a touch: the record's times are *stale* and the
main run refreshes them) while different content is damage. A *full* inspection hashes every
file, so it also finds a same-size swap whose mtime was set back. Reads through
:class:`VerifiedStore` hash every chunk file they touch, so no damaged value is ever returned as
a number, whatever the times say.

:func:`inspect` only reads; :func:`refresh` and :func:`repair` write, and run in the workflow's
main run (its ``repair`` checkpoint and start), in ``ktsweep check`` and in the summary, never
while the workflow is parsed.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from zarr.storage import WrapperStore

SKELETON = "skeleton.json"
SKELETON_COPIES = "skeleton"

Entry = list  # [size, mtime_ns, sha256]


class StoreError(RuntimeError):
    """The cube on disk is missing, broken or belongs to another sweep; says how to fix it."""


class IntegrityError(StoreError):
    """A read found a file whose content is not what its record says; names it and the fix."""


# -- records ----------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def entry(path: Path) -> Entry:
    """[size, mtime_ns, sha256] of a file: one line of a record."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, sha256(path)]


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON by rename, so a reader sees the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def read_manifest(path: Path) -> dict[str, Entry] | None:
    """The manifest of a commit record (relative path -> entry), None if absent or broken."""
    try:
        manifest = json.loads(path.read_text())["manifest"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def skeleton_files(cube: Path, data_vars: Iterable[str]) -> list[Path]:
    """Every file of the cube that is not a chunk of a data variable."""
    data = set(data_vars)
    out = []
    for path in sorted(cube.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(cube).parts
        if len(rel) > 2 and rel[0] in data and rel[1] == "c":
            continue
        out.append(path)
    return out


def write_skeleton(cube: str | os.PathLike, commits: Path, data_vars: Iterable[str]) -> None:
    """Record the cube's skeleton (entries and copies); called by whoever just wrote it."""
    cube = Path(cube)
    copies = commits / SKELETON_COPIES
    staged = commits / f".{SKELETON_COPIES}.{uuid.uuid4().hex[:8]}"
    record = {}
    for path in skeleton_files(cube, data_vars):
        rel = str(path.relative_to(cube))
        record[rel] = entry(path)
        target = staged / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    old = commits / f".{SKELETON_COPIES}.old-{uuid.uuid4().hex[:8]}"
    if copies.exists():
        os.rename(copies, old)
    os.rename(staged, copies)
    shutil.rmtree(old, ignore_errors=True)
    write_json_atomic(commits / SKELETON, {"manifest": record})


def _state(path: Path, want: Entry, full: bool) -> str:
    """'ok', 'stale' (new times, same content), 'missing' or 'differs' for one file."""
    try:
        st = path.stat()
    except OSError:
        return "missing"
    if not full and [st.st_size, st.st_mtime_ns] == list(want[:2]):
        return "ok"
    if st.st_size != want[0]:
        return "differs"
    same = sha256(path) == want[2]
    if not same:
        return "differs"
    return "ok" if [st.st_size, st.st_mtime_ns] == list(want[:2]) else "stale"


def committed(files: Mapping[str, Path], status_vars: Iterable[str]) -> bool:
    """Whether a chunk was committed: a status variable's file exists (status is written last,
    after every value is on disk, so a chunk without one was never committed)."""
    return any(files[n].exists() for n in status_vars if n in files)


# -- inspection -------------------------------------------------------------------------------
@dataclass
class Health:
    """What :func:`inspect` found: the cube's skeleton and every chunk against its records."""

    cube: Path
    skeleton: list[str] = field(default_factory=list)  # damaged metadata or coordinates
    restorable: bool = True  # every damaged skeleton file has an intact copy to restore
    damaged: dict[str, list[str]] = field(default_factory=dict)  # chunk -> problems
    stale: dict[str, list[str]] = field(default_factory=dict)  # record -> files, same content
    uncommitted: list[str] = field(default_factory=list)  # not computed yet
    unrecorded: list[str] = field(default_factory=list)  # committed, record not yet written

    @property
    def ok(self) -> bool:
        return not self.skeleton and not self.damaged

    def problems(self) -> list[str]:
        """Every problem as a line naming the file (and variable and chunk where it is one)."""
        return [*self.skeleton, *(f"chunk {c}: {p}" for c, ps in self.damaged.items()
                                  for p in ps)]

    def to_dict(self) -> dict[str, Any]:
        return {"cube": str(self.cube), "problems": self.problems(), "skeleton": self.skeleton,
                "restorable": self.restorable, "damaged_chunks": sorted(self.damaged),
                "stale": self.stale, "uncommitted_chunks": self.uncommitted,
                "unrecorded_chunks": self.unrecorded}


def inspect(cube: str | os.PathLike, chunk_files: Mapping[str, Mapping[str, Path]],
            commits: Path, status_vars: Iterable[str], full: bool = False,
            structure: Iterable[str] = ()) -> Health:
    """Compare a cube with its records; reads only.

    ``chunk_files``: chunk -> variable -> its chunk file (the layout's view of the cube);
    ``structure``: problems a structural check already found (used where no skeleton record
    exists yet). ``full`` hashes every file instead of those whose times changed.
    """
    cube = Path(cube)
    health = Health(cube)
    health.skeleton.extend(structure)
    skeleton = read_manifest(commits / SKELETON)
    if skeleton is not None:
        _inspect_skeleton(cube, commits, skeleton, full, health)
    status = tuple(status_vars)
    for chunk, files in chunk_files.items():
        manifest = read_manifest(commits / f"{chunk}.json")
        if manifest is None:
            if committed(files, status):
                health.unrecorded.append(chunk)
            else:
                health.uncommitted.append(chunk)
            continue
        by_rel = {str(f.relative_to(cube)): name for name, f in files.items()}
        problems, stale = [], []
        for rel, want in manifest.items():
            state = _state(cube / rel, want, full)
            name = by_rel.get(rel, rel.split("/")[0])
            if state == "missing":
                problems.append(f"variable {name}: chunk file {rel} missing")
            elif state == "differs":
                problems.append(f"variable {name}: chunk file {rel} content differs from its "
                                "commit record")
            elif state == "stale":
                stale.append(rel)
        missing = sorted(set(by_rel) - set(manifest))
        problems += [f"variable {by_rel[rel]}: chunk file {rel} not in its commit record"
                     for rel in missing]
        if problems:
            health.damaged[chunk] = problems
        if stale:
            health.stale[chunk] = stale
    return health


def _inspect_skeleton(cube: Path, commits: Path, record: Mapping[str, Entry], full: bool,
                      health: Health) -> None:
    stale = []
    for rel, want in record.items():
        state = _state(cube / rel, want, full)
        if state == "stale":
            stale.append(rel)
        elif state != "ok":
            what = "missing" if state == "missing" else "content differs from its record"
            health.skeleton.append(f"metadata {rel}: {what}")
            copy = commits / SKELETON_COPIES / rel
            if not (copy.exists() and sha256(copy) == want[2]):
                health.restorable = False
    if stale:
        health.stale[SKELETON] = stale


# -- repair -----------------------------------------------------------------------------------
def refresh(cube: str | os.PathLike, commits: Path, health: Health) -> int:
    """Give stale record lines the files' current times (their content was checked equal, and
    is checked again here); returns how many lines changed."""
    cube = Path(cube)
    changed = 0
    for name, rels in health.stale.items():
        path = commits / (name if name == SKELETON else f"{name}.json")
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        manifest = record.get("manifest", {})
        for rel in rels:
            if rel not in manifest:
                continue
            now = entry(cube / rel)
            if now[2] == manifest[rel][2] and now[:2] != manifest[rel][:2]:
                manifest[rel] = now
                changed += 1
        write_json_atomic(path, record)
    return changed


def reset_chunk(commits: Path, status_files: Iterable[Path], chunk: str) -> None:
    """Mark a chunk uncomputed: its status files and commit record go (its values stay,
    unread until the chunk is committed again)."""
    for f in status_files:
        f.unlink(missing_ok=True)
    (commits / f"{chunk}.json").unlink(missing_ok=True)


def restore_skeleton(cube: Path, commits: Path) -> list[str]:
    """Copy back every skeleton file whose content differs from its record (from the intact
    copies; :attr:`Health.restorable` says whether they are)."""
    record = read_manifest(commits / SKELETON) or {}
    done = []
    for rel, want in record.items():
        if _state(cube / rel, want, True) in ("ok", "stale"):
            continue
        target = cube / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
        shutil.copy2(commits / SKELETON_COPIES / rel, tmp)
        os.replace(tmp, target)
        record_line = entry(target)
        done.append(f"metadata {rel} restored from its recorded copy")
        if record_line[2] != want[2]:  # the copy itself changed since inspect: give up
            raise IntegrityError(f"the recorded copy of {rel} changed while restoring it")
    return done


def set_aside(cube: Path, commits: Path, why: str) -> Path:
    """Rename a cube and its records out of the way (never deleted); returns the new path."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S")
    aside = cube.with_name(f"{cube.name.removesuffix('.zarr')}.{why}-{stamp}.zarr")
    os.rename(cube, aside)
    if commits.exists():
        os.rename(commits, aside.with_name(aside.name.removesuffix(".zarr") + ".commits"))
    return aside


# -- verified reads ---------------------------------------------------------------------------
class VerifiedStore(WrapperStore):
    """A zarr store that hashes every file it reads and refuses one whose content differs
    from its record (naming the variable, the chunk and the fix); files no record lists
    (chunks not committed, whose status reads as missing) are read as they are.

    Each file is hashed once per process, on its first read (partial reads of a file hash the
    whole file once)."""

    def __init__(self, store: Any, commits: str | os.PathLike, chunk_grid: tuple[int, ...],
                 data_vars: Iterable[str]) -> None:
        super().__init__(store)
        self._commits = Path(commits)
        self._grid = tuple(chunk_grid)
        self._data = frozenset(data_vars)

    def _with_store(self, store: Any) -> VerifiedStore:
        return type(self)(store, self._commits, self._grid, self._data)

    def __getstate__(self) -> dict[str, Any]:
        return {"store": self._store, "commits": self._commits, "grid": self._grid,
                "data": self._data}

    def __setstate__(self, state: dict[str, Any]) -> None:
        VerifiedStore.__init__(self, state["store"], state["commits"], state["grid"],
                               state["data"])

    @cached_property
    def _records(self) -> dict[str, dict[str, Entry] | None]:
        return {}

    @cached_property
    def _verified(self) -> set[str]:
        return set()

    def _want(self, key: str) -> tuple[Entry | None, str]:
        """The record line for a store key, and how to name it in a message."""
        parts = key.split("/")
        if len(parts) > 2 and parts[0] in self._data and parts[1] == "c":
            idx = tuple(int(p) for p in parts[2:2 + len(self._grid)])
            chunk = f"c{int(np.ravel_multi_index(idx, self._grid)):05d}"
            if chunk not in self._records:
                self._records[chunk] = read_manifest(self._commits / f"{chunk}.json")
            manifest = self._records[chunk] or {}
            return manifest.get(key), f"variable {parts[0]}, chunk {chunk} ({key})"
        if SKELETON not in self._records:
            self._records[SKELETON] = read_manifest(self._commits / SKELETON)
        return (self._records[SKELETON] or {}).get(key), f"metadata {key}"

    def _check(self, key: str, data: bytes | None) -> None:
        if key in self._verified:
            return
        want, what = self._want(key)
        if want is not None:
            if data is None:
                raise IntegrityError(f"{what} is missing although its record lists it; run "
                                     "`ktsweep check RESULTS_FOLDER --repair`, then the same "
                                     "snakemake command, to recompute it")
            if len(data) != want[0] or hashlib.sha256(data).hexdigest() != want[2]:
                raise IntegrityError(f"{what} does not match its commit record (damaged or "
                                     "replaced); run `ktsweep check RESULTS_FOLDER --repair`, "
                                     "then the same snakemake command, to recompute it")
        self._verified.add(key)

    async def get(self, key: str, prototype: Any = None, byte_range: Any = None) -> Any:
        if key not in self._verified:
            whole = await self._store.get(key, prototype)
            self._check(key, None if whole is None else whole.to_bytes())
            if byte_range is None:
                return whole
        return await self._store.get(key, prototype, byte_range)

    async def get_partial_values(self, prototype: Any, key_ranges: Any) -> Any:
        key_ranges = list(key_ranges)
        for key, _ in key_ranges:
            if key not in self._verified:
                whole = await self._store.get(key, prototype)
                self._check(key, None if whole is None else whole.to_bytes())
        return await self._store.get_partial_values(prototype, key_ranges)
