"""Workflow overhead: Snakemake dry-run time on a 10^5-point grid, and the default sweep's
wall time through the workflow against calling the engines directly in one process.

Prints one JSON object. ``--quick`` shrinks both parts to seconds (smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def snakemake(workdir: Path, config: Path, *args: str) -> float:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(config), "--cores", "2", "-q", *args]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ,
                                                              "PYTHONPATH": str(REPO)})
    return time.perf_counter() - t0


def big_grid(points_per_axis: int) -> dict:
    k = points_per_axis
    return {
        "name": "big",
        "grid": {
            "alpha_t": [1.1 + 0.1 * i for i in range(k)],
            "alpha_s": [1.1 + 0.1 * i for i in range(k)],
            "N": [2 ** (8 + i) for i in range(k)],
            "n": [2 ** (8 + i) for i in range(k)],
            "sigma2": [0.05 * (i + 1) for i in range(k)],
        },
        "fixed": {"d": 100},
        "methods": ["exact"],
    }


def direct_seconds(config: Path) -> float:
    """All estimators of the sweep called directly in this process (no workflow)."""
    from ktsweep.engines.dispatch import run
    from ktsweep.sweep.layout import Layout, load_config

    layout = Layout(load_config(str(config)))
    items = list(layout.iter_points())
    t0 = time.perf_counter()
    shared = [m for m in layout.methods if m != "mc"]  # exact and bound share one recursion
    run([p for _, p in items], shared, layout.checkpoints, layout.mc_settings)
    if "mc" in layout.methods:
        run([p for idx, p in items if layout.mc_selected(idx)], ["mc"], layout.checkpoints,
            layout.mc_settings)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    out: dict = {"benchmark": "workflow", "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        k = 4 if args.quick else 10
        cfg = work / "big.yaml"
        cfg.write_text(yaml.safe_dump(big_grid(k)))
        out["dry_run_points"] = k**5
        out["dry_run_seconds"] = snakemake(work, cfg, "-n")
        from ktsweep.sweep.layout import Layout, load_config

        out["dry_run_jobs"] = Layout(load_config(str(cfg))).n_chunks

        default = REPO / ("tests/configs/tiny.yaml" if args.quick else "config/config.yaml")
        out["sweep_config"] = str(default.relative_to(REPO))
        out["workflow_seconds"] = snakemake(work, default)
        out["direct_seconds"] = direct_seconds(default)
        out["overhead_ratio"] = out["workflow_seconds"] / out["direct_seconds"]
        out["note"] = ("workflow: `snakemake --cores 2` on an empty results dir (cube, fits, "
                       "figures); direct: every estimator called in one process on the same "
                       "points (cube-free, no fits or figures)")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
