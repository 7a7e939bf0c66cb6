"""Divergence, defined once (moments.DIVERGED_FACTOR), on the cases issue 8's scan found.

The point is the one the issue reports: alpha_t=1.2 alpha_s=2 N=500 n=500 sigma2=0.1 d=20
gamma0_s=0.1, with the teacher's step varied.
"""

from __future__ import annotations

import numpy as np
import pytest

from ktsweep.cli import point_record, tune_edge_warnings
from ktsweep.engines import exact, mc
from ktsweep.engines.moments import DIVERGED_FACTOR, evolve_steps
from ktsweep.model.params import make_point
from ktsweep.model.quantities import RISKS
from ktsweep.model.spectra import schedule_phases, spectrum, step_sizes

ISSUE = {"alpha_t": 1.2, "alpha_s": 2, "N": 500, "n": 500, "sigma2": 0.1, "d": 20,
         "gamma0_s": 0.1}


def _literal_teacher_peak(gamma0: float) -> float:
    """max_t (Σa + s²) / (Σa(0) + s²) of the issue's teacher, one float64 step at a time."""
    lam = spectrum(1.2, 20)
    a = lam.copy()  # gaussian target: e_i = λ_i
    start = a.sum() + 0.1
    peak = 1.0
    for g in step_sizes(schedule_phases("geometric", gamma0, 500, 500), 500):
        gl = g * lam
        a = (1 - 2 * gl + 2 * gl * gl) * a + gl * gl * (a.sum() + 0.1)
        peak = max(peak, (a.sum() + 0.1) / start)
    return peak


def test_issue_gamma_1_2_is_diverged_not_a_negative_ok() -> None:
    """γ0_T = 1.2 once gave risk_teacher = −1.08e24 with status ok (true value ≈ +9.9e25).
    Now: diverged, teacher and T2S blanked, direct and ceiling kept (they do not depend on
    the teacher) and equal to the values of a teacher that converges.
    Planted bugs: blanking every run of the point (direct NaN), or reading the negative
    closed-form total as ok (status ok)."""
    assert _literal_teacher_peak(1.2) > DIVERGED_FACTOR  # the rule's verdict, independently
    bad = exact.evaluate([make_point({**ISSUE, "gamma0_t": 1.2})])
    good = exact.evaluate([make_point({**ISSUE, "gamma0_t": 0.3})])
    assert bad["status"][0] == "diverged"
    assert np.isnan(bad["risk_teacher"][0]) and np.isnan(bad["risk_t2s"][0])
    for k in ("risk_direct", "risk_ceiling"):
        assert bad[k][0] == pytest.approx(good[k][0], rel=1e-13), k
        assert bad[k][0] > 0


def test_issue_gamma_1_34_does_not_raise() -> None:
    """γ0_T = 1.34 once raised LinAlgError out of the engine (a whole sweep chunk lost).
    Both solvers return a diverged teacher; the point next to it is unaffected."""
    pts = [make_point({**ISSUE, "gamma0_t": 1.34}), make_point({**ISSUE, "gamma0_t": 0.3})]
    for solver in (exact.evolve, evolve_steps):
        out = exact.evaluate(pts, solver=solver)
        assert list(out["status"]) == ["diverged", "ok"]
        assert np.isfinite(out["risk_t2s"][1])


def test_tune_never_picks_a_diverged_step_and_flags_the_edge() -> None:
    """``{tune: [0.1, 0.3, 1.2]}`` once chose 1.2 (negative garbage won the minimum) and exact
    said ok while mc said diverged. Now 0.3 wins, both estimators agree on ok, and the flag
    says 0.3 is inside the list; [0.01, 0.03] chooses its upper end and says so (in the
    cube variable and as a ``ktsweep point`` warning)."""
    p = make_point({**ISSUE, "gamma0_t": {"tune": [0.1, 0.3, 1.2]}})
    ex = exact.evaluate([p])
    assert ex["gamma0_t"][0] == 0.3 and ex["status"][0] == "ok"
    assert ex["tune_edge_t"][0] == 0.0 and np.isnan(ex["tune_edge_s"][0])
    sim = mc.simulate([p], 64, 3, "cpu", "float64")
    assert sim["gamma0_t"][0] == 0.3 and sim["status"][0] == "ok"
    for k in RISKS:
        assert abs(sim[k][0] - ex[k][0]) < 4 * sim[k + "_se"][0], k

    edge = make_point({**ISSUE, "gamma0_t": {"tune": [0.01, 0.03]}})
    res = {"exact": exact.evaluate([edge])}
    assert res["exact"]["gamma0_t"][0] == 0.03 and res["exact"]["tune_edge_t"][0] == 1.0
    warnings = tune_edge_warnings(point_record(res, np.zeros(0, dtype=np.int64)))
    assert len(warnings) == 1 and "gamma0_t = 0.03" in warnings[0]


def test_each_runs_edge_flag_follows_its_own_choice() -> None:
    """Each of the four runs tunes γ0 on its own, and its flag says whether its own choice
    sits at an end of the list. On these two points the runs choose differently (the T2S
    student 0.2 where the direct and ceiling students take 0.6; the teacher 0.2 where the
    students take 0.6), so a flag read from another run's choice fails (mutations: the T2S
    flag from the direct student's γ0; the teacher's from a student's)."""
    tune = {"tune": [0.05, 0.2, 0.6]}
    pts = [make_point({"alpha_t": 1.5, "alpha_s": 2.0, "N": 64, "n": n, "sigma2": s2, "d": 50,
                       "gamma0_t": tune, "gamma0_s": tune})
           for n, s2 in ((4096, 0.01), (64, 1.0))]
    out = exact.evaluate(pts)
    runs = {"t": "gamma0_t", "direct": "gamma0_direct", "ceiling": "gamma0_ceiling",
            "s": "gamma0_s"}
    for run, key in runs.items():
        np.testing.assert_array_equal(out[f"tune_edge_{run}"],
                                      np.isin(out[key], [0.05, 0.6]).astype(float), err_msg=run)
    assert out["gamma0_s"][0] != out["gamma0_direct"][0]
    assert out["gamma0_t"][1] != out["gamma0_direct"][1]


@pytest.mark.parametrize("gamma0_t", [0.6, 0.9, 1.2, 1.34, 2.0, 2.9])
def test_no_negative_or_nonfinite_risk_is_ok(gamma0_t: float) -> None:
    """The scan's failure classes over γ0 ∈ [0.5, 3): whatever the verdict, an ok run has a
    finite, non-negative risk, and the closed form and the step recursion agree on it."""
    p = make_point({**ISSUE, "gamma0_t": gamma0_t})
    fast = exact.evaluate([p])
    ref = exact.evaluate([p], solver=evolve_steps)
    assert fast["status"][0] == ref["status"][0]
    for k in RISKS:
        v = fast[k][0]
        assert np.isnan(v) or (np.isfinite(v) and v >= 0), k
        np.testing.assert_allclose(v, ref[k][0], rtol=1e-9, err_msg=k)
