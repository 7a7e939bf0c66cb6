"""Closed form of the second-moment map over a whole stretch of constant step size.

Within a stretch of constant γ (batch B, spectrum λ, label noise s²) model.md §4.2 reads

    a ← M a + s² g,   M = diag(q) + g 1ᵀ,
    q_i = 1 − 2γλ_i + γ²λ_i²(1 + 1/B),   g_i = γ²λ_i²/B.

Modes with λ_i = 0 have q_i = 1, g_i = 0: they keep their value and only add a constant to
S = Σ_j a_j + s², so they are folded into the noise (exact deflation). For the live modes
(g_i > 0) write d_i = 1 − q_i = γλ_i(2 − γλ_i(1 + 1/B)), which is computed with full relative
accuracy however small γλ_i is; every quantity below is expressed through d, never through q,
because q_i rounds to 1 for tail modes and would lose all their information.

**Spectral decomposition.** With W = diag(√g), W⁻¹ M W = diag(q) + √g √gᵀ is symmetric (a
similarity, so M has the same real eigenvalues μ_k and is diagonalisable). An eigenvalue
μ = 1 − δ solves the secular equation 1 = Σ_i g_i / (d_i − δ), and

    right eigenvector r_{k,i} = g_i C_{k,i},  left eigenvector l_{k,i} = C_{k,i},
    C_{k,i} = 1 / (μ_k − q_i) = 1 / (d_i − δ_k),

as one checks from (lᵀM)_i = q_i C_{k,i} + Σ_j g_j C_{k,j} = μ_k C_{k,i}. Hence, with
w_k = l_kᵀ r_k = Σ_i g_i C_{k,i}² and h_k = l_kᵀ g (= 1 by the secular equation),

    a(t) = Σ_k r_k [μ_k^t α_k + s² β_k E_k(t)],  α_k = l_kᵀ a(0) / w_k,  β_k = h_k / w_k,
    E_k(t) = 1 + μ_k + … + μ_k^{t−1} = −expm1(t log1p(−δ_k)) / δ_k,
    Σ_i a_i(t) = Σ_k h_k [μ_k^t α_k + s² β_k E_k(t)].

Cost O(d²) per stretch whatever its length t; learning-curve checkpoints inside a stretch
cost O(d) each (the sum above), so checkpoints never split a stretch.

**Accuracy near μ = 1.** Tail modes have δ_k ≈ d_k ≈ 2γλ_k tiny while the stretch length t
can be 2^35: μ^t needs δ_k to *relative* precision, which μ_k = 1 − δ_k in float64 cannot
hold. So roots are found in the inverted problem: when 1 − Σ_i g_i/d_i > 0 (exactly the
condition that every δ_k > 0, i.e. spectral radius < 1),

    (diag(d) − √g √gᵀ)⁻¹ = diag(1/d) + u uᵀ / (1 − Σ_i g_i/d_i),   u_i = √g_i / d_i,

a positive rank-one update of a positive diagonal (Sherman–Morrison), whose eigenvalues
1/δ_k LAPACK ``dlasd4`` finds with the differences 1/d_j − 1/δ_k to high relative accuracy.
Each root is stored as (nearest pole o_k, offset τ_k = δ_k − d_{o_k}), so C_{k,o_k} = −1/τ_k
is exact to rounding and the other C_{k,j} = 1/((d_j − d_{o_k}) − τ_k) lose at most the
relative gap between poles. Powers use exp(t·log1p(−δ)) and E_k uses expm1, so neither
rounds μ. A stretch whose map is not strictly stable (1 − Σ g/d ≤ 0), or whose poles are
too close to separate, returns ``None`` and the caller steps it (model.md's recursion).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from scipy.linalg.lapack import dlasd4

_ROW_CHUNK = 512
"""Rows of C built at once (bounds memory at d = 10⁴ to 40 MB)."""

_CACHE_BYTES = 256 << 20
"""Stretch maps are reused across runs and points (same λ, γ, B): geometric schedules of any
horizon share their step sizes γ0·2^-j, and the T2S and ceiling students share everything."""


@dataclass
class StretchMap:
    """Spectral decomposition of one constant-step map (live modes only)."""

    live: np.ndarray  # (m,) indices of modes with λ > 0
    d: np.ndarray  # (m,) 1 − q
    g: np.ndarray  # (m,) gain
    origin: np.ndarray  # (m,) nearest pole of each root (index into live)
    tau: np.ndarray  # (m,) δ_k − d_origin
    delta: np.ndarray  # (m,) δ_k = 1 − μ_k
    h: np.ndarray  # (m,) l_kᵀ g
    w: np.ndarray  # (m,) l_kᵀ r_k
    rows: np.ndarray | None  # (m, m) C when small enough to keep

    def chunks(self):
        """Yield (slice, C rows) of the eigenvector matrix, from the cache or rebuilt."""
        m = self.d.size
        for lo in range(0, m, _ROW_CHUNK):
            sl = slice(lo, min(m, lo + _ROW_CHUNK))
            if self.rows is not None:
                yield sl, self.rows[sl]
            else:
                yield sl, self._build(sl)

    def _build(self, sl: slice) -> np.ndarray:
        o = self.origin[sl]
        diff = self.d[None, :] - self.d[o][:, None]  # exact 0 at the origin pole
        diff -= self.tau[sl, None]
        return 1.0 / diff


def _solve(lam: np.ndarray, gamma: float, inv_b: float) -> StretchMap | None:
    """Decompose the map of step γ; None when it is not strictly stable or not separable."""
    live = np.flatnonzero(lam > 0)
    x = gamma * lam[live]
    d = x * (2.0 - x * (1.0 + inv_b))
    g = x * x * inv_b
    m = live.size
    if m == 0:
        e = np.zeros(0)
        return StretchMap(live, e, e, np.zeros(0, int), e, e, e, e, None)
    if not (d > 0).all():
        return None
    ratio = x * inv_b / (2.0 - x * (1.0 + inv_b))  # g/d without cancellation
    f0 = 1.0 - ratio.sum()
    if not f0 > 0:  # spectral radius ≥ 1
        return None
    # Poles of the inverted problem: D_j = 1/√d_j ascending ⇔ d descending.
    order = np.argsort(-d, kind="stable")
    live, d, g, ratio = live[order], d[order], g[order], ratio[order]
    if m > 1 and not (np.diff(d) < 0).all() or (np.abs(np.diff(d)) <= 1e-13 * d[1:]).any():
        return None  # (near-)equal poles: not separable in float64
    D = 1.0 / np.sqrt(d)
    u = np.sqrt(g) / d
    nu = float(np.sqrt(np.sum(u * u)))
    z = u / nu
    rho = nu * nu / f0
    origin = np.empty(m, dtype=np.int64)
    tau = np.empty(m)
    delta = np.empty(m)
    for i in range(m):
        dl, sigma, work, info = dlasd4(i, D, z, rho)
        if info != 0 or not sigma > 0:
            return None
        o = i if i + 1 >= m or abs(dl[i]) <= abs(dl[i + 1]) else i + 1
        dk = 1.0 / (sigma * sigma)
        origin[i], delta[i] = o, dk
        tau[i] = d[o] * dk * (dl[o] * work[o])  # δ − d_o = d_o δ (1/d_o − 1/δ)
    sm = StretchMap(live, d, g, origin, tau, delta, np.empty(m), np.empty(m), None)
    keep = m * m * 8 <= _CACHE_BYTES // 16
    rows = np.empty((m, m)) if keep else None
    for sl, c in sm.chunks():
        sm.h[sl] = c @ g
        sm.w[sl] = (c * c) @ g
        if rows is not None:
            rows[sl] = c
    sm.rows = rows
    if not (np.isfinite(sm.h).all() and np.isfinite(sm.w).all() and (sm.w > 0).all()):
        return None
    return sm


_cache: OrderedDict[tuple, StretchMap | None] = OrderedDict()
_cache_bytes = [0]


def _nbytes(sm: StretchMap | None) -> int:
    if sm is None:
        return 64
    return 8 * 8 * sm.d.size + (0 if sm.rows is None else sm.rows.nbytes)


def stretch_map(lam: np.ndarray, gamma: float, inv_b: float) -> StretchMap | None:
    """The (cached) decomposition of the constant-step map; None: step it instead."""
    key = (hash(lam.tobytes()), lam.size, float(gamma), float(inv_b))
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    sm = _solve(lam, gamma, inv_b)
    _cache[key] = sm
    _cache_bytes[0] += _nbytes(sm)
    while _cache_bytes[0] > _CACHE_BYTES and len(_cache) > 1:
        _, old = _cache.popitem(last=False)
        _cache_bytes[0] -= _nbytes(old)
    return sm


def advance(sm: StretchMap, a: np.ndarray, noise: float, length: int,
            times: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """a after ``length`` steps of the map, ½Σa at each of ``times`` (0 < t ≤ length), and an
    upper bound on max_t Σa over the stretch (for the divergence rule).

    The bound: Σ_i a_i(t) = Σ_k h_k [s²β_k/δ_k + μ_k^t (α_k − s²β_k/δ_k)] with 0 < μ_k < 1,
    so it never exceeds Σ_k h_k s²β_k/δ_k + Σ_k |h_k (α_k − s²β_k/δ_k)| (plus dead modes).
    """
    dead = np.ones(a.size, dtype=bool)
    dead[sm.live] = False
    still = float(a[dead].sum())
    s2 = noise + still
    x = a[sm.live]
    log_mu = np.log1p(-sm.delta)
    pow_l = np.exp(length * log_mu)
    geo_l = -np.expm1(length * log_mu) / sm.delta
    t = np.asarray(times, dtype=np.float64)
    out = np.zeros(sm.d.size)
    alpha = np.empty(sm.d.size)
    for sl, c in sm.chunks():
        alpha[sl] = (c @ x) / sm.w[sl]
    beta = s2 * sm.h / sm.w
    coef = pow_l * alpha + beta * geo_l
    for sl, c in sm.chunks():
        out += coef[sl] @ c
    new = a.copy()
    new[sm.live] = sm.g * out
    curve = np.empty(t.size)
    for j, tj in enumerate(t):
        cj = np.exp(tj * log_mu) * alpha - beta * np.expm1(tj * log_mu) / sm.delta
        curve[j] = 0.5 * (float(sm.h @ cj) + still)
    stationary = beta / sm.delta
    peak = float(sm.h @ stationary + np.abs(sm.h * (alpha - stationary)).sum()) + still
    return new, curve, peak
