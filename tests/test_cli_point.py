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
    rec = point_json(*SMALL, "--modes", "--curves")
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
    rec = point_json(*SMALL, "--method", "mc", "--replicates", "16", "--device", "cpu",
                     "--modes", "--curves")
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
                     "gamma0_t={tune: [0.05, 0.1]}", "--curves")
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
        ([*SMALL, "alhpa_s=2"], "did you mean 'alpha_s'?"),  # misspelt key
        ([*SMALL, "alpha_t=2.5"], "'alpha_t' is given twice"),  # repeated key
        ([*SMALL[:2], "N=inf", *SMALL[3:], "--method", "mc"], "infinitely many samples"),
        ([*SMALL, "amplitude=1e200", "target=lowdim", "k_dagger=2"], "'amplitude'"),
    ],
)
def test_bad_input_exits_2_without_traceback(args: list[str], needle: str) -> None:
    res = ktsweep("point", *args, "--json")
    assert res.returncode == 2
    assert needle in res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""


def test_method_all_prefixes_and_bounds() -> None:
    rec = point_json(*SMALL, "--method", "all", "--replicates", "8", "--device", "cpu",
                     "--modes", "--curves")
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


def test_json_leaves_out_arrays_unless_asked() -> None:
    """The default JSON is the scalars (about 1 KB); --modes and --curves add their arrays.
    Planted bug: the filter ignoring the flags (every array printed, 280 KB at d = 1000)."""
    plain = point_json(*SMALL)
    assert not [k for k in plain if k.startswith(("mode_", "curve_")) or k == "step"]
    assert plain["risk_t2s"] > 0 and plain["status"] == "ok"
    modes = point_json(*SMALL, "--modes")
    assert len(modes["mode_t2s"]) == 20 and not [k for k in modes if k.startswith("curve_")]


def test_readable_table_marks_what_is_not_a_value() -> None:
    """The default output is a table: a diverged teacher blanks the teacher and T2S rows
    ("diverged") but shows the direct and ceiling students, which do not learn from it; a
    PGR beside a ceiling above the teacher says there is no gap. Warnings name ignored
    settings and α <= 1. Planted bugs: every row marked diverged; PGR unmarked."""
    res = ktsweep("point", SMALL[0], "alpha_s=1", *SMALL[2:], "gamma0_t=5", "amplitude=2")
    assert res.returncode == 0, res.stderr
    rows = {line.split()[0]: line.split(None, 1)[1] for line in res.stdout.splitlines()[2:9]}
    assert rows["risk_teacher"] == rows["risk_t2s"] == "diverged"
    assert float(rows["risk_direct"]) > 0 and float(rows["risk_ceiling"]) > 0
    assert "'amplitude' = 2 is ignored" in res.stderr and "alpha_s = 1 <= 1" in res.stderr
    ok = ktsweep("point", *SMALL)
    pgr = next(line for line in ok.stdout.splitlines() if line.startswith("pgr"))
    assert "no gap: ceiling not below teacher" in pgr  # this KD point: ceiling > teacher


def test_progress_bars_only_on_a_terminal(monkeypatch, capsys) -> None:
    """A bar written to a log file or a pipe is noise: tqdm is disabled unless stderr is a
    terminal. Planted bug: ``disable`` left at its default (the bars reach the log)."""
    import io

    import tqdm

    from ktsweep import cli

    made = []

    class Spy(tqdm.tqdm):
        def __init__(self, *args, **kwargs):
            made.append(kwargs.get("disable"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(tqdm, "tqdm", Spy)
    for tty in (False, True):
        stream = io.StringIO()
        stream.isatty = lambda tty=tty: tty  # type: ignore[method-assign]
        monkeypatch.setattr("sys.stderr", stream)
        cli.main(["point", *SMALL, "--method", "all", "--replicates", "2", "--json"])
    assert made == [True, True, False, False]


def test_a_diverged_point_says_the_stable_range() -> None:
    """gamma0_t = 5 diverges: the warning names the largest stable teacher step, which is the
    edge of the one-step map's stability (stable 0.1 % below it, not 0.1 % above), and marks
    the step that is too large. Planted bugs: a bisection that never narrows (it reports
    2/lambda_max); the student's spectrum used for the teacher."""
    import re

    from ktsweep.engines.onestep import one_step
    from ktsweep.model.spectra import spectrum

    res = ktsweep("point", *SMALL, "gamma0_t=5")
    assert res.returncode == 0
    found = re.search(r"teacher: gamma0_t < ([0-9.e+-]+) is stable \(this point used 5\) "
                      r"<- too large", res.stderr)
    assert found, res.stderr
    edge = float(found.group(1))
    lam = spectrum(1.2, 20)
    assert one_step(lam, 0.999 * edge, 1.0).stable and not one_step(lam, 1.001 * edge,
                                                                       1.0).stable
    assert "<- too large" not in res.stderr.split("students:")[1]
