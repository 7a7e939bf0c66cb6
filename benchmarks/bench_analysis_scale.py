"""Analysis at scale: peak memory and wall time of fits, claims and figures on big cubes.

For each ``--points`` size, a real cube of the 7-axis exact grid of :mod:`bench_scale`
(d = 10) is built without the engines: each chunk's block is filled with synthetic, finite
and plausible values (risks following power laws in N and n at the cube's own coordinates,
every status ok, pgr in [0, 1]; per-mode risks and learning curves only on a small
``outputs.subgrid``), committed as a chunk job commits it (block, then its commit record), and
published as the workflow's ``cube`` rule publishes it (``ktsweep summarize``). Then
``ktsweep fits``, ``ktsweep claims --fits`` and ``ktsweep figures`` run on it, each in its own
process as the workflow's analysis rules run them: one JSON line per command with its wall
seconds and peak resident memory (the process's own maximum resident set), then a summary line.

The cube lives in a temporary folder (``--tmp``, default the system's) and is deleted after
the commands ran (``--keep`` keeps it); a 10^7-point cube takes about 0.5 GB of disk.
``--quick`` runs a 10^3-point cube in seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import REPO, grid, measured  # noqa: E402

COMMANDS = ("fits", "claims", "figures")


def config(points: int) -> dict:
    """The scale benchmark's exact grid (d = 10, 30-minute jobs) with per-mode risks and
    learning curves kept on one value of three axes: the sub-grid a big sweep would keep."""
    cfg = grid(points, d=10, minutes=30)
    axes = cfg["grid"]
    cfg["outputs"] = {"modes": True, "curves": True,
                      "subgrid": {a: [axes[a][0]] for a in ("alpha_t", "alpha_s", "sigma2")}}
    return cfg


def fill_block(layout, chunk: str, block: dict[str, np.ndarray], seed: int) -> None:
    """Synthetic values for a chunk's block, vectorised over the block (in place).

    Teacher and direct student follow N^-(1 - 1/alpha), the ceiling n^-(1 - 1/alpha_s),
    plus the noise sigma2 times a small factor; T2S recovers a fraction pgr in [0, 1] of the
    teacher-to-ceiling gap; ratios follow from the risks. A deterministic 1 % jitter (seeded
    by ``seed`` and the chunk) keeps the fits from being exact."""
    sl = layout.chunk_slices(chunk)
    names = list(layout.axes)
    shape = tuple(s.stop - s.start for s in sl)

    def axis(name: str) -> np.ndarray:
        k = names.index(name)
        values = np.asarray(layout.axes[name], dtype=np.float64)[sl[k]]
        return values.reshape([-1 if i == k else 1 for i in range(len(names))])

    rng = np.random.default_rng([seed, int(chunk[1:])])
    jitter = 1 + 0.01 * rng.standard_normal((4, *shape))
    a_t, a_s, big_n, small_n = axis("alpha_t"), axis("alpha_s"), axis("N"), axis("n")
    noise = 0.05 * axis("sigma2")
    r_teacher = (big_n ** -(1 - 1 / a_t) + noise) * jitter[0]
    r_direct = (big_n ** -(1 - 1 / a_s) + noise) * jitter[1]
    r_ceiling = (small_n ** -(1 - 1 / a_s) + noise) * jitter[2]
    pgr = np.clip(0.5 + 0.3 * np.tanh(np.log(big_n / small_n)) + 0.05 * jitter[3] - 0.05,
                  0.0, 1.0) * np.ones(shape)
    r_t2s = r_ceiling + (1 - pgr) * (r_teacher - r_ceiling)
    pgr = np.where(r_teacher > r_ceiling, pgr, np.nan)  # no gap to recover: undefined
    values = {"risk_teacher": r_teacher, "risk_direct": r_direct, "risk_t2s": r_t2s,
              "risk_ceiling": r_ceiling, "der": r_direct / r_t2s, "pgr": pgr,
              "w2s_ratio": r_t2s / r_teacher}
    for name, v in values.items():
        block[name][..., 0] = v
    block["status"][...] = 1
    step = 0.5 / axis("batch_s")
    for name in ("gamma0_t", "gamma0_s", "gamma0_direct", "gamma0_ceiling"):
        block[name][...] = 0.5 if name == "gamma0_t" else step
    for name in ("alignment_bias", "alignment_bias_closed"):
        block[name][...] = 0.0
    keep = layout.outputs_mask[sl]
    modes = np.arange(1, layout.d_max + 1, dtype=np.float64)
    steps = np.asarray(layout.checkpoints, dtype=np.float64)
    for run, risk, alpha in (("teacher", r_teacher, a_t), ("direct", r_direct, a_s),
                             ("t2s", r_t2s, a_s), ("ceiling", r_ceiling, a_s)):
        weight = modes ** -alpha[..., None]
        per_mode = risk[..., None] * weight / weight.sum(axis=-1, keepdims=True)
        block[f"mode_{run}"][..., 0, :] = np.where(keep[..., None], per_mode, np.nan)
        if f"curve_{run}" in block:
            curve = risk[..., None] * (1 + 10 / (1 + steps))
            block[f"curve_{run}"][..., 0, :] = np.where(keep[..., None], curve, np.nan)


def build_cube(points: int, work: Path) -> tuple[Path, Path, float, int]:
    """A published synthetic cube: (its content-addressed path, its link, seconds, bytes)."""
    from ktsweep.sweep import store
    from ktsweep.sweep.layout import Layout

    cfg = config(points)
    (work / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    layout = Layout.from_config(cfg)
    cube, link = store.cube_path(layout, work / "results"), store.link_path(layout,
                                                                          work / "results")
    t0 = time.perf_counter()
    store.init_cube(layout, cube)
    for c in range(layout.n_chunks):
        chunk = f"c{c}"
        start = time.perf_counter()
        block = store.empty_block(layout, chunk)
        fill_block(layout, chunk, block, seed=20261205)
        n = math.prod(s.stop - s.start for s in layout.chunk_slices(chunk))
        record = {"chunk": chunk, "cube_key": store.cube_key(layout), "points": n,
                  "computed": {m: n for m in layout.methods}, "damage": [],
                  "staged_tasks_kept": 0}
        record["manifest"] = store.commit_block(cube, layout, chunk, block)
        record.update(seconds=time.perf_counter() - start, tasks=0, mc_devices=[])
        store.write_record(cube, chunk, record)
        del block
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "ktsweep.cli", "summarize", str(cube),
                          "--link", str(link), "--out", str(work / "cube.json")],
                         env=env, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(res.stdout + res.stderr)
    size = sum(p.stat().st_size for p in cube.rglob("*") if p.is_file())
    return cube, link, time.perf_counter() - t0, size


def analyse(points: int, tmp: Path, commands: list[str], keep: bool = False) -> list[dict]:
    """Build, analyse and (unless ``keep``) delete one cube; one result per command."""
    work = Path(tempfile.mkdtemp(prefix=f"anascale{points}-", dir=tmp))
    try:
        _, link, build_s, size = build_cube(points, work)
        from ktsweep.sweep.store import layout_of

        layout = layout_of(link)
        out = work / "analysis"
        out.mkdir()
        base = [sys.executable, "-m", "ktsweep.cli"]
        cmds = {
            "fits": [*base, "fits", str(link), "--csv", str(out / "fits.csv"),
                     "--md", str(out / "fits.md")],
            "claims": [*base, "claims", str(link), "--fits", str(out / "fits.csv"),
                       "--md", str(out / "claims.md"), "--csv", str(out / "claims.csv")],
            "figures": [*base, "figures", str(link), "--outdir", str(out / "figures")],
        }
        results = []
        for name in commands:
            wall, peak, res = measured(cmds[name], work)
            if res.returncode:
                raise SystemExit(f"ktsweep {name} failed:\n{res.stdout}\n{res.stderr[-3000:]}")
            last = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
            last = last.replace(str(out), "OUT")
            results.append({"part": name, "points": layout.n_points, "chunks": layout.n_chunks,
                            "d": 10, "cube_bytes": size, "build_seconds": round(build_s, 1),
                            "wall_seconds": round(wall, 1), "peak_mb": round(peak),
                            "said": last[:200]})
            print(json.dumps(results[-1]), flush=True)
        return results
    finally:
        if keep:
            print(f"cube kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a 10^3-point cube, seconds")
    ap.add_argument("--points", type=int, nargs="*", default=[10**5, 10**6, 10**7],
                    help="grid sizes (each rounded down to the 7-axis grid's size)")
    ap.add_argument("--tmp", default=None, help="folder for the cubes (deleted after)")
    ap.add_argument("--commands", nargs="*", choices=COMMANDS, default=list(COMMANDS),
                    help="what to measure (claims reads the fit table fits writes)")
    ap.add_argument("--keep", action="store_true", help="keep the cubes (their folder is "
                    "said on stderr)")
    args = ap.parse_args()
    if args.quick:
        args.points = [10**3]
    results = []
    for n in args.points:
        results += analyse(n, Path(args.tmp or tempfile.gettempdir()), args.commands,
                           args.keep)
    print(json.dumps({"benchmark": "analysis_scale", "cpus": os.cpu_count(),
                      "results": results}))


if __name__ == "__main__":
    main()
