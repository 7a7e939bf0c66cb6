"""Closed form of the second-moment map over a whole stretch of constant step size.

Within a stretch of constant γ (batch B, spectrum λ, label noise s²) docs/science/exact.md reads

    a ← M a + s² g,   M = diag(q) + g 1ᵀ,
    q_i = 1 − 2γλ_i + γ²λ_i² c,   g_i = γ²λ_i²/B,   c = 1 + (ψ − 2)/B

(ψ = E z_i⁴ of the inputs, 3 for Gaussian ones: c = 1 + 1/B; the coefficients and the
stability verdict come from :mod:`ktsweep.engines.onestep`).

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

A root whose |μ_k|^t is below about 10⁻¹⁸ of the state contributes below any float64
resolution (the bound used is in :meth:`StretchMap.advance`), so a stretch needs only the
roots that decay slower than that over its length: long stretches at a large step need few.
For δ_k ≤ 1 the decay rate −log(1 − δ_k) is at least δ_k; roots interlace with the poles
(δ_k lies between consecutive d's), so the needed ones are a known suffix of the sorted
order, computed on demand and cached; the cost of a stretch is O(d × roots needed).

**Negative eigenvalues.** For Gaussian inputs every q_i ≥ 0 and every μ_k > 0. Inputs with
ψ < 2 (Rademacher, uniform) make c < 1 and allow q_i < 0 at large steps (q_i < −1 for
Rademacher at batch 1), so some μ_k = 1 − δ_k lie in (−1, 0): δ_k ∈ (1, 2). M stays
entrywise non-negative (q_i + g_i ≥ (1 − γλ_i)², as ψ ≥ 1), so by Perron–Frobenius the
largest eigenvalue is also the largest in size and the stability test of the upper edge
alone keeps every |μ_k| < 1. Their powers are (−1)^t exp(t·log(δ_k − 1)) (:func:`powers`;
δ − 1 is exact), and they decay at the rate −log(δ_k − 1), slowest for the largest δ, the
first roots: a map with such roots keeps every root unless all of them have decayed
(:meth:`StretchMap._needed`).

**Accuracy near μ = 1.** Tail modes have δ_k ≈ d_k ≈ 2γλ_k tiny while the stretch length t
can be 2^35: μ^t needs δ_k to *relative* precision, which μ_k = 1 − δ_k in float64 cannot
hold. So each root is found as its offset from the nearer pole, τ_k = δ_k − d_{o_k}, to full
relative precision: by the compiled solver of :mod:`ktsweep.engines.secular` (the secular
equation with its poles shifted to d_{o_k} before any sum), or, where that does not
converge, by LAPACK ``dlasd4`` in the inverted problem: when 1 − Σ_i g_i/d_i > 0 (exactly the
condition that every δ_k > 0, i.e. spectral radius < 1, see above),

    (diag(d) − √g √gᵀ)⁻¹ = diag(1/d) + u uᵀ / (1 − Σ_i g_i/d_i),   u_i = √g_i / d_i,

a positive rank-one update of a positive diagonal (Sherman–Morrison), whose eigenvalues
1/δ_k it finds with the differences 1/d_j − 1/δ_k to high relative accuracy (the tests
hold the two to each other). With the root stored as (o_k, τ_k), C_{k,o_k} = −1/τ_k
is exact to rounding and the other C_{k,j} = 1/((d_j − d_{o_k}) − τ_k) lose at most the
relative gap between poles. Powers use exp(t·log1p(−δ)) and E_k uses expm1, so neither
rounds μ. A stretch whose map is not strictly stable (1 − Σ g/d ≤ 0), or whose poles are
too close to separate, returns ``None`` and the caller steps it (the step recursion); so
does the caller for a map whose fixed point lies beyond the divergence limit
(:meth:`StretchMap.steady`), where the split above would cancel ε·|a_∞| away.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
from scipy.linalg.lapack import dlasd4

from ktsweep.engines.onestep import one_step

_KEEP_ROWS = 2048 * 2048
"""Maps on numpy's path (below :data:`_COMPILED_FROM` modes, or without numba) whose C has
at most this many entries (32 MB) keep it from use :data:`_KEEP_FROM` on, so applying them
again reads it instead of rebuilding it; earlier uses build C into scratch blocks and store
none of it (a lone point's maps never first-touch an m × m buffer: about 9 ms of page faults
for 8 MB at m = 1000). Compiled maps never keep C: their loop rebuilds and applies each row
faster than the products read a kept 8 MB C back from memory (a warm point at d = 1000,
2^20: 0.08 s rebuilding, 0.17 s reading kept C)."""

_KEEP_FROM = 3
"""The use from which a map keeps C: a map reused this often belongs to a sweep, which will
apply it many more times; a lone point applies each map once or twice (its three students
share theirs in one advance), and building a kept buffer costs more than rebuilding rows."""

_CACHE_BYTES = 512 << 20
"""Stretch maps are reused across runs and points (same λ, γ, B): geometric schedules of any
horizon share their step sizes γ0·2^-j, and the T2S and ceiling students share everything.
Over this size the least recently used maps first give up their kept C, then whole maps go."""

_GROW_MIN = 64
"""Fewest roots one extension of a map's root set adds (see :meth:`StretchMap.ensure`)."""

_BLOCK_BYTES = 256 << 10
"""A kept C is built and read in blocks of rows of about this size (at least 16 rows), so a
block is still in cache for its reductions and products."""

_TINY = 1e-18
"""Relative size (against the state's scale) below which a decaying component is dropped."""


_COMPILED_FROM = 512
"""Maps with at least this many live modes use the compiled kernels. Loading numba costs a
process once (0.25–1.1 s: its import, then its cached machine code). At d = 200 the kernels
save nothing measurable (1200 points took the same 7.7–7.9 s of CPU either way: Python's
bookkeeping is the cost there), so a sweep job at small d would only pay the load; at
d = 1000 they save several ms a map."""

_COMPILED: Any = None
_LOADED = False


def compiled() -> Any:
    """:mod:`ktsweep.engines.secular` (numba loads on first use, not on import), or None where
    numba is missing: the GPU machine, whose carried wheels cannot hold llvmlite (60 MB). The
    engine then takes LAPACK's roots and numpy's products, the same numbers more slowly."""
    global _COMPILED, _LOADED
    if not _LOADED:
        try:
            from ktsweep.engines import secular
        except ImportError:
            _COMPILED = None
        else:
            _COMPILED = secular
        _LOADED = True
    return _COMPILED


class Advanced(NamedTuple):
    """Several states after their stretches (:meth:`StretchMap.advance_many`)."""

    a: np.ndarray  # (states, d) the second moments at each stretch's end
    curves: list[np.ndarray]  # per state, ½Σa at the times asked for
    peak: np.ndarray  # (states,) an upper bound on Σa over the stretch


class AdvancedOne(NamedTuple):
    """One state after its stretch (:meth:`StretchMap.advance`)."""

    a: np.ndarray  # (d,)
    curve: np.ndarray  # ½Σa at the times asked for
    peak: float


class StretchMap:
    """Spectral data of one strictly stable constant-step map (live modes, d descending).

    Root i (0-based) of the inverted problem lies between the poles 1/√d_i and 1/√d_{i+1},
    so δ_i ∈ (d_{i+1}, d_i) with d_m = 0: the small roots are the suffix ``[lo, m)``. Every
    per-root array is allocated once at full length m and filled from the back as the suffix
    grows (no copies). C is built block by block inside the advance that first needs its
    rows, which also reduces the h, w of those roots on the way; a map on numpy's path with at
    most ``_KEEP_ROWS`` entries of C keeps the rows, from its ``_KEEP_FROM``-th advance on, in
    an m × m buffer filled from the back the same way; earlier uses, larger maps and compiled
    maps build and apply C row by row without storing it.
    """

    def __init__(self, live: np.ndarray, d: np.ndarray, g: np.ndarray, ratio: np.ndarray,
                 f0: float, size: int) -> None:
        self.live, self.d, self.g = live, d, g
        self.lock = threading.RLock()  # sweep tasks share maps across dask worker threads
        # every mode live and already in the order of d (a power law's λ descends): states
        # are then read and written whole, without gathering (which costs as much as the rest
        # of an advance's bookkeeping at d = 1000)
        self.whole = live.size == size and bool((live[1:] > live[:-1]).all())
        if self.whole:
            self.dead = np.zeros(0, dtype=np.int64)
        else:
            dead = np.ones(size, dtype=bool)
            dead[live] = False
            self.dead = np.flatnonzero(dead)
        self.f0 = f0
        self.fixed = ratio / f0  # a_∞ / s²
        self._fixed_sum = float(self.fixed.sum())
        self._inv_g = 1.0 / g
        self._g_max = float(g.max()) if g.size else 0.0
        # |μ| of every root with δ > 1 (a negative eigenvalue) is below d_max − 1: 0 if none
        self._flip = float(d.max()) - 1.0 if d.size and d.max() > 1.0 else 0.0
        m = d.size
        self.lo = m
        self._origin = np.zeros(m, dtype=np.int64)
        self._tau = np.zeros(m)
        self._delta = np.zeros(m)
        self._h = np.zeros(m)
        self._w = np.zeros(m)
        self._keep = m * m <= _KEEP_ROWS
        self._uses = 0  # advances so far: C is kept from the _KEEP_FROM-th on
        self._rows: np.ndarray | None = None  # (m, m) when kept: rows [_kept, m) are valid
        self._kept = m
        self.cached = False  # in the cache, whose byte count then follows its kept C
        self._ready = m  # h and w are computed for roots [_ready, m)
        self.failed = False

    def steady(self, a: np.ndarray, noise: float) -> float:
        """Σa + s² at this map's fixed point, reached from the state ``a`` (one run's, all
        d modes): Σ_live a_∞ + Σ_dead a + s², with a_∞ = s_eff² g/(d f0) and
        s_eff² = s² + Σ_dead a (the dead modes act as label noise)."""
        still = 0.0 if self.whole else float(a[self.dead].sum())
        return (noise + still) * (1.0 + self._fixed_sum)

    # the computed suffix [lo, m) of the roots' δ (a view; tests read it)
    delta = property(lambda self: self._delta[self.lo:])

    @property
    def nbytes(self) -> int:
        return 8 * 11 * self.d.size + self._kept_bytes()

    def _kept_bytes(self) -> int:
        """Bytes of the valid rows of the kept C (0 when none is kept)."""
        return 0 if self._rows is None else 8 * (self.d.size - self._kept) * self.d.size

    def _set_kept(self, rows: np.ndarray | None, kept: int) -> None:
        """Change the kept C and tell the cache's byte count (:data:`_kept_total`)."""
        before = self._kept_bytes()
        self._rows, self._kept = rows, kept
        if self.cached:
            _count_kept(self._kept_bytes() - before)

    def release(self, forever: bool = False) -> int:
        """Drop the kept C (the next advance rebuilds it) and return the bytes freed; the
        roots, which cost more to find than C to rebuild, stay. ``forever``: the map left the
        cache, so it keeps no C again (a call still holding it builds rows as it goes)."""
        with self.lock:
            freed = self._kept_bytes()
            self._set_kept(None, self.d.size)
            if forever:
                self._keep = self.cached = False
            return freed

    def ensure(self, cut: float) -> int | None:
        """Compute every root with δ ≤ ``cut`` (and possibly more) and return the first of
        them (:meth:`_needed`: the roots before it are not needed); None on failure. Their h
        and w follow in the next advance's pass over C.

        The root set grows at least geometrically (each extension at least doubles it), so
        a map asked for ever more roots is extended O(log d) times, not once per call.
        """
        m = self.d.size
        if self.failed:
            return None
        needed = lo = self._needed(cut)
        if lo >= self.lo:
            return needed
        grow = max(_GROW_MIN, m - self.lo) if self.lo < m else 0  # a first extension: as asked
        lo = max(0, min(lo, self.lo - grow))
        origin, tau, delta = self._roots(lo, self.lo)
        if origin is None:
            self.failed = True
            return None
        self._origin[lo:self.lo], self._tau[lo:self.lo] = origin, tau
        self._delta[lo:self.lo] = delta
        self.lo = lo
        return needed

    def _needed(self, cut: float) -> int:
        """The first root whose |μ| may exceed exp(−``cut``), the roots after it being needed
        as well (roots are in descending δ).

        A root with δ ≤ 1 decays at the rate −log(1 − δ) ≥ δ, so it is needed only if
        δ ≤ ``cut``: root i lies above d_{i+1}, and the last root above f0·d_{m−1} (from
        Σ_i g_i/(d_i − δ) ≤ (1 − f0) d_{m−1}/(d_{m−1} − δ) below the last pole), so a cut
        under that needs no root at all: every component has decayed (long stretches at
        large steps). A root with δ > 1 (μ < 0, ψ < 2 only) decays at the rate
        −log(δ − 1), slower than δ and slowest for the largest δ, the first roots; all of
        them have |μ| < d_0 − 1, so unless that bound is below exp(−cut) every root is
        needed (the set stays a suffix)."""
        if not self.d.size:
            return 0
        if self._flip > np.exp(-cut):
            return 0
        upper = np.append(self.d[1:], self.f0 * self.d[-1])
        return int(np.searchsorted(-upper, -cut, side="left"))

    def _kernels(self) -> Any:
        """The compiled kernels for a map this large (:data:`_COMPILED_FROM`), else None."""
        return compiled() if self.d.size >= _COMPILED_FROM else None

    def _roots(self, lo: int, hi: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | tuple[None, None, None]:
        """Roots lo … hi−1: nearest pole o, offset τ = δ − d_o to full relative precision,
        and δ, by the compiled solver :func:`ktsweep.engines.secular.roots` (1–3 µs a root
        at m = 1000 against about 12 µs for LAPACK), or by :meth:`_roots_lapack` for
        the whole range if one root does not converge (and for small maps, or where numba is
        missing)."""
        kernels = self._kernels()
        if kernels is None:
            return self._roots_lapack(lo, hi)
        m = self.d.size
        origin, tau, delta = np.empty(m, np.int64), np.empty(m), np.empty(m)
        if kernels.roots(self.d, self.g, lo, hi, origin, tau, delta):
            return origin[lo:hi], tau[lo:hi], delta[lo:hi]
        return self._roots_lapack(lo, hi)

    def _roots_lapack(self, lo: int, hi: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | tuple[None, None, None]:
        """The same roots by LAPACK ``dlasd4`` in the inverted problem (one call per root):
        the fallback of :meth:`_roots` and the reference its tests compare with.

        Each call is O(m) work per iteration (about 12 µs a root at m = 1000, 140 µs at
        m = 10⁴, on the 2-core machine); the f2py call itself costs little (a bare C pointer
        measured the same). For a single live mode (m = 1) LAPACK returns no differences,
        so τ is wrong there; C then cancels from every result (r α = y), which keeps it
        harmless, and :meth:`_roots` gets τ = −g right."""
        D = 1.0 / np.sqrt(self.d)  # the inverted problem: diag(1/d) + ρ z zᵀ
        u = np.sqrt(self.g) / self.d
        nu = float(np.sqrt(np.sum(u * u)))
        z, rho = u / nu, nu * nu / self.f0
        m = self.d.size
        count = hi - lo
        sig = np.empty(count)
        near = np.empty((count, 2))  # D_j² − σ² at the two poles bracketing the root
        lasd4 = dlasd4
        for j, i in enumerate(range(lo, hi)):
            dl, sigma, work, info = lasd4(i, D, z, rho)
            if info != 0 or not sigma > 0:
                return None, None, None
            sig[j] = sigma
            near[j, 0] = dl[i] * work[i]
            near[j, 1] = dl[i + 1] * work[i + 1] if i + 1 < m else np.inf
        idx = np.arange(lo, hi)
        up = np.abs(near[:, 1]) < np.abs(near[:, 0])
        origin = np.where(up, idx + 1, idx)
        gap = np.where(up, near[:, 1], near[:, 0])
        delta = 1.0 / (sig * sig)
        tau = self.d[origin] * delta * gap  # δ − d_o = d_o δ (1/d_o − 1/δ)
        return origin, tau, delta

    def _build(self, lo: int, hi: int, out: np.ndarray) -> np.ndarray:
        """C rows lo … hi−1, 1/(d_j − δ_k) = 1/((d_j − d_o) − τ), into ``out``: exact
        1/(−τ) at the origin pole."""
        rows = np.subtract(self.d[None, :], self.d[self._origin[lo:hi]][:, None], out=out)
        rows -= self._tau[lo:hi, None]
        return np.reciprocal(rows, out=rows)

    def _chunks(self, keep: bool, start: int) -> Iterator[tuple[slice, np.ndarray]]:
        """(slice into roots ``start`` … m−1, C rows) in blocks covering those roots (a
        suffix of the computed ones), each block read from the kept buffer or built (into the
        buffer when ``keep``, else into a reused scratch block, valid only until the next
        one); the h, w of roots that lack them are reduced from their block on the way.
        Without ``keep`` this is the numpy twin of
        :func:`ktsweep.engines.secular.apply_rows`, used where numba is missing."""
        m, step = self.d.size, max(16, _BLOCK_BYTES // (8 * max(self.d.size, 1)))
        kept: np.ndarray | None = None  # the m × m buffer of kept C
        if keep:
            kept = self._rows
            if kept is None:
                kept = np.empty((m, m))
                self._set_kept(kept, m)
        else:
            scratch = np.empty((min(step, m - start), m))
        for lo in range(start, m, step):
            hi = min(m, lo + step)
            if kept is None:
                rows = self._build(lo, hi, scratch[:hi - lo])
            elif lo >= self._kept:
                rows = kept[lo:hi]
            else:
                rows = self._build(lo, hi, kept[lo:hi])
            if lo < self._ready:  # h_k = Σ_i g_i C_ki, w_k = Σ_i g_i C_ki²
                k = min(self._ready, hi) - lo
                self._h[lo:lo + k] = rows[:k] @ self.g
                self._w[lo:lo + k] = np.square(rows[:k]) @ self.g
            yield slice(lo - start, hi - start), rows
        if kept is not None:
            self._set_kept(kept, min(self._kept, start))

    def _sound(self, lo: int, hi: int) -> bool:
        """Check the h, w of roots lo … hi−1, reduced in the last pass (finite, w > 0); mark
        the map failed (and drop its buffer) if not."""
        h, w = self._h[lo:hi], self._w[lo:hi]
        if np.isfinite(h).all() and np.isfinite(w).all() and (w > 0).all():
            return True
        self.failed = True
        self._set_kept(None, self.d.size)
        return False

    def advance(self, a: np.ndarray, noise: float, length: int, times: np.ndarray
                ) -> AdvancedOne | None:
        """One state through :meth:`advance_many`."""
        res = self.advance_many(a[None, :], np.array([float(noise)]),
                                np.array([length], dtype=np.int64), [np.asarray(times)])
        if res is None:
            return None
        return AdvancedOne(res.a[0], res.curves[0], float(res.peak[0]))

    def advance_many(self, a: np.ndarray, noise: np.ndarray, length: np.ndarray,
                     times: list[np.ndarray]) -> Advanced | None:
        """Several states (rows of ``a``) through this map at once; serialised per map (roots
        may be added meanwhile). See :meth:`_advance_many`."""
        with self.lock:
            return self._advance_many(a, noise, length, times)

    def _advance_many(self, a: np.ndarray, noise: np.ndarray, length: np.ndarray,
                      times: list[np.ndarray]) -> Advanced | None:
        """Row r after ``length[r]`` steps, ½Σa at ``times[r]`` (0 < t ≤ length[r]) and an
        upper bound on Σa over its stretch (for the divergence rule); None if a root could not
        be found. Rows share the map's roots and eigenvectors: two matrix products for all.

        Dropping root k changes a_i(t) by at most √g_i ‖W⁻¹y‖ |μ_k|^t (y = a(0) − a_∞, W =
        diag √g: an orthogonal projection in the symmetric coordinates), so roots with
        |μ_k|^t ≤ _TINY · scale / (√g_max ‖W⁻¹y‖) at the shortest time asked for (over all
        rows) are dropped, also where the map holds them from an earlier, shorter stretch
        (a sweep shares maps between horizons). Σa(t) = Σa_∞ + Σ_k h_k μ_k^t α_k with
        |μ_k| < 1 bounds the peak by Σa_∞ + Σ_k |h_k α_k| (plus the dropped part).
        """
        if self.whole:
            x, still = a, np.zeros(a.shape[0])
        else:
            x, still = a[:, self.live], a[:, self.dead].sum(axis=1)
        s2 = noise + still
        kernels = self._kernels()
        if kernels is None:
            fixed = s2[:, None] * self.fixed[None, :]
            y = x - fixed
            norm = np.square(y) @ self._inv_g
            scale = np.maximum(np.maximum(np.abs(x).sum(axis=1), fixed.sum(axis=1)), 1e-300)
        else:
            fixed, y = np.empty(x.shape), np.empty(x.shape)
            norm, scale = kernels.prepare(np.ascontiguousarray(x), s2, self.fixed, self._inv_g,
                                          y, fixed)
        spread = np.sqrt(self._g_max * norm)
        counts = np.fromiter(map(len, times), dtype=np.int64, count=len(times))
        t_min = np.asarray(length, dtype=np.float64).copy()
        if counts.any():  # the earliest time asked for per row (segments of ``at``)
            at = np.concatenate(times).astype(np.float64)
            some = np.flatnonzero(counts)
            starts = np.cumsum(counts) - counts
            t_min[some] = np.minimum(t_min[some], np.minimum.reduceat(at, starts[some]))
        else:
            at = np.zeros(0)
        need = spread > 0
        start = self.d.size  # the roots this call applies: start … m−1
        if need.any():
            cut = np.log(spread[need] / (_TINY * scale[need])).clip(0.0) / t_min[need]
            # a map may hold roots an earlier, shorter stretch needed and this one does not
            first = self.ensure(max(float(cut.max()), 1e-300))
            if first is None:
                return None
            start = first
        base = fixed.sum(axis=1) + still
        owner = np.repeat(np.arange(len(times)), counts)
        if start == self.d.size:  # every component decayed: the fixed point, Σa = base
            live_part, absha, curve = fixed, np.zeros(a.shape[0]), np.zeros(at.size)
        else:
            applied = self._apply(y, fixed, length, at, owner, start, kernels)
            if applied is None:
                return None
            live_part, absha, curve = applied
        if self.whole:
            new = live_part
        else:
            new = a.copy()
            new[:, self.live] = live_part
        if at.size:
            flat = 0.5 * (base[owner] + curve)
            ends = np.cumsum(counts).tolist()
            curves = [flat[e - n:e] for e, n in zip(ends, counts.tolist(), strict=True)]
        else:
            curves = [at] * len(times)
        peak = base + absha + _TINY * scale
        return Advanced(new, curves, peak)

    def _apply(self, y: np.ndarray, fixed: np.ndarray, length: np.ndarray, at: np.ndarray,
               owner: np.ndarray, start: int, kernels: Any
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Roots ``start`` … m−1 applied to the states y: the live modes' new values, Σ|h α|
        per state and the learning curve's root sums at ``at`` (state ``owner``); None when
        a root's h, w came out unsound (the map is then marked failed)."""
        out = np.zeros((y.shape[0], self.d.size))
        fresh = self._ready  # the h, w of roots start … fresh−1 are reduced in this pass
        self._uses += 1
        length = np.asarray(length, dtype=np.float64)
        if kernels is None:
            keep = self._keep and self._uses >= _KEEP_FROM  # C kept (or rebuilt into it)
            delta = self._delta[start:]
            decay = powers(delta, length)
            alpha = np.empty((y.shape[0], delta.size))
            w = self._w[start:]
            for sl, c in self._chunks(keep, start):  # one pass: a coefficient needs its row
                alpha[:, sl] = (y @ c.T) / w[sl]
                out += (decay[:, sl] * alpha[:, sl]) @ c
            ha = self._h[start:] * alpha
            absha = np.abs(ha).sum(axis=1)
            curve = np.einsum("pk,pk->p", powers(delta, at), ha[owner])
        else:  # compiled: rows built and applied one at a time, none kept
            absha, curve = np.zeros(y.shape[0]), np.zeros(at.size)
            kernels.apply_rows(self.d, self._origin[start:], self._tau[start:],
                               self._delta[start:], self.g, y, length, at, owner, out,
                               self._h[start:], self._w[start:], absha, curve)
        if start < fresh and not self._sound(start, fresh):
            return None
        self._ready = min(fresh, start)
        return fixed + self.g * out, absha, curve


def powers(delta: np.ndarray, t: np.ndarray) -> np.ndarray:
    """μ_k^t for μ_k = 1 − δ_k (rows: the times t, columns: the roots), without rounding μ:
    exp(t·log1p(−δ)) where δ ≤ 1, and (−1)^t exp(t·log(δ − 1)) where δ > 1 (a negative
    eigenvalue, possible only for inputs with ψ < 2; δ − 1 is exact in float64 there).
    Every |μ_k| < 1 in a strictly stable map, so each power is at most 1 in size."""
    with np.errstate(invalid="ignore", divide="ignore"):
        log_mu = np.log1p(-delta)
    flip = delta > 1.0
    if not flip.any():
        return np.exp(t[:, None] * log_mu[None, :])
    log_mu[flip] = np.log(delta[flip] - 1.0)
    out = np.exp(t[:, None] * log_mu[None, :])
    odd = np.fmod(t, 2.0) == 1.0
    out[np.ix_(odd, flip)] *= -1.0
    return out


def _solve(lam: np.ndarray, gamma: float, inv_b: float, psi: float = 3.0) -> StretchMap | None:
    """Set up the map of step γ; None when it is not strictly stable
    (:func:`~ktsweep.engines.onestep.strictly_stable`) or not separable."""
    step = one_step(lam, gamma, inv_b, psi)  # psi: the inputs' fourth moment, in c only
    if not step.stable:
        return None
    live, d, g, ratio = step.live, step.d, step.g, step.ratio
    apart = live.size < 2 or bool((d[1:] < d[:-1] * (1 - 1e-13)).all())
    if not apart:  # not in descending order (a power law's are), or poles too close
        order = np.argsort(-d, kind="stable")
        live, d, g, ratio = live[order], d[order], g[order], ratio[order]
        if not (d[1:] < d[:-1] * (1 - 1e-13)).all():
            return None  # (near-)equal poles: not separable in float64
    return StretchMap(live, d, g, ratio, step.f0, lam.size)


_cache: OrderedDict[tuple, StretchMap | None] = OrderedDict()
_LOCK = threading.Lock()
_base_total = 0
"""Bytes of the cached maps' roots and spectra (:meth:`StretchMap.nbytes` without kept C),
kept up to date as maps come and go, so a lookup need not sum over every map."""
_kept_total = 0
"""Bytes of the cached maps' kept C, kept up to date by :meth:`StretchMap._set_kept`."""
_KEPT_LOCK = threading.Lock()  # taken alone, never while waiting for another lock


def _count_kept(change: int) -> None:
    global _kept_total
    if change:
        with _KEPT_LOCK:
            _kept_total += change


def spectrum_key(lam: np.ndarray) -> tuple[int, int]:
    """The part of a map's cache key that names its spectrum (hash once per spectrum)."""
    return hash(lam.tobytes()), lam.size


def stretch_map(lam: np.ndarray, gamma: float, inv_b: float,
                key: tuple[int, int] | None = None, psi: float = 3.0) -> StretchMap | None:
    """The (cached) map of one constant step; None: not strictly stable, step it instead.
    ``key``: :func:`spectrum_key` of ``lam``, when the caller already has it."""
    full = (*(spectrum_key(lam) if key is None else key), float(gamma), float(inv_b),
            float(psi))
    global _base_total
    with _LOCK:
        if full in _cache:
            _cache.move_to_end(full)
        else:
            new = _cache[full] = _solve(lam, gamma, inv_b, psi)
            if new is not None:
                new.cached = True
                _base_total += new.nbytes
        _trim()
        return _cache[full]


def _trim() -> None:
    """Hold the cache to ``_CACHE_BYTES`` (checked at every lookup, since kept C grows after a
    map is cached): the least recently used maps give up their C first, then whole maps go;
    the map just asked for (the last) is spared. Caller holds ``_LOCK``."""
    global _base_total
    if _base_total + _kept_total <= _CACHE_BYTES:
        return
    for old in list(_cache.values())[:-1]:  # least recently used first
        if _base_total + _kept_total <= _CACHE_BYTES:
            return
        if old is not None:  # its C goes first: rebuilding it is cheaper than its roots
            old.release()
    while _base_total + _kept_total > _CACHE_BYTES and len(_cache) > 1:
        _, old = _cache.popitem(last=False)
        if old is not None:
            old.release(forever=True)
            _base_total -= old.nbytes


def cache_stats() -> dict[str, int]:
    """Cached maps, the roots they hold and their bytes: a noise-free measure of the work a
    point needed (benchmarks report it beside the times)."""
    with _LOCK:
        live = [v for v in _cache.values() if v is not None]
        return {"maps": len(live), "roots": sum(v.d.size - v.lo for v in live),
                "bytes": sum(v.nbytes for v in live)}


def clear_cache() -> None:
    """Forget every cached map (benchmarks time cold starts with it)."""
    global _base_total
    with _LOCK:
        for old in _cache.values():
            if old is not None:
                old.release(forever=True)
        _cache.clear()
        _base_total = 0
