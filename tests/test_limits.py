"""The n → ∞ (and N → ∞) limits against the finite-n engine at growing n.

Expected rates (docs/science/limits.md), d finite:
- a run whose live modes see no noise (T2S student of full rank: teacher labels are exact on
  its span) converges exponentially, like exp(−2γ0 λ_min n / log2 n);
- a run with noise (true labels, or the student's unlearnable modes acting as noise) and a
  decaying schedule converges like log2(n)/n: the last step is γ0·2^-log2(n)-ish and the
  noise floor it leaves is proportional to it;
- a constant step converges exponentially to its fixed point.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from ktsweep.engines import bounds, exact, mc
from ktsweep.model.params import ParameterError, make_point
from ktsweep.sweep.layout import Layout

BASE = {"alpha_t": 1.3, "alpha_s": 2.0, "N": 2000, "sigma2": 0.1, "d": 20}


def _gaps(extra: dict, name: str, exps: list[int]) -> np.ndarray:
    inf = exact.evaluate([make_point({**BASE, **extra, "n": "inf"})])[name][0]
    fin = exact.evaluate([make_point({**BASE, **extra, "n": 2**e}) for e in exps])[name]
    return fin - inf


def test_noiseless_t2s_converges_exponentially() -> None:
    """Full-rank student, teacher labels: the gap falls by > 1e6 from n = 2^14 to 2^18 (a
    power law n^-k would need k > 5). Planted bug: a limit that keeps the constant-step
    fixed point for the decaying schedule (gap stalls)."""
    g = _gaps({}, "risk_t2s", [14, 18])
    assert g[0] > 0 and abs(g[1]) < 1e-6 * g[0]


@pytest.mark.parametrize(("extra", "name"), [({}, "risk_ceiling"), ({"r_s": 12}, "risk_t2s"),
                                             ({"r_s": 12}, "risk_ceiling"),
                                             ({"schedule_s": "tail_geometric"}, "risk_ceiling")])
def test_noisy_runs_converge_like_log_n_over_n(extra: dict, name: str) -> None:
    """gap(n)·n/log2(n) is constant to 5 % over n = 2^18, 2^22, 2^26. Planted bugs: the
    unlearnable modes' error dropped from the limit (gap → constant), or ½ missing from it."""
    exps = [18, 22, 26]
    g = _gaps(extra, name, exps)
    norm = g * np.array([2.0**e / e for e in exps])
    assert (g > 0).all()
    np.testing.assert_allclose(norm / norm[-1], 1.0, rtol=0.05)


def test_constant_step_converges_to_its_fixed_point() -> None:
    """A constant step with unlearnable modes: the limit is the fixed point
    (g/d)s_eff²/(1 − Σg/d), reached exponentially; dropping s_eff (using s² alone) fails."""
    extra = {"schedule_s": "constant", "gamma0_s": 0.05, "r_s": 12}
    for name in ("risk_t2s", "risk_ceiling"):
        g = _gaps(extra, name, [10, 14, 18])
        assert abs(g[2]) < 1e-12 and abs(g[1]) < 1e-3 * abs(g[0])


def test_infinite_n_outputs() -> None:
    """At n = ∞ only der and the risks mean something: pgr and w2s_ratio are NaN; the
    ceiling of a full-rank student is exactly 0 with a decaying schedule; T2S equals the
    teacher's risk (the student becomes the teacher on its span); bounds are NaN; mc
    reports the point missing instead of simulating forever."""
    p = make_point({**BASE, "n": math.inf})
    out = exact.evaluate([p])
    assert out["status"][0] == "ok"
    assert np.isnan(out["pgr"][0]) and np.isnan(out["w2s_ratio"][0])
    assert out["risk_ceiling"][0] == 0.0
    assert out["risk_t2s"][0] == pytest.approx(out["risk_teacher"][0], rel=1e-12)
    assert out["der"][0] == pytest.approx(out["risk_direct"][0] / out["risk_t2s"][0])
    assert np.isnan(bounds.evaluate([p])["bound_t2s"][0])
    sim = mc.simulate([p, make_point({**BASE, "n": 100})], 4, 0, "cpu")
    assert list(sim["status"]) == ["missing", "ok"]


def test_infinite_teacher_is_the_target_on_its_span() -> None:
    """N = ∞: a full-rank teacher has zero excess risk; a rank-10 direct student keeps the
    energy of the modes it cannot represent, ½ Σ_{i>10} e_i (e_i = λ_T,i, gaussian target).
    Planted bug: P = 1 kept on dead modes but a zeroed too (direct → 0)."""
    p = make_point({**BASE, "N": "inf", "n": 4000, "r_s": 10})
    out = exact.evaluate([p])
    lam = np.arange(1, 21.0) ** -1.3
    assert out["risk_teacher"][0] == 0.0
    assert out["risk_direct"][0] == pytest.approx(0.5 * lam[10:].sum(), rel=1e-13)
    assert np.isfinite(out["risk_t2s"][0]) and np.isfinite(out["pgr"][0])


def test_unstable_first_step_has_no_limit() -> None:
    out = exact.evaluate([make_point({**BASE, "n": "inf", "gamma0_s": 5.0})])
    assert out["status"][0] == "diverged" and np.isnan(out["risk_t2s"][0])
    assert np.isfinite(out["risk_teacher"][0])


def test_inf_spellings_and_horizon() -> None:
    for spelling in ("inf", ".inf", float("inf"), "Infinity"):
        assert make_point({**BASE, "n": spelling}).n == math.inf
    with pytest.raises(ParameterError, match="horizon_s"):
        make_point({**BASE, "n": "inf", "horizon_s": 10**6})
    with pytest.raises(ParameterError, match="'n'"):
        make_point({**BASE, "n": "-inf"})


def test_grid_with_inf_values() -> None:
    """A sweep axis may mix numbers, YAML .inf and the string inf (one float spelling)."""
    lay = Layout.from_config({"name": "lim", "grid": {"n": [1000, "inf"], "N": [100, math.inf]},
                              "fixed": {"alpha_t": 1.3, "alpha_s": 2.0, "sigma2": 0.1, "d": 10}})
    assert list(lay.axes["n"]) == [1000, math.inf]
    assert lay.point_at((1, 1)).n == math.inf and math.inf == lay.point_at((1, 1)).N


def test_layout_file_keeps_infinite_values() -> None:
    """The workflow hands the layout to its jobs as JSON. Planted bug (the one the theory
    config kd_kappa hit): pydantic's default writes inf as null, and init-cube then refused
    ``fixed.n: None``."""
    lay = Layout.from_config({"name": "lim", "grid": {"N": [100, math.inf]},
                              "fixed": {"n": math.inf, "alpha_t": 1.3, "alpha_s": 2.0,
                                        "sigma2": 0.1, "d": 10}})
    back = Layout.from_json(lay.to_json())
    assert list(back.axes["N"]) == [100, math.inf]
    last = back.point_at((1,))
    assert (last.n, last.N) == (math.inf, math.inf)


def test_cli_point_with_infinite_n() -> None:
    res = subprocess.run([sys.executable, "-m", "ktsweep.cli", "point", "alpha_t=1.3",
                          "alpha_s=2", "N=500", "n=inf", "sigma2=0.1", "d=10", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert '"pgr": null' in res.stdout and '"status": "ok"' in res.stdout
