"""The GPU kernel in Triton's interpreter against the CPU kernel, replicate by replicate.

Run by tests/test_fused.py in a subprocess with ``TRITON_INTERPRET=1`` (the interpreter is
chosen when triton is imported, so the test process itself cannot switch to it). Both kernels
draw the same stream, so their final errors, learning curves and diverged flags agree to
float32 rounding. Prints one JSON object: the number of cases and, per quantity, the worst
difference relative to the quantity's scale.

The cases are tiny (a few dozen steps): the interpreter runs each step as NumPy calls, about
10 ms a step whatever the tile size, so all replicates run in one program (BLOCK_R = R).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch

if os.environ.get("TRITON_INTERPRET") != "1":
    sys.exit("run with TRITON_INTERPRET=1")

from ktsweep.engines import mc  # noqa: E402
from ktsweep.engines.fused import _run_cpu, gpu, passes  # noqa: E402
from ktsweep.model.params import make_point  # noqa: E402

R = 32
CHECKPOINTS = np.array([0, 1, 5, 12, 16, 30], dtype=np.int64)
BASE = {"alpha_t": 1.3, "alpha_s": 1.6, "N": 16, "n": 16, "sigma2": 0.2, "d": 10}
CASES: list[tuple[dict, str]] = [
    ({}, "float32"),
    ({"batch_t": 3, "batch_s": 2, "target": "lowdim", "k_dagger": 3}, "float32"),
    ({"batch_t": 2, "batch_s": 2, "schedule_s": "tail_geometric", "d": 7}, "float32"),
    ({"inputs": "rademacher", "target": "power", "beta": 0.5}, "float32"),
    ({"inputs": "uniform", "schedule_t": "constant", "gamma0_t": 0.2}, "float32"),
    ({"inputs": "student_t", "inputs_nu": 6.0, "N": 6, "n": 6}, "float32"),
    ({"angle": 30.0, "d": 9}, "float32"),
    ({"mixing_seed": 2, "n": 30}, "float64"),
    ({"gamma0_t": 1e3}, "float32"),
    ({"gamma0_s": 1e3}, "float32"),
]


def main() -> None:
    worst: dict[str, float] = {}
    for extra, dtype in CASES:
        p = make_point({**BASE, **extra})
        gam = {k: float(v[0]) for k, v in mc.initial_step_sizes([p]).items()}
        how = mc.Sampling(R, 3, torch.device("cpu"), mc.DTYPES[dtype], CHECKPOINTS, False)
        outs = []
        for run in (_run_cpu, lambda ps: gpu.run(ps, block_r=R)):
            outs.append(passes.simulate_point(p, gam, how, run))
        (ea, ca, da), (eb, cb, db) = outs
        if da != db:
            sys.exit(f"diverged flags differ at {extra}: {da} vs {db}")
        for group, a, b in (("error", ea, eb), ("curve", ca, cb)):
            for name in a:
                x, y = a[name].double().numpy(), b[name].double().numpy()
                if not np.array_equal(np.isnan(x), np.isnan(y)):
                    sys.exit(f"NaN pattern of {group} {name} differs at {extra}")
                ok = np.isfinite(x)
                scale = max(1e-30, float(np.abs(x[ok]).max(initial=0.0)))
                diff = float(np.abs(x[ok] - y[ok]).max(initial=0.0)) / scale
                key = f"{group}_{name}"
                worst[key] = max(worst.get(key, 0.0), diff)
    print(json.dumps({"cases": len(CASES), "worst": worst}))


if __name__ == "__main__":
    main()
