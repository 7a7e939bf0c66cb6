"""Closed form of the second-moment map over a whole stretch of constant step size.

Within a stretch of constant γ (batch B, spectrum λ, label noise s²) docs/science/exact.md reads

    a ← M a + s² g,   M = diag(q) + g 1ᵀ,
    q_i = 1 − 2γλ_i + γ²λ_i² c,   g_i = γ²λ_i²/B,   c = 1 + (ψ − 2)/B

(ψ = E z_i⁴ of the inputs, 3 for Gaussian ones: c = 1 + 1/B; :func:`moments.curvature`).

Modes with λ_i = 0 have q_i = 1, g_i = 0: they keep their value and only add a constant to
S = Σ_j a_j + s², so they are folded into the noise (exact deflation). For the live modes
(g_i > 0) write d_i = 1 − q_i = γλ_i(2 − γλ_i c), which is computed with full relative
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

Cost O(d²) per stretch whatever its length t; once the roots are known, a learning-curve
checkpoint inside a stretch costs O(d) (the sum above).

**Only the slow roots.** Splitting off the fixed point a_∞ = (I − M)⁻¹ s² g, which
Sherman–Morrison gives in closed form, a_∞,i = (g_i/d_i) s² / (1 − Σ_j g_j/d_j),

    a(t) = a_∞ + M^t (a(0) − a_∞) = a_∞ + Σ_k r_k μ_k^t l_kᵀ(a(0) − a_∞) / w_k.

A root with δ_k t beyond a few hundred contributes below any float64 resolution (the bound
used is in :meth:`StretchMap.advance`), so a stretch needs only the roots with δ_k below that
cut over its length: long stretches at a large step need few. Roots interlace with the
poles (δ_k lies between consecutive d's), so the needed ones are a known suffix of the sorted
order, computed on demand and cached; the cost of a stretch is O(d × roots needed).

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
too close to separate, returns ``None`` and the caller steps it (the step recursion).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

import numpy as np
from scipy.linalg.lapack import dlasd4

from ktsweep.engines.moments import curvature

_ROW_CHUNK = 512
"""Rows of C built at once when C is not kept (bounds memory at d = 10⁴ to 40 MB)."""

_KEEP_ROWS = 2048 * 2048
"""Maps whose computed C has at most this many entries (32 MB) keep it, so applying them is
two matrix-vector products; larger ones rebuild C row block by row block."""

_CACHE_BYTES = 512 << 20
"""Stretch maps are reused across runs and points (same λ, γ, B): geometric schedules of any
horizon share their step sizes γ0·2^-j, and the T2S and ceiling students share everything."""

_TINY = 1e-18
"""Relative size (against the state's scale) below which a decaying component is dropped."""


class StretchMap:
    """Spectral data of one strictly stable constant-step map (live modes, d descending).

    Root i (0-based) of the inverted problem lies between the poles 1/√d_i and 1/√d_{i+1},
    so δ_i ∈ (d_{i+1}, d_i) with d_m = 0: the small roots are the suffix ``[lo, m)``.
    """

    def __init__(self, live: np.ndarray, d: np.ndarray, g: np.ndarray, ratio: np.ndarray,
                 f0: float, size: int) -> None:
        self.live, self.d, self.g = live, d, g
        self.lock = threading.RLock()  # sweep tasks share maps across dask worker threads
        self.dead = np.flatnonzero(~np.isin(np.arange(size), live))
        self.fixed = ratio / f0  # a_∞ / s²
        m = d.size
        self._D = 1.0 / np.sqrt(d)
        u = np.sqrt(g) / d
        nu = float(np.sqrt(np.sum(u * u)))
        self._z = u / nu if m else u
        self._rho = nu * nu / f0 if m else 1.0
        self.lo = m
        self.origin = np.zeros(0, dtype=np.int64)
        self.tau = np.zeros(0)
        self.delta = np.zeros(0)
        self.h = np.zeros(0)
        self.w = np.zeros(0)
        self.rows: np.ndarray | None = np.zeros((0, m))
        self.failed = False

    @property
    def nbytes(self) -> int:
        rows = 0 if self.rows is None else self.rows.nbytes
        return 8 * (6 * self.d.size + 5 * self.delta.size) + rows

    def ensure(self, cut: float) -> bool:
        """Compute every root with δ ≤ ``cut`` (and possibly a few more); False on failure."""
        m = self.d.size
        if self.failed:
            return False
        upper = np.append(self.d[1:], 0.0)  # lower end of root i's interval
        lo = int(np.searchsorted(-upper, -cut, side="left"))  # first i with d_{i+1} < cut
        lo = min(lo, m - 1) if m else 0
        if lo >= self.lo:
            return True
        new = range(lo, self.lo)
        origin = np.empty(len(new), dtype=np.int64)
        tau = np.empty(len(new))
        delta = np.empty(len(new))
        D, z, rho, d = self._D, self._z, self._rho, self.d
        for j, i in enumerate(new):
            dl, sigma, work, info = dlasd4(i, D, z, rho)
            if info != 0 or not sigma > 0:
                self.failed = True
                return False
            o = i if i + 1 >= m or abs(dl[i]) <= abs(dl[i + 1]) else i + 1
            dk = 1.0 / (sigma * sigma)
            origin[j], delta[j] = o, dk
            tau[j] = d[o] * dk * (dl[o] * work[o])  # δ − d_o = d_o δ (1/d_o − 1/δ)
        rows = self._build(origin, tau, None)
        h = rows @ self.g
        w = np.square(rows) @ self.g
        if not (np.isfinite(h).all() and np.isfinite(w).all() and (w > 0).all()):
            self.failed = True
            return False
        self.lo = lo
        self.origin = np.concatenate([origin, self.origin])
        self.tau = np.concatenate([tau, self.tau])
        self.delta = np.concatenate([delta, self.delta])
        self.h = np.concatenate([h, self.h])
        self.w = np.concatenate([w, self.w])
        if self.rows is not None and (m - lo) * m <= _KEEP_ROWS:
            self.rows = np.concatenate([rows, self.rows])
        else:
            self.rows = None
        return True

    def _build(self, origin: np.ndarray, tau: np.ndarray, out: np.ndarray | None
               ) -> np.ndarray:
        """C rows 1/(d_j − δ_k) = 1/((d_j − d_o) − τ): exact 1/(−τ) at the origin pole."""
        rows = np.subtract(self.d[None, :], self.d[origin][:, None], out=out)
        rows -= tau[:, None]
        return np.reciprocal(rows, out=rows)

    def _chunks(self):
        if self.rows is not None:
            yield slice(0, self.delta.size), self.rows
            return
        for lo in range(0, self.delta.size, _ROW_CHUNK):
            sl = slice(lo, min(self.delta.size, lo + _ROW_CHUNK))
            yield sl, self._build(self.origin[sl], self.tau[sl], None)

    def advance(self, a: np.ndarray, noise: float, length: int, times: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, float] | None:
        """See :meth:`_advance`; serialised per map (roots may be added meanwhile)."""
        with self.lock:
            return self._advance(a, noise, length, times)

    def _advance(self, a: np.ndarray, noise: float, length: int, times: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, float] | None:
        """a after ``length`` steps, ½Σa at ``times`` (0 < t ≤ length) and an upper bound on
        Σa over the stretch (for the divergence rule); None if a root could not be found.

        Dropping root k changes a_i(t) by at most √g_i ‖W⁻¹y‖ μ_k^t (y = a(0) − a_∞, W =
        diag √g: an orthogonal projection in the symmetric coordinates), so roots with
        μ_k^t ≤ _TINY · scale / (√g_max ‖W⁻¹y‖) at the shortest time asked for are dropped.
        Σa(t) = Σa_∞ + Σ_k h_k μ_k^t α_k with 0 < μ_k < 1 bounds the peak by
        Σa_∞ + Σ_k |h_k α_k| (plus the dropped part).
        """
        x = a[self.live]
        still = float(a[self.dead].sum())
        s2 = noise + still
        fixed = self.fixed * s2
        y = x - fixed
        t_min = float(min(length, times.min())) if times.size else float(length)
        with np.errstate(divide="ignore"):
            spread = math.sqrt(float(self.g.max()) * float(np.sum(y * y / self.g)))
        scale = max(float(np.abs(x).sum()), float(fixed.sum()), 1e-300)
        if spread > 0:
            cut = max(0.0, math.log(spread / (_TINY * scale))) / t_min
            if not self.ensure(max(cut, 1e-300)):
                return None
        log_mu = np.log1p(-self.delta)
        decay = np.exp(length * log_mu)
        alpha = np.empty(self.delta.size)
        out = np.zeros(self.d.size)
        for sl, c in self._chunks():  # one pass: a root's coefficient needs only its own row
            alpha[sl] = (c @ y) / self.w[sl]
            out += (decay[sl] * alpha[sl]) @ c
        new = a.copy()
        new[self.live] = fixed + self.g * out
        base = float(fixed.sum()) + still
        ha = self.h * alpha
        curve = np.array([0.5 * (base + float(ha @ np.exp(t * log_mu))) for t in times])
        peak = base + float(np.abs(ha).sum()) + _TINY * scale
        return new, curve, peak


def _solve(lam: np.ndarray, gamma: float, inv_b: float, psi: float = 3.0) -> StretchMap | None:
    """Set up the map of step γ; None when it is not strictly stable or not separable.
    ψ (the inputs' fourth moment) enters only the diagonal, through c = 1 + (ψ − 2)/B."""
    live = np.flatnonzero(lam > 0)
    x = gamma * lam[live]
    c = curvature(inv_b, psi)
    d = x * (2.0 - x * c)
    g = x * x * inv_b
    if not (d > 0).all():
        return None
    ratio = x * inv_b / (2.0 - x * c)  # g/d without cancellation
    f0 = 1.0 - float(ratio.sum())
    if not f0 > 0:  # spectral radius ≥ 1
        return None
    order = np.argsort(-d, kind="stable")
    live, d, g, ratio = live[order], d[order], g[order], ratio[order]
    if live.size > 1 and not (d[1:] < d[:-1] * (1 - 1e-13)).all():
        return None  # (near-)equal poles: not separable in float64
    return StretchMap(live, d, g, ratio, f0, lam.size)


_cache: OrderedDict[tuple, StretchMap | None] = OrderedDict()
_LOCK = threading.Lock()


def stretch_map(lam: np.ndarray, gamma: float, inv_b: float, psi: float = 3.0
                ) -> StretchMap | None:
    """The (cached) map of one constant step; None: not strictly stable, step it instead."""
    key = (hash(lam.tobytes()), lam.size, float(gamma), float(inv_b), float(psi))
    with _LOCK:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        sm = _solve(lam, gamma, inv_b, psi)
        _cache[key] = sm
        total = sum(v.nbytes for v in _cache.values() if v is not None)
        while total > _CACHE_BYTES and len(_cache) > 1:
            _, old = _cache.popitem(last=False)
            total -= 0 if old is None else old.nbytes
        return sm


def clear_cache() -> None:
    """Forget every cached map (benchmarks time cold starts with it)."""
    with _LOCK:
        _cache.clear()
