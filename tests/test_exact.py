"""The exact estimator against closed forms and a literal per-step recursion.

The recursion is derived in docs/science/exact.md.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest

from ktsweep.engines import exact
from ktsweep.model.params import Point, make_point
from ktsweep.model.quantities import CURVES, MODE_RISKS, RISKS
from ktsweep.model.spectra import spectrum


def contract_gammas(kind: str, gamma0: float, steps: int, horizon: int) -> np.ndarray:
    """docs/science/training.md schedule, written independently of ktsweep.model.spectra."""

    def period(h: int) -> int:
        return 1 if h < 2 else max(1, math.floor(h / math.log2(h)))

    t = np.arange(steps)
    if kind == "constant":
        return np.full(steps, gamma0)
    if kind == "geometric":
        return gamma0 * 2.0 ** -(t // period(horizon))
    head = horizon // 2
    return np.where(t < head, gamma0, gamma0 * 2.0 ** -((t - head) // period(horizon - head)))


def literal_run(lam: np.ndarray, a0: np.ndarray, s2: float, batch: int,
                gammas: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """One step at a time: a_i ← (1−2γλ_i+γ²λ_i²(1+1/B)) a_i + (γ²λ_i²/B)(Σ_j a_j + s²).

    Returns the final a, P_i = Π(1 − γ_t λ_i) and the risk ½Σa after every step (index t).
    """
    a, prod, curve = a0.astype(np.float64).copy(), np.ones_like(lam), [0.5 * a0.sum()]
    for g in gammas:
        gl = g * lam
        a = (1 - 2 * gl + gl * gl * (1 + 1 / batch)) * a + gl * gl / batch * (a.sum() + s2)
        prod = prod * (1 - gl)
        curve.append(0.5 * a.sum())
    return a, prod, curve


def literal_point(p: Point, gamma_t: float, gamma_s: float) -> dict[str, float]:
    """The four risks of docs/science/exact.md from per-step loops (numeric γ0 only)."""
    lam_t = spectrum(p.alpha_t, p.d, p.rank_t)
    lam_s = spectrum(p.alpha_s, p.d, p.rank_s)
    i = np.arange(1, p.d + 1, dtype=np.float64)
    c2 = {"gaussian": np.ones(p.d), "power": i**p.beta,
          "lowdim": np.where(i <= (p.k_dagger or 0), p.amplitude**2, 0.0)}[p.target]
    e = lam_t * c2
    g_t = contract_gammas(p.schedule_t, gamma_t, p.steps_t, p.plan_t)
    a_t, p_t, _ = literal_run(lam_t, e, p.sigma2, p.batch_t, g_t)
    g_d = contract_gammas(p.schedule_s, gamma_s, p.steps_direct, p.steps_direct)
    a_d, _, _ = literal_run(lam_s, e, p.sigma2, p.batch_s, g_d)
    g_s = contract_gammas(p.schedule_s, gamma_s, p.steps_s, p.plan_s)
    a_c, _, _ = literal_run(lam_s, e, p.sigma2, p.batch_s, g_s)
    u_t_sq = e * (1 - 2 * p_t) + a_t
    a_s, p_s, _ = literal_run(lam_s, u_t_sq, 0.0, p.batch_s, g_s)
    t2s = 0.5 * (a_s - 2 * p_s * (a_t - p_t * e) + a_t).sum()
    return {"risk_teacher": 0.5 * a_t.sum(), "risk_direct": 0.5 * a_d.sum(),
            "risk_ceiling": 0.5 * a_c.sum(), "risk_t2s": t2s}


# -- (a), (b): one mode, constant step, closed forms ------------------------------------------


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("sigma2", [0.0, 0.3])
def test_one_mode_constant_step_closed_form(batch: int, sigma2: float) -> None:
    """d = 1, λ = 1, e = 1: a_t = c^t a_0 + g s² (1 − c^t)/(1 − c).

    With one mode Σ_j a_j = a, so c = 1 − 2γλ + γ²λ²(1 + 1/B) + γ²λ²/B = 1 − 2γλ + γ²λ²(1+2/B)
    (for B = 1 this is E[(1 − γλz²)²] = 1 − 2γλ + 3γ²λ²), and g = γ²λ²/B.
    """
    N, n, g_t, g_s = 37, 53, 0.3, 0.45
    p = make_point({"alpha_t": 1.0, "alpha_s": 2.0, "N": N * batch, "n": n * batch,
                    "sigma2": sigma2, "d": 1, "batch_t": batch, "batch_s": batch,
                    "schedule_t": "constant", "schedule_s": "constant",
                    "gamma0_t": g_t, "gamma0_s": g_s})
    out = exact.evaluate([p])

    def closed(gamma: float, steps: int, a0: float, s2: float) -> float:
        c = 1 - 2 * gamma + gamma**2 * (1 + 2 / batch)
        g = gamma**2 / batch
        return c**steps * a0 + g * s2 * (1 - c**steps) / (1 - c)

    a_t = closed(g_t, N, 1.0, sigma2)
    p_t = (1 - g_t) ** N
    u_t_sq = 1 - 2 * p_t + a_t
    a_s, p_s = closed(g_s, n, u_t_sq, 0.0), (1 - g_s) ** n
    expected = {
        "risk_teacher": 0.5 * a_t,
        "risk_direct": 0.5 * closed(g_s, N, 1.0, sigma2),
        "risk_ceiling": 0.5 * closed(g_s, n, 1.0, sigma2),
        "risk_t2s": 0.5 * (a_s - 2 * p_s * (a_t - p_t) + a_t),
    }
    for k, v in expected.items():
        assert out[k][0] == pytest.approx(v, rel=1e-11, abs=1e-300), k
    if sigma2 == 0.0:  # zero noise: pure geometric decay
        c = 1 - 2 * g_t + g_t**2 * (1 + 2 / batch)
        assert out["risk_teacher"][0] == pytest.approx(0.5 * c**N, rel=1e-11)


# -- (c): several modes against the literal per-step recursion --------------------------------


LITERAL_CASES = [
    {"schedule_t": "constant", "schedule_s": "constant", "sigma2": 0.0},
    {"schedule_t": "geometric", "schedule_s": "geometric", "sigma2": 0.0},
    {"schedule_t": "tail_geometric", "schedule_s": "geometric", "sigma2": 0.0},
    {"schedule_t": "geometric", "schedule_s": "constant", "sigma2": 0.4, "batch_t": 3,
     "batch_s": 2},
    {"schedule_t": "geometric", "schedule_s": "tail_geometric", "sigma2": 0.2, "horizon_t": 900,
     "horizon_s": 3000, "r_s": 7, "target": "lowdim", "k_dagger": 4, "amplitude": 0.3},
    {"schedule_t": "constant", "schedule_s": "geometric", "sigma2": 0.1, "target": "power",
     "beta": 0.7, "N": 257, "n": 131},
]


@pytest.mark.parametrize("case", LITERAL_CASES)
def test_matches_literal_recursion(case: dict, small_point: Callable[..., Point]) -> None:
    g_t, g_s = 0.25, 0.15
    p = small_point(**{"gamma0_t": g_t, "gamma0_s": g_s, **case})
    out = exact.evaluate([p])
    ref = literal_point(p, g_t, g_s)
    for k in RISKS:
        assert out[k][0] == pytest.approx(ref[k], rel=1e-10), k


def test_scale_gamma0_is_c_over_trace(small_point: Callable[..., Point]) -> None:
    p = small_point(gamma0_t={"scale": 0.7}, gamma0_s={"scale": 0.3}, r_s=12)
    out = exact.evaluate([p])
    tr_t = float(np.sum(np.arange(1, 21) ** -p.alpha_t))
    tr_s = float(np.sum(np.arange(1, 13) ** -p.alpha_s))
    assert out["gamma0_t"][0] == pytest.approx(0.7 / tr_t, rel=1e-14)
    for k in ("gamma0_s", "gamma0_direct", "gamma0_ceiling"):
        assert out[k][0] == pytest.approx(0.3 / tr_s, rel=1e-14)
    ref = literal_point(p, 0.7 / tr_t, 0.3 / tr_s)
    for k in RISKS:
        assert out[k][0] == pytest.approx(ref[k], rel=1e-10), k


# -- (d): learning curves ---------------------------------------------------------------------


@pytest.mark.parametrize("target", ["gaussian", "lowdim", "power"])
def test_curve_endpoints(target: str, small_point: Callable[..., Point]) -> None:
    extra = {"lowdim": {"k_dagger": 5, "amplitude": 0.4}, "power": {"beta": 0.5}}.get(target, {})
    p = small_point(target=target, N=150, n=230, batch_s=2, **extra)  # steps 150 and 115
    ck = np.array([0, 1, 5, 20, 115, 150, 400])
    out = exact.evaluate([p], ck)
    half_energy = 0.5 * np.sum(spectrum(p.alpha_t, p.d) * {
        "gaussian": np.ones(p.d), "power": np.arange(1, p.d + 1) ** 0.5,
        "lowdim": np.where(np.arange(1, p.d + 1) <= 5, 0.16, 0.0)}[target])
    for name in CURVES:
        assert out[name][0, 0] == pytest.approx(half_energy, rel=1e-13), name
    assert out["curve_teacher"][0, 5] == pytest.approx(out["risk_teacher"][0], rel=1e-12)
    assert out["curve_t2s"][0, 4] == pytest.approx(out["risk_t2s"][0], rel=1e-12)
    assert np.isnan(out["curve_teacher"][0, 6]) and np.isnan(out["curve_t2s"][0, 5:]).all()


def test_curve_matches_literal_every_checkpoint(small_point: Callable[..., Point]) -> None:
    p = small_point(gamma0_t=0.3, gamma0_s=0.2, schedule_s="tail_geometric", N=180, n=180)
    ck = np.array([0, 1, 2, 3, 7, 64, 65, 100, 179, 180])
    out = exact.evaluate([p], ck)
    lam_t, lam_s = spectrum(p.alpha_t, p.d), spectrum(p.alpha_s, p.d)
    e = lam_t.copy()
    a_t, p_t, curve_t = literal_run(lam_t, e, p.sigma2, 1, contract_gammas("geometric", 0.3,
                                                                            180, 180))
    np.testing.assert_allclose(out["curve_teacher"][0], np.array(curve_t)[ck], rtol=1e-10)
    u2, cross = e * (1 - 2 * p_t) + a_t, a_t - p_t * e
    g_s = contract_gammas("tail_geometric", 0.2, 180, 180)
    for c, t in enumerate(ck):
        a_s, p_s, _ = literal_run(lam_s, u2, 0.0, 1, g_s[:t])
        ref = 0.5 * (a_s - 2 * p_s * cross + a_t).sum()
        assert out["curve_t2s"][0, c] == pytest.approx(ref, rel=1e-10), t


# -- (e): stacking ----------------------------------------------------------------------------


def test_stacking_invariance(small_point: Callable[..., Point]) -> None:
    pts = [
        small_point(),
        small_point(N=50, n=1000, alpha_t=2.0, sigma2=1.0),
        small_point(batch_t=4, batch_s=3, schedule_s="constant", gamma0_s=0.1),
        small_point(target="lowdim", k_dagger=3, r_s=5, horizon_s=2000),
        small_point(gamma0_s={"tune": [0.05, 0.1, 0.2]}, schedule_t="tail_geometric"),
        small_point(d=35, N=400),  # another d: evaluated as its own group
    ]
    ck = np.array([0, 2, 10, 50, 300])
    together = exact.evaluate(pts, ck)
    for i, p in enumerate(pts):
        alone = exact.evaluate([p], ck)
        for k, v in alone.items():
            got = together[k][i]
            if k.startswith("mode_"):
                got = got[: p.d]
            if v.dtype.kind == "U":
                assert got == v[0], k
            else:
                np.testing.assert_allclose(got, v[0], rtol=1e-12, atol=0, err_msg=k)
    assert np.isnan(together["mode_teacher"][0, 20:]).all()  # padded to the largest d


# -- (f): tuning ------------------------------------------------------------------------------


def test_tune_picks_smallest_exact_risk(small_point: Callable[..., Point]) -> None:
    cands = [0.02, 0.08, 0.3, 0.6, 1.2]
    p = small_point(gamma0_t={"tune": cands}, gamma0_s={"tune": cands}, n=150)
    out = exact.evaluate([p])
    each = exact.evaluate([p.replace(gamma0_t=g, gamma0_s=g) for g in cands])
    # teacher: its own risk; T2S: its risk given the *tuned* teacher; direct/ceiling: own risks
    for role, risk in (("t", "risk_teacher"), ("direct", "risk_direct"),
                       ("ceiling", "risk_ceiling")):
        best = cands[int(np.nanargmin(each[risk]))]
        assert out[f"gamma0_{role}"][0] == best, role
        assert out[risk][0] == pytest.approx(np.nanmin(each[risk]), rel=1e-12)
    g_t = out["gamma0_t"][0]
    t2s = exact.evaluate([p.replace(gamma0_t=g_t, gamma0_s=g) for g in cands])["risk_t2s"]
    assert out["gamma0_s"][0] == cands[int(np.nanargmin(t2s))]
    assert out["risk_t2s"][0] == pytest.approx(np.nanmin(t2s), rel=1e-12)
    assert len({out[k][0] for k in ("gamma0_t", "gamma0_s", "gamma0_direct",
                                    "gamma0_ceiling")}) > 1  # chosen separately per run


@pytest.mark.parametrize(
    "huge",
    [50.0, 1e4],  # 1e4 overflows the block operators themselves (once crashed the call)
)
def test_tune_skips_divergent_candidates(huge: float, small_point: Callable[..., Point]) -> None:
    p = small_point(gamma0_t={"tune": [0.1, huge]}, gamma0_s={"tune": [huge, 0.1]})
    out = exact.evaluate([p])
    assert out["status"][0] == "ok"
    assert all(out[k][0] == 0.1 for k in ("gamma0_t", "gamma0_s", "gamma0_direct",
                                          "gamma0_ceiling"))


# -- (g): pgr of identical teacher and ceiling ------------------------------------------------


@pytest.mark.parametrize("batch", [1, 5])
def test_pgr_nan_without_warning_for_identical_models(batch: int) -> None:
    p = make_point({"alpha_t": 1.4, "alpha_s": 1.4, "N": 300, "n": 300, "sigma2": 0.2, "d": 25,
                    "batch_t": batch, "batch_s": batch, "gamma0_t": 0.2, "gamma0_s": 0.2})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = exact.evaluate([p])
    assert out["risk_teacher"][0] == pytest.approx(out["risk_ceiling"][0], rel=1e-13)
    assert np.isnan(out["pgr"][0])
    assert np.isfinite(out["der"][0]) and np.isfinite(out["w2s_ratio"][0])


# -- (h): divergence --------------------------------------------------------------------------


HUGE = [50.0, 1e3]  # 1e3 overflows the block operators (once raised LinAlgError)


@pytest.mark.parametrize("huge", HUGE)
@pytest.mark.parametrize("which", ["gamma0_t", "gamma0_s"])
def test_divergence_is_local(which: str, huge: float, small_point: Callable[..., Point]) -> None:
    ok = small_point()
    bad = ok.replace(**{which: huge})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        both = exact.evaluate([ok, bad, ok.replace(N=120)])
    alone = exact.evaluate([ok])
    assert list(both["status"]) == ["ok", "diverged", "ok"]
    for k in RISKS + ("der", "pgr", "w2s_ratio"):
        np.testing.assert_allclose(both[k][0], alone[k][0], rtol=1e-12, err_msg=k)
    # Only the runs depending on a diverged run are blanked (as in mc): a diverged teacher
    # takes the T2S student with it; a diverged student step blanks the three student runs.
    blanked = {"gamma0_t": ("risk_teacher", "risk_t2s"),
               "gamma0_s": ("risk_direct", "risk_t2s", "risk_ceiling")}[which]
    for k in RISKS:
        assert np.isnan(both[k][1]) == (k in blanked), k
        if k not in blanked:
            assert both[k][1] == pytest.approx(alone[k][0], rel=1e-12), k
    for k in ("der", "pgr", "w2s_ratio"):
        assert np.isnan(both[k][1]), k
    assert np.isnan(both["mode_t2s"][1]).all() and np.isnan(both["curve_t2s"][1]).all()
    assert np.isnan(both["mode_teacher"][1]).all() == (which == "gamma0_t")


# -- (i): rank-deficient student --------------------------------------------------------------


def test_rank_deficient_student_keeps_tail_error(small_point: Callable[..., Point]) -> None:
    p = small_point(r_s=6, N=400, n=400)
    out = exact.evaluate([p])
    e = spectrum(p.alpha_t, p.d)  # gaussian target: e_i = λ_T,i
    for k in ("mode_direct", "mode_ceiling", "mode_t2s"):
        np.testing.assert_allclose(out[k][0, 6:], 0.5 * e[6:], rtol=1e-12, err_msg=k)
        assert np.all(out[k][0, :6] < 0.5 * e[:6]), k  # the head is learned
    assert np.all(out["mode_teacher"][0, 6:] < 0.5 * e[6:])  # full-rank teacher learns them
    for k in MODE_RISKS:
        assert out[k][0].sum() == pytest.approx(out["risk_" + k[5:]][0], rel=1e-13)


def test_checkpoint_order_is_free(small_point: Callable[..., Point]) -> None:
    p = small_point(batch_s=2)
    ck = np.array([0, 3, 10, 40, 150, 200])
    perm = np.array([4, 0, 5, 2, 1, 3])
    a, b = exact.evaluate([p], ck), exact.evaluate([p], ck[perm])
    for name in CURVES:
        np.testing.assert_allclose(b[name][0], a[name][0][perm], rtol=1e-12, err_msg=name)
