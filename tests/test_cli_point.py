"""``ktsweep point`` as a user runs it: a subprocess printing one JSON object."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

SMALL = ["alpha_t=1.2", "alpha_s=1.6", "N=300", "n=400", "sigma2=0.1", "d=20"]
RISK_KEYS = ["risk_teacher", "risk_direct", "risk_t2s", "risk_ceiling"]
RATIO_KEYS = ["der", "pgr", "w2s_ratio"]
MODE_KEYS = ["mode_teacher", "mode_direct", "mode_t2s", "mode_ceiling"]
CURVE_KEYS = ["curve_teacher", "curve_t2s"]
POINT_KEYS = RISK_KEYS + RATIO_KEYS + MODE_KEYS + CURVE_KEYS + [
    "status", "gamma0_t", "gamma0_s", "step"]


def ktsweep(*args: str) -> subprocess.CompletedProcess:
    """Run ``python -m ktsweep.cli ARGS`` with this interpreter."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ktsweep.cli", *args], capture_output=True,
                          text=True, timeout=300, env=env)


def strict_json(text: str) -> dict[str, Any]:
    """Parse JSON, refusing the non-standard NaN/Infinity tokens."""

    def refuse(token: str) -> None:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def point_json(*args: str) -> dict[str, Any]:
    res = ktsweep("point", *args, "--json")
    assert res.returncode == 0, res.stderr
    return strict_json(res.stdout)


def test_exact_json_has_every_key() -> None:
    rec = point_json(*SMALL)
    assert set(POINT_KEYS) <= set(rec)
    assert rec["status"] == "ok"
    assert all(isinstance(rec[k], float) and rec[k] > 0 for k in RISK_KEYS)
    assert rec["der"] == pytest.approx(rec["risk_direct"] / rec["risk_t2s"])
    assert all(len(rec[k]) == 20 for k in MODE_KEYS)
    assert rec["step"][0] == 0 and rec["step"][-1] >= 400
    assert all(len(rec[k]) == len(rec["step"]) for k in CURVE_KEYS)
    assert sum(rec["mode_t2s"]) == pytest.approx(rec["risk_t2s"], rel=1e-12)
    # the default γ0 is {scale: 0.5}: 0.5 / tr Σ
    assert rec["gamma0_t"] == pytest.approx(0.5 / np.sum(np.arange(1, 21) ** -1.2))


def test_mc_json_has_standard_errors() -> None:
    rec = point_json(*SMALL, "--method", "mc", "--replicates", "16", "--device", "cpu")
    assert set(POINT_KEYS) <= set(rec)
    for k in RISK_KEYS + ["der", "w2s_ratio"] + MODE_KEYS + CURVE_KEYS:
        assert k + "_se" in rec, k
    assert "pgr_se" in rec
    assert all(rec[k + "_se"] > 0 for k in RISK_KEYS)


def test_mc_kernel_option() -> None:
    """``--kernel fused`` runs the point on the fused CPU kernel: its own stream, so other
    numbers than the torch path's at the same seed, with standard errors; an unknown kernel
    is refused before anything runs.

    Planted bug caught: the option parsed but not passed on to the Monte Carlo settings."""
    pytest.importorskip("numba")
    args = [*SMALL, "--method", "mc", "--replicates", "16", "--device", "cpu"]
    fused, torch_rec = point_json(*args, "--kernel", "fused"), point_json(*args)
    assert fused["status"] == "ok" and all(fused[k + "_se"] > 0 for k in RISK_KEYS)
    assert all(fused[k] != torch_rec[k] for k in RISK_KEYS)
    res = ktsweep("point", *args, "--kernel", "cupy")
    assert res.returncode != 0 and "--kernel" in res.stderr


def test_yaml_values() -> None:
    rec = point_json("alpha_t=1.0", "alpha_s=1.0", "N=1e3", "n=500", "sigma2=1", "d=40",
                     "gamma0_s={scale: 0.3}", "target=lowdim", "k_dagger=10", "amplitude=0.1",
                     "gamma0_t={tune: [0.05, 0.1]}")
    assert rec["status"] == "ok"
    assert rec["gamma0_s"] == pytest.approx(0.3 / np.sum(1.0 / np.arange(1, 41)))
    assert rec["gamma0_t"] in (0.05, 0.1)
    # lowdim: the half energy at step 0 is ½ a² Σ_{i≤k†} λ_i
    start = 0.5 * 0.01 * np.sum(1.0 / np.arange(1, 11))
    assert rec["curve_teacher"][0] == pytest.approx(start, rel=1e-12)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([*SMALL, "gamma=0.1"], "'gamma'"),  # unknown key
        ([*SMALL[1:], "alpha_t=fast"], "'alpha_t'"),  # bad value
        ([*SMALL, "gamma0_s={scale: -1}"], "'gamma0_s'"),  # bad mapping
        ([*SMALL, "target=lowdim"], "'k_dagger'"),  # missing dependency
        ([*SMALL, "schedule_s"], "'schedule_s'"),  # missing '='
        ([*SMALL[1:]], "'alpha_t'"),  # missing required
    ],
)
def test_bad_input_exits_2_without_traceback(args: list[str], needle: str) -> None:
    res = ktsweep("point", *args, "--json")
    assert res.returncode == 2
    assert needle in res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""


def test_method_all_prefixes_and_bounds() -> None:
    rec = point_json(*SMALL, "--method", "all", "--replicates", "8", "--device", "cpu")
    for k in RISK_KEYS + RATIO_KEYS + MODE_KEYS + CURVE_KEYS:
        assert f"exact_{k}" in rec and f"mc_{k}" in rec, k
        assert k not in rec
    assert "mc_risk_t2s_se" in rec and "exact_risk_t2s_se" not in rec
    for run in ("teacher", "direct", "ceiling"):
        for k in ("bound_upper_", "bound_lower_", "kstar_upper_", "kstar_lower_", "sandwich_"):
            assert k + run in rec
    for k in ("bound_t2s", "bound_t2s_delta", "kstar_t2s", "bound_t2s_holds", "step_condition"):
        assert k in rec
    assert rec["status"] == rec["exact_status"] == rec["mc_status"] == "ok"
    assert rec["bound_lower_teacher"] <= rec["bound_upper_teacher"]


def test_help_is_plain_text() -> None:
    """Mutation: ``description=__doc__`` with the module's reStructuredText (``ktsweep``)
    shows raw markup in ``ktsweep --help``."""
    from ktsweep import cli

    for argv in ([], ["point"], ["plan"], ["fits"]):
        text = cli.build_parser().format_help() if not argv else \
            cli.build_parser()._subparsers._group_actions[0].choices[argv[0]].format_help()
        assert "``" not in text and ":func:" not in text and ":data:" not in text, argv
