"""One sweep job: evaluate the missing points of a chunk as dask tasks and write its block.

A chunk's points are split into tasks per method, each a stack of points sharing
(d, batch_t, batch_s) sorted by step count, so one task is one vectorised engine call.
Points already in the cube are skipped, which makes a rerun after a kill, or after new
values were added to an axis, compute only what is missing. The block is gathered in this
process and written once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ktsweep.engines.bounds import BOUND_NAMES
from ktsweep.engines.dispatch import MCSettings, run
from ktsweep.model.params import Point
from ktsweep.model.quantities import STATUS, STEP_SIZES, TUNE_EDGES, step_size_variable
from ktsweep.sweep.layout import Layout
from ktsweep.sweep.store import check_compatible, read_block, variables, write_block


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
    parallelism is its dask workers.
    """
    return run(task.points, task.methods, task.checkpoints, task.mc)


def missing(layout: Layout, block: dict[str, np.ndarray], index: Sequence[tuple[int, ...]]
            ) -> dict[str, list[int]]:
    """Flat block positions still to compute, per method (``index``: global grid indices)."""
    out: dict[str, list[int]] = {}
    for m in layout.methods:
        if m == "bound":
            todo = np.flatnonzero(block["bound_status"].reshape(-1) == 0)
        else:
            k = layout.estimators.index(m)
            todo = np.flatnonzero(block["status"][..., k].reshape(-1) == 0)
        if m == "mc":
            todo = [p for p in todo if layout.mc_selected(index[p])]
        out[m] = [int(p) for p in todo]
    return out


def make_tasks(layout: Layout, points: Sequence[Point], todo: dict[str, list[int]],
               workers: int = 1) -> list[Task]:
    """Group the missing points of each method into stackable, similarly long tasks.

    A group is split into at most ``points_per_task`` points per task, and into at least
    ``workers`` tasks when it has that many points, so every worker gets a share.
    """
    cap = layout.config.jobs.points_per_task
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
        size = max(1, min(cap, -(-len(members) // max(1, workers))))
        for lo in range(0, len(members), size):
            part = members[lo:lo + size]
            tasks.append(Task(methods, part, [points[i] for i in part], layout.checkpoints,
                              layout.mc_settings))
    tasks.sort(key=lambda t: -sum(p.steps_t + p.steps_s for p in t.points) * t.points[0].d)
    return tasks


def merge(layout: Layout, block: dict[str, np.ndarray], positions: Sequence[int], method: str,
          result: dict[str, np.ndarray]) -> None:
    """Place one method's results for block ``positions`` into the block arrays (in place)."""
    shape = next(iter(block.values())).shape[: len(layout.axes)]
    where = np.unravel_index(np.array(positions), shape)
    names = variables(layout)
    if method == "bound":
        for k in BOUND_NAMES:
            block[k][where] = result[k]
        block["bound_status"][where] = 1
    else:
        m = layout.estimators.index(method)
        for k, (dims, _) in names.items():
            if dims and dims[0] == "estimator" and k in result:
                value = result[k]
                if k == "status":
                    value = np.array([STATUS.index(str(s)) for s in value], dtype=np.int8)
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
            block[k][where] = result[k]


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


def _client(threads: int, scheduler: str | None, processes: bool, gpus: int = 0):
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
    """Compute the missing points of ``chunk`` and write its block; returns a summary."""
    start = time.perf_counter()
    check_compatible(cube, layout)
    index, points = layout.chunk_points(chunk)
    block = read_block(cube, layout, chunk)
    todo = missing(layout, block, index)
    total = sum(len(v) for v in todo.values())
    summary: dict[str, Any] = {"chunk": chunk, "layout_key": layout.layout_key(),
                               "points": len(points),
                               "computed": {m: len(v) for m, v in todo.items()}}
    if total == 0:
        report(f"[{chunk}] all {len(points)} points already in the cube; nothing to do")
        summary["seconds"] = time.perf_counter() - start
        return summary
    if processes is None:
        processes = layout.config.dask.processes
    scheduler = scheduler or layout.config.dask.scheduler
    gpus = 0 if scheduler else visible_gpus(layout)
    tasks = make_tasks(layout, points, todo, workers=1 if scheduler else max(1, threads))
    client, cluster = _client(threads, scheduler, processes, gpus)
    done = {m: 0 for m in todo}
    try:
        from distributed import as_completed

        futures = [client.submit(evaluate_task, t, pure=False,
                                 resources={"GPU": 1} if gpus and "mc" in t.methods else None)
                   for t in tasks]
        owner = {f.key: t for f, t in zip(futures, tasks, strict=True)}
        for fut in as_completed(futures):
            task = owner[fut.key]
            for method, result in fut.result().items():
                merge(layout, block, task.positions, method, result)
                done[method] += len(task.points)
            counts = ", ".join(f"{m} {done[m]}/{len(todo[m])}" for m in todo)
            report(f"[{chunk}] {sum(done.values())}/{total} point-evaluations done ({counts})")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    write_block(cube, layout, chunk, block)
    summary["seconds"] = time.perf_counter() - start
    summary["tasks"] = len(tasks)
    return summary


def summarize(layout: Layout, cube: str | os.PathLike, markers: Sequence[str] = ()
              ) -> dict[str, Any]:
    """Completeness of the cube (points still missing per method) and job totals."""
    import json

    from ktsweep.sweep.store import open_cube

    ds = open_cube(cube)
    out: dict[str, Any] = {"name": layout.name, "points": layout.n_points,
                           "chunks": layout.n_chunks, "missing": {}}
    for m in layout.methods:
        if m == "bound":
            miss = int((ds["bound_status"] == 0).sum())
        else:
            status = ds["status"].isel(estimator=layout.estimators.index(m)).values
            if m == "mc":
                miss = int(((status == 0) & layout.mc_mask).sum())
            else:
                miss = int((status == 0).sum())
            out[f"diverged_{m}"] = int((status == 2).sum())
        if miss:
            out["missing"][m] = miss
    jobs = [json.loads(Path(p).read_text()) for p in markers]
    out["computed"] = {m: sum(j["computed"].get(m, 0) for j in jobs) for m in layout.methods}
    out["job_seconds"] = float(sum(j.get("seconds", 0.0) for j in jobs))
    return out
