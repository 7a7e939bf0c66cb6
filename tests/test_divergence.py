"""Divergence, defined once (moments.DIVERGED_FACTOR), on the cases scans and users found.

Most tests use the point alpha_t=1.2 alpha_s=2 N=500 n=500 sigma2=0.1 d=20 gamma0_s=0.1 with
the teacher's step varied (``ISSUE``); the later ones are points with non-Gaussian inputs
whose runs converge although a factor of the one-step map is negative, rotated students,
tune lists and the transfer bound of a diverged run. Independent values come from the
full-matrix recursion of ``tests/reference.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import full_point

from ktsweep.cli import point_record, tune_edge_warnings
from ktsweep.engines import bounds, exact, mc
from ktsweep.engines.moments import DIVERGED_FACTOR, evolve_steps
from ktsweep.model.params import make_point
from ktsweep.model.quantities import RATIOS, RISKS
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
    """γ0_T = 1.34 raised LinAlgError out of the engine with OpenBLAS's SkylakeX kernel (a
    whole sweep chunk lost), and said diverged with its Haswell kernel. Both solvers return a
    diverged teacher; the point next to it is unaffected.
    Planted bug caught (on a SkylakeX machine): the block's renewal system inverted with
    np.linalg.inv instead of solved by its recursion."""
    pts = [make_point({**ISSUE, "gamma0_t": 1.34}), make_point({**ISSUE, "gamma0_t": 0.3})]
    for solver in (exact.evolve, evolve_steps):
        out = exact.evaluate(pts, solver=solver)
        assert list(out["status"]) == ["diverged", "ok"]
        assert np.isfinite(out["risk_t2s"][1])


GAUSSIAN_155 = {"alpha_t": 1.1, "alpha_s": 1.1, "N": 50, "n": 50, "sigma2": 0.1, "d": 5,
                "gamma0_s": 0.1}


def test_overflowing_teacher_in_a_tune_list_is_only_a_candidate() -> None:
    """The other overflowing teacher (Gaussian, γ0_T = 1.55) is diverged on both solvers;
    in a tune list next to 0.3 it is one losing candidate, not the end of the point (a
    raised error took every point of the chunk with it): the point is ok at 0.3, with the
    risks of the point at 0.3 alone.
    Planted bug caught (on a SkylakeX machine): the block's renewal system inverted with
    np.linalg.inv (the LinAlgError then ended the whole point)."""
    for solver in (exact.evolve, evolve_steps):
        assert exact.evaluate([make_point({**GAUSSIAN_155, "gamma0_t": 1.55})],
                              solver=solver)["status"][0] == "diverged"
    tuned = exact.evaluate([make_point({**GAUSSIAN_155, "gamma0_t": {"tune": [0.3, 1.55]}})])
    alone = exact.evaluate([make_point({**GAUSSIAN_155, "gamma0_t": 0.3})])
    assert tuned["status"][0] == "ok" and tuned["gamma0_t"][0] == 0.3
    for k in RISKS:
        assert tuned[k][0] == pytest.approx(alone[k][0], rel=1e-12), k


RADEMACHER_D2 = {"alpha_t": 1, "alpha_s": 1, "N": 10, "n": 10, "sigma2": 0, "d": 2,
                 "inputs": "rademacher", "gamma0_s": 0.9, "schedule_t": "constant",
                 "schedule_s": "constant"}


def test_rademacher_run_with_a_negative_eigenvalue_converges() -> None:
    """Rademacher inputs at γ0 = 0.9 on λ = (1, ½): q_1 = 1 − 2γλ_1 = −0.8, so the one-step
    map has a negative eigenvalue, and the closed form once read its power as
    exp(L·log1p(−δ)) = NaN: diverged, every risk missing. The run converges: risk_teacher =
    0.0033199 and risk_t2s = 0.0066422 as the full-matrix recursion gives, status ok.
    Planted bug caught: μ^L as exp(L·log1p(−δ)) for δ > 1."""
    p = make_point({**RADEMACHER_D2, "gamma0_t": 0.9})
    out, ref = exact.evaluate([p]), full_point(p)
    assert out["status"][0] == "ok"
    assert out["risk_teacher"][0] == pytest.approx(0.0033199, abs=5e-8)
    assert out["risk_t2s"][0] == pytest.approx(0.0066422, abs=5e-8)
    for run, r in ref.items():
        assert out[f"risk_{run}"][0] == pytest.approx(r.half_sums[-1], rel=1e-12), run


def test_rotated_non_gaussian_student_ok_has_every_number() -> None:
    """A rotated student (30°) with Rademacher inputs was ok with risk_t2s, der, w2s_ratio
    and pgr missing. Every number is there and risk_t2s = 0.027769 (full-matrix recursion).
    Planted bug caught: the negative eigenvalue's power as NaN (the aligned solver's NaN
    contraction then reached the T2S risk)."""
    p = make_point({**RADEMACHER_D2, "gamma0_t": 0.5, "angle": 30})
    out, ref = exact.evaluate([p]), full_point(p)
    assert out["status"][0] == "ok"
    assert out["risk_t2s"][0] == pytest.approx(0.027769, abs=5e-7)
    assert out["risk_t2s"][0] == pytest.approx(ref["t2s"].half_sums[-1], rel=1e-12)
    for k in RISKS + RATIOS:
        assert np.isfinite(out[k][0]), k


STUDENT_T_ROTATED = {"alpha_t": 1.0, "alpha_s": 1.2, "N": 40, "n": 40, "sigma2": 0.1, "d": 2,
                     "angle": 45, "inputs": "student_t", "inputs_nu": 6.0,
                     "schedule_s": "constant", "gamma0_t": 0.3}


def test_full_run_keeps_its_own_contraction() -> None:
    """A rotated student with Student-t inputs (ν = 6) at γ0_S = 0.457: the aligned solver's
    diagonal run diverges there, the full-matrix run (which replaces it) does not. The point
    is ok with the full recursion's risks (large, the run peaks at 4 % of the limit, but
    finite); the contraction, which ψ does not enter, is recomputed rather than kept from
    the diverged aligned run (NaN), so the T2S risk and the ratios are numbers.
    Planted bug caught: ``overwrite_full`` clearing the diverged flag but keeping the aligned
    solver's NaN contraction (T2S and the ratios missing, the point then diverged)."""
    p = make_point({**STUDENT_T_ROTATED, "gamma0_s": 0.457})
    out, ref = exact.evaluate([p]), full_point(p)
    assert out["status"][0] == "ok"
    for run, r in ref.items():
        assert out[f"risk_{run}"][0] == pytest.approx(r.half_sums[-1], rel=1e-10), run
    for k in RATIOS:
        assert np.isfinite(out[k][0]), k


def test_tune_list_keeps_the_best_rotated_rademacher_step() -> None:
    """α 1.4/1.8, d = 10, a student rotated by 25°, Rademacher inputs, power target,
    ``gamma0_s={tune: [0.05, 0.2, 0.45, 0.9]}``: the list once chose 0.45, whose T2S risk is
    a third above 0.9's. Every candidate is ok, and the tuned point takes 0.9, whose T2S
    risk is the lowest of the four points evaluated alone and the full recursion's.
    Planted bug caught: a candidate's power of a negative eigenvalue read as NaN (it drops
    out of the list)."""
    base = {"alpha_t": 1.4, "alpha_s": 1.8, "N": 200, "n": 200, "sigma2": 0.1, "d": 10,
            "angle": 25, "inputs": "rademacher", "target": "power"}
    grid = [0.05, 0.2, 0.45, 0.9]
    tuned = exact.evaluate([make_point({**base, "gamma0_s": {"tune": grid}})])
    each = exact.evaluate([make_point({**base, "gamma0_s": g}) for g in grid])
    assert list(each["status"]) == ["ok"] * 4
    assert tuned["gamma0_s"][0] == 0.9 and np.argmin(each["risk_t2s"]) == 3
    ref = full_point(make_point({**base, "gamma0_s": 0.9}))
    assert tuned["risk_t2s"][0] == pytest.approx(ref["t2s"].half_sums[-1], rel=1e-10)


def test_no_transfer_bound_for_a_diverged_run() -> None:
    """The transfer bound reads the exact T2S moments; where that run diverged (γ0_T = 1.2)
    it is NaN with its δ and k*, not inf with k* = 0, while the direct bounds (closed forms
    of the spectrum and γ0) stay.
    Planted bug caught: the minimum over δ of NaN values left at its start (inf, k* = 0)."""
    out = bounds.evaluate([make_point({**ISSUE, "gamma0_t": 1.2})])
    for k in ("bound_t2s", "bound_t2s_delta", "kstar_t2s", "bound_t2s_holds"):
        assert np.isnan(out[k][0]), k
    assert np.isfinite(out["bound_upper_direct"][0])


def test_limit_with_a_negative_eigenvalue_is_the_long_run() -> None:
    """Rademacher inputs, constant step 0.9 on λ = (1, ½) (a negative eigenvalue): the limit
    N = ∞ (the fixed point of the map) equals the run of 2^20 steps, for teacher and
    direct student, to 1e-9.
    Planted bugs caught: the limit's fixed point with the Gaussian curvature (ψ ignored),
    its stability verdict refusing a map with q_i < 0."""
    vals = {**RADEMACHER_D2, "sigma2": 0.1, "gamma0_t": 0.9}
    inf = exact.evaluate([make_point({**vals, "N": float("inf")})])
    long = exact.evaluate([make_point({**vals, "N": 2**20})])
    assert inf["status"][0] == "ok"
    for k in ("risk_teacher", "risk_direct"):
        assert inf[k][0] == pytest.approx(long[k][0], rel=1e-9), k


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
