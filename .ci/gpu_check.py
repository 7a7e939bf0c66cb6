"""The GPU check's steps, run by ``.ci/gpu-check`` with the GPU machine's own ``python3``.

Standard library only in this process: the carried wheels are installed first, then every
step runs in a subprocess with ``PYTHONPATH=<repo>:<installed wheels>``. A failed step does
not stop the later ones (the GPU run is rare: bring back everything); the exit status is 1
when any step failed. Results, five files in OUTDIR:

    env.json        nvidia-smi, Python/torch/CUDA versions, every import the check needs and
                    where it came from, requirements of carried wheels the machine misses
    pytest-gpu.txt  pytest -m gpu (exact vs Monte Carlo on CUDA, CPU vs CUDA)
    bench_gpu.json  benchmarks/bench_gpu.py: the torch path, its torch.randn floor and the fused
                    Triton kernel in the same run (and the paper's point)
    e2e.json        the Snakemake -> dask -> cube run of .ci/gpu-e2e.yaml: where each task
                    ran, cube completeness, Monte Carlo vs exact z-scores, log tails on failure
    summary.json    per step: ok, seconds, error

``--rehearsal`` (CI, no GPU): the same steps on the CPU; the benchmark takes its CPU smoke
path (the fused kernel's Triton code in Triton's interpreter) and the end-to-end run must fall
back to the CPU with a warning (and to the torch kernel: the rehearsal has no numba).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

CI = Path(__file__).resolve().parent
REPO = CI.parent
E2E_CONFIG = CI / "gpu-e2e.yaml"
BUDGET_S = {"install": 45, "env": 40, "pytest_gpu": 110, "bench_gpu": 150, "e2e": 100}
"""Timeout per step on the GPU machine; they add up to the 7.5 minutes a GPU run may take, so
a hung step costs its own share only (the fused kernel's Triton compiles take about half a
minute of pytest_gpu and of bench_gpu). The rehearsal allows six times more: CI is not short
of time, and a slow or shared 2-core machine must not make it flaky."""
IMPORTS = (
    "ktsweep.cli", "ktsweep.sweep.runner", "ktsweep.analysis.figures", "ktsweep.analysis.fits",
    "snakemake", "snakemake.api", "dask", "dask.array", "distributed", "zarr", "numcodecs",
    "jsonschema", "pydantic", "pydantic_core", "yaml", "xarray", "pandas", "scipy", "numpy",
    "matplotlib", "torch", "pytest",
)
"""Modules the steps reach (also imported by the steps themselves; listed to fail early)."""
OPTIONAL_IMPORTS = ("triton", "numba")
"""Recorded in env.json, not required: the fused kernels' compilers (GPU, CPU); without them
``kernel: auto`` takes the torch path."""
FALLBACK_WARNING = "no GPU is visible"
"""What mc.resolve_device warns when cuda is asked for without a GPU."""


class StepError(Exception):
    """A check inside a step failed; its message goes to summary.json."""


def run(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """``cmd`` in its own process group; on timeout the whole group is killed (Snakemake's
    jobs and dask's workers too, so no leftover holds the GPU or the output pipes)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=REPO, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as err:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise StepError(f"{' '.join(cmd[:4])} ... timed out after {timeout:.0f} s") from err
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def install(wheels: Path, site: Path, timeout: float) -> dict[str, Any]:
    """The carried wheels into ``site`` (pip --no-index; a plain unzip where pip is missing)."""
    files = sorted(wheels.glob("*.whl"))
    if not files:
        raise StepError(f"no wheels in {wheels}: run `make gpu-wheels` on a CPU machine and "
                        "carry gpu-wheels/")
    if site.exists():
        subprocess.run(["rm", "-rf", str(site)], check=True)
    site.mkdir(parents=True)
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index",
                          "--no-deps", "--no-compile", "--target", str(site), *map(str, files)],
                         capture_output=True, text=True, timeout=timeout)
    out = {"wheels": len(files), "folder": str(wheels), "installer": "pip"}
    if res.returncode:  # no pip, or one that refuses: a wheel is a zip of the installed tree
        out.update(installer="unzip", pip_error=res.stderr[-1500:])
        subprocess.run(["rm", "-rf", str(site)], check=True)
        for whl in files:
            with zipfile.ZipFile(whl) as zf:
                zf.extractall(site)
    return out


ENV_PROBE = r"""
import importlib, importlib.metadata as md, json, os, sys
from packaging.requirements import Requirement
site, imports, optional = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(",")
out = {"python": sys.version.split()[0], "executable": sys.executable, "imports": {},
       "failed_imports": {}, "optional_imports": {}}
for name in optional:
    try:
        mod = importlib.import_module(name)
        out["optional_imports"][name] = getattr(mod, "__version__", "?")
    except Exception as err:
        out["optional_imports"][name] = f"missing: {type(err).__name__}: {err}"
for name in imports:
    try:
        mod = importlib.import_module(name)
        where = getattr(mod, "__file__", "") or ""
        out["imports"][name] = "carried" if where.startswith(site) else where
    except Exception as err:
        out["failed_imports"][name] = f"{type(err).__name__}: {err}"
unmet = []
for dist in md.distributions(path=[site]):
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            have = md.version(req.name)
        except md.PackageNotFoundError:
            have = None
        if have is None or not req.specifier.contains(have, prereleases=True):
            unmet.append(f"{dist.metadata['Name']} needs {req}, found {have}")
out["unmet_requirements"] = sorted(set(unmet))
import torch
out["torch"] = {"version": torch.__version__, "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
                "cuda_available": torch.cuda.is_available(),
                "devices": [{"name": torch.cuda.get_device_name(i),
                             "capability": list(torch.cuda.get_device_capability(i)),
                             "memory_gib": round(torch.cuda.get_device_properties(i)
                                                 .total_memory / 2**30, 1)}
                            for i in range(torch.cuda.device_count())],
                "cpu_threads": torch.get_num_threads()}
out["cpu_count"] = os.cpu_count()
print(json.dumps(out))
"""


def step_env(ctx: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"install": ctx["install"]}
    try:
        smi = run(["nvidia-smi"], ctx["env"], 10)
        query = run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,compute_cap",
                     "--format=csv"], ctx["env"], 10)
        out["nvidia_smi"] = smi.stdout + smi.stderr
        out["nvidia_smi_query"] = query.stdout.strip().splitlines()
    except (OSError, StepError) as err:
        out["nvidia_smi"] = f"unavailable: {err}"
    res = run([sys.executable, "-c", ENV_PROBE, str(ctx["site"]), ",".join(IMPORTS),
               ",".join(OPTIONAL_IMPORTS)], ctx["env"], ctx["timeout"])
    if res.returncode:
        raise StepError(f"environment probe failed: {res.stderr[-3000:]}")
    out.update(json.loads(res.stdout))
    ctx["write"]("env.json", out)
    if out["failed_imports"]:
        raise StepError(f"imports failed: {out['failed_imports']}")
    if ctx["rehearsal"] and out["unmet_requirements"]:  # the stand-in must meet them all
        raise StepError(f"unmet requirements: {out['unmet_requirements']}")
    if not ctx["rehearsal"] and not out["torch"]["cuda_available"]:
        raise StepError("torch sees no CUDA device on the GPU machine")
    return {"torch": out["torch"]["version"], "cuda": out["torch"]["cuda"],
            "unmet_requirements": len(out["unmet_requirements"])}


def step_pytest(ctx: dict[str, Any]) -> dict[str, Any]:
    res = run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
               "-rs", "tests"], ctx["env"], ctx["timeout"])
    text = res.stdout + res.stderr
    ctx["write"]("pytest-gpu.txt", text)
    last = text.strip().splitlines()[-1] if text.strip() else ""
    if res.returncode:
        raise StepError(f"pytest -m gpu exited {res.returncode}: {last}")
    if ctx["rehearsal"] and "skipped" not in last:
        raise StepError(f"without a GPU every gpu test must skip: {last}")
    if not ctx["rehearsal"] and ("skipped" in last or "passed" not in last):
        raise StepError(f"on the GPU machine every gpu test must run: {last}")
    return {"result": last}


BENCH_KEYS = ("device_ns_per_unit", "floor_ns_per_unit", "ratio_mc_over_floor",
              "copy_gib_per_s", "cpu_all_cores_ns_per_unit", "speedup_over_cpu_all_cores",
              "agreement_max_abs_z")
FUSED_KEYS = ("ns_per_unit", "ratio_over_torch_randn_floor", "speedup_over_torch_path",
              "agreement_max_abs_z")
"""The fused kernel's numbers in bench_gpu.json's ``fused`` (and ``fused.paper``'s speed-up)."""


def step_bench(ctx: dict[str, Any]) -> dict[str, Any]:
    args = ["--device", "cpu", "--quick"] if ctx["rehearsal"] else []
    env = {**ctx["env"], "TRITON_INTERPRET": "1"} if ctx["rehearsal"] else ctx["env"]
    res = run([sys.executable, str(REPO / "benchmarks" / "bench_gpu.py"), *args], env,
              ctx["timeout"])
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    ctx["write"]("bench_gpu.json", lines[-1] + "\n" if lines else res.stderr[-4000:])
    if res.returncode or len(lines) != 1:
        raise StepError(f"bench_gpu.py exited {res.returncode}: {res.stderr[-2000:]}")
    out = json.loads(lines[0])
    missing = [k for k in BENCH_KEYS if not isinstance(out.get(k), int | float)]
    if missing or out.get("skipped"):
        raise StepError(f"bench_gpu.py result lacks {missing or out.get('skipped')}")
    if out["agreement_max_abs_z"] > 5:
        raise StepError(f"Monte Carlo disagrees with exact: max |z| "
                        f"{out['agreement_max_abs_z']:.1f}")
    fused = out.get("fused") or {}
    missing = [k for k in FUSED_KEYS if not isinstance(fused.get(k), int | float)]
    if missing:
        raise StepError(f"bench_gpu.py's fused kernel: {fused.get('skipped') or missing}")
    if fused["agreement_max_abs_z"] > 5:
        raise StepError(f"the fused kernel disagrees with exact: max |z| "
                        f"{fused['agreement_max_abs_z']:.1f}")
    return {**{k: out[k] for k in BENCH_KEYS}, "fused_kernel": fused["kernel"],
            **{f"fused_{k}": fused[k] for k in FUSED_KEYS},
            "fused_paper_speedup_over_torch_path":
                fused["paper"]["speedup_fused_over_torch_path"]}


def judge_e2e(records: list[dict[str, Any]], rehearsal: bool) -> list[str]:
    """What is wrong with where the sweep's tasks ran (empty: as expected)."""
    mc = [r for r in records if "mc" in (r.get("methods") or [])]
    problems = []
    if not records:
        problems.append("no task record: the probe did not load into the dask workers")
    if not mc:
        problems.append("no Monte Carlo task ran")
    for r in mc:
        where = f"{r['key']} on worker {r['worker']}"
        if rehearsal:
            if r.get("cuda_available") or r.get("resources", {}).get("GPU"):
                problems.append(f"{where} saw a GPU in a run without one")
        elif not r.get("resources", {}).get("GPU"):
            problems.append(f"{where}: Monte Carlo ran on a worker without the GPU resource")
        elif not r.get("cuda_visible_devices") or not r.get("cuda_initialized") \
                or not r.get("max_memory_allocated"):
            problems.append(f"{where}: the GPU worker ran it but CUDA held no memory "
                            f"(CUDA_VISIBLE_DEVICES={r.get('cuda_visible_devices')!r})")
    return problems


CUBE_Z = r"""
import json, sys
import numpy as np
from ktsweep.sweep.store import open_cube
ds = open_cube(sys.argv[1]).load()
est = list(ds["estimator"].values)
e, m = est.index("exact"), est.index("mc")
ok = ds["status"].isel(estimator=m).values == 1
z = {}
for k in ("risk_teacher", "risk_direct", "risk_t2s", "risk_ceiling"):
    a = ds[k].isel(estimator=m).values[ok]
    b = ds[k].isel(estimator=e).values[ok]
    z[k] = ((a - b) / ds[k + "_se"].values[ok]).round(2).tolist()
print(json.dumps({"mc_points": int(ok.sum()), "z": z,
                  "max_abs_z": float(max(np.abs(v).max() for v in z.values()))}))
"""


def step_e2e(ctx: dict[str, Any]) -> dict[str, Any]:
    import shutil

    work = Path(tempfile.mkdtemp(prefix="ktsweep-gpu-e2e-"))
    probe = work / "probe"
    config = work / "gpu-e2e.yaml"
    text = E2E_CONFIG.read_text()
    if ctx["rehearsal"]:
        text = text.replace("require_device: true", "require_device: false")
    config.write_text(text)
    env = {**ctx["env"], "KTSWEEP_GPU_PROBE": str(probe),
           "DASK_DISTRIBUTED__WORKER__PRELOAD": json.dumps([str(CI / "gpu_probe.py")])}
    start = time.perf_counter()
    cube_json = work / "results" / "gpu_e2e" / "cube.json"
    res = run([sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"),
               str(cube_json.relative_to(work)),  # the cube only: fits and figures need no GPU
               "--directory", str(work), "--configfile", str(config), "--cores",
               str(min(4, os.cpu_count() or 1)), "--resources", "gpu=1"], env,
              ctx["timeout"])
    seconds = time.perf_counter() - start
    records = [json.loads(line) for f in sorted(probe.glob("*.jsonl"))
               for line in f.read_text().splitlines() if line.strip()]
    logs = {p.relative_to(work).as_posix(): p.read_text()
            for p in sorted((work / "logs").rglob("*.log"))}
    out: dict[str, Any] = {"snakemake_rc": res.returncode, "seconds": round(seconds, 1),
                           "tasks": records}
    problems = []
    if res.returncode:
        problems.append(f"snakemake exited {res.returncode}")
        out["snakemake_tail"] = (res.stdout + res.stderr)[-4000:]
    if cube_json.exists():
        out["cube"] = json.loads(cube_json.read_text())
        if out["cube"].get("missing"):
            problems.append(f"cube incomplete: {out['cube']['missing']}")
        z = run([sys.executable, "-c", CUBE_Z, str(cube_json.parent / "cube.zarr")], env, 60)
        if z.returncode:
            problems.append(f"cube unreadable: {z.stderr[-1000:]}")
        else:
            out["mc_vs_exact"] = json.loads(z.stdout)
            if out["mc_vs_exact"]["max_abs_z"] > 5:
                problems.append(f"Monte Carlo vs exact in the cube: max |z| "
                                f"{out['mc_vs_exact']['max_abs_z']}")
    else:
        problems.append("no cube.json")
    problems += judge_e2e(records, ctx["rehearsal"])
    sim_logs = "".join(v for k, v in logs.items() if "/simulate/" in k)
    out["fallback_warned"] = FALLBACK_WARNING in sim_logs
    if ctx["rehearsal"] and not out["fallback_warned"]:
        problems.append(f"no simulate log says {FALLBACK_WARNING!r} (the CPU fallback)")
    if problems:
        out["log_tails"] = {k: v[-1500:] for k, v in logs.items()}
    out["problems"] = problems
    ctx["write"]("e2e.json", out)
    shutil.rmtree(work, ignore_errors=True)
    if problems:
        raise StepError("; ".join(problems))
    workers: dict[str, int] = {}
    for r in records:
        for m in r.get("methods") or []:
            workers[f"{m}@{r['worker']}"] = workers.get(f"{m}@{r['worker']}", 0) + 1
    return {"seconds": out["seconds"], "tasks_by_method_and_worker": workers,
            "mc_vs_exact_max_abs_z": out["mc_vs_exact"]["max_abs_z"]}


STEPS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "env": step_env, "pytest_gpu": step_pytest, "bench_gpu": step_bench, "e2e": step_e2e}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--rehearsal", action="store_true", help="no GPU: check the CPU paths")
    ap.add_argument("--wheels", type=Path, default=REPO / "gpu-wheels",
                    help="folder holding cp312/ and cp311/ (make gpu-wheels)")
    ap.add_argument("--only", nargs="*", choices=list(STEPS), help="run only these steps")
    args = ap.parse_args(argv)
    out = args.outdir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    site = REPO / ".gpu-site" / tag

    def write(name: str, content: Any) -> None:
        text = content if isinstance(content, str) else json.dumps(content, indent=1)
        (out / name).write_text(text)

    summary: dict[str, Any] = {"rehearsal": args.rehearsal, "python": tag, "steps": {}}
    started = time.perf_counter()
    scale = 6 if args.rehearsal else 1
    try:
        installed = install(args.wheels / tag, site, BUDGET_S["install"] * scale)
    except (StepError, subprocess.SubprocessError, OSError) as err:
        summary["steps"]["install"] = {"ok": False, "error": str(err)}
        write("summary.json", summary)
        print(json.dumps(summary, indent=1))
        return 1
    # bytecode is written on first import (the wheels install with --no-compile): without it
    # every process of the sweep (Snakemake, each job, each dask worker) recompiles dask,
    # distributed, zarr and pydantic from source
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{site}", "MPLBACKEND": "Agg"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    ctx = {"env": env, "site": site, "rehearsal": args.rehearsal, "write": write,
           "install": {**installed, "seconds": round(time.perf_counter() - started, 1)}}
    for name, step in STEPS.items():
        if args.only and name not in args.only:
            continue
        ctx["timeout"] = BUDGET_S[name] * scale
        t0 = time.perf_counter()
        try:
            result = {"ok": True, **step(ctx)}
        except StepError as err:
            result = {"ok": False, "error": str(err)[-3000:]}
        except Exception:  # a bug of the check itself: record it, run the next step
            result = {"ok": False, "error": traceback.format_exc()[-3000:]}
        result["seconds"] = round(time.perf_counter() - t0, 1)
        summary["steps"][name] = result
        print(f"[gpu-check] {name}: {'ok' if result['ok'] else 'FAILED'} "
              f"({result['seconds']} s)", flush=True)
        write("summary.json", summary)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary["ok"] = all(s["ok"] for s in summary["steps"].values())
    write("summary.json", summary)
    print(json.dumps(summary, indent=1))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
