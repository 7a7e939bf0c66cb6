"""Monte Carlo on a GPU: throughput against the CPU in the same run, and exact-vs-mc agreement.

Prints one JSON object. Without a CUDA device it prints ``{"skipped": "..."}`` and exits 0,
unless ``--device cpu`` is given (a smoke test of the same code path on the CPU).
Cost unit as in bench_mc.py: replicate·mode·step = R·d·(steps_t + steps_s).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np
import torch
from machine import machine_info

from ktsweep.engines import exact, mc
from ktsweep.model.params import make_point


def _timed_mc(point, replicates: int, device: str) -> float:
    """Best of two runs, synchronised so GPU time is really spent."""
    best = float("inf")
    for _ in range(2):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        mc.simulate([point], replicates, seed=1, device=device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu for a smoke test")
    args = ap.parse_args(argv)
    load_start = os.getloadavg()[0]
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        result = {"benchmark": "bench_gpu", "skipped": "no CUDA device visible"}
        print(json.dumps(result))
        return result
    d, samples = (50, 500) if args.quick else (1000, 10_000)
    r_gpu, r_cpu = (64, 16) if args.quick else (4096, 64)
    point = make_point({"alpha_t": 1.5, "alpha_s": 2.0, "N": samples, "n": samples,
                        "sigma2": 0.1, "d": d})
    units = d * (point.steps_t + point.steps_s)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cpu_s = _timed_mc(point, r_cpu, "cpu")
    torch.set_num_threads(threads)
    dev_s = _timed_mc(point, r_gpu, args.device)
    cpu_ns = cpu_s / (r_cpu * units) * 1e9
    dev_ns = dev_s / (r_gpu * units) * 1e9

    # exact vs mc on the device: z-scores of the four risks and the ratios at a few points
    pts = [make_point({"alpha_t": a, "alpha_s": b, "N": 400, "n": 800, "sigma2": 0.1, "d": 40})
           for a, b in ((1.5, 2.5), (2.5, 1.5), (2.0, 2.0))]
    reps = 512 if args.quick else 8000
    ex = exact.evaluate(pts)
    sim = mc.simulate(pts, reps, seed=3, device=args.device)
    z = {}
    for k in ("risk_teacher", "risk_direct", "risk_t2s", "risk_ceiling", "der", "w2s_ratio"):
        z[k] = [float((sim[k][i] - ex[k][i]) / sim[k + "_se"][i]) for i in range(len(pts))]
    result = {
        "benchmark": "bench_gpu",
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "point": {"d": d, "N": samples, "n": samples},
        "replicates_device": r_gpu,
        "replicates_cpu": r_cpu,
        "device_seconds": dev_s,
        "cpu_seconds_one_thread": cpu_s,
        "device_ns_per_unit": dev_ns,
        "cpu_ns_per_unit": cpu_ns,
        "speedup_device_over_cpu": cpu_ns / dev_ns,
        "agreement_replicates": reps,
        "agreement_z": z,
        "agreement_max_abs_z": float(np.nanmax(np.abs([v for vs in z.values() for v in vs]))),
        "machine": machine_info(threads, load_start),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
