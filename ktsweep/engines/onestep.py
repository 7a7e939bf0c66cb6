"""The one-step map of the diagonal second-moment recursion at a constant step: its
coefficients and whether it is strictly stable (docs/science/limits.md §1).

With x_i = γλ_i, batch B and inputs of fourth moment ψ, one step reads

    a ← M a + s² g,   M = diag(q) + g 1ᵀ,   q_i = 1 − d_i,
    d_i = x_i (2 − c x_i),   g_i = x_i²/B,   c = 1 + (ψ − 2)/B.

Every solver (the step recursion, the closed form per stretch, the limit of infinitely many
steps) takes ``c`` from :func:`curvature` and its verdict on stability from
:func:`strictly_stable`, so that the facts live in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def curvature(inv_b: float | np.ndarray, psi: float | np.ndarray = 3.0
              ) -> float | np.ndarray:
    """c = 1 + (ψ − 2)/B, the coefficient of γ²λ_i² a_i in the diagonal recursion.

    For independent unit-variance symmetric coordinates with E z_i⁴ = ψ, the diagonal of
    E[zzᵀ A zzᵀ] is tr A + (ψ − 1) A_ii; averaging B such draws gives
    (1 + (ψ − 2)/B) A_ii + tr A / B (docs/science/inputs.md). Gaussian ψ = 3: 1 + 1/B,
    bit for bit (3.0 − 2.0 is exact). Every solver builds its coefficients from here.
    """
    return 1.0 + (psi - 2.0) * inv_b


@dataclass(frozen=True)
class OneStep:
    """The map of one constant step on the live modes (λ_i > 0), in the order of ``lam``."""

    live: np.ndarray  # indices of the live modes
    d: np.ndarray  # d_i = 1 − q_i = x_i (2 − c x_i), full relative accuracy for tiny x_i
    g: np.ndarray  # g_i = x_i²/B
    ratio: np.ndarray  # g_i/d_i = x_i / (B (2 − c x_i)), without cancellation
    f0: float  # 1 − Σ_i g_i/d_i
    stable: bool  # every eigenvalue of M in (−1, 1): :func:`strictly_stable`


def one_step(lam: np.ndarray, gamma: float, inv_b: float, psi: float = 3.0) -> OneStep:
    """The coefficients of step γ on the live modes of ``lam`` and their stability."""
    live = np.flatnonzero(lam > 0)
    x = gamma * lam[live]
    c = curvature(inv_b, psi)
    d = x * (2.0 - x * c)
    g = x * x * inv_b
    with np.errstate(all="ignore"):
        ratio = x * inv_b / (2.0 - x * c)
    f0 = 1.0 - float(ratio.sum())
    return OneStep(live, d, g, ratio, f0, strictly_stable(d, g, f0))


def strictly_stable(d: np.ndarray, g: np.ndarray, f0: float) -> bool:
    """Whether every eigenvalue μ of M = diag(1 − d) + g 1ᵀ (live modes, g > 0) lies in
    (−1, 1): every d_i > 0 and f0 = 1 − Σ_i g_i/d_i > 0.

    M is similar to the symmetric diag(1 − d) + √g √gᵀ, so its eigenvalues are real; with
    μ = 1 − δ they are the roots of F(δ) = 1 − Σ_i g_i/(d_i − δ), which decreases between
    consecutive poles, one root below the smallest d. That root is the largest μ, and it is
    below 1 (δ > 0) iff every d_i > 0 and F(0) = f0 > 0 (the upper edge).

    The lower edge, μ > −1, follows: M is entrywise non-negative (off the diagonal g_i ≥ 0,
    on it q_i + g_i = 1 − 2x_i + x_i²(1 + (ψ − 1)/B) ≥ (1 − x_i)², since every unit-variance
    law has ψ ≥ 1), so by Perron–Frobenius no eigenvalue exceeds the largest one in size.
    Eigenvalues in (−1, 0) do occur where some q_i < 0 (ψ < 2: Rademacher, uniform inputs at
    large steps; q_i < −1 too, for Rademacher at batch 1), and the closed form takes them
    with their sign. The condition is monotone in γ (Σ_i g_i/d_i = Σ_i x_i/(B(2 − c x_i))
    grows with γ), so a step smaller than a stable one is stable.
    """
    return bool((d > 0).all() and f0 > 0)


def largest_stable_step(lam: np.ndarray, batch: int, psi: float = 3.0) -> float:
    """The supremum of the steps γ whose one-step map is strictly stable (the condition is
    monotone in γ, :func:`strictly_stable`), to a relative 1e-12 by bisection; every
    schedule's first step must lie below it for the run to converge in expectation."""
    live = lam[lam > 0]
    if not live.size:
        return float("inf")
    inv_b = 1.0 / batch
    lo, hi = 0.0, 2.0 / float(live.max())  # x_max = 2 makes some d_i <= 0 whatever c >= 0
    while one_step(live, hi, inv_b, psi).stable:  # c < 1 (psi < 2) can stretch that edge
        lo, hi = hi, 2.0 * hi
    while hi - lo > 1e-12 * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if one_step(live, mid, inv_b, psi).stable else (lo, mid)
    return lo
