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
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ktsweep.engines.moments import ROUND_OFF, Moments, Runs, divergence_limit, settle
from ktsweep.model.geometry import student_basis
from ktsweep.model.params import Point
from ktsweep.model.spectra import Phases, phase_product, step_sizes, target_coefficients


@dataclass
class Geometry:
    """Student bases of a batch of points and what the teacher side needs to be seen in them."""

    q: np.ndarray  # (P, d, d) student eigenvectors in semantic coordinates
    fixed_target: np.ndarray  # (P,) bool: deterministic target, E[θ*θ*^T] = θ*θ*^T


def geometry(points: Sequence[Point], force: bool = False) -> Geometry | None:
    """The bases of ``points``, or None when every point is aligned (the aligned engine then
    runs untouched) and ``force`` is off (tests force the general path on aligned points)."""
    if not force and all(p.aligned for p in points):
        return None
    return Geometry(q=np.stack([student_basis(p) for p in points]),
                    fixed_target=np.array([target_coefficients(p) is not None for p in points]))


def offdiag_decay(lam: np.ndarray, phases: Phases, steps: int, inv_b: float) -> np.ndarray:
    """``R_ij = Π_t ρ_ij(γ_t)``, ``ρ_ij = 1 − γ(λ_i + λ_j) + γ²(1 + 1/B) λ_i λ_j``: how an
    off-diagonal second moment of a run that is diagonal (H = diag λ) decays over the run, one
    power per constant-step stretch. ``steps = -1``: the limit (1 only where λ_i = λ_j = 0).
    """
    if steps < 0:
        dead = lam == 0
        return (dead[:, None] & dead[None, :]).astype(np.float64)
    out = np.ones((lam.size, lam.size))
    stops = [s for s, _ in phases[1:]] + [steps]
    for (start, g), stop in zip(phases, stops, strict=True):
        length = min(stop, steps) - start
        if length <= 0:
            continue
        gl = g * lam
        x = -(gl[:, None] + gl[None, :]) + (1.0 + inv_b) * np.outer(gl, gl)
        with np.errstate(all="ignore"):
            out *= np.where(x > -1.0, np.exp(length * np.log1p(np.maximum(x, -1.0 + 1e-300))),
                            (1.0 + x) ** length)
    return out


def _diag_in(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    """diag(Q^T X Q): a semantic-basis matrix's diagonal in the student's eigenbasis."""
    return np.einsum("ki,ki->i", q, x @ q)


def target_side(geo: Geometry | None, energy: np.ndarray) -> np.ndarray:
    """Student-basis diagonal of E[θ*θ*^T] (P, d): ``W^T e`` for a random target,
    ``(Q^T θ*)²`` for a deterministic one; ``energy`` itself when ``geo`` is None."""
    if geo is None:
        return energy
    out = np.einsum("pki,pk->pi", geo.q * geo.q, energy)
    for i in np.flatnonzero(geo.fixed_target):
        out[i] = np.square(np.sqrt(energy[i]) @ geo.q[i])
    return out


class TeacherMoments(NamedTuple):
    """The teacher's moments a student run reads: E[θ*θ*^T], A_T, E[u_T u_T^T] and the cross
    moment C = E[u_T η_T^T] (d × d matrices of one point from :func:`teacher_matrices`,
    or (P, d) student-basis diagonals from :func:`teacher_side`)."""

    energy: np.ndarray
    a_teacher: np.ndarray
    u_teacher_sq: np.ndarray
    cross: np.ndarray


class FullStart(NamedTuple):
    """A student run for :func:`overwrite_full`: its basis Q, its start Ã(0) in that basis (a
    d × d matrix) and the fourth moment ψ of its inputs."""

    q: np.ndarray
    a0: np.ndarray
    psi: float


def teacher_matrices(energy: np.ndarray, a_t: np.ndarray, p_t: np.ndarray, fixed: bool,
                     decay: np.ndarray | None) -> TeacherMoments:
    """Semantic-basis d × d matrices M = E[θ*θ*^T], A_T, U = E[u_T u_T^T], C = E[u_T η_T^T]
    of one point from the teacher's diagonals (see :func:`teacher_side`)."""
    if fixed and decay is not None:
        theta = np.sqrt(energy)
        m = np.outer(theta, theta)
        at = np.diag(a_t) + decay * (m - np.diag(energy))
    else:
        m, at = np.diag(energy), np.diag(a_t)
    mp = m * p_t[None, :]
    return TeacherMoments(m, at, at + m - mp - mp.T, at - mp)


def teacher_side(geo: Geometry | None, energy: np.ndarray, a_t: np.ndarray, p_t: np.ndarray,
                 decay: Sequence[np.ndarray | None]) -> TeacherMoments:
    """Student-basis diagonals of E[θ*θ*^T], the teacher's A_T, E[u_T u_T^T] and the cross
    moment C = E[u_T η_T^T] (each (P, d)), from the teacher's semantic diagonals.

    With a random (gaussian) target every one of them is diagonal in the semantic basis and
    its student diagonal is ``W^T x``, ``W_ki = Q_ki²`` (O(d²)). A deterministic target has
    ``M = E[θ*θ*^T] = θ*θ*^T``, whose off-diagonal part the teacher carries along as
    ``R ∘ M`` (``decay[i]``: :func:`offdiag_decay` of the teacher's run), so
    ``A_T = diag(a_T) + R∘M_off``, ``C = A_T − M P_T``, ``U = A_T + M − M P_T − P_T M``
    (O(d³) per point). ``geo`` None: the semantic diagonals themselves.
    """
    u_sq = energy * (1.0 - 2.0 * p_t) + a_t
    cross = a_t - p_t * energy
    if geo is None:
        return TeacherMoments(energy, a_t, u_sq, cross)
    out = TeacherMoments(*(np.empty_like(energy) for _ in range(4)))
    for i, q in enumerate(geo.q):
        w = q * q
        if not geo.fixed_target[i] or decay[i] is None:
            for o, x in zip(out, (energy[i], a_t[i], u_sq[i], cross[i]), strict=True):
                o[i] = x @ w
            continue
        mats = teacher_matrices(energy[i], a_t[i], p_t[i], True, decay[i])
        for o, x in zip(out, mats, strict=True):
            o[i] = _diag_in(q, x)
    return out


def step_full(lam: np.ndarray, q: np.ndarray, a0: np.ndarray, noise: float, batch: int,
              phases: Phases, steps: int, psi: float, checkpoints: np.ndarray, limit: float
              ) -> tuple[np.ndarray, np.ndarray, bool]:
    """A student run whose inputs are not Gaussian (ψ ≠ 3), stepped on d × d matrices in its
    eigenbasis: ``Ã ← ρ∘Ã + (γ²/B)(tr Ã + s²) Λ² + (γ²/B)(ψ − 3) Λ Q^T Dg(Q Ã Q^T) Q Λ``.

    The fourth-moment term is diagonal in the semantic basis, so in the student's it couples
    every entry of Ã back into the diagonal; 2 d³ per step. Returns the final diagonal of Ã,
    ½ tr Ã at ``checkpoints`` (NaN past the run) and whether tr Ã + s² crossed ``limit`` or
    stopped being a number (an overflow, or tr Ã below 0 beyond rounding).
    """
    a = np.array(a0, dtype=np.float64)
    curve = np.full(len(checkpoints), np.nan)
    curve[checkpoints == 0] = 0.5 * np.trace(a)
    inv_b = 1.0 / batch
    outer = np.outer(lam, lam)
    lsum = lam[:, None] + lam[None, :]
    gammas = step_sizes(phases, steps)
    with np.errstate(all="ignore"):  # an overflow is caught below, as divergence
        for t, gamma in enumerate(gammas, start=1):
            sem_diag = np.einsum("ki,ki->k", q @ a, q)  # Dg(Q Ã Q^T)
            kurt = (q.T * sem_diag) @ q * outer
            tr = np.trace(a)
            a = a * (1.0 - gamma * lsum + gamma**2 * (1.0 + inv_b) * outer)
            a += gamma**2 * inv_b * (psi - 3.0) * kurt
            a[np.diag_indices_from(a)] += gamma**2 * inv_b * (tr + noise) * lam**2
            total = np.trace(a)
            curve[checkpoints == t] = 0.5 * total
            if not (total + noise < limit and total >= -ROUND_OFF * limit):
                return np.full(lam.size, np.nan), curve, True
    return np.diag(a).copy(), curve, False


def overwrite_full(m: Moments, runs: Runs, checkpoints: np.ndarray,
                   rows: dict[int, FullStart]) -> None:
    """Replace, in place, the solver's results for ``rows`` (row → Q, full start Ã(0) in the
    student's basis, ψ) by :func:`step_full`'s, the divergence verdict included. The mean's
    contraction does not involve ψ, but the aligned solver's is NaN where its own (diagonal)
    run diverged, so it is recomputed for every row the full run keeps."""
    for row, (q, a0, psi) in rows.items():
        steps = int(runs.steps[row])
        if steps < 0:
            raise ValueError("N = inf or n = inf with a rotated student (angle, mixing_seed) "
                             "and non-Gaussian inputs is not computed: the full-matrix limit is "
                             "not derived; give finite N and n")
        noise = float(runs.noise[row])
        limit = float(divergence_limit(np.trace(a0), noise))
        a, curve, bad = step_full(runs.lam[row], q, a0, noise, int(runs.batch[row]),
                                  runs.phases[row], steps, psi, checkpoints, limit)
        m.a[row], m.curve[row], m.diverged[row] = a, curve, bad
        if bad:
            m.contraction[row] = np.nan
        else:
            with np.errstate(all="ignore"):
                m.contraction[row] = phase_product(runs.phases[row], steps, runs.lam[row])
    settle(m, divergence_limit(runs.a0.sum(axis=1), runs.noise))


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
