"""What a sweep will do before it runs: points, jobs, compute per method and store size.

Compute is the nominal cost model of :mod:`ktsweep.engines.cost` summed over the grid, scaled
by a short calibration run on this machine.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
from dask.utils import format_bytes

from ktsweep.engines import cost
from ktsweep.engines.dispatch import run
from ktsweep.model.estimators import MCSettings
from ktsweep.model.params import MAX_D, MAX_SAMPLES, make_point
from ktsweep.sweep.config import MAX_REPLICATES
from ktsweep.sweep.layout import Layout, mc_task_bytes, planning_bytes
from ktsweep.sweep.store import template

LIMITS = {"d": MAX_D, "N": MAX_SAMPLES, "n": MAX_SAMPLES, "mc.replicates": MAX_REPLICATES}
"""The limits a config is checked against (defined beside the keys; gathered for the plan)."""


def calibrate(settings: MCSettings, d: int = 200) -> dict[str, float]:
    """This machine's speed against the nominal cost model (:mod:`ktsweep.engines.cost`):
    measured seconds over nominal seconds for each method, on a few points of size d."""
    d = int(min(max(d, 20), 1000))
    pts = [make_point({"alpha_t": a, "alpha_s": 2.0, "N": 4096, "n": 4096, "sigma2": 0.1,
                       "d": d}) for a in (1.25, 1.5, 2.0, 2.5)]
    ck = np.array([0, 10, 100, 1000])
    small = dataclasses.replace(settings, replicates=16)
    warm = pts[0].replace(N=64, n=64)
    run([warm], ["exact", "mc"], ck, small)  # first calls pay one-off costs: not timed
    t0 = time.perf_counter()
    run(pts, ["exact"], ck)
    exact = (time.perf_counter() - t0) / sum(cost.exact_seconds(cost.Work.of(p)) for p in pts)
    one = pts[0].replace(N=1024, n=1024)
    t0 = time.perf_counter()
    run([one], ["mc"], ck, small)
    mc = (time.perf_counter() - t0) / cost.mc_seconds(cost.Work.of(one), 16)
    return {"exact": exact, "mc": mc, "bound": exact}


COST_PARAMS = ("d", "N", "n", "batch_t", "batch_s", "gamma0_t", "gamma0_s", "angle",
               "mixing_seed", "mixing_dim", "inputs", "inputs_nu", "spectrum_t", "spectrum_s")
"""The parameters the cost model reads (:class:`ktsweep.engines.cost.Work`)."""


def plan(layout: Layout, calibrate_here: bool = True) -> dict[str, Any]:
    """A dict describing the sweep; compute estimates on this machine need ``calibrate_here``.

    Counts and nominal seconds are summed over the distinct combinations of the parameters
    the cost model reads (:meth:`Layout.walk`), so a 10^7-point grid plans in seconds."""
    counts = {m: 0 for m in layout.methods}
    nominal = {m: 0.0 for m in layout.methods}
    R = layout.config.mc.replicates
    for p, n, n_mc in layout.walk(COST_PARAMS):
        w = cost.Work.of(p)
        for m in layout.methods:
            if m == "mc":
                counts[m] += n_mc
                nominal[m] += n_mc * cost.mc_seconds(w, R)
            else:
                counts[m] += n
                if m == "exact" or "exact" not in layout.methods:  # bound reuses exact's
                    nominal[m] += n * cost.exact_seconds(w)
    ds = template(layout)
    size = int(sum(v.size * v.dtype.itemsize for v in ds.data_vars.values()))
    info: dict[str, Any] = {
        "name": layout.name,
        "axes": {a: len(v) for a, v in layout.axes.items()},
        "points": layout.n_points,
        "jobs": layout.n_chunks,
        "points_per_job": int(np.prod(layout.chunks)),
        "chunk_shape": dict(zip(layout.axes, layout.chunks, strict=True)),
        "evaluations": counts,
        "store_bytes": size,
        "variables": len(ds.data_vars),
        "threads_per_job": layout.config.jobs.threads,
        "limits": LIMITS,
        "mc_task_bytes": mc_task_bytes(layout),
        "job_mem_mb": layout.job_mem_mb,
        "job_runtime_minutes": layout.job_runtime,
        "planning_bytes": planning_bytes(layout),
        "nominal_seconds": nominal,
    }
    if calibrate_here:
        rate = calibrate(layout.mc_settings, layout.d_max)
        info["cpu_seconds"] = {m: nominal[m] * rate[m] for m in layout.methods}
        info["cpu_seconds_total"] = sum(info["cpu_seconds"].values())
    return info


def format_plan(info: dict[str, Any]) -> str:
    """Human-readable plan."""
    lines = [
        f"sweep '{info['name']}': {info['points']} points "
        + " x ".join(f"{a}[{n}]" for a, n in info["axes"].items()),
        f"jobs: {info['jobs']} (about {info['points_per_job']} points each, chunk "
        + ", ".join(f"{a}={c}" for a, c in info["chunk_shape"].items()) + ")",
        "evaluations: " + ", ".join(f"{m} {n}" for m, n in info["evaluations"].items()),
        f"store: {format_bytes(info['store_bytes'])} uncompressed in {info['variables']} "
        "variables",
        f"planning: Snakemake holds about {format_bytes(info['planning_bytes'])} for "
        f"{info['jobs']} jobs while it plans",
        "limits checked: " + ", ".join(f"{k} <= {v}" for k, v in info["limits"].items())
        + f"; Monte Carlo memory per task about {format_bytes(info['mc_task_bytes'])} "
        f"(x {info['threads_per_job']} threads); a job requests {info['job_mem_mb']} MB "
        f"and {info['job_runtime_minutes']} minutes",
    ]
    if "cpu_seconds" in info:
        per = ", ".join(f"{m} {s:.0f} s" for m, s in info["cpu_seconds"].items())
        total = info["cpu_seconds_total"]
        lines.append(f"compute (calibrated here, one core): {per}; total {total:.0f} s "
                     f"= {total / 3600:.2f} core-hours")
        lines.append(f"  wall time at {info['threads_per_job']} threads per job: about "
                     f"{total / info['threads_per_job'] / 60:.1f} min on one such job slot")
    return "\n".join(lines)
