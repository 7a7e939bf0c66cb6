"""Monte Carlo on a GPU against floors measured in the same run, and exact-vs-mc agreement.

Prints one JSON object. Cost unit as in bench_mc.py: replicate·mode·step = R·d·(steps_t +
steps_s). Measured on the device, in one run:

- Monte Carlo ns/unit, and its floor: drawing the same Gaussian inputs (one (R, B, d+1)
  ``torch.randn`` block per step, from a ``torch.Generator`` on the device) and nothing else;
- the device's copy bandwidth (one large device-to-device tensor copy);
- the same point on this machine's CPU: one thread, and every core at once (one process per
  core, one thread each: how a sweep uses a CPU node), as speed-ups of the device;
- z-scores of Monte Carlo on the device against the exact risks at three points.

Without a CUDA device it prints ``{"skipped": "..."}`` and exits 0, unless ``--device cpu``
is given: a smoke test of the same code path on the CPU.

    python benchmarks/bench_gpu.py                       # on the GPU machine (~1 min)
    python benchmarks/bench_gpu.py --quick --device cpu  # seconds, CI
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import torch
from machine import machine_info

from ktsweep.engines import exact, mc
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


def agreement(device: torch.device, replicates: int) -> dict[str, list[float]]:
    """z = (mc − exact)/se on the device at three points (α_T < α_S, α_T > α_S, equal)."""
    pts = [make_point({"alpha_t": a, "alpha_s": b, "N": 400, "n": 800, "sigma2": 0.1, "d": 40})
           for a, b in ((1.5, 2.5), (2.5, 1.5), (2.0, 2.0))]
    ex = exact.evaluate(pts)
    sim = mc.simulate(pts, replicates, seed=3, device=device)
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
        "machine": machine_info(threads, load_start),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
