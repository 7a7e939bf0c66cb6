"""The closed form with negative eigenvalues (inputs with ψ < 2 at large steps), held to the
literal step loop of ``tests/reference.py`` on fixed maps that exercise each branch:
both kernels (numpy's path below 512 live modes, the compiled one above), the rule that
drops decayed roots, the stepped blocks where a factor q_i < −1, and a map at the edge.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import diagonal_run

from ktsweep.engines import stretch
from ktsweep.engines.moments import Runs, evolve, evolve_steps
from ktsweep.engines.onestep import one_step
from ktsweep.model.spectra import spectrum


def _one_run(lam: np.ndarray, gamma: float, batch: int, psi: float, steps: int,
             noise: float = 0.1) -> Runs:
    return Runs(lam=lam[None], a0=lam[None].copy(), noise=np.array([noise]),
                batch=np.array([batch]), phases=[[(0, gamma)]], steps=np.array([steps]),
                psi=np.array([psi]))


def _head_pair(tail: int, scale: float, second: float) -> np.ndarray:
    """Two near-equal head modes (1, ``second``) over a small power-law tail: at γ ≈ 1 with
    Rademacher inputs at batch 1 their difference is an eigenvector of eigenvalue near −1."""
    return np.concatenate([[1.0, second], scale * spectrum(2.0, tail)])


def _start(lam: np.ndarray) -> np.ndarray:
    """All the initial error on the first mode: a large component on the negative
    eigenvalue (a symmetric start would excite mostly the positive one)."""
    a0 = np.zeros_like(lam)
    a0[0] = 1.0
    return a0


@pytest.mark.parametrize("kernels", ["numpy", "compiled"])
def test_both_kernels_take_negative_eigenvalues_with_their_sign(
        kernels: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """600 Rademacher modes at γ = 1 whose head pair gives an eigenvalue μ ≈ −0.995, over a
    stretch of 900 steps (long enough for the closed form from its first step; μ^900 ≈
    0.01): final moments and the learning curve at an odd and an even step equal the
    literal loop's to 1e-12 of the run's scale, on either kernel.
    Planted bugs caught: the sign (−1)^t dropped in ``stretch.powers`` (numpy) or in
    ``secular._power`` (compiled), log1p(−δ) kept for δ > 1 (NaN, read as diverged)."""
    lam = _head_pair(598, 1e-4, 0.995)
    if kernels == "numpy":
        monkeypatch.setattr(stretch, "_COMPILED_FROM", 10**9)
    stretch.clear_cache()
    a0 = _start(lam)
    runs = Runs(lam=lam[None], a0=a0[None], noise=np.array([0.0]), batch=np.array([1]),
                phases=[[(0, 1.0)]], steps=np.array([900]), psi=np.array([1.0]))
    ck = np.array([0, 899, 900])
    out = evolve(runs, ck)
    sm = stretch.stretch_map(lam, 1.0, 1.0, psi=1.0)  # the map the run went through
    assert sm is not None and sm.delta.max() > 1.99  # μ ≈ −0.995, applied
    stretch.clear_cache()
    ref = diagonal_run(lam, a0, 0.0, 1, 1.0, np.full(900, 1.0))
    assert not out.diverged[0]
    scale = ref.half_sums.max()
    np.testing.assert_allclose(out.a[0], ref.final, rtol=1e-12, atol=1e-12 * scale)
    np.testing.assert_allclose(out.curve[0], ref.half_sums[ck], rtol=1e-12, atol=1e-12 * scale)


@pytest.mark.parametrize("steps", [30, 60, 120])
def test_slow_negative_roots_are_kept(steps: int) -> None:
    """A head pair (1, 0.9) over four small modes, Rademacher, batch 1, γ = 1: the largest
    root δ ≈ 1.9 has μ ≈ −0.9, which decays at the rate −log 0.9 ≈ 0.1, not at δ. A stretch
    asked for no time before its end (checkpoints 0 and the end) must keep that root: the
    final moments equal the literal loop's to 1e-12.
    Planted bug caught: roots dropped by the rule for δ ≤ 1 (δ ≥ cut), which here drops
    μ ≈ −0.9 after about 22 steps and misses 0.9^t of the run's excess."""
    lam = _head_pair(4, 0.01, 0.9)
    a0 = _start(lam)
    runs = Runs(lam=lam[None], a0=a0[None], noise=np.array([0.0]), batch=np.array([1]),
                phases=[[(0, 1.0)]], steps=np.array([steps]), psi=np.array([1.0]))
    out = evolve(runs, np.array([0, steps]))
    ref = diagonal_run(lam, a0, 0.0, 1, 1.0, np.full(steps, 1.0))
    np.testing.assert_allclose(out.a[0], ref.final, rtol=1e-12,
                               atol=1e-12 * ref.half_sums.max())


def test_blocks_shorten_where_a_factor_is_below_minus_one() -> None:
    """Rademacher, batch 1, a map that is stable although q_1 = −2 (γλ_1 = 1.5): the step
    recursion (``evolve_steps``, and the closed form's stepped head) equals the literal loop
    to 1e-10 over 200 steps.
    Planted bug caught: blocks of 64 steps whatever q (the renewal solution then sums
    powers up to 2^63 ≈ 10^19 with alternating signs and keeps no digit; a run of moderate
    risk read as diverged or as O(1) off)."""
    lam = np.array([1.0, 0.25])
    assert one_step(lam, 1.5, 1.0, 1.0).stable and one_step(lam, 1.5, 1.0, 1.0).d.max() > 2.9
    runs = _one_run(lam, 1.5, 1, 1.0, 200)
    ref = diagonal_run(lam, lam, 0.1, 1, 1.0, np.full(200, 1.5))
    for solver in (evolve_steps, evolve):
        out = solver(runs, np.arange(0, 201, 7))
        assert not out.diverged[0]
        np.testing.assert_allclose(out.a[0], ref.final, rtol=1e-10)
        np.testing.assert_allclose(out.curve[0], ref.half_sums[::7], rtol=1e-10)


def test_fixed_point_beyond_the_limit_is_stepped() -> None:
    """A live mode and a dead one (energy 1, acting as label noise) at the very edge of
    stability, γ = 2/3, B = 1: f0 = 1 − Σg/d is zero up to rounding, so the fixed point
    a_∞ ∝ 1/f0 is about 10^16. Three steps give a = (7/3, 1) exactly as the literal loop.
    Planted bug caught: the closed form taken for such a map (it returned a_1 = 3 or 1,
    status ok: all digits lost to a(t) = a_∞ + M^t(a − a_∞))."""
    lam = np.array([1.0, 0.0])
    runs = Runs(lam=lam[None], a0=np.ones((1, 2)), noise=np.zeros(1), batch=np.ones(1, int),
                phases=[[(0, 2.0 / 3.0)]], steps=np.array([3]), psi=np.array([3.0]))
    for ck in (None, np.array([0, 1, 2, 3])):
        out = evolve(runs, ck)
        np.testing.assert_allclose(out.a[0], [7.0 / 3.0, 1.0], rtol=1e-14)
