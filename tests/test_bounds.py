"""Analytic bounds of docs/science/bounds.md against the exact risk, and their k* definitions."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest

from ktsweep.engines import bounds, exact
from ktsweep.model.params import Point, make_point
from ktsweep.model.spectra import spectrum, target_energy

GAMMA0 = 0.004
TARGETS: dict[str, dict[str, Any]] = {
    "gaussian": {},
    "lowdim": {"target": "lowdim", "k_dagger": 5, "amplitude": 0.3},
    "power": {"target": "power", "beta": 0.5},
}


def sandwich_grid() -> list[Point]:
    """Batch 1, geometric schedule over the run, γ0 small enough for the step condition."""
    pts = []
    for alpha, N, sigma2, target, d in itertools.product(
        [1.5, 2.0, 3.0], [10, 100, 1000, 10_000], [0.0, 0.1, 1.0], TARGETS, [50, 200]
    ):
        pts.append(make_point({
            "alpha_t": alpha, "alpha_s": alpha + 0.5, "N": N, "n": max(2, N // 2),
            "sigma2": sigma2, "d": d, "gamma0_t": GAMMA0, "gamma0_s": GAMMA0,
            "r_s": d // 2 if N == 100 else None, **TARGETS[target],
        }))
    return pts


@pytest.fixture(scope="module")
def grid() -> tuple[list[Point], dict[str, np.ndarray], dict[str, np.ndarray]]:
    pts = sandwich_grid()
    return pts, bounds.evaluate(pts), exact.evaluate(pts)


def test_step_condition_holds_on_grid(grid) -> None:
    _, b, _ = grid
    assert np.all(b["step_condition"] == 1.0)


@pytest.mark.parametrize("run", ["teacher", "direct", "ceiling"])
def test_lower_le_exact_le_upper(run: str, grid) -> None:
    pts, b, ex = grid
    lo, up, risk = b[f"bound_lower_{run}"], b[f"bound_upper_{run}"], ex[f"risk_{run}"]
    assert np.all(np.isfinite(risk)) and np.all(lo > 0) and np.all(np.isfinite(up))
    bad = [(pts[i].as_dict(), lo[i], risk[i], up[i])
           for i in np.flatnonzero(~((lo <= risk) & (risk <= up)))]
    assert not bad, f"{len(bad)} violations, first: {bad[0]}"
    np.testing.assert_array_equal(b[f"sandwich_{run}"], 1.0)


def test_transfer_bound_delta_in_range(grid) -> None:
    pts, b, ex = grid
    delta = b["bound_t2s_delta"]
    assert np.all((delta >= 0.01) & (delta <= 0.49))
    assert np.all(np.isin(np.round(delta, 2), np.round(np.arange(1, 50) / 100, 2)))
    for i in (0, 37, len(pts) - 1):
        p = pts[i]
        lam_s = spectrum(p.alpha_s, p.d, p.rank_s)
        threshold = delta[i] * math.log2(p.n) / (4 * GAMMA0 * p.n)
        assert b["kstar_t2s"][i] == np.count_nonzero(lam_s > threshold)
    # the flag says what it says; its truth is a finding per point (docs/science/bounds.md)
    np.testing.assert_array_equal(b["bound_t2s_holds"], (ex["risk_t2s"] <= b["bound_t2s"]) * 1.0)


def test_kstar_and_bounds_by_hand() -> None:
    """α = 1.5, N = 2000, γ0 = 0.5, d = 50, σ² = 0.1, gaussian target (e_i = λ_i).

    lower threshold  log2(2000)/(0.5·2000) = 10.966/1000 = 0.010966: 20^-1.5 = 0.01118 > it,
                     21^-1.5 = 0.01039 < it, so k*_lower = 20;
    upper threshold  2 ln(2000) log2(2000)/1000 = 2·7.6009·10.966/1000 = 0.16671:
                     3^-1.5 = 0.19245 > it, 4^-1.5 = 0.125 < it, so k*_upper = 3.
    """
    p = make_point({"alpha_t": 1.5, "alpha_s": 1.5, "N": 2000, "n": 2000, "sigma2": 0.1,
                    "d": 50, "gamma0_t": 0.5, "gamma0_s": 0.5})
    b = bounds.evaluate([p])
    for run in ("teacher", "direct", "ceiling"):
        assert b[f"kstar_lower_{run}"][0] == 20
        assert b[f"kstar_upper_{run}"][0] == 3
    lam, e = spectrum(1.5, 50), target_energy(p)
    K = 2000 / math.log2(2000)
    upper = (0.5 * e[:3].sum() / 2000**2 + 0.5 * e[3:].sum()
             + 16 * (3 * e.sum() + 0.1) * (3 / K + K * 0.25 * (lam[3:] ** 2).sum()))
    lower = e[20:].sum() / 200 + 0.1 / 8 * (20 / K + K * 0.25 * (lam[20:] ** 2).sum())
    assert b["bound_upper_teacher"][0] == pytest.approx(upper, rel=1e-12)
    assert b["bound_lower_teacher"][0] == pytest.approx(lower, rel=1e-12)
    # the step condition fails here: 0.5 > 1/(100 λ_max) = 0.01
    assert b["step_condition"][0] == 0.0


def test_transfer_bound_value_by_hand() -> None:
    """Theorem 1's B(δ) (docs/science/bounds.md) on hand-made moments, minimum over δ by hand.

    λ_S = (1, 0.05, 0.0101), n = 16, γ0_S = 0.5: threshold δ log2 n / (4 γ0 n) = δ / 8, so
    k*_S = 3 for δ ≤ 0.08, 2 for 0.09 ≤ δ ≤ 0.39, 1 from 0.40. With a^T = (0.1, 0.2, 0.3),
    a^S = (0.1, 0.4, 2.0), P^S = (0.5, 0.9, 0.95), E[u_T²] = (1, 0.5, 2.0), e = (1, 0.3, 0.2):
    k = 3 gives ½·0.6 + ½·2.5 = 1.55; k = 2 gives 0.4 + (2.0 − 0.95²·2.0) + 0.2 + δ²(2·0.3 +
    2·0.2) = 0.795 + δ², least at δ = 0.09: 0.8031; k = 1 (δ = 0.4) gives 1.11. So B = 0.8031
    at δ = 0.09, k* = 2.

    Mutations: the tail coefficient 2δ² → 7δ² on a^T (0.8153), dropping the tail_student term
    (0.6081), or ½ → 1 on a head sum all change the value.
    """
    lam_s = np.array([1.0, 0.05, 0.0101])
    args = (lam_s, np.array([1.0, 0.3, 0.2]), np.array([0.1, 0.2, 0.3]),
            np.array([0.1, 0.4, 2.0]), np.array([0.5, 0.9, 0.95]), np.array([1.0, 0.5, 2.0]),
            16, 0.5)
    value, delta, k, term1, term2 = bounds.transfer_bound(*args)
    assert (delta, k) == (0.09, 2)
    assert value == pytest.approx(0.795 + 0.09**2, rel=1e-12)
    # (I) = ½(0.1 + 0.2) + 2δ²·0.3, (II) = ½(0.1 + 0.4) + 0.195 + (1 + 2δ²)·0.2; (III) adds
    # the alignment bias without moving δ (a term swapped between (I) and (II) is caught)
    assert term1 == pytest.approx(0.15 + 2 * 0.09**2 * 0.3, rel=1e-12)
    assert term2 == pytest.approx(0.25 + 0.195 + (1 + 2 * 0.09**2) * 0.2, rel=1e-12)
    assert bounds.transfer_bound(*args, bias=0.25) == pytest.approx(
        (value + 0.25, delta, k, term1, term2), rel=1e-12)


def test_student_variance_and_reduced_bound_by_hand() -> None:
    """The split behind Theorem 5's proof on the hand-made moments of the test above.

    v = a^S − (P^S)² E[u_T²] = (−0.15, −0.005, 0.195) (the moments are made up, not a run). At
    B's own minimum (δ = 0.09, k* = 2) the student's variance is ½(−0.15 − 0.005) + 0.195 =
    0.1175. Without it, B(δ) is ½ Σ_head a^T + 2δ² Σ_tail a^T + ½ Σ_head (P^S)² E[u_T²] +
    (1 + 2δ²) Σ_tail e: 1.53 for k* = 3, 0.6775 + δ² for k* = 2, 0.675 + 2δ² for k* = 1, least
    at δ = 0.09: 0.6856, and the two add up to B = 0.8031. Mutations caught: the variance
    without its tail part (−0.0775) or with its head counted in full (0.04), the reduced bound
    without the student's bias (0.3) or without the target tail (0.335)."""
    lam_s = np.array([1.0, 0.05, 0.0101])
    e, a_t = np.array([1.0, 0.3, 0.2]), np.array([0.1, 0.2, 0.3])
    a_s, p_s, u_sq = np.array([0.1, 0.4, 2.0]), np.array([0.5, 0.9, 0.95]), np.array(
        [1.0, 0.5, 2.0])
    assert bounds.student_variance(a_s, p_s, u_sq, 2) == pytest.approx(0.1175, rel=1e-12)
    reduced = bounds.reduced_transfer_bound(lam_s, e, a_t, p_s, u_sq, 16, 0.5)
    assert reduced == pytest.approx(0.6775 + 0.09**2, rel=1e-12)
    assert reduced + 0.1175 == pytest.approx(0.795 + 0.09**2, rel=1e-12)  # = B(δ) there
    assert bounds.reduced_transfer_bound(lam_s, e, a_t, p_s, u_sq, 16, 0.5,
                                         bias=0.25) == pytest.approx(reduced + 0.25, rel=1e-12)


def test_transfer_bound_wired_to_the_exact_moments() -> None:
    """bound_t2s from :func:`bounds.evaluate` equals B(δ) written out from the exact engine's
    own per-mode outputs and the schedules: a^T = 2·mode_teacher (risks carry ½); P^T, P^S =
    Π(1 − γ_t λ) over each run; for the deterministic lowdim target E[u_T] = (1 − P^T) θ, so
    E[u_T²] = a^T + e − 2 P^T e and E[u_T η_T] = a^T − P^T e; a^S = E[(u_S − u_T)²] follows
    from 2·mode_t2s = a^S − 2 P^S E[u_T η_T] + a^T.

    Mutation: passing a^S where a^T belongs (or P^T for P^S) in from_detail changes the
    value; so does dropping ``tail_student``.
    """
    from ktsweep.model.spectra import (
        phase_product,
        resolve_gamma0,
        schedule_phases,
        student_spectrum,
        teacher_spectrum,
    )

    p = make_point({"alpha_t": 1.5, "alpha_s": 2.0, "N": 64, "n": 200, "sigma2": 0.1, "d": 12,
                    "target": "lowdim", "k_dagger": 4, "amplitude": 0.5, "gamma0_t": 0.05,
                    "gamma0_s": 0.05})
    ex, b = exact.evaluate([p]), bounds.evaluate([p])
    lam_t, lam_s, e = teacher_spectrum(p), student_spectrum(p), target_energy(p)
    a_t = 2 * ex["mode_teacher"][0]
    g_t = resolve_gamma0(p.gamma0_t, lam_t)[0]
    g_s = resolve_gamma0(p.gamma0_s, lam_s)[0]
    P_t = phase_product(schedule_phases(p.schedule_t, g_t, p.steps_t, p.plan_t), p.steps_t,
                        lam_t)
    P_s = phase_product(schedule_phases(p.schedule_s, g_s, p.steps_s, p.plan_s), p.steps_s,
                        lam_s)
    u_sq = a_t + e - 2 * P_t * e
    a_s = 2 * ex["mode_t2s"][0] + 2 * P_s * (a_t - P_t * e) - a_t
    best = math.inf
    for delta in np.round(np.arange(1, 50) / 100.0, 2):
        k = int(np.sum(lam_s > delta * math.log2(p.n) / (4 * g_s * p.n)))
        value = (0.5 * a_t[:k].sum() + 2 * delta**2 * a_t[k:].sum() + 0.5 * a_s[:k].sum()
                 + (a_s[k:] - P_s[k:] ** 2 * u_sq[k:]).sum() + (1 + 2 * delta**2) * e[k:].sum())
        best = min(best, value)
    assert b["bound_t2s"][0] == pytest.approx(best, rel=1e-9)


def test_unlearnable_energy_enters_sigma_eff() -> None:
    """Rank-deficient student: σ_eff² = σ² + Σ_{i>r} e_i in its lower bound's variance term."""
    base = {"alpha_t": 2.0, "alpha_s": 2.0, "N": 1000, "n": 1000, "sigma2": 0.1, "d": 50,
            "gamma0_t": GAMMA0, "gamma0_s": GAMMA0}
    pts = [make_point(base), make_point({**base, "r_s": 5})]
    full, cut = bounds.evaluate(pts)["bound_lower_direct"]
    e = spectrum(2.0, 50)
    K = 1000 / math.log2(1000)
    k = 0  # threshold log2(1000)/(0.004·1000) = 2.49 > λ_1 = 1
    lam5 = spectrum(2.0, 50, 5)
    expected = e[k:].sum() / 200 + (0.1 + e[5:].sum()) / 8 * (k / K + K * GAMMA0**2
                                                             * (lam5[k:] ** 2).sum())
    assert cut == pytest.approx(expected, rel=1e-12) and cut > full


def test_step_condition_by_hand() -> None:
    """cap = min{1/(6 tr Σ_T), 1/(6 tr Σ_S), 1/(100 λ_max)}.

    α_T = 1, d = 100: tr Σ_T = H_100 = 5.1874, 1/(6·5.1874) = 0.03213; α_S = 2: tr Σ_S = 1.6350,
    1/(6·1.6350) = 0.1019; λ_max = 1: 1/100 = 0.01. So cap = 0.01, and with α_T = 0.5 (tr Σ_T
    = 18.59, 1/(6·18.59) = 0.008966) the trace term binds instead.
    """
    p = make_point({"alpha_t": 1.0, "alpha_s": 2.0, "N": 10, "n": 10, "sigma2": 0.0, "d": 100})
    lam_t, lam_s = spectrum(1.0, 100), spectrum(2.0, 100)
    assert bounds.step_condition(p, lam_t, lam_s, [0.0099, 0.005])
    assert not bounds.step_condition(p, lam_t, lam_s, [0.0099, 0.0101])
    lam_t = spectrum(0.5, 100)
    assert bounds.step_condition(p, lam_t, lam_s, [0.00896])
    assert not bounds.step_condition(p, lam_t, lam_s, [0.00897])


# -- findings: the lower bound outside the scope of its theorem -------------------------------


OUT_OF_SCOPE = {
    # batch 3: K = T/log2 T counts steps (T = N/3), k* counts samples; 0.004447 > 0.004390
    "batch_3": {"alpha_t": 4.0, "alpha_s": 4.0, "N": 10_000, "n": 10_000, "sigma2": 10.0,
                "d": 20, "target": "lowdim", "k_dagger": 5, "amplitude": 0.3, "batch_t": 3,
                "batch_s": 3},
    # constant step: Σγ_t = γ0 N ≫ γ0 N / log2 N assumed by k*; lower 0.001037 > 0.000378
    "constant": {"alpha_t": 1.01, "alpha_s": 1.01, "N": 10_000, "n": 10_000, "sigma2": 0.1,
                 "d": 100, "target": "lowdim", "k_dagger": 5, "amplitude": 0.3,
                 "gamma0_t": 0.001, "gamma0_s": 0.001, "schedule_t": "constant"},
    # geometric planned for 10x the run: barely decayed; lower 0.000228 > 0.000138 (ceiling)
    "long_plan": {"alpha_t": 1.5, "alpha_s": 1.5, "N": 10_000, "n": 10_000, "sigma2": 0.1,
                  "d": 100, "target": "lowdim", "k_dagger": 5, "amplitude": 0.3,
                  "horizon_t": 100_000},
}


SCOPE = {  # (teacher, direct, ceiling) in the proofs' scope for each case
    "batch_3": (0.0, 0.0, 0.0),  # batch_t = batch_s = 3
    "constant": (0.0, 1.0, 1.0),  # only the teacher's schedule is constant
    "long_plan": (0.0, 1.0, 1.0),  # only the teacher is planned beyond its run
}


@pytest.mark.parametrize("case", list(OUT_OF_SCOPE))
def test_out_of_scope_runs_are_flagged(case: str) -> None:
    """Every scope flag, each run separately.

    Mutations: forcing ``scope_direct`` to True fails batch_3; forcing it False (or testing
    the horizon for the direct run, which has none) fails constant and long_plan."""
    p = make_point({"gamma0_t": GAMMA0, "gamma0_s": GAMMA0, **OUT_OF_SCOPE[case]})
    b = bounds.evaluate([p])
    got = tuple(float(b[f"scope_{r}"][0]) for r in ("teacher", "direct", "ceiling"))
    assert got == SCOPE[case]
    inside = bounds.evaluate([make_point({"alpha_t": 1.5, "alpha_s": 2.0, "N": 100, "n": 100,
                                          "sigma2": 0.1, "d": 20})])
    assert all(inside[f"scope_{r}"][0] == 1.0 for r in ("teacher", "direct", "ceiling"))


FINDING = ("FINDING (docs/science/bounds.md, not a code bug): the App. A lower bound assumes "
           "batch 1 and the geometric schedule decayed over the run; ktsweep applies it to every "
           "batch, schedule and horizon, and it fails there although step_condition holds")


@pytest.mark.parametrize("case", list(OUT_OF_SCOPE))
def test_lower_bound_outside_theorem_scope(case: str) -> None:
    """The finding xfails only where it reproduces; its preconditions fail as failures.

    Mutations: a step condition that stops holding, or the teacher run coming back into
    scope, fail this test (with ``xfail(raises=AssertionError)`` around the preconditions they
    were silently counted as the expected failure); a lower bound that now holds fails too
    (the finding no longer reproduces: update docs/science/bounds.md)."""
    p = make_point({"gamma0_t": GAMMA0, "gamma0_s": GAMMA0, **OUT_OF_SCOPE[case]})
    b, ex = bounds.evaluate([p]), exact.evaluate([p])
    assert b["step_condition"][0] == 1.0
    assert b["scope_teacher"][0] == 0.0
    if b["bound_lower_teacher"][0] <= ex["risk_teacher"][0]:
        pytest.fail(f"{case}: the lower bound now holds; the finding no longer reproduces")
    pytest.xfail(FINDING)


def test_no_transfer_verdict_without_a_transfer_bound() -> None:
    """At n = inf Theorem 1's bound does not exist (NaN): its verdict is undetermined (NaN,
    stored as code 2), never "no", which a figure would draw as the exact risk above the
    bound. Planted bug: the comparison made with the NaN bound (t2s <= nan is False: 0)."""
    from ktsweep.engines import bounds
    from ktsweep.model.params import make_point

    out = bounds.evaluate([make_point({"alpha_t": 1.5, "alpha_s": 2.0, "N": 256,
                                       "n": float("inf"), "sigma2": 0.1, "d": 12}),
                           make_point({"alpha_t": 1.5, "alpha_s": 2.0, "N": 256, "n": 64,
                                       "sigma2": 0.1, "d": 12})])
    assert np.isnan(out["bound_t2s"][0]) and np.isnan(out["bound_t2s_holds"][0])
    assert np.isfinite(out["bound_t2s"][1]) and np.isfinite(out["bound_t2s_holds"][1])
