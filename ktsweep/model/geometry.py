"""The student's eigenbasis against the teacher's, and Lemma 2's static alignment bias.

Geometry of docs/science/geometry.md: the teacher's eigenbasis is the semantic basis, the
student's is the orthogonal matrix ``Q`` whose column k is the student's k-th eigenvector in
semantic coordinates, so the student's covariance is ``H_S = Q diag(λ_S) Q^T``. ``Q`` is a
rotation by ``angle`` of each mode pair (1,2), (3,4), … followed by a Haar-random orthogonal
mixing of the first ``mixing_dim`` semantic directions drawn from ``mixing_seed``.
"""

from __future__ import annotations

import math

import numpy as np

from ktsweep.model.params import Point, derive_seed


def pair_rotation(angle_deg: float, d: int) -> np.ndarray:
    """Rotation by ``angle_deg`` in each plane of the mode pairs (1,2), (3,4), …; an odd last
    mode stays where it is."""
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    q = np.eye(d)
    even = np.arange(0, d - 1, 2)
    q[even, even] = c
    q[even + 1, even + 1] = c
    q[even, even + 1] = -s
    q[even + 1, even] = s
    return q


def haar_orthogonal(seed: int, k: int) -> np.ndarray:
    """A k × k orthogonal matrix drawn from the Haar measure, a function of ``seed`` only.

    QR of a standard Gaussian matrix, with the signs of R's diagonal moved into Q (without
    that correction Q is not Haar distributed).
    """
    rng = np.random.Generator(np.random.PCG64(derive_seed("mixing", seed)))
    q, r = np.linalg.qr(rng.standard_normal((k, k)))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


def student_basis(p: Point) -> np.ndarray:
    """``Q``: the student's eigenvectors (columns) in semantic coordinates (identity when the
    point is aligned)."""
    q = pair_rotation(p.angle, p.d) if p.angle else np.eye(p.d)
    if p.mixing_seed is not None:
        k = p.d if p.mixing_dim is None else p.mixing_dim
        q[:k] = haar_orthogonal(p.mixing_seed, k) @ q[:k]
    return q


def basis_weights(p: Point) -> np.ndarray:
    """``W_ki = Q_ki²``: how semantic direction k spreads over the student's modes i.

    A diagonal second moment ``diag(a)`` in the semantic basis has diagonal ``W^T a`` in the
    student's eigenbasis; W is doubly stochastic.
    """
    q = student_basis(p)
    return q * q


def alignment_bias(p: Point, energy: np.ndarray) -> float:
    """Lemma 2's static alignment bias ``½ E‖Π_S Π_T^⊥ w*‖²`` from the projectors.

    ``Π_T`` projects on the teacher's span (semantic directions 1..r_t), ``Π_S`` on the
    student's (its first r_s eigenvectors); ``energy`` is ``E[w*_k²]``, the target's diagonal
    second moment in the semantic basis (its coordinates are uncorrelated).
    """
    q = student_basis(p)
    proj_s = q[:, : p.rank_s] @ q[:, : p.rank_s].T
    perp_t = np.diag((np.arange(p.d) >= p.rank_t).astype(np.float64))
    m = proj_s @ perp_t
    return 0.5 * float(np.trace(m @ np.diag(energy) @ m.T))


def alignment_bias_closed(p: Point, energy: np.ndarray) -> float:
    """Closed form of :func:`alignment_bias` for the pair rotation (NaN with a mixing).

    Semantic direction k > r_t lies in the student's span by cos²θ when k ≤ r_s and by sin²θ
    when its pair partner k' ≤ r_s (an unpaired last mode: by 1 when k ≤ r_s), so the bias is
    ``½ Σ_{k > r_t} e_k (cos²θ [k ≤ r_s] + sin²θ [k' ≤ r_s])``.
    """
    if p.mixing_seed is not None:
        return math.nan
    c2 = math.cos(math.radians(p.angle)) ** 2
    k = np.arange(p.d)
    partner = np.where(k % 2 == 0, k + 1, k - 1)
    unpaired = partner >= p.d
    inside = (k < p.rank_s).astype(np.float64)
    other = np.where(unpaired, inside, (partner < p.rank_s).astype(np.float64))
    share = np.where(unpaired, inside, c2 * inside + (1.0 - c2) * other)
    return 0.5 * float(np.sum(np.where(k >= p.rank_t, energy * share, 0.0)))
