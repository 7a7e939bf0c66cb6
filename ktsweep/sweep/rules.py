"""What the workflow's rules and its parse call: the read-only look at the results before
Snakemake plans, and the steps that change the results tree, each run by a rule.

Parsing the workflow changes nothing (a dry run, ``--lint``, ``--summary``, ``--report`` and
every remote job's own parse leave the results tree as they found it): the main process only
*reads* the results (:func:`look`) and says what it found. Whatever must change happens in
rules of the main run: the ``repair`` checkpoint (:func:`repair`) resets damaged chunks,
restores damaged metadata from its recorded copies and drops a summary that no longer
describes the current cube, after which Snakemake re-plans and recomputes exactly that;
``init_cube`` (:func:`init`) creates the cube; the workflow's start refreshes the times of
records whose files were copied with new times (:func:`refresh_times`).

Every input of every rule is ``ancient``: Snakemake decides what to rerun from files existing,
never from their times, so a copied, moved or restored results tree, whose files all carry new
times in any order, is complete as it is. What the times used to decide is decided here by
content: the published outputs (the summary, the link, the fits, claims and figures) stand only
while they describe the current cube and every chunk of it is committed and intact; otherwise
the repair checkpoint removes them and Snakemake, planning again, remakes them.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ktsweep.sweep import integrity, store
from ktsweep.sweep.layout import Layout

INIT_RECORD = "init.json"


@dataclass
class Look:
    """What the main process found in the results before Snakemake plans (read-only)."""

    cube: Path
    repairs: list[str] = field(default_factory=list)  # what the repair checkpoint will do
    notes: list[str] = field(default_factory=list)  # facts that need no action

    @property
    def needs_repair(self) -> bool:
        return bool(self.repairs)

    def lines(self) -> list[str]:
        return [*self.notes, *(f"{r} (rule repair)" for r in self.repairs)]


def summary_path(layout: Layout, root: str | os.PathLike = "results") -> Path:
    return Path(root) / layout.name / "cube.json"


def look(layout: Layout, published: list[str], root: str | os.PathLike = "results",
         full: bool = False) -> Look:
    """Compare the results of ``layout`` with their records, reading only: damaged chunks
    and metadata (by content: files whose times changed are hashed), a cube whose records
    outlived it, published outputs (``published``: the workflow's final outputs) that do not
    describe the current, complete cube. ``full`` hashes every file."""
    cube = store.cube_path(layout, root)
    found = Look(cube)
    commits = store.commits_dir(cube)
    health = None
    if (commits / INIT_RECORD).exists() and not cube.exists():
        found.repairs.append(f"{cube} is gone while its records remain: they are set aside "
                             "and the cube is rebuilt")
    elif cube.exists():
        health = store.health(cube, layout, full=full)
        if health.skeleton:
            how = ("restored from its recorded copy" if health.restorable else
                   "the cube is set aside (never deleted) and rebuilt")
            found.repairs += [f"{p}: {how}" for p in health.skeleton]
        for chunk, problems in health.damaged.items():
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            found.repairs.append(f"chunk {chunk}: {problems[0]}{more}: it is reset and "
                                 "recomputed")
        stale = sum(len(v) for v in health.stale.values())
        if stale:
            found.notes.append(f"{stale} files of {cube.name} have new times but the content "
                               "their records name (a copy, a move or a restore): nothing is "
                               "recomputed; the next run that computes records their times "
                               f"(or run `ktsweep check {Path(root) / layout.name}`)")
        if not (commits / INIT_RECORD).exists() and health.unrecorded:
            found.notes.append(f"the records of {cube.name} are missing: they are written "
                               f"again from its {len(health.unrecorded)} committed chunks "
                               "(nothing is recomputed)")
    summary = summary_path(layout, root)
    outputs = [p for p in published if Path(p).exists()]
    if outputs and not found.repairs:
        if not summary.exists() or not _describes(summary, layout, root):
            found.repairs.append(f"the published results in {summary.parent} describe another "
                                 "cube than this config's: they are made again")
        elif health is not None and (health.uncommitted or health.unrecorded):
            found.repairs.append(f"the published results in {summary.parent} predate chunks "
                                 "not yet committed or recorded: they are made again once "
                                 "those are")
    elif outputs:
        found.repairs.append(f"the published results in {summary.parent} are made again")
    return found


def _describes(summary: Path, layout: Layout, root: str | os.PathLike) -> bool:
    """Whether results/NAME/cube.json and the cube.zarr link both name this layout's cube."""
    try:
        key = json.loads(summary.read_text()).get("cube_key")
    except (OSError, ValueError, AttributeError):
        return False
    cube = store.cube_path(layout, root)
    at = store.link_path(layout, root)
    linked = at.is_symlink() and cube.exists() and at.resolve() == cube.resolve()
    return key == store.cube_key(layout) and linked


def repair(layout: Layout, published: list[str], root: str | os.PathLike,
           out: str | os.PathLike, full: bool = False) -> list[str]:
    """The ``repair`` checkpoint: look again (the results may have changed since the parse),
    repair what is damaged and remove the published outputs, so that Snakemake, planning
    again after this, recomputes the reset chunks and publishes again. Writes ``out`` (what
    was done). ``full``: hash every file, as the look did."""
    cube = store.cube_path(layout, root)
    commits = store.commits_dir(cube)
    done: list[str] = []
    if (commits / INIT_RECORD).exists() and not cube.exists():
        aside = commits.with_name(f"{commits.name}.orphaned-{int(time.time())}")
        os.rename(commits, aside)
        done.append(f"records of the vanished {cube.name} set aside at {aside.name}")
    elif cube.exists():
        health = store.health(cube, layout, full=full)
        if not health.ok or health.stale:
            done += store.repair(cube, health, layout)
    removed = []
    for path in map(Path, published):
        if path.exists() or path.is_symlink():
            path.unlink()
            removed.append(path.name)
    if removed:
        done.append(f"{len(removed)} published outputs removed ({', '.join(removed[:4])}"
                    f"{', ...' if len(removed) > 4 else ''}): made again from the cube")
    integrity.write_json_atomic(Path(out), {"cube": str(cube), "done": done,
                                            "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return done


def refresh_times(layout: Layout, root: str | os.PathLike = "results") -> int:
    """Give record lines whose files were copied with new times (same content) those times,
    so later runs need not hash them again; returns the lines changed."""
    cube = store.cube_path(layout, root)
    if not cube.exists():
        return 0
    health = store.health(cube, layout)
    return integrity.refresh(cube, store.commits_dir(cube), health) if health.stale else 0


def init(layout: Layout, cube: str | os.PathLike, record: str | os.PathLike,
         log: str | os.PathLike) -> str:
    """The ``init_cube`` rule: create (or reuse, or restore) the cube and write its
    ``init.json``, the rule's output; what was done goes to ``log``."""
    what = store.init_cube(layout, cube)
    integrity.write_json_atomic(Path(record), {"cube": str(cube), "result": what,
                                               "points": layout.n_points,
                                               "chunks": layout.n_chunks})
    Path(log).write_text(f"{what}\n")
    return what


def repair_rule(layout: Layout, published: list[str], root: str | os.PathLike,
                out: str | os.PathLike, full: bool, log: str | os.PathLike) -> list[str]:
    """The ``repair`` checkpoint's body: :func:`repair`, each line said on stderr (where the
    user watches the run) and kept in ``log``."""
    done = repair(layout, published, root, out, full)
    with open(log, "w") as fh:
        for line in done:
            print(f"ktsweep: repaired: {line}", file=fh)
            print(f"ktsweep: repaired: {line}", file=sys.stderr)
    return done


def run_id() -> str:
    """A name unique to this main run (its repair checkpoint's output)."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"


def execution_words(layout: Layout) -> list[str]:
    """How a chunk job runs, as words of its command line: the settings it takes from there
    rather than from the cube (where and how it runs), which change no number (the cube keeps
    the config it was made with)."""
    cfg = layout.config
    words = ["--device", cfg.mc.device, "--points-per-task", str(cfg.jobs.points_per_task)]
    if cfg.dask.scheduler:
        words += ["--scheduler", cfg.dask.scheduler]
    if cfg.dask.processes:
        words.append("--processes")
    if cfg.mc.require_device:
        words.append("--require-device")
    return words


def shell_prefix(layout: Layout, python: str = sys.executable) -> str:
    """What every shell command of the workflow starts with: strict mode, and two shell
    functions, ``ktsweep`` (this interpreter's ``python -m ktsweep.cli``) and
    ``ktsweep_run_chunk`` (``ktsweep run-chunk`` with :func:`execution_words`).

    The interpreter and the execution settings live here, not in a rule's ``params``:
    moving the project or changing where jobs run changes no number, so it must not rerun a
    chunk (the profiles rerun on ``params``, which hold only what a job computes from). Braces
    are doubled: Snakemake formats the prefix like a rule's command."""
    chunk = " ".join(shlex.quote(w) for w in execution_words(layout))
    text = (f"set -euo pipefail; ktsweep() {{ {shlex.quote(python)} -m ktsweep.cli \"$@\"; }}; "
            f"ktsweep_run_chunk() {{ ktsweep run-chunk \"$@\" {chunk}; }}; ")
    return text.replace("{", "{{").replace("}", "}}")
