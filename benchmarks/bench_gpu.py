"""Monte Carlo on a GPU against floors measured in the same run, and exact-vs-mc agreement.

Prints one JSON object. Cost unit as in bench_mc.py: replicate·mode·step = R·d·(steps_t +
steps_s). Measured on the device, in one run:

- Monte Carlo ns/unit, and its floor: drawing the same Gaussian inputs (one (R, B, d+1)
  ``torch.randn`` block per step, from a ``torch.Generator`` on the device) and nothing else;
- the device's copy bandwidth (one large device-to-device tensor copy);
- the same point on this machine's CPU: one thread, and every core at once (one process per
  core, one thread each: how a sweep uses a CPU node), as speed-ups of the device;
- z-scores of Monte Carlo on the device against the exact risks at three points;
- the fused kernel (``kernel: fused``; Triton on the GPU) at the same point, beside the torch
  path and the torch.randn floor above, its z-scores at the same three points, a few launch
  configurations (``fused_configs``: rows per program, warps), and the paper's point
  (d = 100, R = 64, N = 2000, n = 5·10^5), whose torch-path time is extrapolated from
  ``paper_torch_steps`` steps (a step costs the same all along; the whole point would take
  minutes).

Without a CUDA device it prints ``{"skipped": "..."}`` and exits 0, unless ``--device cpu``
is given: a smoke test of the same code path on the CPU, where the fused kernel is the numba
one, or, with ``TRITON_INTERPRET=1`` (the GPU check's rehearsal), the Triton kernel in
Triton's interpreter on tiny sizes.

    python benchmarks/bench_gpu.py                       # on the GPU machine (~2 min)
    python benchmarks/bench_gpu.py --quick --device cpu  # seconds, CI
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import torch
from machine import machine_info

from ktsweep.engines import exact, fused, mc
from ktsweep.model.params import Point, derive_seed, make_point

AGREEMENT = ("risk_teacher", "risk_direct", "risk_t2s", "risk_ceiling", "der", "w2s_ratio")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_of(fn, device: torch.device, repeat: int = 2) -> float:
    """Fastest of ``repeat`` timed calls (the first one also warms the device up)."""
    best = float("inf")
    for _ in range(repeat):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def time_mc(point: Point, replicates: int, device: torch.device) -> float:
    def call() -> None:
        if mc.simulate([point], replicates, seed=1, device=device)["status"][0] != "ok":
            raise RuntimeError("benchmark point diverged")

    return best_of(call, device)


def fused_runner(device: torch.device, config: tuple[int, int] | None = None):
    """The fused kernel to time: Triton on CUDA (with ``config`` = (rows per program, warps)
    when given), and on the CPU the interpreted Triton kernel under TRITON_INTERPRET=1, else
    numba's; None with the reason where neither can run."""
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    if device.type == "cuda" or interpreted:
        missing = fused.backend_missing(torch.device("cuda"))
        if missing:
            return None, missing
        from ktsweep.engines.fused import gpu

        if config is None:
            return gpu.run, "triton (interpreted)" if interpreted else "triton"
        return functools.partial(gpu.run, block_r=config[0], num_warps=config[1]), "triton"
    missing = fused.backend_missing(device)
    return (None, missing) if missing else (fused.runner(device), "numba")


def run_fused(points: list[Point], replicates: int, device: torch.device, run,
              seed: int = 1) -> dict[str, np.ndarray]:
    """The fused kernel ``run`` on ``points`` (as mc.simulate with kernel: fused)."""
    gam = mc.initial_step_sizes(points)
    how = mc.Sampling(replicates, seed, device, torch.float32, np.zeros(0, dtype=np.int64), False)
    return fused.simulate(points, gam, how, 1, run=run)


def time_fused(point: Point, replicates: int, device: torch.device, run,
               repeat: int = 2) -> float:
    """Fastest of ``repeat`` fused runs of ``point`` (the first compiles the kernels)."""
    def call() -> None:
        if run_fused([point], replicates, device, run)["status"][0] != "ok":
            raise RuntimeError("benchmark point diverged")

    return best_of(call, device, repeat)


def time_torch_steps(point: Point, replicates: int, device: torch.device) -> float:
    """Seconds per step of ``point`` on the torch path (teacher and student passes)."""
    seconds = time_mc(point, replicates, device)
    return seconds / (point.steps_t + point.steps_s)


def fused_section(device: torch.device, point: Point, r_dev: int, dev_s: float,
                  floor_s: float, quick: bool) -> dict[str, Any]:
    """The fused kernel beside the torch path (``dev_s``) and the floor (``floor_s``) measured
    on the same point, its agreement with exact, launch configurations, the paper's point."""
    run, what = fused_runner(device)
    if run is None:
        return {"skipped": what}
    interpreted = what.endswith("(interpreted)")  # a smoke test of the code: ~10 ms a step
    units = r_dev * point.d * (point.steps_t + point.steps_s)
    fused_s = time_fused(point, r_dev, device, run, repeat=1 if interpreted else 2)
    out: dict[str, Any] = {
        "kernel": what, "seconds": fused_s, "ns_per_unit": fused_s / units * 1e9,
        "ratio_over_torch_randn_floor": fused_s / floor_s,
        "speedup_over_torch_path": dev_s / fused_s,
        "targets": {"ns_per_unit_goal": 0.005, "speedup_over_torch_path_must": 3.0},
    }
    z = agreement(device, 512 if quick else 8000, run,
                  (40, 60) if interpreted else (400, 800))
    out["agreement_z"] = z
    out["agreement_max_abs_z"] = float(np.nanmax(np.abs([v for vs in z.values() for v in vs])))
    if device.type == "cuda":
        configs = {}
        small = point.replace(N=2000, n=2000)
        small_units = r_dev * small.d * (small.steps_t + small.steps_s)
        for cfg in ((1, 2), (1, 4), (2, 4), (4, 8)):
            cfg_run, _ = fused_runner(device, cfg)
            seconds = time_fused(small, r_dev, device, cfg_run)
            configs[f"rows{cfg[0]}_warps{cfg[1]}"] = seconds / small_units * 1e9
        out["configs_what"] = ("ns per unit at d = 1000, N = n = 2000, R as above, by rows "
                               "per program and warps (the default is launch_config's)")
        out["configs_ns_per_unit"] = configs
    paper = make_point({"alpha_t": 1.0, "alpha_s": 1.5, "sigma2": 0.1, "d": 20 if quick else 100,
                        "N": 100 if quick else 2000, "n": 200 if quick else 500_000})
    paper_r = 8 if quick else 64
    torch_steps = 50 if quick else 5000
    short = paper.replace(N=torch_steps // 2, n=torch_steps // 2)
    per_step = time_torch_steps(short, paper_r, device)
    torch_point = per_step * (paper.steps_t + paper.steps_s)
    fused_point = time_fused(paper, paper_r, device, run, repeat=1 if interpreted else 2)
    out["paper"] = {
        "point": {"d": paper.d, "N": paper.N, "n": paper.n, "replicates": paper_r},
        "fused_seconds": fused_point,
        "torch_path_seconds_extrapolated": torch_point,
        "paper_torch_steps": torch_steps,
        "speedup_fused_over_torch_path": torch_point / fused_point,
        "target_speedup_goal": 20.0,
    }
    return out


def time_draw_floor(point: Point, replicates: int, device: torch.device) -> float:
    """Seconds to only draw what mc draws for ``point``: one (R, B, d+1) block per step."""
    gen = torch.Generator(device=device).manual_seed(derive_seed(0, point.key, "floor"))
    buf = torch.empty((1, replicates, point.batch_s, point.d + 1), device=device)

    def call() -> None:
        for _ in range(point.steps_t + point.steps_s):
            torch.randn((replicates, point.batch_s, point.d + 1), generator=gen, out=buf[0])

    return best_of(call, device)


def copy_bandwidth(device: torch.device, mib: int) -> float:
    """GiB/s of one ``mib``-MiB tensor copy within the device (bytes counted once)."""
    src = torch.ones(mib * 2**18, device=device)
    dst = torch.empty_like(src)
    seconds = best_of(lambda: dst.copy_(src), device, repeat=5)
    return mib / 1024 / seconds


def _one_core(point: Point, replicates: int) -> float:
    """One process of the all-cores measurement: Monte Carlo seconds with one thread."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    mc.simulate([point], replicates, seed=1, device="cpu", threads=1)
    return time.perf_counter() - t0


def cpu_all_cores(point: Point, replicates: int, processes: int) -> float:
    """Wall seconds for ``processes`` one-thread processes each simulating ``point``."""
    ctx = multiprocessing.get_context("spawn")
    small = make_point({"alpha_t": 1.5, "alpha_s": 2.0, "N": 20, "n": 20, "sigma2": 0.1,
                        "d": 4})
    with ProcessPoolExecutor(processes, mp_context=ctx) as pool:
        list(pool.map(_one_core, [small] * processes, [2] * processes))  # start and import
        t0 = time.perf_counter()
        list(pool.map(_one_core, [point] * processes, [replicates] * processes))
        return time.perf_counter() - t0


def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"device": str(device), "torch_version": torch.__version__,
                            "cuda_version": torch.version.cuda}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update({"device_name": props.name,
                     "device_capability": f"{props.major}.{props.minor}",
                     "device_memory_gib": round(props.total_memory / 2**30, 1),
                     "device_count": torch.cuda.device_count()})
    else:
        info["device_name"] = "cpu"
    return info


def agreement(device: torch.device, replicates: int, run=None,
              samples: tuple[int, int] = (400, 800)) -> dict[str, list[float]]:
    """z = (mc − exact)/se on the device at three points (α_T < α_S, α_T > α_S, equal) of
    ``samples`` = (N, n), by the torch path, or by the fused kernel ``run``."""
    pts = [make_point({"alpha_t": a, "alpha_s": b, "N": samples[0], "n": samples[1],
                       "sigma2": 0.1, "d": 40}) for a, b in ((1.5, 2.5), (2.5, 1.5), (2.0, 2.0))]
    ex = exact.evaluate(pts)
    sim = (mc.simulate(pts, replicates, seed=3, device=device) if run is None
           else run_fused(pts, replicates, device, run, seed=3))
    return {k: [float((sim[k][i] - ex[k][i]) / sim[k + "_se"][i]) for i in range(len(pts))]
            for k in AGREEMENT}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu for a smoke test")
    args = ap.parse_args(argv)
    load_start = os.getloadavg()[0]
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        result = {"benchmark": "bench_gpu", "skipped": "no CUDA device visible",
                  "torch_version": torch.__version__}
        print(json.dumps(result))
        return result
    device = torch.device(args.device)
    d, samples = (50, 500) if args.quick else (1000, 10_000)
    r_dev, r_cpu = (64, 8) if args.quick else (4096, 32)
    point = make_point({"alpha_t": 1.5, "alpha_s": 2.0, "N": samples, "n": samples,
                        "sigma2": 0.1, "d": d})
    units = d * (point.steps_t + point.steps_s)
    cores = os.cpu_count() or 1
    processes = min(cores, 2) if args.quick else cores
    threads = torch.get_num_threads()

    dev_s = time_mc(point, r_dev, device)
    floor_s = time_draw_floor(point, r_dev, device)
    copy = copy_bandwidth(device, 16 if args.quick else 1024)
    torch.set_num_threads(1)
    cpu_s = time_mc(point, r_cpu, torch.device("cpu"))
    torch.set_num_threads(threads)
    all_s = cpu_all_cores(point, r_cpu, processes)
    reps = 512 if args.quick else 8000
    z = agreement(device, reps)
    fused_out = fused_section(device, point, r_dev, dev_s, floor_s, args.quick)

    def ns(seconds: float, replicates: int) -> float:
        return seconds / (replicates * units) * 1e9

    dev_ns, cpu_ns = ns(dev_s, r_dev), ns(cpu_s, r_cpu)
    all_ns = ns(all_s, r_cpu * processes)
    result = {
        "benchmark": "bench_gpu",
        "quick": args.quick,
        **device_info(device),
        "unit_convention": "ns per replicate·mode·step, R*d*(steps_t + steps_s) per point",
        "point": {"d": d, "N": samples, "n": samples, "steps_t": point.steps_t,
                  "steps_s": point.steps_s},
        "replicates_device": r_dev,
        "device_seconds": dev_s,
        "device_ns_per_unit": dev_ns,
        "floor_seconds": floor_s,
        "floor_ns_per_unit": ns(floor_s, r_dev),
        "floor_what": "torch.randn((R, B, d+1), generator=torch.Generator(device), out=buffer) "
                      "once per step, steps_t + steps_s steps, on the same device",
        "ratio_mc_over_floor": dev_s / floor_s,
        "copy_gib_per_s": copy,
        "copy_what": "device-to-device copy of 1 GiB (16 MiB with --quick), bytes counted once",
        "replicates_cpu": r_cpu,
        "cpu_ns_per_unit_one_thread": cpu_ns,
        "cpu_processes": processes,
        "cpu_all_cores_ns_per_unit": all_ns,
        "cpu_all_cores_what": "one one-thread process per core, each simulating the point with "
                              "replicates_cpu replicates; wall time over all their units",
        "speedup_over_cpu_one_thread": cpu_ns / dev_ns,
        "speedup_over_cpu_all_cores": all_ns / dev_ns,
        "agreement_replicates": reps,
        "agreement_z": z,
        "agreement_max_abs_z": float(np.nanmax(np.abs([v for vs in z.values() for v in vs]))),
        "fused": fused_out,
        "machine": machine_info(threads, load_start),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
