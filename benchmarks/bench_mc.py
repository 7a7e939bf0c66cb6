"""Monte Carlo cost per replicate·mode·step, against its random-draw floor and a NumPy loop.

Prints ONE JSON object. Convention: one point costs R·d·(steps_t + steps_s) replicate·mode·
steps, because the teacher and the direct student share every draw (one (R, B, d+1) block per
step), as do the T2S and ceiling students; so each unit covers two SGD updates.

    python benchmarks/bench_mc.py            # d = 1000, R = 256, N = n = 10^4
    python benchmarks/bench_mc.py --quick    # seconds (smoke test)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from typing import Any

import numpy as np
import torch
from machine import machine_info

from ktsweep.engines import mc
from ktsweep.model.params import Point, derive_seed, make_point
from ktsweep.model.spectra import (
    checkpoint_steps,
    resolve_gamma0,
    schedule_phases,
    step_sizes,
    student_spectrum,
    teacher_spectrum,
)

DEFAULT = {"d": 1000, "replicates": 256, "samples": 10_000, "numpy_replicates": 8}
QUICK = {"d": 50, "replicates": 16, "samples": 200, "numpy_replicates": 2}


def bench_point(d: int, samples: int) -> Point:
    """A KD point (α_T = 1 < α_S = 1.5), gaussian target, batch 1, geometric schedules."""
    return make_point({"alpha_t": 1.0, "alpha_s": 1.5, "N": samples, "n": samples,
                       "sigma2": 0.1, "d": d})


def time_mc(p: Point, replicates: int, checkpoints: np.ndarray) -> float:
    """Wall seconds of ``mc.simulate`` for one point on the CPU (float32)."""
    t0 = time.perf_counter()
    out = mc.simulate([p], replicates, 0, "cpu", "float32", checkpoints)
    elapsed = time.perf_counter() - t0
    if out["status"][0] != "ok":
        raise RuntimeError("benchmark point diverged")
    return elapsed


def time_draw_floor(p: Point, replicates: int) -> float:
    """Seconds to only draw what ``mc`` draws: one (R, B, d+1) torch.randn block per step."""
    gen = torch.Generator().manual_seed(derive_seed(0, p.key, "floor"))
    buf = torch.empty((1, replicates, p.batch_s, p.d + 1))
    t0 = time.perf_counter()
    for _ in range(p.steps_t + p.steps_s):
        torch.randn((replicates, p.batch_s, p.d + 1), generator=gen, out=buf[0])
    return time.perf_counter() - t0


def numpy_replicate(p: Point, rng: np.random.Generator) -> float:
    """One replicate of all four runs, the way paper code loops: returns the T2S risk.

    Needs batch 1 and the direct student's steps equal to the teacher's (N samples each).

    Teacher and direct student see the same N labelled samples; T2S and ceiling students
    see the same n fresh inputs (teacher labels vs noisy true labels).
    """
    d, sigma = p.d, math.sqrt(p.sigma2)
    lam_t, lam_s = teacher_spectrum(p), student_spectrum(p)
    sq_t, sq_s = np.sqrt(lam_t), np.sqrt(lam_s)
    g_t = step_sizes(schedule_phases(p.schedule_t, resolve_gamma0(p.gamma0_t, lam_t)[0],
                                     p.steps_t, p.plan_t), p.steps_t)
    gamma_s = resolve_gamma0(p.gamma0_s, lam_s)[0]
    g_d = step_sizes(schedule_phases(p.schedule_s, gamma_s, p.steps_direct, p.steps_direct),
                     p.steps_direct)
    g_s = step_sizes(schedule_phases(p.schedule_s, gamma_s, p.steps_s, p.plan_s), p.steps_s)
    theta = sq_t * rng.standard_normal(d)  # semantic target, gaussian kind
    w_t, w_d = np.zeros(d), np.zeros(d)
    for t in range(p.steps_t):
        z = rng.standard_normal(d)
        y = theta @ z + sigma * rng.standard_normal()
        phi_t, phi_s = sq_t * z, sq_s * z
        w_t -= g_t[t] * phi_t * (w_t @ phi_t - y)
        w_d -= g_d[t] * phi_s * (w_d @ phi_s - y)
    w_s, w_c = np.zeros(d), np.zeros(d)
    for t in range(p.steps_s):
        z = rng.standard_normal(d)
        phi_t, phi_s = sq_t * z, sq_s * z
        y_hat = w_t @ phi_t
        y = theta @ z + sigma * rng.standard_normal()
        w_s -= g_s[t] * phi_s * (w_s @ phi_s - y_hat)
        w_c -= g_s[t] * phi_s * (w_c @ phi_s - y)
    return 0.5 * float(np.sum((sq_s * w_s - theta) ** 2))


def time_numpy(p: Point, replicates: int) -> tuple[float, float]:
    """Seconds for ``replicates`` NumPy replicates, and the mean T2S risk (sanity)."""
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    risks = [numpy_replicate(p, rng) for _ in range(replicates)]
    return time.perf_counter() - t0, float(np.mean(risks))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed repetitions of mc and floor (min is reported)")
    args = parser.parse_args(argv)
    load_start = os.getloadavg()[0]
    size = QUICK if args.quick else DEFAULT
    repeat = args.repeat or (1 if args.quick else 2)
    p = bench_point(size["d"], size["samples"])
    R = size["replicates"]
    ck = checkpoint_steps(p.steps_max)
    units = R * p.d * (p.steps_t + p.steps_s)

    mc.simulate([bench_point(20, 50)], 4, 0, "cpu")  # warm-up (imports, allocator)
    default_threads = torch.get_num_threads()
    mc_times = [time_mc(p, R, ck) for _ in range(repeat)]
    floor_times = [time_draw_floor(p, R) for _ in range(repeat)]
    # the same with one intra-op thread: on a small shared box OpenMP can cost more than it gives
    torch.set_num_threads(1)
    try:
        mc_times_1 = [time_mc(p, R, ck) for _ in range(repeat)]
        floor_times_1 = [time_draw_floor(p, R) for _ in range(repeat)]
    finally:
        torch.set_num_threads(default_threads)
    np_reps = size["numpy_replicates"]
    np_time, np_risk = time_numpy(p, np_reps)
    np_units = np_reps * p.d * (p.steps_t + p.steps_s)

    mc_ns = min(mc_times) / units * 1e9
    floor_ns = min(floor_times) / units * 1e9
    mc_ns_1 = min(mc_times_1) / units * 1e9
    floor_ns_1 = min(floor_times_1) / units * 1e9
    numpy_ns = np_time / np_units * 1e9
    result = {
        "benchmark": "bench_mc",
        "quick": args.quick,
        "point": {k: v for k, v in p.as_dict().items() if v is not None},
        "replicates": R,
        "steps_t": p.steps_t,
        "steps_s": p.steps_s,
        "checkpoints": len(ck),
        "unit_convention": "replicate*mode*step = R*d*(steps_t + steps_s): teacher+direct "
                           "share one draw per step, T2S+ceiling share one draw per step, so "
                           "each unit covers two SGD updates of one mode",
        "units": units,
        "timing": "min over `repeat` runs; top-level numbers use torch's default threads",
        "repeat": repeat,
        "mc_seconds": mc_times,
        "mc_ns_per_unit": mc_ns,
        "floor_seconds": floor_times,
        "floor_ns_per_unit": floor_ns,
        "floor_what": "torch.randn((R, B, d+1), generator=torch.Generator, out=buffer) once "
                      "per step for steps_t + steps_s steps (the draws of literal SGD)",
        "ratio_mc_over_floor": mc_ns / floor_ns,
        "target_ratio_mc_over_floor": 1.5,
        "one_thread": {
            "mc_seconds": mc_times_1,
            "mc_ns_per_unit": mc_ns_1,
            "floor_seconds": floor_times_1,
            "floor_ns_per_unit": floor_ns_1,
            "ratio_mc_over_floor": mc_ns_1 / floor_ns_1,
            "ratio_numpy_over_mc": numpy_ns / mc_ns_1,
        },
        "numpy_replicates_run": np_reps,
        "numpy_seconds": np_time,
        "numpy_ns_per_unit": numpy_ns,
        "numpy_mean_risk_t2s": np_risk,
        "numpy_what": "per replicate, per step: numpy Generator.standard_normal(d) input and "
                      "label noise, teacher+direct updates; then n fresh inputs for "
                      "T2S+ceiling; timed on numpy_replicates_run replicates, scaled per unit",
        "ratio_numpy_over_mc": numpy_ns / mc_ns,
        "target_ratio_numpy_over_mc": 3.0,
        "machine": machine_info(default_threads, load_start),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
