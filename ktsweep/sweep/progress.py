"""How far a sweep has got: points done / total per method and an ETA, read from the store.

Nothing here talks to Snakemake or dask: a chunk is done when its commit record exists, a
running chunk's progress is its staged task files (one per finished dask task), and a
running chunk says so with a small marker file that its job writes when it starts computing
and removes when it ends. So ``ktsweep status`` works from any shell, during or after a run,
on a laptop or a cluster's shared file system.

The ETA is measured, not modelled: job-seconds per point-evaluation (every committed chunk's
recorded ``seconds`` plus the time running chunks have run so far, over the evaluations they
finished), times the evaluations left, divided by the chunks running now. Tasks run the
most expensive points first, so early in a chunk the ETA errs long.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from dask.utils import format_time

from ktsweep.sweep import integrity, store
from ktsweep.sweep.layout import Layout

MARKER = ".running.json"
"""Name of the marker a chunk job keeps in its staging folder while it computes."""


def mark_running(cube: str | os.PathLike, chunk: str) -> Path:
    """Write the chunk's running marker (start time, host, pid) into its staging folder."""
    folder = store.staging_dir(cube) / chunk
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MARKER
    integrity.write_json_atomic(path, {"started": time.time(), "host": socket.gethostname(),
                                       "pid": os.getpid()})
    return path


def clear_running(cube: str | os.PathLike, chunk: str) -> None:
    (store.staging_dir(cube) / chunk / MARKER).unlink(missing_ok=True)


def _alive(marker: dict[str, Any]) -> bool:
    """Whether the job that wrote a marker still runs (only checkable on its own host)."""
    if marker.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(marker["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError):
        return True
    return True


@dataclass
class Progress:
    """A sweep's state: per-method evaluations done and total, chunks, and the ETA."""

    name: str
    cube: Path
    total: dict[str, int]
    done: dict[str, int]
    chunks: int
    committed: int
    running: list[str] = field(default_factory=list)
    seconds_per_eval: float | None = None
    eta_s: float | None = None  # wall seconds left with the jobs running now

    @property
    def complete(self) -> bool:
        return self.committed == self.chunks

    def fraction(self) -> float:
        total = sum(self.total.values())
        return sum(self.done.values()) / total if total else 1.0

    def line(self, in_run: bool = False) -> str:
        """One line for a terminal or a job log: counts per method, chunks, what is left.

        ``in_run``: written by a chunk job as it ends, while Snakemake goes on with the
        others (no advice to start anything). Elsewhere, a sweep with no chunk job running is
        said to be stopped. What is left is job time (measured seconds per evaluation times
        the evaluations left), shared by the jobs that run at once."""
        counts = ", ".join(f"{m} {self.done[m]}/{self.total[m]}" for m in self.total)
        state = (f"{self.committed}/{self.chunks} chunks committed"
                 + (f", {len(self.running)} running" if self.running else ""))
        left = (f"about {format_time(self.job_seconds_left)} of job time left"
                if self.job_seconds_left is not None else "")
        if self.complete:
            tail = "complete"
        elif self.running or in_run:
            tail = left or "time left known after the first task finishes"
        else:
            tail = ("no chunk job running: the sweep is stopped (the same snakemake command "
                    "resumes it)" + (f"; {left}" if left else ""))
        return f"{self.name}: {100 * self.fraction():.0f}% ({counts}); {state}; {tail}"

    @property
    def job_seconds_left(self) -> float | None:
        """Seconds of job time the evaluations left need at the measured rate."""
        if self.seconds_per_eval is None:
            return None
        return (sum(self.total.values()) - sum(self.done.values())) * self.seconds_per_eval


def chunk_totals(layout: Layout, chunk: str) -> dict[str, int]:
    """Point-evaluations a chunk owes, per method (Monte Carlo only on its sub-grid)."""
    sl = layout.chunk_slices(chunk)
    n = math.prod(s.stop - s.start for s in sl)
    return {m: int(layout.mc_mask[sl].sum()) if m == "mc" else n for m in layout.methods}


def _staged_counts(folder: Path) -> tuple[dict[str, int], float | None]:
    """Evaluations in a chunk's staged task files, per method, and the newest file's time."""
    counts: dict[str, int] = {}
    newest = None
    for f in folder.glob("*.npz") if folder.exists() else []:
        try:
            with np.load(f, allow_pickle=False) as z:
                n = len(z["positions"])
                for method in {k.split("/", 1)[0] for k in z.files if "/" in k}:
                    counts[method] = counts.get(method, 0) + n
            newest = max(newest or 0.0, f.stat().st_mtime)
        except (OSError, ValueError, KeyError):  # vanished (committed meanwhile) or partial
            continue
    return counts, newest


def measure(layout: Layout, cube: str | os.PathLike, now: float | None = None) -> Progress:
    """Read the progress of ``layout``'s sweep from its cube's commit records and staging."""
    now = time.time() if now is None else now
    commits, staging = store.commits_dir(cube), store.staging_dir(cube)
    total = {m: 0 for m in layout.methods}
    done = {m: 0 for m in layout.methods}
    committed, running = 0, []
    job_seconds, evaluations = 0.0, 0
    for chunk in layout.chunk_ids():
        owed = chunk_totals(layout, chunk)
        for m, n in owed.items():
            total[m] += n
        record = commits / f"{chunk}.json"
        if record.exists():
            committed += 1
            for m, n in owed.items():
                done[m] += n
            try:
                rec = json.loads(record.read_text())
            except (OSError, ValueError):
                continue
            job_seconds += float(rec.get("seconds", 0.0))
            evaluations += sum(int(v) for v in rec.get("computed", {}).values())
            continue
        counts, _ = _staged_counts(staging / chunk)
        for m, n in counts.items():
            if m in done:
                done[m] += min(n, owed[m])
        marker = staging / chunk / MARKER
        try:
            info = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        if _alive(info):
            running.append(chunk)
            job_seconds += max(0.0, now - float(info.get("started", now)))
            evaluations += sum(counts.values())
    out = Progress(layout.name, Path(cube), total, done, layout.n_chunks, committed, running)
    if evaluations:
        out.seconds_per_eval = job_seconds / evaluations
        left = sum(total.values()) - sum(done.values())
        out.eta_s = left * out.seconds_per_eval / max(1, len(running))
    return out


def locate(target: str | os.PathLike) -> tuple[Layout, Path]:
    """The layout and cube of a results folder (results/NAME) or of a config file.

    In a results folder, the cube a chunk job is computing now, else the one cube.zarr links
    to, else the most recently started one (each carries its own config). A config file is
    resolved the way the workflow does, relative to the current directory (run it where you
    run snakemake).
    """
    p = Path(target)
    if p.is_dir():
        cubes = [c for c in sorted((p / "cubes").glob("*.zarr"))
                 if not c.name.startswith(".") and c.name.count(".") == 1]
        if not cubes:
            raise FileNotFoundError(f"{p} holds no cube: give results/NAME of a sweep that "
                                    "snakemake has started, or its config file")
        running = [c for c in cubes if any(store.staging_dir(c).glob(f"*/{MARKER}"))]
        link = p / "cube.zarr"
        linked = [link.resolve()] if link.is_symlink() and link.exists() else []

        def started(c: Path) -> float:
            try:
                return (store.commits_dir(c) / "init.json").stat().st_mtime
            except OSError:
                return 0.0

        cube = (running or linked or sorted(cubes, key=started))[-1]
        return store.layout_of(cube), cube
    layout = Layout.from_file(p)
    return layout, store.cube_path(layout)
