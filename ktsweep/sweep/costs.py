"""What a sweep will do before it runs: points, jobs, compute per method and store size.

Compute is estimated from a cost model (work ∝ d² · stretches of constant step for ``exact``,
which advances each stretch in closed form; ∝ R · d · samples for ``mc``) whose constants
come from a short calibration run on this machine.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np

from ktsweep.engines.dispatch import MCSettings, run
from ktsweep.model.inputs import fourth_moment
from ktsweep.model.params import MAX_D, MAX_SAMPLES, Point, make_point
from ktsweep.model.spectra import resolve_gamma0, student_spectrum, teacher_spectrum
from ktsweep.sweep.config import MAX_REPLICATES
from ktsweep.sweep.layout import Layout, mc_task_bytes, planning_bytes
from ktsweep.sweep.store import template

LIMITS = {"d": MAX_D, "N": MAX_SAMPLES, "n": MAX_SAMPLES, "mc.replicates": MAX_REPLICATES}
"""The limits a config is checked against (defined beside the keys; gathered for the plan)."""


def _stretches(steps: float) -> float:
    """About how many constant-step stretches a run has (log2 of its steps; 1 for a limit)."""
    return 1.0 if math.isinf(steps) else 1.0 + math.log2(1.0 + steps)


def _exact_work(p: Point) -> float:
    n_t = len(resolve_gamma0(p.gamma0_t, teacher_spectrum(p)))
    n_s = len(resolve_gamma0(p.gamma0_s, student_spectrum(p)))
    if not p.aligned and fourth_moment(p.inputs, p.inputs_nu) != 3.0:
        # rotated student, non-Gaussian inputs: students stepped on d × d matrices
        # (docs/science/geometry.md); one step at d = 200 cost about d³/6 of this
        # function's units in benchmarks/bench_geometry.py
        student = p.d**3 / 6 * n_s * (p.steps_direct + 2 * p.steps_s)
        return p.d**2 * n_t * _stretches(p.steps_t) + student
    return p.d**2 * (n_t * _stretches(p.steps_t) + n_s * (
        _stretches(p.steps_direct) + 2 * _stretches(p.steps_s)))


def _mc_work(p: Point, replicates: int) -> float:
    if math.isinf(p.N) or math.isinf(p.n):
        return 0.0  # not simulated (reported missing)
    direct = p.N if p.batch_t != p.batch_s else 0
    return replicates * (p.d + 1) * (p.N + p.n + direct)


def calibrate(settings: MCSettings, d: int = 200) -> dict[str, float]:
    """Seconds per unit of work for each method, measured here on a few points of size d."""
    d = int(min(max(d, 20), 1000))
    pts = [make_point({"alpha_t": a, "alpha_s": 2.0, "N": 4096, "n": 4096, "sigma2": 0.1,
                       "d": d}) for a in (1.25, 1.5, 2.0, 2.5)]
    ck = np.array([0, 10, 100, 1000])
    out: dict[str, float] = {}
    small = dataclasses.replace(settings, replicates=16)
    warm = pts[0].replace(N=64, n=64)
    run([warm], ["exact", "mc"], ck, small)  # first calls pay one-off costs: not timed
    t0 = time.perf_counter()
    run(pts, ["exact"], ck)
    out["exact"] = (time.perf_counter() - t0) / sum(_exact_work(p) for p in pts)
    one = pts[0].replace(N=1024, n=1024)
    t0 = time.perf_counter()
    run([one], ["mc"], ck, small)
    out["mc"] = (time.perf_counter() - t0) / _mc_work(one, 16)
    out["bound"] = out["exact"]
    return out


EXACT_PARAMS = ("d", "N", "n", "batch_t", "batch_s", "gamma0_t", "gamma0_s", "angle",
                "mixing_seed", "inputs", "inputs_nu", "alpha_t", "alpha_s", "spectrum_t",
                "spectrum_s", "r_t", "r_s")
"""The parameters :func:`_exact_work` reads (the spectra only for the length of a tune list)."""
MC_PARAMS = ("d", "N", "n", "batch_t", "batch_s")
"""The parameters :func:`_mc_work` reads."""


def plan(layout: Layout, calibrate_here: bool = True) -> dict[str, Any]:
    """A dict describing the sweep; compute estimates need ``calibrate_here``.

    Counts and work are summed over the distinct combinations of the parameters each
    estimator's cost reads (:meth:`Layout.walk`), so a 10^7-point grid plans in seconds."""
    counts = {m: 0 for m in layout.methods}
    work = {m: 0.0 for m in layout.methods}
    R = layout.config.mc.replicates
    for p, n, _ in layout.walk(EXACT_PARAMS):
        for m in layout.methods:
            if m != "mc":
                counts[m] += n
            if m == "exact" or (m == "bound" and "exact" not in layout.methods):
                work[m] += n * _exact_work(p)  # bound reuses exact's moments
    if "mc" in layout.methods:
        for p, _, n_mc in layout.walk(MC_PARAMS):
            counts["mc"] += n_mc
            work["mc"] += n_mc * _mc_work(p, R)
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
        "job_mem_mb": layout.config.jobs.mem_mb,
        "planning_bytes": planning_bytes(layout),
        "work_units": work,
    }
    if calibrate_here:
        rate = calibrate(layout.mc_settings, layout.d_max)
        info["cpu_seconds"] = {m: work[m] * rate[m] for m in layout.methods}
        info["cpu_seconds_total"] = sum(info["cpu_seconds"].values())
    return info


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def format_plan(info: dict[str, Any]) -> str:
    """Human-readable plan."""
    lines = [
        f"sweep '{info['name']}': {info['points']} points "
        + " x ".join(f"{a}[{n}]" for a, n in info["axes"].items()),
        f"jobs: {info['jobs']} (about {info['points_per_job']} points each, chunk "
        + ", ".join(f"{a}={c}" for a, c in info["chunk_shape"].items()) + ")",
        "evaluations: " + ", ".join(f"{m} {n}" for m, n in info["evaluations"].items()),
        f"store: {_human_bytes(info['store_bytes'])} uncompressed in {info['variables']} "
        "variables",
        f"planning: Snakemake holds about {_human_bytes(info['planning_bytes'])} for "
        f"{info['jobs']} jobs while it plans",
        "limits checked: " + ", ".join(f"{k} <= {v}" for k, v in info["limits"].items())
        + f"; Monte Carlo memory per task about {_human_bytes(info['mc_task_bytes'])} "
        f"(x {info['threads_per_job']} threads <= jobs.mem_mb = {info['job_mem_mb']} MB)",
    ]
    if "cpu_seconds" in info:
        per = ", ".join(f"{m} {s:.0f} s" for m, s in info["cpu_seconds"].items())
        total = info["cpu_seconds_total"]
        lines.append(f"compute (calibrated here, one core): {per}; total {total:.0f} s "
                     f"= {total / 3600:.2f} core-hours")
        lines.append(f"  wall time at {info['threads_per_job']} threads per job: about "
                     f"{total / info['threads_per_job'] / 60:.1f} min on one such job slot")
    return "\n".join(lines)
