"""Monte Carlo SGD against the exact moments, and its seeding/stacking/device contract."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import pytest
import torch

from ktsweep.engines import exact, mc
from ktsweep.model.params import Point, make_point
from ktsweep.model.quantities import CURVES, RISKS

REPLICATES = 3000
SEED = 20260601
CHECKPOINTS = np.array([0, 1, 3, 10, 30, 100, 150, 300, 600], dtype=np.int64)
COMPARED = RISKS + ("der", "w2s_ratio", "pgr")

BASE: dict[str, Any] = {"d": 30, "sigma2": 0.1}
AGREEMENT_POINTS: dict[str, dict[str, Any]] = {
    "kd_gaussian_geometric": {"alpha_t": 1.0, "alpha_s": 1.5, "N": 400, "n": 600},
    "w2s_lowdim_batches_4_2": {"alpha_t": 1.5, "alpha_s": 1.0, "N": 400, "n": 600,
                               "sigma2": 0.5, "target": "lowdim", "k_dagger": 5,
                               "amplitude": 0.5, "batch_t": 4, "batch_s": 2},
    "self_distillation_power": {"alpha_t": 1.2, "alpha_s": 1.2, "N": 300, "n": 300,
                                "sigma2": 0.2, "target": "power", "beta": 0.5},
    "rank_deficient_constant_long_plan": {"alpha_t": 1.2, "alpha_s": 1.4, "N": 300, "n": 500,
                                          "r_s": 10, "schedule_s": "constant",
                                          "gamma0_s": 0.05, "schedule_t": "tail_geometric",
                                          "horizon_s": 1500},
    "batch_3_tail_geometric": {"alpha_t": 1.1, "alpha_s": 1.3, "N": 600, "n": 450,
                               "sigma2": 0.3, "batch_t": 3, "batch_s": 3,
                               "schedule_t": "tail_geometric", "schedule_s": "tail_geometric"},
    "w2s_gaussian_constant": {"alpha_t": 2.0, "alpha_s": 1.5, "N": 300, "n": 400,
                              "schedule_t": "constant", "schedule_s": "constant",
                              "gamma0_t": 0.2, "gamma0_s": 0.1},
    "teacher_long_plan_power": {"alpha_t": 1.3, "alpha_s": 1.6, "N": 300, "n": 300,
                                "sigma2": 0.05, "target": "power", "beta": 1.0,
                                "horizon_t": 3000},
    "kd_tuned_d50": {"alpha_t": 1.5, "alpha_s": 2.5, "N": 500, "n": 500, "d": 50,
                     "gamma0_t": {"tune": [0.05, 0.15, 0.3]},
                     "gamma0_s": {"tune": [0.05, 0.15, 0.3]}},
    "paper_w2s_like": {"alpha_t": 1.0, "alpha_s": 1.0, "N": 200, "n": 800, "sigma2": 1.0,
                       "target": "lowdim", "k_dagger": 10, "amplitude": 0.1, "batch_t": 2,
                       "gamma0_t": 0.1, "gamma0_s": 0.1},
}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core box OpenMP spinning can cost 20x wall time."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def points_of(spec: Mapping[str, Mapping[str, Any]]) -> list[Point]:
    return [make_point({**BASE, **v}) for v in spec.values()]


@pytest.fixture(scope="module")
def agreement() -> tuple[list[Point], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Exact and Monte Carlo results of every agreement point (one stacked call each)."""
    pts = points_of(AGREEMENT_POINTS)
    ex = exact.evaluate(pts, CHECKPOINTS)
    sim = mc.simulate(pts, REPLICATES, SEED, "cpu", "float32", CHECKPOINTS)
    return pts, ex, sim


def test_agreement_points_cover_the_contract() -> None:
    pts = points_of(AGREEMENT_POINTS)
    assert any(p.alpha_t < p.alpha_s for p in pts)  # KD
    assert any(p.alpha_t > p.alpha_s for p in pts)  # W2S
    assert any(p.alpha_t == p.alpha_s for p in pts)  # self-distillation
    assert any(p.batch_t != p.batch_s for p in pts)
    assert any(p.batch_t == p.batch_s > 1 for p in pts)
    assert any(p.rank_s < p.d for p in pts)
    assert any(p.plan_t > p.steps_t for p in pts) and any(p.plan_s > p.steps_s for p in pts)
    kinds = {p.schedule_t for p in pts} | {p.schedule_s for p in pts}
    assert kinds == {"geometric", "tail_geometric", "constant"}
    assert {p.target for p in pts} == {"gaussian", "lowdim", "power"}


@pytest.mark.parametrize("name", COMPARED)
def test_mc_agrees_with_exact(name: str, agreement) -> None:
    pts, ex, sim = agreement
    assert list(sim["status"]) == ["ok"] * len(pts)
    for k in ("gamma0_t", "gamma0_s", "gamma0_direct", "gamma0_ceiling"):
        np.testing.assert_array_equal(sim[k], ex[k])
    checked = 0
    for i, label in enumerate(AGREEMENT_POINTS):
        if name == "pgr" and not np.isfinite(ex["pgr"][i]):
            continue
        se = sim[name + "_se"][i]
        assert np.isfinite(se) and se > 0, (label, name)
        z = (sim[name][i] - ex[name][i]) / se
        assert abs(z) < 4.0, f"{label}: {name} exact {ex[name][i]:.6g} mc {sim[name][i]:.6g} "\
                             f"± {se:.3g} (z = {z:.2f})"
        checked += 1
    assert checked >= 8


def test_self_distillation_pgr_is_nan_in_exact(agreement) -> None:
    pts, ex, _ = agreement
    i = list(AGREEMENT_POINTS).index("self_distillation_power")
    assert np.isnan(ex["pgr"][i])


@pytest.mark.parametrize("name", CURVES)
def test_mc_curves_agree_with_exact(name: str, agreement) -> None:
    pts, ex, sim = agreement
    for i, label in enumerate(AGREEMENT_POINTS):
        e, m, se = ex[name][i], sim[name][i], sim[name + "_se"][i]
        np.testing.assert_array_equal(np.isnan(e), np.isnan(m), err_msg=label)
        ok = ~np.isnan(e)
        assert ok.sum() >= 5
        excess = np.abs(m[ok] - e[ok]) - (4.0 * se[ok] + 1e-4 * np.abs(e[ok]))
        assert np.all(excess <= 0), f"{label} {name}: steps {CHECKPOINTS[ok][excess > 0]}"


@pytest.mark.parametrize("name", ["mode_teacher", "mode_t2s"])
def test_mc_mode_risks_agree_with_exact(name: str, agreement) -> None:
    pts, ex, sim = agreement
    i = list(AGREEMENT_POINTS).index("kd_gaussian_geometric")
    z = (sim[name][i] - ex[name][i]) / sim[name + "_se"][i]
    assert np.all(np.abs(z[:30]) < 4.5)  # 30 modes: allow the max of 30 |z|


# -- seeding and stacking ---------------------------------------------------------------------


def stack_case() -> tuple[Point, list[Point]]:
    ref = make_point({**BASE, "alpha_t": 1.3, "alpha_s": 1.6, "N": 200, "n": 300, "d": 20})
    others = [
        ref.replace(N=150, n=500, alpha_t=1.1),
        ref.replace(alpha_s=2.0, N=400, sigma2=1.0),
        ref.replace(batch_t=3),
        ref.replace(batch_s=2, d=30),
        ref.replace(d=40, N=100, n=100),
        ref.replace(target="lowdim", k_dagger=4),
    ]
    return ref, others


def test_stacking_invariance(assert_identical: Callable, take: Callable) -> None:
    ref, others = stack_case()
    alone = mc.simulate([ref], 64, 5, "cpu", "float32", CHECKPOINTS)
    same_group = others[:2] + [ref] + [others[5]]
    assert_identical(alone, take(mc.simulate(same_group, 64, 5, "cpu", "float32",
                                             CHECKPOINTS), 2))
    mixed = [others[3], others[2], ref, others[4], others[0]]
    assert_identical(alone, take(mc.simulate(mixed, 64, 5, "cpu", "float32", CHECKPOINTS), 2))


def test_stacking_invariance_with_two_threads(assert_identical: Callable,
                                              take: Callable) -> None:
    ref, others = stack_case()
    alone = mc.simulate([ref], 32, 5, "cpu", "float32", CHECKPOINTS)
    torch.set_num_threads(2)
    try:
        stacked = mc.simulate(others + [ref], 32, 5, "cpu", "float32", CHECKPOINTS)
    finally:
        torch.set_num_threads(1)
    assert_identical(alone, take(stacked, len(others)))


def test_same_seed_reproduces_other_seed_differs(assert_identical: Callable) -> None:
    ref, others = stack_case()
    pts = [ref, others[2]]
    a = mc.simulate(pts, 32, 11, "cpu", "float32", CHECKPOINTS)
    assert_identical(a, mc.simulate(pts, 32, 11, "cpu", "float32", CHECKPOINTS))
    b = mc.simulate(pts, 32, 12, "cpu", "float32", CHECKPOINTS)
    for k in RISKS + ("der", "mode_t2s", "curve_teacher"):
        assert not np.array_equal(a[k], b[k], equal_nan=True), k


def test_fixed_target_option(small_point: Callable[..., Point]) -> None:
    p = small_point()
    a = mc.simulate([p], 16, 3, "cpu", fixed_target=True)
    b = mc.simulate([p], 16, 3, "cpu", fixed_target=False)
    assert np.all(np.isfinite(a["risk_t2s"])) and a["risk_teacher"][0] != b["risk_teacher"][0]


def test_float64_option(small_point: Callable[..., Point]) -> None:
    p = small_point(N=300, n=300)
    ex = exact.evaluate([p])
    s64 = mc.simulate([p], 2000, 7, "cpu", "float64")
    s32 = mc.simulate([p], 2000, 7, "cpu", "float32")
    for k in RISKS:
        assert abs(s64[k][0] - ex[k][0]) < 4 * s64[k + "_se"][0], k
        # same draws up to rounding of the Gaussian stream: close, not identical
        assert s64[k][0] == pytest.approx(s32[k][0], rel=0.05), k
    assert not np.array_equal(s64["risk_teacher"], s32["risk_teacher"])
    with pytest.raises(ValueError, match="dtype"):
        mc.simulate([p], 4, dtype="float16")


def test_divergence_is_local(small_point: Callable[..., Point], assert_identical: Callable,
                             take: Callable) -> None:
    ok = small_point()
    bad_t, bad_s = ok.replace(gamma0_t=1e3), ok.replace(gamma0_s=1e3, N=250)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = mc.simulate([bad_t, ok, bad_s], 64, 9, "cpu", "float32", CHECKPOINTS)
    assert list(res["status"]) == ["diverged", "ok", "diverged"]
    # Only the diverged runs and those depending on them are blanked (issue 8): a diverged
    # teacher blanks the T2S student, not the direct or ceiling students; a student step
    # that diverges blanks the three student runs, not the teacher.
    blanked = {0: ("risk_teacher", "risk_t2s"), 2: ("risk_direct", "risk_t2s", "risk_ceiling")}
    for i, names in blanked.items():
        for k in RISKS:
            bad = k in names
            assert np.isnan(res[k][i]) == bad and np.isnan(res[k + "_se"][i]) == bad, (i, k)
        for k in ("der", "pgr", "w2s_ratio"):
            assert np.isnan(res[k][i]) and np.isnan(res[k + "_se"][i]), (i, k)
        assert np.isnan(res["curve_t2s"][i]).all()
    assert_identical(mc.simulate([ok], 64, 9, "cpu", "float32", CHECKPOINTS), take(res, 1))


def test_divergence_emits_no_runtime_warning(small_point: Callable[..., Point]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = mc.simulate([small_point(gamma0_t=1e3)], 16, 9, "cpu", checkpoints=CHECKPOINTS)
    assert res["status"][0] == "diverged"


def test_invalid_arguments(small_point: Callable[..., Point]) -> None:
    with pytest.raises(ValueError, match="replicates"):
        mc.simulate([small_point()], 0)
    with pytest.raises(ValueError, match="device"):
        mc.simulate([small_point()], 2, device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU fallback")
def test_cuda_request_without_gpu_warns_and_falls_back(small_point: Callable[..., Point],
                                                       assert_identical: Callable) -> None:
    p = small_point()
    with pytest.warns(RuntimeWarning, match="no GPU"):
        res = mc.simulate([p], 16, 1, "cuda")
    assert_identical(res, mc.simulate([p], 16, 1, "cpu"))


@pytest.mark.gpu
def test_cuda_agrees_with_exact_and_cpu() -> None:
    pts = points_of(AGREEMENT_POINTS)
    ex = exact.evaluate(pts, CHECKPOINTS)
    gpu = mc.simulate(pts, 8000, SEED, "cuda", "float32", CHECKPOINTS)
    cpu = mc.simulate(pts, REPLICATES, SEED, "cpu", "float32", CHECKPOINTS)
    assert list(gpu["status"]) == ["ok"] * len(pts)
    for name in COMPARED:
        for i, label in enumerate(AGREEMENT_POINTS):
            if not np.isfinite(ex[name][i]):
                continue
            z_ex = (gpu[name][i] - ex[name][i]) / gpu[name + "_se"][i]
            assert abs(z_ex) < 4.0, (label, name, z_ex)
            both = np.hypot(gpu[name + "_se"][i], cpu[name + "_se"][i])
            assert abs(gpu[name][i] - cpu[name][i]) < 4.0 * both, (label, name)
    for name in CURVES:
        ok = ~np.isnan(ex[name])
        err = np.abs(gpu[name] - ex[name])[ok]
        assert np.all(err <= 4.0 * gpu[name + "_se"][ok] + 1e-4 * np.abs(ex[name][ok])), name


@pytest.mark.gpu
def test_cuda_stacking_invariance_and_repeatability(assert_identical: Callable,
                                                    take: Callable) -> None:
    """The cube must not depend on which chunk or GPU worker ran a point: on CUDA too, a
    point's numbers are the same alone, stacked with others, and on a second run.

    Planted bug caught (checked with device "cpu"): one generator shared by a stack, so a
    point's draws depend on its neighbours.
    """
    ref, others = stack_case()
    alone = mc.simulate([ref], 256, 5, "cuda", "float32", CHECKPOINTS)
    assert_identical(alone, mc.simulate([ref], 256, 5, "cuda", "float32", CHECKPOINTS))
    stacked = mc.simulate(others[:2] + [ref] + [others[5]], 256, 5, "cuda", "float32",
                          CHECKPOINTS)
    assert_identical(alone, take(stacked, 2))
