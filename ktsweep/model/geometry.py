"""The student's eigenbasis against the teacher's, and Lemma 2's static alignment bias.

Geometry of docs/science/geometry.md: the teacher's eigenbasis is the semantic basis, the
student's is the orthogonal matrix ``Q`` whose column k is the student's k-th eigenvector in
semantic coordinates, so the student's covariance is ``H_S = Q diag(λ_S) Q^T``. ``Q`` is a
rotation by ``angle`` of each mode pair (1,2), (3,4), … followed by a Haar-random orthogonal
mixing of the first ``mixing_dim`` semantic directions drawn from ``mixing_seed``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ktsweep.model.params import Point, derive_seed
from ktsweep.model.spectra import target_coefficients, target_energy


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


def target_second_moment(p: Point) -> np.ndarray:
    """``E[θ* θ*^T]`` in the semantic basis: ``diag(e)`` for the random (gaussian) target, whose
    coordinates are uncorrelated, ``θ* θ*^T`` for a deterministic one (lowdim, power)."""
    e = target_energy(p)
    if target_coefficients(p) is None:
        return np.diag(e)
    return np.outer(np.sqrt(e), np.sqrt(e))


def alignment_bias(p: Point) -> float:
    """Lemma 2's static alignment bias ``½ E‖Π_S Π_T^⊥ w*‖²`` from the projectors.

    ``Π_T`` projects on the teacher's span (semantic directions 1..r_t), ``Π_S`` on the
    student's (its first r_s eigenvectors); the expectation is over a random target.
    """
    if p.aligned:  # both projectors diagonal: the target's energy on r_t < k ≤ r_s
        k = np.arange(p.d)
        return 0.5 * float(target_energy(p)[(k >= p.rank_t) & (k < p.rank_s)].sum())
    q = student_basis(p)
    proj_s = q[:, : p.rank_s] @ q[:, : p.rank_s].T
    perp_t = np.diag((np.arange(p.d) >= p.rank_t).astype(np.float64))
    m = proj_s @ perp_t
    return 0.5 * float(np.trace(m @ target_second_moment(p) @ m.T))


def alignment_bias_closed(p: Point) -> float:
    """Closed form of :func:`alignment_bias` for the pair rotation by θ (NaN with a mixing).

    Per pair (k, k+1), with v = Π_T^⊥ w* (zero on k ≤ r_t), ``e1 = E v_k²``, ``e2 = E v_{k+1}²``,
    ``x = E v_k v_{k+1}`` (0 for the random target): the student's eigenvectors of the pair are
    (cos θ, sin θ) and (−sin θ, cos θ), so the pair adds
    ``½ [k ≤ r_s](c² e1 + s² e2 + 2cs x) + ½ [k+1 ≤ r_s](s² e1 + c² e2 − 2cs x)``; an unpaired
    last mode adds ``½ [d ≤ r_s] e_d`` when d > r_t.
    """
    if p.mixing_seed is not None:
        return math.nan
    c, s = math.cos(math.radians(p.angle)), math.sin(math.radians(p.angle))
    k = np.arange(p.d)
    theta = np.sqrt(target_energy(p)) * (k >= p.rank_t)  # |coefficients| of Π_T^⊥ w*
    e = theta**2
    inside = k < p.rank_s
    first = k[:-1:2]
    second = first + 1
    x = theta[first] * theta[second] if target_coefficients(p) is not None else 0.0
    total = np.sum(inside[first] * (c * c * e[first] + s * s * e[second] + 2 * c * s * x)
                   + inside[second] * (s * s * e[first] + c * c * e[second] - 2 * c * s * x))
    if p.d % 2:
        total += inside[-1] * e[-1]
    return 0.5 * float(total)


def geometry_quantities(points: Sequence[Point]) -> dict[str, np.ndarray]:
    """``alignment_bias`` and ``alignment_bias_closed`` per point (the cube's geometry
    quantities, :data:`~ktsweep.model.quantities.GEOMETRY`)."""
    return {"alignment_bias": np.array([alignment_bias(p) for p in points]),
            "alignment_bias_closed": np.array([alignment_bias_closed(p) for p in points])}
