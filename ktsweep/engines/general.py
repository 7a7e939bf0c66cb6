"""Exact moments when the student's eigenbasis is not the teacher's (docs/science/geometry.md).

With features ``φ_S = Λ_S^{1/2} Q^T z`` the student's effective parameter ``u = Q Λ_S^{1/2} w``
follows ``u ← u − γ H_S z (z^T u − y)``, ``H_S = Q Λ_S Q^T``, and its error's second moment
``A = E[η η^T]`` the full-matrix recursion (batch B, label noise s², fourth-moment constant ψ of
the independent unit-variance coordinates of z)::

    A ← A − γ(H A + A H) + γ²(1 + 1/B) H A H + (γ²/B)(tr A + s²) H² + (γ²/B)(ψ − 3) H Dg(A) H

(``Dg``: the diagonal part in the semantic basis). Two solvers:

- :func:`student_weights` / :func:`to_student`, the closed form for Gaussian inputs (ψ = 3):
  in the student's eigenbasis ``Ã = Q^T A Q`` the recursion reads
  ``Ã_ij ← ρ_ij Ã_ij + δ_ij (γ²λ_i²/B)(tr Ã + s²)``, so the diagonal obeys the aligned
  recursion on its own and the off-diagonal entries (which no risk reads) only decay. Every
  start of a student run (``E[θ* θ*^T]``, ``E[u_T u_T^T]``) and the T2S cross moment are
  diagonal in the semantic basis, whose student-basis diagonal is ``W^T a`` with
  ``W_ki = Q_ki²``. The exact engine therefore runs its aligned stretch solver on those
  diagonals: O(d²) per point for W on top of the aligned cost.
- :func:`evolve_full`, the recursion itself on d × d matrices in semantic coordinates, step by
  step, any ψ: O(d³) per step. The reference the closed form is tested against, and the
  solver where ψ ≠ 3 couples the off-diagonal entries back into the diagonal.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ktsweep.model.geometry import basis_weights
from ktsweep.model.params import Point
from ktsweep.model.spectra import Phases, step_sizes


def student_weights(points: Sequence[Point]) -> np.ndarray | None:
    """``W`` per point, shape (P, d, d), or None when every point is aligned (the aligned
    engine then runs untouched)."""
    if all(p.aligned for p in points):
        return None
    return np.stack([np.eye(p.d) if p.aligned else basis_weights(p) for p in points])


def to_student(weights: np.ndarray | None, x: np.ndarray) -> np.ndarray:
    """Diagonals (P, d) of semantic-basis diagonal matrices, seen in each point's student
    eigenbasis: ``W^T x`` (``x`` itself when ``weights`` is None)."""
    if weights is None:
        return x
    return np.einsum("pki,pk->pi", weights, x)


def evolve_full(
    h: np.ndarray, a0: np.ndarray, noise: float, batch: int, phases: Phases, steps: int,
    psi: float = 3.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Step the full second-moment recursion ``steps`` times; returns A and the mean's
    contraction ``P = Π_t (I − γ_t H)`` (both d × d, semantic coordinates).

    ``h`` is the covariance H of the run's features seen in z (``diag(λ_T)`` for the teacher,
    ``Q diag(λ_S) Q^T`` for a student), ``a0`` the starting second moment.
    """
    d = h.shape[0]
    a = np.array(a0, dtype=np.float64)
    contraction = np.eye(d)
    inv_b = 1.0 / batch
    h2 = h @ h
    for gamma in step_sizes(phases, steps):
        ha = h @ a
        new = (a - gamma * (ha + ha.T) + gamma**2 * (1.0 + inv_b) * (ha @ h)
               + gamma**2 * inv_b * (np.trace(a) + noise) * h2)
        if psi != 3.0:  # the fourth-moment excess, diagonal in the semantic basis
            new += gamma**2 * inv_b * (psi - 3.0) * (h * np.diag(a)) @ h
        a = 0.5 * (new + new.T)
        contraction = contraction - gamma * h @ contraction
    return a, contraction
