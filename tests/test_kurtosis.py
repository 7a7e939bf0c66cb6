"""The fourth-moment (kurtosis) term of the exact recursion against Monte Carlo, per input law,
and the Gaussian case unchanged (docs/science/inputs.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ktsweep.engines import exact, mc
from ktsweep.engines.moments import Runs, evolve, evolve_steps
from ktsweep.model.params import make_point
from ktsweep.model.spectra import schedule_phases, spectrum

RISKS = ("risk_teacher", "risk_direct", "risk_t2s", "risk_ceiling")
# Small d, large γλ (γ0 λ_1 = 1/4, constant step) and batch 1: the ψ term γ²λ²(ψ − 2)/B
# is a sizeable part of each step's contraction. 32 steps keep the risk's law light-tailed
# enough for its standard error to be trusted (at 64 steps of γ0 = 0.5 even Gaussian inputs
# put the Monte Carlo mean 3.5 se below the exact one: a heavy right tail, rarely sampled).
KURT_POINT = dict(alpha_t=1.0, alpha_s=1.5, N=32, n=32, sigma2=0.01, d=4, gamma0_t=0.25,
                  gamma0_s=0.25, target="power", schedule_t="constant", schedule_s="constant")
LAWS = [("gaussian", None, 1), ("rademacher", None, 1), ("uniform", None, 1),
        ("student_t", 10.0, 1), ("rademacher", None, 2)]
REPLICATES = 40_000


@pytest.fixture(scope="module")
def kurtosis_runs() -> list[tuple[str, dict, dict, dict]]:
    """Per law: Monte Carlo (float64), exact with the law's ψ, exact as if Gaussian."""
    out = []
    for law, nu, batch in LAWS:
        p = make_point({**KURT_POINT, "inputs": law, "inputs_nu": nu, "batch_t": batch,
                        "batch_s": batch})
        gauss = p.replace(inputs="gaussian", inputs_nu=None)
        sim = mc.simulate([p], replicates=REPLICATES, seed=2, dtype="float64")
        out.append((f"{law}/B={batch}", sim, exact.evaluate([p]), exact.evaluate([gauss])))
    return out


def test_kurtosis_term_matches_monte_carlo_for_every_law(kurtosis_runs) -> None:
    """All four risks within 4 Monte Carlo standard errors (R = 40,000) of the exact risk
    with the law's ψ, for each law, and at batch 2 for Rademacher inputs.

    Catches: ψ left at 3 (Rademacher teacher off by 140 se), the kurtosis coefficient
    without its 1/B (c = ψ − 1 instead of 1 + (ψ − 2)/B: the batch-2 case fails), a sampler
    whose variance is not 1, a Monte Carlo loop that ignores ``inputs``.
    """
    for name, sim, ex, _ in kurtosis_runs:
        assert (sim["status"] == "ok").all(), name
        for k in RISKS:
            z = (sim[k][0] - ex[k][0]) / sim[k + "_se"][0]
            assert abs(z) < 4.0, (name, k, sim[k][0], ex[k][0], z)


def test_gaussian_formula_fails_for_non_gaussian_laws(kurtosis_runs) -> None:
    """The check above has the power to see ψ: the Gaussian recursion (ψ = 3) puts the
    Rademacher and uniform teachers > 50 se and the Student-t (ν = 10) teacher > 8 se away
    from their Monte Carlo means. Catches a test point where ψ does not matter (then the
    first test could not fail on ψ left at 3)."""
    floor = {"rademacher": 50.0, "uniform": 50.0, "student_t": 8.0}
    for name, sim, _, ex_gauss in kurtosis_runs:
        law = name.split("/")[0]
        if law == "gaussian":
            continue
        z = abs(sim["risk_teacher"][0] - ex_gauss["risk_teacher"][0]) / sim["risk_teacher_se"][0]
        assert z > floor[law], (name, z)


def test_gaussian_inputs_reproduce_pinned_exact_numbers() -> None:
    """Exact risks at two Gaussian points equal the values of the engine before input laws
    existed (commit 9a88a28) to 1e-12: batch 3, tail-geometric teacher, a constant student in
    the n → ∞ limit. Catches a Gaussian coefficient rewritten in a form that rounds
    differently or moves (e.g. 1 + (ψ − 1)/B, or ψ/B)."""
    pts = [make_point(dict(alpha_t=1.5, alpha_s=2.0, N=1000, n=5000, sigma2=0.01, d=100,
                           batch_s=3, schedule_t="tail_geometric")),
           make_point(dict(alpha_t=1.2, alpha_s=1.6, N=300, n=math.inf, sigma2=0.1, d=50,
                           schedule_s="constant", gamma0_s=0.3, inputs="gaussian"))]
    pinned = [[0.052705899982928184, 0.24827731242603723, 0.1592663412737854,
               0.1458259035937954],
              [0.3132940113951188, 0.2482107662003056, 0.3132940113951188,
               0.032172763338443156]]
    ex = exact.evaluate(pts)
    got = np.array([[ex[k][i] for k in RISKS] for i in range(2)])
    np.testing.assert_allclose(got, pinned, rtol=1e-12, atol=0)


@pytest.mark.parametrize("psi", [1.0, 1.8, 6.0])
def test_closed_form_carries_psi_like_the_step_recursion(psi: float) -> None:
    """The per-stretch closed form (evolve) and the step-by-step reference (evolve_steps)
    agree to 1e-9 for ψ ≠ 3 over long geometric runs, and the answer depends on ψ.

    Catches ψ reaching one solver but not the other (e.g. stretch_map built with the
    Gaussian coefficient, or its cache keyed without ψ so a Gaussian map is reused)."""
    lam = spectrum(1.3, 60)
    phases = schedule_phases("geometric", 0.4, 3000, 3000)
    runs = Runs(lam=np.stack([lam, lam]), a0=np.stack([lam, lam]), noise=np.array([0.05, 0.05]),
                batch=np.array([1, 2]), phases=[phases, phases],
                steps=np.array([3000, 3000]), psi=np.array([3.0, 3.0]))
    evolve(runs)  # warm the stretch cache with Gaussian maps of the same (λ, γ, B)
    runs.psi = np.array([psi, psi])
    fast, ref = evolve(runs), evolve_steps(runs)
    np.testing.assert_allclose(fast.a, ref.a, rtol=1e-9, atol=1e-300)
    gauss = evolve_steps(Runs(**{**runs.__dict__, "psi": None}))
    assert not np.allclose(fast.risk, gauss.risk, rtol=1e-6)
