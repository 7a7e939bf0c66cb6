"""Exact-estimator cost per point, its speed-up over Monte Carlo, and stacked throughput.

Prints ONE JSON object.

    python benchmarks/bench_exact.py           # d = 1000, N = n = 10^5; mc R = 256
    python benchmarks/bench_exact.py --quick   # seconds (smoke test)

Monte Carlo at N = n = 10^5 would take minutes, so it is timed on a truncated run
(N = n = ``mc_samples``, same d and R) and extrapolated linearly in SGD steps; the JSON says so.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import torch
from machine import machine_info

from ktsweep.engines import exact, mc
from ktsweep.model.params import Point, make_point
from ktsweep.model.spectra import checkpoint_steps

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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions (min reported)")
    args = parser.parse_args(argv)
    load_start = os.getloadavg()[0]
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
        "machine": machine_info(default_threads, load_start),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
