"""The cost of generality: the general exact engine (rotated student) against the aligned engine
at the same point, and what the aligned path pays for the geometry hook.

Prints ONE JSON object.

    python benchmarks/bench_geometry.py           # d = 200 (about a minute on 2 cores)
    python benchmarks/bench_geometry.py --quick   # seconds (smoke test)

Point: d, α_T = 1.5, α_S = 2, N = n = 2^16, σ² = 0.1, geometric schedules, all four runs.
Variants, timed side by side in this run (best of ``repeat``):

- ``aligned``: today's model (the aligned fast path);
- ``rotated``: ``angle = 30`` with the random (gaussian) target: student-basis diagonals
  ``W^T x`` (O(d²) on top of the aligned cost);
- ``rotated_fixed_target``: ``angle = 30`` with the deterministic ``power`` target, whose
  off-diagonal θ*θ*^T the teacher carries (O(d³) per point);
- ``mixed_rademacher``: a Haar mixing with Rademacher inputs, the full d × d recursion stepped
  (O(steps · d³)), at N = n = ``full_samples`` (its cost grows with the steps, the others' not).

``aligned_hook_seconds``: what the geometry check costs an aligned batch (the calls the
aligned path now makes: ``geometry``, ``target_side``, ``teacher_side`` returning at once),
timed alone, as a fraction of the aligned evaluation.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from machine import machine_info

from ktsweep.engines import exact, stretch
from ktsweep.engines.general import geometry, target_side, teacher_side
from ktsweep.model.params import make_point

DEFAULT = {"d": 200, "exp": 16, "full_samples": 64, "repeat": 3}
QUICK = {"d": 40, "exp": 10, "full_samples": 64, "repeat": 2}


def best(fn, repeat: int) -> float:
    """Best wall seconds of ``repeat`` calls (cold stretch cache each time)."""
    out = []
    for _ in range(repeat):
        stretch.clear_cache()
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    args = parser.parse_args()
    size = QUICK if args.quick else DEFAULT
    load_start = os.getloadavg()[0]
    base = {"alpha_t": 1.5, "alpha_s": 2.0, "N": 2 ** size["exp"], "n": 2 ** size["exp"],
            "sigma2": 0.1, "d": size["d"]}
    variants = {
        "aligned": make_point(base),
        "rotated": make_point({**base, "angle": 30}),
        "rotated_fixed_target": make_point({**base, "angle": 30, "target": "power",
                                            "beta": 0.5}),
    }
    full_base = {**base, "N": size["full_samples"], "n": size["full_samples"]}
    full = {"aligned_small": make_point(full_base),
            "mixed_rademacher": make_point({**full_base, "mixing_seed": 1,
                                            "inputs": "rademacher"})}
    seconds = {k: best(lambda p=p: exact.evaluate([p]), size["repeat"])
               for k, p in variants.items()}
    seconds.update({k: best(lambda p=p: exact.evaluate([p]), 1) for k, p in full.items()})
    risks = {k: float(exact.evaluate([p])["risk_t2s"][0]) for k, p in variants.items()}

    p = variants["aligned"]
    d = p.d
    zeros = np.zeros((1, d))

    def hook() -> None:
        geo = geometry([p])
        target_side(geo, zeros)
        teacher_side(geo, zeros, zeros, zeros, [None])

    hook_seconds = best(hook, 50)
    result = {
        "benchmark": "bench_geometry",
        "quick": args.quick,
        "point": base,
        "seconds": seconds,
        "ratio_rotated_over_aligned": seconds["rotated"] / seconds["aligned"],
        "ratio_rotated_fixed_target_over_aligned":
            seconds["rotated_fixed_target"] / seconds["aligned"],
        "ratio_full_recursion_over_aligned": seconds["mixed_rademacher"]
        / seconds["aligned_small"],
        "full_recursion_samples": size["full_samples"],
        "aligned_hook_seconds": hook_seconds,
        "aligned_hook_fraction": hook_seconds / seconds["aligned"],
        "risk_t2s": risks,
        "machine": machine_info(torch.get_num_threads(), load_start),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
