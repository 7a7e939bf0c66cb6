"""Smoke test of the benchmarks: ``--quick`` runs print one JSON object of positive numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"

EXPECTED: dict[str, list[str]] = {
    "bench_mc.py": [
        "units", "replicates", "steps_t", "steps_s", "mc_ns_per_unit", "floor_ns_per_unit",
        "ratio_mc_over_floor", "numpy_ns_per_unit", "ratio_numpy_over_mc", "numpy_seconds",
    ],
    "bench_exact.py": [
        "exact_seconds_per_point", "exact_ns_per_mode_step", "mc_seconds_per_point_extrapolated",
        "speedup_exact_over_mc", "stack_seconds_per_point", "stacking_gain",
        "speedup_exact_over_mc_one_thread",
    ],
    "bench_geometry.py": [
        "ratio_rotated_over_aligned", "ratio_rotated_fixed_target_over_aligned",
        "ratio_full_recursion_over_aligned", "aligned_hook_seconds", "aligned_hook_fraction",
    ],
}


def run_quick(script: str) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, str(BENCH / script), "--quick"], capture_output=True,
                         text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, "a benchmark prints exactly one JSON object"
    return json.loads(lines[0])


@pytest.mark.parametrize("script", list(EXPECTED))
def test_benchmark_quick_json(script: str) -> None:
    out = run_quick(script)
    assert out["quick"] is True and out["benchmark"] == script[:-3]
    for key in EXPECTED[script]:
        value = out[key]
        assert isinstance(value, int | float) and value > 0, key
    machine = out["machine"]
    assert machine["cpu_count"] >= 1 and machine["torch_threads"] >= 1
    assert isinstance(machine["torch_version"], str)
    if script == "bench_mc.py":
        assert out["one_thread"]["mc_ns_per_unit"] > 0
        assert "R*d*(steps_t + steps_s)" in out["unit_convention"]
        assert out["units"] == out["replicates"] * out["point"]["d"] * (
            out["steps_t"] + out["steps_s"])
        assert out["numpy_mean_risk_t2s"] > 0
        fused = out["fused_cpu"]
        for key in ("ns_per_unit", "floor_ns_per_unit"):
            assert 0 < fused[key]["best"] <= fused[key]["median"], key
        # the kernel draws exactly its floor's rows and then does more work with them
        assert fused["ratio_over_floor_best"] > 1
        paper = out["paper_size"]
        assert paper["fused_ns_per_update"]["best"] > 0
        assert paper["speedup_fused_over_plain_torch_loop"] > 0
    elif script == "bench_exact.py":
        assert "extrapolat" in out["mc_extrapolation"]
        assert len(out["revisit_cpu_seconds_per_pass"]) == 3
        assert out["horizon_rows"][-1]["roots"] > 0 and out["flatness_roots"] > 0
        assert out["revisit_cache_mb_held"] <= out["revisit_cache_mb_budget"]


def test_gpu_benchmark_skips_or_runs() -> None:
    """Without CUDA it says so; its CPU smoke path runs the same code and agrees with exact.

    Planted bugs caught: a floor that draws more than mc does (one block per model, four
    per step, instead of one shared block), or a result without a key the GPU check reads
    (the fused kernel's section included).
    """
    res = subprocess.run([sys.executable, str(BENCH / "bench_gpu.py"), "--quick"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    import torch

    assert ("skipped" in out) != torch.cuda.is_available()
    res = subprocess.run([sys.executable, str(BENCH / "bench_gpu.py"), "--quick", "--device",
                          "cpu"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    for key in ("device_ns_per_unit", "floor_ns_per_unit", "ratio_mc_over_floor",
                "copy_gib_per_s", "cpu_ns_per_unit_one_thread", "cpu_all_cores_ns_per_unit",
                "speedup_over_cpu_all_cores"):
        assert isinstance(out[key], float) and out[key] > 0, key
    # Monte Carlo draws exactly the floor's blocks and then does more work with them
    assert out["ratio_mc_over_floor"] > 1
    assert out["device"] == "cpu" and out["torch_version"] == torch.__version__
    assert out["cpu_processes"] >= 1 and out["agreement_max_abs_z"] < 5
    fused = out["fused"]  # the CPU stand-in of the Triton kernel: numba's
    assert fused["kernel"] == "numba" and fused["agreement_max_abs_z"] < 5
    for key in ("ns_per_unit", "ratio_over_torch_randn_floor", "speedup_over_torch_path"):
        assert isinstance(fused[key], float) and fused[key] > 0, key
    assert fused["paper"]["speedup_fused_over_torch_path"] > 0


def test_numpy_sgd_loop_agrees_with_exact() -> None:
    """The benchmark's NumPy SGD baseline simulates the same model: its mean T2S risk over
    200 replicates is within 4 standard errors of the exact engine's.

    Mutations: labelling the T2S student with the true noisy labels (it then measures the
    ceiling, exact 0.037 vs 0.262), or a constant step size instead of the schedule, fail."""
    sys.path.insert(0, str(BENCH))
    try:
        import bench_mc
    finally:
        sys.path.remove(str(BENCH))
    import numpy as np

    from ktsweep.engines import exact
    from ktsweep.model.params import make_point

    p = make_point({"alpha_t": 1.5, "alpha_s": 1.5, "N": 32, "n": 256, "sigma2": 0.1, "d": 10})
    want = float(exact.evaluate([p])["risk_t2s"][0])
    rng = np.random.default_rng(1)
    risks = np.array([bench_mc.numpy_replicate(p, rng) for _ in range(200)])
    se = risks.std(ddof=1) / np.sqrt(len(risks))
    assert abs(risks.mean() - want) <= 4 * se, (risks.mean(), se, want)
