"""Exact-estimator cost per point: at any horizon (closed form per stretch) against the step
recursion, its speed-up over Monte Carlo, stacked throughput and a sweep through the workflow.

Prints ONE JSON object.

    python benchmarks/bench_exact.py           # all parts (about 10 minutes on 2 cores)
    python benchmarks/bench_exact.py --quick   # seconds (smoke test; no workflow sweep)
    python benchmarks/bench_exact.py --only horizons,big_d,sweep   # issue 8's parts only
    python benchmarks/bench_exact.py --only revisits   # a sweep revisiting more maps than fit

Horizons (issue 8): one point (all four runs), d = 1000, α_T = 1.5, α_S = 2, N = n ∈ {2^12,
2^20, 2^30, 2^40}, each timed from a cold cache of stretch maps (``cold``: a lone point) and
again with its maps cached and used before (``warm``: the steady state of a sweep over N, n,
whose geometric schedules of every horizon share their steps γ0·2^-j). The step recursion
(the previous engine, kept as the reference) is timed side by side where affordable.

Monte Carlo at N = n = 10^5 would take minutes, so it is timed on a truncated run
(N = n = ``mc_samples``, same d and R) and extrapolated linearly in SGD steps; the JSON says so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from machine import machine_info

from ktsweep.engines import exact, mc, stretch
from ktsweep.engines.moments import evolve_steps
from ktsweep.model.params import Point, make_point
from ktsweep.model.spectra import checkpoint_steps

REPO = Path(__file__).resolve().parents[1]
HORIZONS = {"d": 1000, "exps": [12, 20, 30, 40], "step_exps": [12, 20], "big_d": 10_000,
            "big_exp": 30, "sweep_d": 200, "sweep_axis": 10, "sweep_part": (2, 2, 10, 10, 5),
            "repeat": 9, "revisit_exp": 20}
HORIZONS_QUICK = {"d": 60, "exps": [8, 12, 20], "step_exps": [8, 12], "big_d": 200,
                  "big_exp": 16, "sweep_d": 20, "sweep_axis": 3, "sweep_part": (1, 1, 3, 3, 1),
                  "repeat": 1, "revisit_exp": 12}

DEFAULT = {"d": 1000, "samples": 100_000, "mc_samples": 10_000, "replicates": 256,
           "stack_points": 32, "stack_samples": 10_000}
QUICK = {"d": 50, "samples": 2000, "mc_samples": 200, "replicates": 16, "stack_points": 4,
         "stack_samples": 500}


def bench_point(d: int, samples: int, alpha_t: float = 1.0, sigma2: float = 0.1) -> Point:
    """A KD point (α_T < α_S = 1.5), gaussian target, batch 1, geometric schedules."""
    return make_point({"alpha_t": alpha_t, "alpha_s": 1.5, "N": samples, "n": samples,
                       "sigma2": sigma2, "d": d})


def timed(fn, repeat: int) -> list[float]:
    """Wall seconds of ``repeat`` calls of ``fn``."""
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def horizon_point(d: int, exp: int) -> Point:
    """Issue 8's point: d, α_T = 1.5, α_S = 2, N = n = 2^exp, defaults otherwise."""
    return make_point({"alpha_t": 1.5, "alpha_s": 2.0, "N": 2**exp, "n": 2**exp,
                       "sigma2": 0.1, "d": d})


def clocked(fn) -> tuple[Any, float, float]:
    """``fn()``, its wall seconds and the CPU seconds of this process (all threads) meanwhile.

    The CPU time is what a busy shared machine does not inflate: with other jobs on the
    cores, wall time grows with their load while CPU time stays the work done.
    """
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def horizons(size: dict[str, Any]) -> dict[str, Any]:
    """Closed form (cold and warm cache) against the step recursion at growing N = n.

    Every cost is given as wall and CPU seconds, the best (least CPU) of ``repeat`` runs for
    both engines alike; ratios are taken in the same run on both. The horizons take turns
    within each repeat (2^12, 2^20, …, then again), so that a slow spell of this shared
    machine, which lasts seconds, lands on every horizon alike instead of on whichever was
    being timed (timing each horizon's repeats back to back once gave a flatness of 2.1 where
    interleaved runs of the same code gave 1.4).
    """
    points = {e: horizon_point(size["d"], e) for e in size["exps"]}
    cks = {e: checkpoint_steps(p.steps_max) for e, p in points.items()}

    def run(e: int, **kw):
        return exact.evaluate([points[e]], cks[e], **kw)

    cold: dict[int, list] = {e: [] for e in points}
    steps: dict[int, list] = {e: [] for e in size["step_exps"]}
    work = {}
    for _ in range(size["repeat"]):
        for e in points:
            stretch.clear_cache()
            cold[e].append(clocked(lambda e=e: run(e)))
            work[e] = stretch.cache_stats()  # what the cold point needed, free of noise
            if e in steps:
                steps[e].append(clocked(lambda e=e: run(e, solver=evolve_steps)))
    # warm: the steady state of a sweep, every horizon's maps cached and used before
    stretch.clear_cache()
    for e in points:
        run(e)
    warm: dict[int, list] = {e: [] for e in points}
    for _ in range(size["repeat"]):
        for e in points:
            warm[e].append(clocked(lambda e=e: run(e)))
    rows = []
    for e in points:
        fast, cold_wall, cold_cpu = min(cold[e], key=lambda r: r[2])
        _, warm_wall, warm_cpu = min(warm[e], key=lambda r: r[2])
        row = {"exp": e, "fast_cold_seconds": cold_wall, "fast_warm_seconds": warm_wall,
               "fast_cold_cpu_seconds": cold_cpu, "fast_warm_cpu_seconds": warm_cpu,
               "fast_cold_cpu_median_seconds": float(np.median([r[2] for r in cold[e]])),
               "maps": work[e]["maps"], "roots": work[e]["roots"],
               "risk_t2s": float(fast["risk_t2s"][0])}
        if e in steps:
            ref, wall, cpu = min(steps[e], key=lambda r: r[2])
            row["steps_seconds"], row["steps_cpu_seconds"] = wall, cpu
            row["max_rel_diff_risks"] = max(
                abs(float(fast[k][0]) / float(ref[k][0]) - 1.0)
                for k in ("risk_teacher", "risk_direct", "risk_t2s", "risk_ceiling"))
        rows.append(row)
    by = {r["exp"]: r for r in rows}
    lo, hi = size["step_exps"][-1], size["exps"][-1]
    return {
        "horizon_d": size["d"],
        "horizon_rows": rows,
        "flatness_cold": by[hi]["fast_cold_seconds"] / by[lo]["fast_cold_seconds"],
        "flatness_cold_cpu": by[hi]["fast_cold_cpu_seconds"] / by[lo]["fast_cold_cpu_seconds"],
        "flatness_cold_cpu_median": by[hi]["fast_cold_cpu_median_seconds"]
        / by[lo]["fast_cold_cpu_median_seconds"],
        "flatness_roots": by[hi]["roots"] / by[lo]["roots"],
        "flatness_warm_cpu": by[hi]["fast_warm_cpu_seconds"] / by[lo]["fast_warm_cpu_seconds"],
        "flatness_what": f"cost at N = n = 2^{hi} / at 2^{lo} (issue 8 must: <= 1.5); cold: "
                         "no stretch map cached (a lone point); warm: its maps cached and "
                         "used before, the steady state of a sweep over N and n; roots: "
                         "the secular roots a cold point needs, its cost without the noise; "
                         "median: of the cold runs, where the best of them is luck's",
        "speedup_over_steps": by[lo]["steps_seconds"] / by[lo]["fast_cold_seconds"],
        "speedup_over_steps_cpu": by[lo]["steps_cpu_seconds"] / by[lo]["fast_cold_cpu_seconds"],
        "speedup_over_steps_warm_cpu": by[lo]["steps_cpu_seconds"]
        / by[lo]["fast_warm_cpu_seconds"],
        "speedup_what": f"step recursion / closed form at N = n = 2^{lo} (must: >= 15), wall "
                        "and CPU, cold cache unless named warm",
        "seconds_per_point_goal": 0.5,
    }


def revisits(size: dict[str, Any]) -> dict[str, Any]:
    """Six (α_T, α_S) points swept three times (d, N = n = 2^20): the first pass finds every
    map's roots, the later ones reuse them from the cache (compiled maps keep no C, so at
    d = 1000 the cache holds roots only, about 90 KB a map)."""
    pts = [make_point({"alpha_t": a, "alpha_s": a + 0.5, "N": 2 ** size["revisit_exp"],
                       "n": 2 ** size["revisit_exp"], "sigma2": 0.1, "d": size["d"]})
           for a in (1.5, 1.75, 2.0, 2.25, 2.5, 2.75)]
    ck = checkpoint_steps(pts[0].steps_max)
    stretch.clear_cache()
    passes = [clocked(lambda: [exact.evaluate([p], ck) for p in pts])[2] for _ in range(3)]
    held = stretch.cache_stats()["bytes"]
    return {"revisit_cpu_seconds_per_pass": passes, "revisit_points": len(pts),
            "revisit_speedup_third_over_first": passes[0] / passes[2],
            "revisit_cache_mb_held": held / 2**20,
            "revisit_cache_mb_budget": stretch._CACHE_BYTES / 2**20}


def big_d(size: dict[str, Any]) -> dict[str, Any]:
    """One point at d = 10^4, N = n = 2^30 (closed form, cold cache)."""
    p = horizon_point(size["big_d"], size["big_exp"])
    stretch.clear_cache()
    out, wall, cpu = clocked(lambda: exact.evaluate([p], checkpoint_steps(p.steps_max)))
    return {"big_d": size["big_d"], "big_exp": size["big_exp"], "big_d_seconds": wall,
            "big_d_cpu_seconds": cpu, "big_d_status": str(out["status"][0]),
            "big_d_goal_seconds": 60}


def sweep(size: dict[str, Any]) -> dict[str, Any]:
    """Exact-only sweep at d = 200, N, n up to 2^30: a part of a 10^5-point grid through the
    real workflow (snakemake --cores 2 up to the cube), rate and extrapolation."""
    k = size["sweep_axis"]
    full = {"alpha_t": [1.2 + 0.1 * i for i in range(k)],
            "alpha_s": [1.5 + 0.15 * i for i in range(k)],
            "N": [2 ** (3 + 27 * i // max(1, k - 1)) for i in range(k)],
            "n": [2 ** (3 + 27 * i // max(1, k - 1)) for i in range(k)],
            "sigma2": [0.02 * (i + 1) for i in range(k)]}
    part = {ax: vals[:m] for (ax, vals), m in zip(full.items(), size["sweep_part"], strict=True)}
    n_full = k**5
    n_part = 1
    for v in part.values():
        n_part *= len(v)
    cfg = {"name": "exact_rate", "grid": part, "fixed": {"d": size["sweep_d"]},
           "methods": ["exact"], "outputs": {"modes": False}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        path = work / "rate.yaml"
        path.write_text(json.dumps(cfg))
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"),
               "--directory", str(work), "--configfile", str(path), "--cores", "2",
               "sweep", "-q"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rate = n_part / wall
    return {"sweep_points": n_part, "sweep_seconds": wall, "sweep_points_per_second": rate,
            "sweep_cpu_seconds": cpu, "sweep_points_per_cpu_second": n_part / cpu,
            "sweep_points_per_second_two_free_cores": 2 * n_part / cpu,
            "sweep_cpu_what": "CPU of snakemake and every job it ran (all processes); the "
                              "two-free-cores rate assumes both cores were ours and busy, an "
                              "upper bound the wall rate reaches on an idle machine",
            "sweep_full_points": n_full, "sweep_full_hours_extrapolated": n_full / rate / 3600,
            "sweep_what": f"exact only, d = {size['sweep_d']}, N, n in 2^3..2^30, through "
                          "snakemake --cores 2 up to the cube (startup included); the full "
                          "grid is extrapolated linearly in points"}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions (min reported)")
    parser.add_argument("--only", default="", help="comma list of parts: mc, horizons, "
                        "big_d, revisits, sweep (default: all)")
    args = parser.parse_args(argv)
    parts = set(filter(None, args.only.split(","))) or (
        {"mc", "horizons", "big_d", "revisits"} if args.quick
        else {"mc", "horizons", "big_d", "revisits", "sweep"})
    load_start = os.getloadavg()[0]
    hsize = HORIZONS_QUICK if args.quick else HORIZONS
    extra: dict[str, Any] = {}
    if "horizons" in parts:
        extra.update(horizons(hsize))
    if "big_d" in parts:
        extra.update(big_d(hsize))
    if "revisits" in parts:
        extra.update(revisits(hsize))
    if "sweep" in parts:
        extra.update(sweep(hsize))
    if "mc" not in parts:
        result = {"benchmark": "bench_exact", "quick": args.quick, **extra,
                  "machine": machine_info(torch.get_num_threads(), load_start)}
        print(json.dumps(result))
        return result
    size = QUICK if args.quick else DEFAULT
    d, R = size["d"], size["replicates"]

    p = bench_point(d, size["samples"])
    ck = checkpoint_steps(p.steps_max)
    exact.evaluate([bench_point(20, 100)], ck)  # warm-up
    exact_times = timed(lambda: exact.evaluate([p], ck), args.repeat)
    exact_s = min(exact_times)

    q = bench_point(d, size["mc_samples"])
    ck_q = checkpoint_steps(max(q.steps_t, q.steps_s))
    mc.simulate([bench_point(20, 50)], 4, 0, "cpu")  # warm-up
    default_threads = torch.get_num_threads()
    mc_times = timed(lambda: mc.simulate([q], R, 0, "cpu", "float32", ck_q), 1)
    torch.set_num_threads(1)  # also with one intra-op thread (see bench_mc)
    try:
        mc_times_1 = timed(lambda: mc.simulate([q], R, 0, "cpu", "float32", ck_q), 1)
    finally:
        torch.set_num_threads(default_threads)
    scale = (p.steps_t + p.steps_s) / (q.steps_t + q.steps_s)
    mc_extrapolated = min(mc_times) * scale
    mc_extrapolated_1 = min(mc_times_1) * scale

    stack = [bench_point(d, size["stack_samples"], alpha_t=1.0 + 0.02 * i,
                         sigma2=0.1 * (1 + i % 4)) for i in range(size["stack_points"])]
    ck_s = checkpoint_steps(size["stack_samples"])
    stacked = timed(lambda: exact.evaluate(stack, ck_s), max(1, args.repeat - 1))
    single = timed(lambda: exact.evaluate(stack[:1], ck_s), args.repeat)
    P = len(stack)

    result = {
        "benchmark": "bench_exact",
        "quick": args.quick,
        "point": {k: v for k, v in p.as_dict().items() if v is not None},
        "checkpoints": len(ck),
        "exact_seconds": exact_times,
        "exact_seconds_per_point": exact_s,
        "exact_ns_per_mode_step": exact_s / (d * (2 * p.steps_t + 2 * p.steps_s)) * 1e9,
        "exact_ns_per_mode_step_what": "per mode per step of each of the 4 runs "
                                       "(teacher, direct, ceiling, T2S)",
        "mc_replicates": R,
        "mc_measured_samples": size["mc_samples"],
        "mc_measured_seconds": mc_times,
        "mc_extrapolation": f"mc timed at N = n = {size['mc_samples']} (same d, R, float32, "
                            f"CPU) and extrapolated linearly in SGD steps (x{scale:g}) to "
                            f"N = n = {size['samples']}; not run at full size",
        "mc_seconds_per_point_extrapolated": mc_extrapolated,
        "speedup_exact_over_mc": mc_extrapolated / exact_s,
        "mc_measured_seconds_one_thread": mc_times_1,
        "mc_seconds_per_point_extrapolated_one_thread": mc_extrapolated_1,
        "speedup_exact_over_mc_one_thread": mc_extrapolated_1 / exact_s,
        "stack_points": P,
        "stack_samples": size["stack_samples"],
        "stack_seconds": stacked,
        "stack_seconds_per_point": min(stacked) / P,
        "single_seconds_at_stack_size": single,
        "stacking_gain": min(single) / (min(stacked) / P),
        "stacking_gain_what": "time of one point alone / per-point time when stacked (>1: "
                              "stacking helps)",
        "timing": "min over repeats",
        **extra,
        "machine": machine_info(default_threads, load_start),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
