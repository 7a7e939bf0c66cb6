"""Predicted exponents of docs/science/rates.md against hand-computed values, and regime gating."""

from __future__ import annotations

import math
from typing import Any

import pytest

from ktsweep.model import theory
from ktsweep.model.params import make_point

KD_KEYS = {"risk_t2s_limit", "der"}
W2S_KEYS = {"risk_t2s_min", "one_minus_pgr", "kstar_opt", "n_opt_paper", "n_opt_audited"}


def test_direct_exponents_by_hand() -> None:
    # bias (1+β−α)/α, variance (1−α)/α
    assert theory.direct_bias_exponent(2.0, 0.5) == pytest.approx(-0.25)
    assert theory.direct_bias_exponent(1.5) == pytest.approx(-1 / 3)
    assert theory.direct_variance_exponent(2.0) == pytest.approx(-0.5)
    assert theory.direct_variance_exponent(4.0) == pytest.approx(-0.75)
    # the slower-decaying (larger) exponent dominates; without noise only the bias
    assert theory.direct_risk_exponent(3.0, 1.5) == pytest.approx(-1 / 6)
    assert theory.direct_risk_exponent(3.0, 1.5, noisy=False) == pytest.approx(-1 / 6)
    assert theory.direct_risk_exponent(1.5, 0.0) == pytest.approx(-1 / 3)


def test_variance_dominated_noisy_differs_from_noiseless() -> None:
    """A student that decays slower than its teacher sees β_S = β + α_S − α_T < 0: bias
    (1 + β_S − α)/α = (1 − 1.5 − 1.5)/1.5 = −4/3, variance (1 − 1.5)/1.5 = −1/3. With noise the
    variance dominates (−1/3); without noise only the bias is left (−4/3).

    Mutations: ``direct_risk_exponent`` ignoring ``noisy`` (−1/3 both times), or dropping the
    variance term (−4/3 both times), or predictions() passing the teacher's β to the student.
    """
    assert theory.direct_risk_exponent(1.5, -1.5) == pytest.approx(-1 / 3)
    assert theory.direct_risk_exponent(1.5, -1.5, noisy=False) == pytest.approx(-4 / 3)
    noisy = theory.predictions(point(alpha_t=3.0, alpha_s=1.5, sigma2=0.1))
    clean = theory.predictions(point(alpha_t=3.0, alpha_s=1.5, sigma2=0.0))
    assert noisy["risk_direct"] == pytest.approx(-1 / 3)
    assert clean["risk_direct"] == pytest.approx(-4 / 3)
    # the teacher (β = 0): bias and variance exponents coincide, (1 − 3)/3 = −2/3
    assert noisy["risk_teacher"] == clean["risk_teacher"] == pytest.approx(-2 / 3)
    assert theory.kstar_exponent(2.0) == pytest.approx(0.5)
    assert theory.kstar_exponent(1.25) == pytest.approx(0.8)


def test_kd_exponents_by_hand() -> None:
    # −(α_T−1−β)/α_T and κ = (α_T−1−β)(1/α_T − 1/α_S)
    assert theory.kd_t2s_limit_exponent(2.0, 0.5) == pytest.approx(-0.25)
    assert theory.kd_t2s_limit_exponent(3.0) == pytest.approx(-2 / 3)
    assert theory.kd_der_exponent(2.0, 3.0, 0.5) == pytest.approx(0.5 * (1 / 2 - 1 / 3))
    assert theory.kd_der_exponent(2.0, 3.0, 0.5) == pytest.approx(1 / 12)
    assert theory.kd_der_exponent(1.5, 2.0) == pytest.approx(0.5 * (2 / 3 - 0.5))


def test_w2s_exponents_by_hand() -> None:
    # 1/(α_T(2α_S+1)) − 1, −2α_S/(α_T(2α_S+1)), cutoff 1/(α_T(2α_S+1)), audited α_S times it
    assert theory.w2s_min_risk_exponent(1.0, 1.0) == pytest.approx(-2 / 3)
    assert theory.w2s_min_risk_exponent(1.5, 2.0) == pytest.approx(1 / 7.5 - 1)
    assert theory.w2s_gap_exponent(1.0, 1.0) == pytest.approx(-2 / 3)
    assert theory.w2s_gap_exponent(1.5, 2.0) == pytest.approx(-4 / 7.5)
    assert theory.w2s_kstar_opt_exponent(1.0, 1.0) == pytest.approx(1 / 3)
    assert theory.w2s_nopt_exponent_paper(1.5, 2.0) == pytest.approx(1 / 7.5)
    assert theory.w2s_nopt_exponent_audited(1.5, 2.0) == pytest.approx(2 / 7.5)


def point(**kw: Any):
    return make_point({"N": 100, "n": 100, "sigma2": 0.1, "d": 50, **kw})


@pytest.mark.parametrize(
    ("kw", "kd"),
    [
        # κ = (2 − 1.5)(1/2 − 1/3) = 1/12, limit −(2 − 1.5)/2 = −1/4
        ({"alpha_t": 2.0, "alpha_s": 3.0, "target": "power", "beta": 0.5}, (1 / 12, -0.25)),
        ({"alpha_t": 1.5, "alpha_s": 3.0, "target": "power", "beta": 0.5}, None),  # α_T = 1+β
        # κ = 0.2 (1/1.2 − 1/1.5) = 1/30, limit −0.2/1.2 = −1/6
        ({"alpha_t": 1.2, "alpha_s": 1.5}, (1 / 30, -1 / 6)),
        ({"alpha_t": 1.0, "alpha_s": 1.5}, None),  # α_T = 1 = 1+β
        ({"alpha_t": 2.0, "alpha_s": 2.0}, None),  # α_S = α_T
        ({"alpha_t": 3.0, "alpha_s": 2.0}, None),  # W2S ordering
    ],
)
def test_kd_gating(kw: dict[str, Any], kd: tuple[float, float] | None) -> None:
    """Values written out by hand, not recomputed with the functions predictions() calls.

    Mutation: predictions() passing β = 0 to the KD exponents (power target) changes the
    first case's κ to 1/6."""
    pred = theory.predictions(point(**kw))
    assert (set(pred) >= KD_KEYS) is (kd is not None)
    assert (KD_KEYS & set(pred) == set()) is (kd is None)
    assert not W2S_KEYS & set(pred)  # not lowdim
    if kd is not None:
        assert pred["der"] == pytest.approx(kd[0])
        assert pred["risk_t2s_limit"] == pytest.approx(kd[1])


def test_w2s_gating_lowdim_only() -> None:
    low = theory.predictions(point(alpha_t=1.0, alpha_s=1.0, target="lowdim", k_dagger=10))
    assert set(low) >= W2S_KEYS and not KD_KEYS & set(low)
    assert low["risk_t2s_min"] == pytest.approx(-2 / 3)
    assert low["one_minus_pgr"] == pytest.approx(-2 / 3)
    # lowdim: bias vanishes once k* > k†, the variance exponent (1−α)/α is predicted
    low2 = theory.predictions(point(alpha_t=2.0, alpha_s=1.5, target="lowdim", k_dagger=3))
    assert low2["risk_teacher"] == pytest.approx(-0.5)
    assert low2["risk_direct"] == pytest.approx(-1 / 3)
    for target, extra in (("gaussian", {}), ("power", {"beta": 0.3})):
        pred = theory.predictions(point(alpha_t=1.0, alpha_s=1.0, target=target, **extra))
        assert not W2S_KEYS & set(pred), target


def test_common_entries_always_present() -> None:
    pred = theory.predictions(point(alpha_t=2.0, alpha_s=4.0, target="power", beta=0.5))
    assert pred["risk_teacher"] == pytest.approx(-0.25)
    # The target is set in teacher coordinates, so the direct student sees the source exponent
    # beta + alpha_s - alpha_t = 2.5: bias (1 + 2.5 - 4)/4 = -0.125 beats variance -0.75.
    assert pred["risk_direct"] == pytest.approx((1.0 + 2.5 - 4.0) / 4.0)
    assert pred["kstar_teacher"] == pytest.approx(0.5)
    assert pred["kstar_direct"] == pytest.approx(0.25)


def test_two_term_exponents_by_hand() -> None:
    """The (bias, variance) pairs the fits use to tell a crossover from a miss.

    Direct student at α_T = 3, α_S = 3.5, β = 0: bias (1 + 0.5 − 3.5)/3.5 = −4/7, variance
    (1 − 3.5)/3.5 = −5/7. der = risk_direct / lim risk_t2s with lim exponent −2/3: κ = −4/7 +
    2/3 = 2/21 and, from the variance term, −5/7 + 2/3 = −1/21. Noise-free runs have one term.
    Mutations: der_terms built from the teacher's variance, or given without noise."""
    noisy = theory.predictions(point(alpha_t=3.0, alpha_s=3.5, sigma2=0.1))
    assert noisy["risk_direct_terms"] == pytest.approx((-4 / 7, -5 / 7))
    assert noisy["der_terms"] == pytest.approx((2 / 21, -1 / 21))
    assert noisy["der"] == pytest.approx(max(noisy["der_terms"]))
    clean = theory.predictions(point(alpha_t=3.0, alpha_s=3.5, sigma2=0.0))
    assert "der_terms" not in clean and "risk_direct_terms" not in clean
    # lowdim with noise: the bias dies faster than any power once k* > k† (exponent -inf)
    low = theory.predictions(point(alpha_t=3.0, alpha_s=3.5, sigma2=0.1, target="lowdim",
                                   k_dagger=10))
    assert low["risk_teacher_terms"] == (-math.inf, pytest.approx(-2 / 3))


def test_exponent_accessors_keep_pairs_and_single_exponents_apart() -> None:
    """theory.exponent reads one exponent and theory.exponent_terms one (bias, variance) pair
    out of predictions(), None where none is predicted. Mutations: exponent handing back a
    ``*_terms`` pair unchecked (a fit would compare its slope with a tuple), exponent_terms
    accepting a single exponent, either raising on an absent key."""
    noisy = theory.predictions(point(alpha_t=3.0, alpha_s=3.5, sigma2=0.1))
    assert theory.exponent(noisy, "der") == pytest.approx(2 / 21)
    assert theory.exponent_terms(noisy, "der_terms") == pytest.approx((2 / 21, -1 / 21))
    assert theory.exponent(noisy, "risk_t2s_min") is None  # W2S: lowdim target only
    clean = theory.predictions(point(alpha_t=3.0, alpha_s=3.5, sigma2=0.0))
    assert theory.exponent_terms(clean, "der_terms") is None
    with pytest.raises(TypeError, match="pair"):
        theory.exponent(noisy, "der_terms")
    with pytest.raises(TypeError, match="one exponent"):
        theory.exponent_terms(noisy, "der")


def test_noise_exponent_is_the_variance_term_of_each_run() -> None:
    """The sigma2 coefficient of a run's risk decays at its variance exponent (1 − α)/α,
    whatever the target (it needs no finite target energy), and only with label noise.

    Mutations: the noise key given the bias exponent (−0.25 here), computed only where the
    target's energy is finite (alpha_t − beta = 1 below), or present without noise."""
    pred = theory.predictions(point(alpha_t=2.0, alpha_s=4.0, target="power", beta=0.5))
    assert pred["noise_teacher"] == pytest.approx(-0.5)
    assert pred["noise_direct"] == pytest.approx(-0.75)
    edge = theory.predictions(point(alpha_t=2.0, alpha_s=3.0, target="power", beta=1.0))
    assert "risk_teacher" not in edge and edge["noise_teacher"] == pytest.approx(-0.5)
    quiet = theory.predictions(point(alpha_t=2.0, alpha_s=3.0, sigma2=0.0))
    assert "noise_teacher" not in quiet and "noise_direct" not in quiet


def test_a_cubes_parameter_mapping_predicts_as_its_point() -> None:
    """Theory reads a mapping of parameter values as a cube's coordinates hold them (numbers
    as floats, NaN for an unset number, "" for unset text, the step the run used for
    gamma0_s) and predicts what it predicts for the Point itself, the late law's crossover
    included.

    Mutations: NaN read as a set value (r_t = NaN is then not d: 'misaligned', no late law),
    "" read as a spectrum file, or the step ignored (no crossover)."""
    from ktsweep.model.spectra import resolve_gamma0, student_spectrum

    p = point(alpha_t=3.0, alpha_s=3.0, sigma2=1.0, target="lowdim", k_dagger=3, d=400)
    cube = {k: (math.nan if v is None else "" if k.startswith("spectrum") and v is None
                else float(v) if isinstance(v, int) else v) for k, v in p.as_dict().items()}
    cube.update(spectrum_t="", spectrum_s="",
                gamma0_s=resolve_gamma0(p.gamma0_s, student_spectrum(p))[0])
    assert theory.predictions(cube) == theory.predictions(p)
    assert "risk_t2s_min_late" in theory.predictions(cube)
    assert theory.w2s_crossover(cube) == theory.w2s_crossover(p) > 0


def test_kd_regime_reads_arrays_elementwise() -> None:
    """The KD regime predicate takes a cube's coordinates as arrays and answers per point as
    predictions() does point by point. Mutation: a predicate with `and` (scalars only) or one
    without the 1 + beta condition."""
    import numpy as np

    alpha_t = np.array([1.5, 2.0, 2.0, 1.2])
    alpha_s = np.array([2.0, 1.5, 3.0, 3.0])
    beta = np.array([0.0, 0.0, 0.0, 0.5])
    target = np.array(["gaussian", "gaussian", "lowdim", "power"])
    got = theory.kd_regime({"target": target, "alpha_t": alpha_t, "alpha_s": alpha_s,
                            "beta": beta})
    want = [("der" in theory.predictions(point(alpha_t=a, alpha_s=s, beta=b, target=t,
                                               **({"k_dagger": 3} if t == "lowdim" else {}))))
            for a, s, b, t in zip(alpha_t, alpha_s, beta, target, strict=True)]
    assert list(got) == want == [True, False, False, False]
