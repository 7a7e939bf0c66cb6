"""Scale: planning 10^6 and 10^7 points, and a 10^5-point exact sweep end to end.

Parts (one JSON line each, then a summary line):

- ``plan``: ``ktsweep plan --no-calibration`` and ``snakemake -n`` on 7-axis exact grids of
  10^k points (d = 10): wall seconds and peak memory (each command's own maximum resident
  set), chunk jobs and the files the cube would hold (one per job and variable, plus its
  skeleton).
- ``sweep``: a grid of ``--points`` points at d = ``--d`` through the whole workflow (target
  ``sweep``: the cube and its summary) against the same points' engines called directly in
  one process: points per second, the workflow's overhead per point against the engines'
  cost, files written under results/, and each rule's peak memory (Snakemake's own
  ``benchmark:`` records of every job, summed per rule as the maximum).

``--quick`` shrinks every part to seconds (the test of the benchmark runs it).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def grid(points: int, d: int, minutes: float | None = None) -> dict:
    """A 7-axis exact grid of about ``points`` points (each axis ~ points^(1/7) values)."""
    k = max(2, round(points ** (1 / 7)))
    axes = {
        "alpha_t": [1.2 + 0.15 * i for i in range(k)],
        "alpha_s": [1.25 + 0.15 * i for i in range(k)],
        "N": [2 ** (6 + i) for i in range(k)],
        "n": [2 ** (6 + i) for i in range(k)],
        "sigma2": [0.02 * (i + 1) for i in range(k)],
        "beta": [0.05 * i for i in range(k)],
        "batch_s": [1 + i for i in range(k)],
    }
    total = k**7
    names = list(axes)
    while total > points and len(axes["batch_s"]) > 1:  # trim the last axes to the size
        for name in reversed(names):
            if total <= points or len(axes[name]) <= 1:
                continue
            total = total // len(axes[name]) * (len(axes[name]) - 1)
            axes[name] = axes[name][:-1]
    cfg = {"name": "scale", "grid": axes, "fixed": {"d": d}, "methods": ["exact"],
           "outputs": {"modes": False, "curves": False}}
    if minutes is not None:
        cfg["jobs"] = {"minutes": minutes}
    return cfg


def measured(cmd: list[str], cwd: Path) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall seconds, peak resident MB of the command's largest process, result); the CPU
    seconds of the command and everything it waited for land in :func:`children_cpu`."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", *cmd], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    lines = err.strip().splitlines()
    peak = float(lines[-1]) / 1024 if lines and lines[-1].isdigit() else math.nan
    return wall, peak, subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def children_cpu() -> float:
    """CPU seconds of every finished child process so far (and of theirs)."""
    import resource

    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def snakemake_cmd(work: Path, cfg: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"),
            "--directory", str(work), "--configfile", str(cfg), "--cores", "2", *args]


def plan_part(points: int, work: Path) -> dict:
    from ktsweep.sweep.layout import Layout
    from ktsweep.sweep.store import variables

    cfg = work / f"plan{points}.yaml"
    cfg.write_text(yaml.safe_dump(grid(points, d=10, minutes=30)))
    plan_s, plan_mb, res = measured([sys.executable, "-m", "ktsweep.cli", "plan", str(cfg),
                                     "--no-calibration"], work)
    if res.returncode:
        raise SystemExit(res.stderr)
    dry_s, dry_mb, res = measured(snakemake_cmd(work, cfg, "-n", "sweep"), work)
    if res.returncode:
        raise SystemExit(res.stderr[-3000:])
    layout = Layout.from_config(yaml.safe_load(cfg.read_text()))
    files = layout.n_chunks * len(variables(layout)) + 2 * (len(variables(layout)) + 8)
    return {"part": "plan", "points": layout.n_points, "jobs": layout.n_chunks,
            "points_per_job": math.prod(layout.chunks), "cube_files": files,
            "plan_seconds": round(plan_s, 1), "plan_peak_mb": round(plan_mb),
            "dry_run_seconds": round(dry_s, 1), "dry_run_peak_mb": round(dry_mb)}


def rule_peaks(work: Path) -> dict[str, dict[str, float]]:
    """Per rule: jobs, the largest max_rss (MB) and the summed seconds of its benchmark
    records."""
    out: dict[str, dict[str, float]] = {}
    for path in sorted((work / "logs").rglob("*.benchmark.tsv")):
        rule = path.name.split(".")[0]
        with open(path) as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                entry = out.setdefault(rule, {"jobs": 0, "max_rss_mb": 0.0, "seconds": 0.0})
                entry["jobs"] += 1
                rss = float(row["max_rss"]) if row["max_rss"] not in ("", "-", "NA") else 0.0
                entry["max_rss_mb"] = max(entry["max_rss_mb"], rss)
                entry["seconds"] += float(row["s"])
    return out


def sweep_part(points: int, d: int, minutes: float, work: Path) -> dict:
    from ktsweep.engines.dispatch import run
    from ktsweep.sweep.layout import Layout

    cfg_data = grid(points, d, minutes)
    cfg = work / f"sweep{points}.yaml"
    cfg.write_text(yaml.safe_dump(cfg_data))
    layout = Layout.from_config(cfg_data)
    cpu0 = children_cpu()
    wall, peak, res = measured(snakemake_cmd(work, cfg, "sweep"), work)
    workflow_cpu = children_cpu() - cpu0
    if res.returncode:
        raise SystemExit(res.stderr[-3000:])
    summary = json.loads((work / "results" / "scale" / "cube.json").read_text())
    files = sum(1 for p in (work / "results").rglob("*") if p.is_file())
    pts = [p for _, p in layout.iter_points()]
    t0 = time.process_time()
    run(pts, ["exact"], layout.checkpoints)
    direct_cpu = time.process_time() - t0
    overhead = workflow_cpu - direct_cpu
    return {"part": "sweep", "points": layout.n_points, "d": d, "jobs": layout.n_chunks,
            "wall_seconds": round(wall, 1), "points_per_second": round(layout.n_points / wall,
                                                                        1),
            "engine_cpu_seconds": round(direct_cpu, 1),
            "workflow_cpu_seconds": round(workflow_cpu, 1),
            "overhead_per_point_ms": round(1e3 * overhead / layout.n_points, 3),
            "overhead_share": round(overhead / direct_cpu, 3),
            "files": files, "peak_mb_snakemake": round(peak), "rules": rule_peaks(work),
            "missing": summary["missing"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="seconds instead of an hour")
    ap.add_argument("--plan", type=int, nargs="*", default=[10**6, 10**7],
                    help="grid sizes to plan and dry-run")
    ap.add_argument("--points", type=int, nargs="*", default=[10**5],
                    help="grid sizes to run end to end")
    ap.add_argument("--d", type=int, nargs="*", default=[10, 200])
    ap.add_argument("--minutes", type=float, default=5.0, help="jobs.minutes of the sweeps")
    args = ap.parse_args()
    if args.quick:
        args.plan, args.points, args.d, args.minutes = [10**4], [200], [10], 0.2
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.plan:
            work = Path(tmp) / f"plan{n}"
            work.mkdir()
            results.append(plan_part(n, work))
            print(json.dumps(results[-1]), flush=True)
        for n in args.points:
            for d in args.d:
                work = Path(tmp) / f"sweep{n}-{d}"
                work.mkdir()
                size = n if d <= 10 else max(200, n // 10)  # d = 200: a tenth of the points
                results.append(sweep_part(size, d, args.minutes, work))
                print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"benchmark": "scale", "cpus": os.cpu_count(), "results": results}))


if __name__ == "__main__":
    main()
