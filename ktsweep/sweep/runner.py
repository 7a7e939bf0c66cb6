"""One sweep job: evaluate the missing points of a chunk as dask tasks and commit its block.

A chunk's points are split into tasks per method, each a stack of points sharing
(d, batch_t, batch_s) sorted by step count, so one task is one vectorised engine call.
Each finished task is persisted at once (an immutable file in the cube's staging area), so a
killed job keeps every finished task and its rerun computes only the rest; points already
committed in the cube are skipped. The block is committed once, status last
(:func:`ktsweep.sweep.store.commit_block`), then the chunk's record is written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from dask.utils import format_time

from ktsweep.engines.dispatch import run
from ktsweep.model.cubespec import BOUND_FLAGS, BOUND_NAMES, BoundStatus, Flag, Status
from ktsweep.model.estimators import MCSettings
from ktsweep.model.params import Point
from ktsweep.model.quantities import (
    GEOMETRY,
    SPECTRUM_FITS,
    STEP_SIZES,
    TUNE_EDGES,
    step_size_variable,
)
from ktsweep.sweep import progress, store
from ktsweep.sweep.layout import Layout
from ktsweep.sweep.store import variables

if TYPE_CHECKING:
    from distributed import Client, SpecCluster


@dataclass
class Task:
    """One engine call: a method and a stack of points (positions are flat block indices)."""

    methods: tuple[str, ...]
    positions: list[int]
    points: list[Point]
    checkpoints: np.ndarray
    mc: MCSettings


def evaluate_task(task: Task) -> dict[str, dict[str, np.ndarray]]:
    """Run one task (on a dask worker); pure function of its arguments.

    Monte Carlo runs with one torch thread on the CPU (mc.simulate's default): the job's
    parallelism is its dask workers. Monte Carlo results carry ``device``: the torch device
    this worker actually used (recorded per chunk and in the cube's ``mc_device``).
    """
    out = run(task.points, task.methods, task.checkpoints, task.mc)
    if "mc" in out:
        from ktsweep.engines.mc import resolve_device

        out["mc"]["device"] = np.array([str(resolve_device(task.mc.device))])
    return out


def _devices(results: dict[str, dict[str, np.ndarray]]) -> set[str]:
    return {str(d) for d in results.get("mc", {}).get("device", [])}


def missing(layout: Layout, block: dict[str, np.ndarray], index: Sequence[tuple[int, ...]]
            ) -> dict[str, list[int]]:
    """Flat block positions still to compute, per method (``index``: global grid indices)."""
    out: dict[str, list[int]] = {}
    for m in layout.methods:
        if m == "bound":
            todo = np.flatnonzero(block["bound_status"].reshape(-1) == BoundStatus.MISSING)
        else:
            k = layout.estimators.index(m)
            todo = np.flatnonzero(block["status"][..., k].reshape(-1) == Status.MISSING)
        out[m] = [int(p) for p in todo]
        if m == "mc":
            out[m] = [p for p in out[m] if layout.mc_selected(index[p])]
    return out


def make_tasks(layout: Layout, points: Sequence[Point], todo: dict[str, list[int]],
               workers: int = 1) -> list[Task]:
    """Group the missing points of each method into stackable, similarly long tasks.

    A group is split into at most :meth:`Layout.task_points` points per task (its method's),
    and into at least ``workers`` tasks when it has that many points, so every worker gets a
    share.
    """
    caps = {m: layout.task_points(m) for m in layout.methods}
    needs: dict[int, list[str]] = {}
    for method, positions in todo.items():
        for pos in positions:
            needs.setdefault(pos, []).append(method)
    groups: dict[tuple, list[int]] = {}
    for pos, methods in needs.items():
        p = points[pos]
        shared = tuple(m for m in methods if m != "mc")  # exact and bound share one recursion
        for key in ([shared] if shared else []) + ([("mc",)] if "mc" in methods else []):
            groups.setdefault((key, p.d, p.batch_t, p.batch_s), []).append(pos)
    tasks: list[Task] = []
    for (methods, *_), members in groups.items():
        members.sort(key=lambda i: -(points[i].steps_t + points[i].steps_s))
        cap = min(caps[m] for m in methods)
        size = max(1, min(cap, -(-len(members) // max(1, workers))))
        for lo in range(0, len(members), size):
            part = members[lo:lo + size]
            tasks.append(Task(methods, part, [points[i] for i in part], layout.checkpoints,
                              layout.mc_settings))
    tasks.sort(key=lambda t: -sum(p.steps_t + p.steps_s for p in t.points) * t.points[0].d)
    return tasks


def merge(layout: Layout, block: dict[str, np.ndarray], positions: Sequence[int], method: str,
          result: dict[str, np.ndarray], outputs: np.ndarray | None = None) -> None:
    """Place one method's results for block ``positions`` into the block arrays (in place).

    ``outputs``: the block's part of :attr:`Layout.outputs_mask`; per-mode risks and learning
    curves of the points outside it are not kept (they read NaN)."""
    shape = next(iter(block.values())).shape[: len(layout.axes)]
    where = np.unravel_index(np.array(positions), shape)
    names = variables(layout)
    if outputs is not None and not outputs[where].all():
        outside = ~outputs[where]
        result = {k: _blank(v, outside) if k.startswith(("mode_", "curve_")) else v
                  for k, v in result.items()}
    if method == "bound":
        for k in BOUND_NAMES:
            block[k][where] = Flag.codes(result[k]) if k in BOUND_FLAGS else result[k]
        block["bound_status"][where] = BoundStatus.COMPUTED
    else:
        m = layout.estimators.index(method)
        for k, spec in names.items():
            if spec.dims and spec.dims[0] == "estimator" and k in result:
                value = result[k]
                if k == "status":
                    value = Status.codes(value)
                _put(block[k], where + (m,), value)
        if method == "mc":
            for k in names:
                if k.endswith("_se") and k in result:
                    _put(block[k], where, result[k])
    for k in STEP_SIZES:
        var = step_size_variable(k, layout.axes)
        if var in block and k in result:
            block[var][where] = result[k]
    for k in TUNE_EDGES:
        if k in block and k in result:
            block[k][where] = Flag.codes(result[k])
    for k in (*SPECTRUM_FITS, *GEOMETRY):  # per-point quantities, copied as they are
        if k in block and k in result:
            block[k][where] = result[k]


def _blank(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """A copy of per-point ``values`` with the points ``rows`` set to NaN."""
    out = np.array(values, dtype=np.float64, copy=True)
    out[rows] = np.nan
    return out


def _put(target: np.ndarray, where: tuple, value: np.ndarray) -> None:
    """target[where] = value; per-mode rows narrower than the cube (smaller d) end in NaN."""
    if value.ndim > 1 and value.shape[-1] < target.shape[-1]:
        target[where] = np.nan
        target[where + (slice(0, value.shape[-1]),)] = value
    else:
        target[where] = value


def worker_specs(threads: int, gpus: int, processes: bool) -> dict[str, dict[str, Any]]:
    """Local dask workers: one per visible GPU (pinned, with a ``GPU`` resource), the rest CPU.

    A GPU worker sees only its device (CUDA_VISIBLE_DEVICES), so torch's ``cuda`` is that
    device; results do not depend on which worker ran a point (seeds come from the point).
    """
    from distributed import Nanny, Worker

    cls = Nanny if processes else Worker
    specs: dict[str, dict[str, Any]] = {}
    for i in range(gpus):
        opts: dict[str, Any] = {"nthreads": 1, "resources": {"GPU": 1}}
        if processes:
            opts["env"] = {"CUDA_VISIBLE_DEVICES": str(i)}
        specs[f"gpu{i}"] = {"cls": cls, "options": opts}
    for i in range(max(0, threads - gpus) if gpus else max(1, threads)):
        opts = {"nthreads": 1}
        if processes and gpus:
            opts["env"] = {"CUDA_VISIBLE_DEVICES": ""}
        specs[f"cpu{i}"] = {"cls": cls, "options": opts}
    return specs


def visible_gpus(layout: Layout) -> int:
    """GPUs Monte Carlo will use in this job (0 when mc is off or runs on the CPU)."""
    if "mc" not in layout.methods or layout.config.mc.device == "cpu":
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _client(threads: int, scheduler: str | None, processes: bool, gpus: int = 0
            ) -> tuple[Client, SpecCluster | None]:
    """A dask client: the given scheduler, or a local cluster sized from the job's threads."""
    from distributed import Client, LocalCluster, Scheduler, SpecCluster

    if scheduler:
        return Client(scheduler, timeout="30s"), None
    if gpus:
        sched = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
        cluster = SpecCluster(workers=worker_specs(threads, gpus, processes), scheduler=sched,
                              silence_logs=logging.ERROR)
    else:
        cluster = LocalCluster(n_workers=max(1, threads), threads_per_worker=1,
                               processes=processes, dashboard_address=":0",
                               silence_logs=logging.ERROR)
    return Client(cluster), cluster


def run_chunk(
    layout: Layout,
    chunk: str,
    cube: str | os.PathLike,
    threads: int = 1,
    scheduler: str | None = None,
    processes: bool | None = None,
    report: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Compute the missing points of ``chunk``, commit its block and write its record.

    Returns the record (summary and the commit manifest), also written to the cube's
    ``.commits/<chunk>.json``.
    """
    start = time.perf_counter()
    store.check_compatible(cube, layout)
    index, points = layout.chunk_points(chunk)
    block, damage = store.read_block(cube, layout, chunk)
    outputs = (layout.outputs_mask[layout.chunk_slices(chunk)]
               if layout.config.outputs.subgrid else None)
    for d in damage:
        report(f"[{chunk}] damaged block, all its points are recomputed: {d}")
    kept, devices = [], set()
    for f, positions, results in store.staged(cube, chunk):
        for method, result in results.items():
            merge(layout, block, positions, method, result, outputs)
        kept.append(f)
        devices |= _devices(results)
    if kept:
        report(f"[{chunk}] {len(kept)} finished tasks of an earlier run kept")
    todo = missing(layout, block, index)
    total = sum(len(v) for v in todo.values())
    summary: dict[str, Any] = {"chunk": chunk, "cube_key": store.cube_key(layout),
                               "points": len(points),
                               "computed": {m: len(v) for m, v in todo.items()},
                               "damage": damage, "staged_tasks_kept": len(kept)}
    if total == 0:
        report(f"[{chunk}] all {len(points)} points already computed; committing")
        staged_now: list[Path] = []
    else:
        progress.mark_running(cube, chunk)
        try:
            staged_now = _compute(layout, chunk, cube, points, todo, block, threads,
                                  scheduler, processes, report, devices, outputs)
        finally:
            progress.clear_running(cube, chunk)
    summary["manifest"] = store.commit_block(cube, layout, chunk, block)
    summary["seconds"] = time.perf_counter() - start
    summary["tasks"] = len(staged_now)
    summary["mc_devices"] = sorted(devices)
    store.failpoint("status")
    store.write_record(cube, chunk, summary)
    store.clear_staging(cube, chunk, kept + staged_now)
    report(f"[{chunk}] committed {len(points)} points in "
           f"{format_time(summary['seconds'])}; sweep "
           + progress.measure(layout, cube).line(in_run=True))
    return summary


def _compute(layout: Layout, chunk: str, cube: str | os.PathLike, points: Sequence[Point],
             todo: dict[str, list[int]], block: dict[str, np.ndarray], threads: int,
             scheduler: str | None, processes: bool | None, report: Callable[[str], Any],
             devices: set[str], outputs: np.ndarray | None = None) -> list[Path]:
    """Run the chunk's tasks on dask; stage and merge each as it finishes (staged files).

    Devices Monte Carlo ran on are added to ``devices``."""
    total = sum(len(v) for v in todo.values())
    if processes is None:
        processes = layout.config.dask.processes
    scheduler = scheduler or layout.config.dask.scheduler
    gpus = 0 if scheduler else visible_gpus(layout)
    tasks = make_tasks(layout, points, todo, workers=1 if scheduler else max(1, threads))
    client, cluster = _client(threads, scheduler, processes, gpus)
    done = {m: 0 for m in todo}
    files: list[Path] = []
    started = time.perf_counter()
    report(f"[{chunk}] computing {total} point-evaluations in {len(tasks)} tasks on "
           f"{'the scheduler ' + scheduler if scheduler else f'{max(1, threads)} workers'}")
    try:
        from distributed import as_completed

        futures = [client.submit(evaluate_task, t, pure=False,
                                 resources={"GPU": 1} if gpus and "mc" in t.methods else None)
                   for t in tasks]
        owner = {f.key: t for f, t in zip(futures, tasks, strict=True)}
        for fut in as_completed(futures):
            task = owner[fut.key]
            results = fut.result()
            files.append(store.stage(cube, chunk, task.positions, results))
            devices |= _devices(results)
            for method, result in results.items():
                merge(layout, block, task.positions, method, result, outputs)
                done[method] += len(task.points)
            counts = ", ".join(f"{m} {done[m]}/{len(todo[m])}" for m in todo)
            elapsed = time.perf_counter() - started
            left = elapsed * (total - sum(done.values())) / max(1, sum(done.values()))
            report(f"[{chunk}] {sum(done.values())}/{total} point-evaluations done ({counts}); "
                   f"{format_time(elapsed)} elapsed, about "
                   f"{format_time(left)} left in this chunk")
    finally:
        with _quiet_shutdown():
            if cluster is not None:  # our own workers only; a shared scheduler's stay as set
                with contextlib.suppress(Exception):
                    client.run(_silence_dask_logs)
            client.close()
            if cluster is not None:
                cluster.close()
    return files


_DASK_LOGGERS = ("distributed", "tornado", "asyncio")


def _silence_dask_logs() -> None:
    """Run on each local worker just before the cluster closes (see :func:`_quiet_shutdown`):
    a worker process's heartbeat racing the scheduler's close logs a ``CommClosedError``."""
    for name in _DASK_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)


@contextlib.contextmanager
def _quiet_shutdown() -> Iterator[None]:
    """Silence dask while it closes: closing a local cluster logs connection errors
    (``CommClosedError`` tracebacks) from comms the close itself cut, never a lost result
    (every result was collected before; a failed task raised in ``fut.result()``)."""
    loggers = [logging.getLogger(n) for n in _DASK_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def summarize(layout: Layout, cube: str | os.PathLike,
              link_at: str | os.PathLike | None = None) -> dict[str, Any]:
    """Verify the cube in full, count what is missing per method, and publish it if complete.

    Damage (any chunk missing, unreadable or unlike its commit record) is repaired so the
    next run recomputes it, and raised as :class:`StoreError`. A complete cube gets
    consolidated metadata and ``link_at`` (results/NAME/cube.zarr) is pointed at it.
    """
    check = store.health(cube, layout, full=True)
    if not check.ok:
        done = store.repair(cube, check, layout)
        raise store.StoreError("the cube is damaged:\n  " + "\n  ".join(check.problems())
                               + "\n" + "\n".join(done) + "\nrerun the same snakemake "
                               "command to recompute what was damaged")
    if check.stale:  # copied files, same content: their records learn the new times
        store.repair(cube, check, layout)
    ds = store.open_cube(cube, check=False)  # verified in full just above
    out: dict[str, Any] = {"name": layout.name, "cube_key": store.cube_key(layout),
                           "cube": str(cube), "points": layout.n_points,
                           "chunks": layout.n_chunks, "missing": {}}
    for m in layout.methods:
        if m == "bound":
            miss = int((ds["bound_status"] == BoundStatus.MISSING).sum())
        else:
            status = ds["status"].isel(estimator=layout.estimators.index(m)).values
            if m == "mc":
                miss = int(((status == Status.MISSING) & layout.mc_mask).sum())
            else:
                miss = int((status == Status.MISSING).sum())
            out[f"diverged_{m}"] = int((status == Status.DIVERGED).sum())
        if miss:
            out["missing"][m] = miss
    ds.close()
    jobs = [json.loads(p.read_text()) for p in sorted(store.commits_dir(cube).glob("c*.json"))]
    out["computed"] = {m: sum(j["computed"].get(m, 0) for j in jobs) for m in layout.methods}
    out["job_seconds"] = float(sum(j.get("seconds", 0.0) for j in jobs))
    out["unrecorded_chunks"] = check.unrecorded
    if "mc" in layout.methods:
        used = sorted({d for j in jobs for d in j.get("mc_devices", [])})
        out["mc_device"] = ",".join(used) or "none"
        group = zarr.open_group(str(cube), mode="r+", use_consolidated=False)
        if group.attrs.get("mc_device") != out["mc_device"]:
            group.attrs["mc_device"] = out["mc_device"]
            store.record_skeleton(cube, layout)
    if not out["missing"] and not check.uncommitted:
        if not store.is_consolidated(cube):
            store.consolidate(cube)
            store.record_skeleton(cube, layout)  # its metadata as ktsweep just wrote it
        store.failpoint("publish")
        if link_at is not None:
            store.link(cube, link_at)
    return out
