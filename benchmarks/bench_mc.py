"""Monte Carlo cost per replicate·mode·step, against its random-draw floor and a NumPy loop.

Prints ONE JSON object. Convention: one point costs R·d·(steps_t + steps_s) replicate·mode·
steps, because the teacher and the direct student share every draw (one (R, B, d+1) block per
step), as do the T2S and ceiling students; so each unit covers two SGD updates.

Measured in the same run, each timing repeated (best and median reported, with the load
average at the start and end):

- the torch path (``kernel: torch``) and its floor, torch.randn of the same blocks;
- the fused CPU kernel (``kernel: fused``, numba, one thread) and its floor, the kernel's own
  generator drawing the same rows (``fused.cpu.draw_floor``);
- at the paper's size (d = 100, R = 64, N = 2000, n = 2^16, one point, one thread): the fused
  kernel per SGD update against a plain torch SGD loop (one randn, a dot and an update a
  step) and the torch path;
- a NumPy loop as paper code writes it.

    python benchmarks/bench_mc.py            # d = 1000, R = 256, N = n = 10^4 (~5 minutes)
    python benchmarks/bench_mc.py --quick    # seconds (smoke test)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from typing import Any

import numba
import numpy as np
import torch
from machine import machine_info

from ktsweep.engines import mc
from ktsweep.engines.fused import cpu as fused_cpu
from ktsweep.engines.fused import stream
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
PAPER = {"d": 100, "replicates": 64, "N": 2000, "n": 2**16, "torch_steps": 4000}
"""The paper's point size; ``torch_steps``: steps the per-update baselines are timed on."""
PAPER_QUICK = {"d": 20, "replicates": 8, "N": 100, "n": 300, "torch_steps": 200}


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


def time_fused(p: Point, replicates: int, checkpoints: np.ndarray) -> float:
    """Wall seconds of the fused CPU kernel for one point, one thread (float32)."""
    t0 = time.perf_counter()
    out = mc.simulate([p], replicates, 0, "cpu", "float32", checkpoints, kernel="fused",
                      threads=1)
    elapsed = time.perf_counter() - t0
    if out["status"][0] != "ok":
        raise RuntimeError("benchmark point diverged")
    return elapsed


def time_fused_floor(p: Point, replicates: int) -> float:
    """Seconds for the fused kernel's generator alone to draw the rows the kernel draws
    (one row of L slots per replicate and step, steps_t + steps_s steps), one thread."""
    keys = stream.round_keys(stream.point_key(0, p.key))
    sink = np.zeros(replicates, dtype=np.float32)
    t0 = time.perf_counter()
    fused_cpu.draw_floor(keys, np.uint64(0), p.d, 0, 0.0, p.batch_s, replicates,
                         p.steps_t + p.steps_s, sink)
    return time.perf_counter() - t0


def plain_torch_loop(d: int, replicates: int, steps: int) -> float:
    """Seconds for a plain torch SGD loop of one model, R replicates: per step one randn of
    the inputs and noise, a dot and an update (what a first implementation writes)."""
    lam = torch.arange(1, d + 1, dtype=torch.float32) ** -1.5
    gain = (0.5 / float(lam.sum())) * lam
    gen = torch.Generator().manual_seed(1)
    w = torch.zeros((replicates, d))
    buf = torch.empty((replicates, d + 1))
    t0 = time.perf_counter()
    for _ in range(steps):
        torch.randn((replicates, d + 1), generator=gen, out=buf)
        z = buf[:, :d]
        r = (z * w).sum(-1) - 0.3 * buf[:, d]
        w.addcmul_(z * r.unsqueeze(-1), gain, value=-1.0)
    return time.perf_counter() - t0


def spread(values: list[float]) -> dict[str, float]:
    return {"best": float(min(values)), "median": float(np.median(values))}


def paper_size(size: dict[str, int], repeat: int) -> dict[str, Any]:
    """The paper's point on one thread: fused kernel per SGD update against a plain torch
    loop and the torch path (both timed on ``torch_steps`` steps and scaled)."""
    d, R = size["d"], size["replicates"]
    p = make_point({"alpha_t": 1.0, "alpha_s": 1.5, "N": size["N"], "n": size["n"],
                    "sigma2": 0.1, "d": d})
    ck = checkpoint_steps(p.steps_max)
    updates = 2 * R * d * (p.steps_t + p.steps_s)  # a unit is two updates
    steps = size["torch_steps"]
    short = p.replace(N=steps // 2, n=steps // 2)
    fused, plain, torch_path = [], [], []
    for _ in range(repeat):  # alternating, so that all three see the same load
        fused.append(time_fused(p, R, ck) / updates * 1e9)
        plain.append(plain_torch_loop(d, R, steps) / (R * d * steps) * 1e9)
        torch_path.append(time_mc(short, R, checkpoint_steps(short.steps_max))
                          / (2 * R * d * (short.steps_t + short.steps_s)) * 1e9)
    return {
        "point": {"d": d, "N": p.N, "n": p.n, "replicates": R},
        "what": "ns per SGD update (one mode of one replicate of one model); fused: the whole "
                "point (a unit of the other sections is two updates); plain torch loop and "
                "torch path: timed on torch_steps steps (no per-point start-up in either)",
        "torch_steps": steps,
        "fused_ns_per_update": spread(fused),
        "plain_torch_loop_ns_per_update": spread(plain),
        "torch_path_ns_per_update": spread(torch_path),
        "speedup_fused_over_plain_torch_loop": float(min(plain) / min(fused)),
        "speedup_fused_over_plain_torch_loop_median": float(np.median(plain) / np.median(fused)),
        "speedup_fused_over_torch_path": float(min(torch_path) / min(fused)),
        "target_speedup_over_plain_torch_loop": {"must": 5.0, "goal": 8.0},
    }


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
    repeat = args.repeat or (1 if args.quick else 3)
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
    # the fused CPU kernel and its own generator, one thread, alternating so that both see
    # the same load; the first calls compile (or load numba's cache): not timed
    numba_threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        time_fused(bench_point(20, 50), 4, ck)
        time_fused_floor(bench_point(20, 50), 4)
        fused_times, fused_floor_times = [], []
        fused_repeat = args.repeat or (1 if args.quick else 5)
        for _ in range(fused_repeat):  # alternating: on a shared machine the best of each
            fused_times.append(time_fused(p, R, ck))  # is the least disturbed run
            fused_floor_times.append(time_fused_floor(p, R))
        paper = paper_size(PAPER_QUICK if args.quick else PAPER, fused_repeat)
    finally:
        numba.set_num_threads(numba_threads)
    fused_ns = [t / units * 1e9 for t in fused_times]
    fused_floor_ns = [t / units * 1e9 for t in fused_floor_times]
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
        "timing": "min over `repeat` runs; top-level numbers use torch's default threads; the "
                  "fused and paper sections alternate their runs and give best and median",
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
        "fused_cpu": {
            "what": "kernel: fused (numba), one thread, the whole point (host work included)",
            "ns_per_unit": spread(fused_ns),
            "floor_ns_per_unit": spread(fused_floor_ns),
            "floor_what": "fused.cpu.draw_floor: the kernel's Philox-4x32-10 and Box-Muller "
                          "rows (L = 4(ceil(d/4) + 1) slots) for every replicate and step, "
                          "one thread, nothing else",
            "ratio_over_floor_best": float(min(fused_ns) / min(fused_floor_ns)),
            "ratio_over_floor_median": float(np.median(fused_ns) / np.median(fused_floor_ns)),
            "speedup_over_torch_path_one_thread": float(mc_ns_1 / min(fused_ns)),
            "targets": {"ns_per_unit_goal": 2.0, "ratio_over_floor_must": 1.2},
        },
        "paper_size": paper,
        "numpy_replicates_run": np_reps,
        "numpy_seconds": np_time,
        "numpy_ns_per_unit": numpy_ns,
        "numpy_mean_risk_t2s": np_risk,
        "numpy_what": "per replicate, per step: numpy Generator.standard_normal(d) input and "
                      "label noise, teacher+direct updates; then n fresh inputs for "
                      "T2S+ceiling; timed on numpy_replicates_run replicates, scaled per unit",
        "ratio_numpy_over_mc": numpy_ns / mc_ns,
        "target_ratio_numpy_over_mc": 3.0,
        "machine": {**machine_info(default_threads, load_start),
                    "load_average_at_end": list(os.getloadavg())},
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
