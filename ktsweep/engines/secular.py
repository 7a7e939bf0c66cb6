"""Compiled kernels of the closed form per stretch (:mod:`ktsweep.engines.stretch`).

Two loops dominate a cold stretch map at d ≈ 1000, and both are O(m) per root:

- :func:`roots`: the secular equation 1 = Σ_j g_j / (d_j − δ) (d descending, g > 0), one root
  δ_k in each (d_{k+1}, d_k) with d_m = 0, returned as its nearest pole o and the offset
  τ = δ − d_o to full relative precision (what C = 1/((d_j − d_o) − τ) needs).
- :func:`apply_rows`: the rows of C built one at a time, their h, w, both products with the
  states and the learning curve's sums, without storing C (a map used once never needs it).

**Roots, one pass.** Most roots of a small step sit so close to their upper pole that the
rest of the sum is a short power series there: with s_j = d_j − d_k,
Σ_{j≠k} g_j/(s_j − τ) = Σ_p τ^p Σ_{j≠k} g_j/s_j^(p+1). One pass over the poles gives the first
:data:`ORDER` of these moments and a bound on the remainder; Newton on the truncated equation
(the pole's own term −g_k/τ kept exact) then gives τ, accepted only where the bound proves it
right to 2^-56 relative (:func:`_expanded`). At d = 1000 this settles 97 % of the roots of
a point at N = n = 2^20 and 99 % at 2^40 (all but the head roots of large steps), in one pass
where the iteration below takes three to five.

**Roots, iterated.** With the poles shifted to the origin, s_j = d_j − d_o, the equation reads
φ(τ) = Σ_j g_j / (s_j − τ) − 1 = 0, increasing in τ between its poles. The start is first
order in the pole's own weight, τ₀ = −g_k / (1 − Σ_{j≠k} g_j / s_j), which is already exact to
rounding for the tail roots of a small step (their rank-one part is tiny next to the pole
gaps). Each step fits the two-pole model c + B₁/(s_k − τ) + B₂/(s_{k+1} − τ) to the value and
slope of the two partial sums (j ≤ k and j > k) and takes its root, inside a bracket that
bisection keeps when the model leaves it (a simplified form of the rational interpolation
LAPACK's ``dlaed4`` uses, without its inverted coordinates). A root found in the lower half
of its interval is solved again from the lower pole, so that τ is always measured from the
nearer pole.

**Rounding.** The shifted poles s_j are formed once per root, by plain subtraction, before any
sum: a compiler allowed to reassociate (``fastmath``) would otherwise turn (d_j − d_o) − τ into
d_j − (d_o + τ) and round τ against d_o, losing up to half its digits for tail roots (found
so: the sums then stalled at 1e-8 relative error). Only the reductions are compiled with
``fastmath``, to vectorise; every kernel uses numpy's error model (a division by zero gives
inf, which the checks catch) because Python's adds a test per division that stops the loops
from vectorising at all (4x slower, measured).

A root that does not converge in :data:`MAX_STEPS` steps makes :func:`roots` return False; the
caller then takes LAPACK ``dlasd4``'s roots for the whole range. Tests hold both kernels to
the LAPACK roots and to the numpy products.
"""

from __future__ import annotations

import numpy as np
from numba import njit

MAX_STEPS = 60
ORDER = 6
"""Terms of the expansion :func:`_expanded` keeps (the pass of :func:`_moments` is written out
for this many)."""
_EPS = 2.220446049250313e-16
_ACCEPT = 1e-9
"""A model step below this share of |τ| ends the iteration: the model converges
quadratically, so the step after it would be below rounding."""


@njit(cache=True, error_model="numpy")
def _shift(d, origin, out):  # no fastmath: the subtraction must happen as written
    for j in range(d.size):
        out[j] = d[j] - origin


@njit(cache=True, fastmath=True, error_model="numpy")
def _sums(s, g, tau, k):
    """Σ g/(s − τ) and Σ g/(s − τ)² over j ≤ k, then over j > k."""
    p1 = 0.0
    q1 = 0.0
    for j in range(k + 1):
        c = 1.0 / (s[j] - tau)
        gc = g[j] * c
        p1 += gc
        q1 += gc * c
    p2 = 0.0
    q2 = 0.0
    for j in range(k + 1, s.size):
        c = 1.0 / (s[j] - tau)
        gc = g[j] * c
        p2 += gc
        q2 += gc * c
    return p1, q1, p2, q2


@njit(cache=True, error_model="numpy")
def _model_root(p1, q1, p2, q2, tau, su, sl, last):
    """Root in (sl, su) of the two-pole model matched at τ (``last``: no pole below)."""
    e1 = su - tau
    b1 = q1 * e1 * e1
    a1 = p1 - b1 / e1
    if last:
        c0 = a1 + p2 - 1.0
        if c0 == 0.0:
            return np.nan
        return su + b1 / c0
    e2 = sl - tau
    b2 = q2 * e2 * e2
    a2 = p2 - b2 / e2
    c0 = a1 + a2 - 1.0
    # c0 (su − x)(sl − x) + b1 (sl − x) + b2 (su − x) = 0, in y = x − sl for accuracy near sl
    # and in z = x − su near su: solve in the coordinate of the nearer pole.
    if abs(tau - su) <= abs(tau - sl):
        # x = su + z: c0 z (z + su − sl) − b1 (z + su − sl) − b2 z = 0
        w = su - sl
        qa = c0
        qb = c0 * w - b1 - b2
        qc = -b1 * w
        base = su
    else:
        # x = sl + y: c0 (y − w)(y) ... with w = su − sl: c0 (w − y)(−y) + b1 (−y) + b2 (w − y) = 0
        w = su - sl
        qa = c0
        qb = -c0 * w - b1 - b2
        qc = b2 * w
        base = sl
    if qa == 0.0:
        if qb == 0.0:
            return np.nan
        return base - qc / qb
    disc = qb * qb - 4.0 * qa * qc
    if disc < 0.0:
        disc = 0.0
    sq = np.sqrt(disc)
    r1 = (-qb - sq) / (2.0 * qa) if qb >= 0.0 else (-qb + sq) / (2.0 * qa)
    r2 = qc / (qa * r1) if r1 != 0.0 else 0.0
    lo_, hi_ = sl - base, su - base
    if lo_ < r1 < hi_ and not (lo_ < r2 < hi_):
        return base + r1
    if lo_ < r2 < hi_ and not (lo_ < r1 < hi_):
        return base + r2
    # both or neither inside: the one of smaller size (the root near the origin pole)
    return base + (r1 if abs(r1) <= abs(r2) else r2)


@njit(cache=True, error_model="numpy")
def _solve_from(d, g, s, k, o, a, b, tau):
    """Iterate root k from pole o, bracket (a, b) around the start τ; (τ, ok)."""
    m = d.size
    last = k + 1 >= m
    do = d[o]
    su = d[k] - do
    sl = (d[k + 1] - do) if not last else -do
    for _ in range(MAX_STEPS):
        p1, q1, p2, q2 = _sums(s, g, tau, k)
        f = p1 + p2 - 1.0
        if f == 0.0:
            return tau, True
        if f > 0.0:
            b = tau
        else:
            a = tau
        x = _model_root(p1, q1, p2, q2, tau, su, sl, last)
        if np.isfinite(x) and abs(x - tau) <= _ACCEPT * abs(tau) and a <= x <= b:
            return x, True
        if not (np.isfinite(x) and a < x < b):
            x = 0.5 * (a + b)
        tau = x
        if b - a <= 4.0 * _EPS * max(abs(a), abs(b)):
            return tau, True
    return tau, False


@njit(cache=True, fastmath=True, error_model="numpy")
def _moment_sums(d, g, dk, lo, hi):
    """The sums of :func:`_moments` over poles lo … hi−1 (a loop without a branch, so that it
    vectorises)."""
    q0 = q1 = q2 = q3 = q4 = q5 = t = 0.0
    for j in range(lo, hi):
        c = 1.0 / (d[j] - dk)
        a = g[j] * c
        q0 += a
        a *= c
        q1 += a
        a *= c
        q2 += a
        a *= c
        q3 += a
        a *= c
        q4 += a
        a *= c
        q5 += a
        t += abs(a * c)
    return q0, q1, q2, q3, q4, q5, t


@njit(cache=True, error_model="numpy")
def _moments(d, g, k, q):
    """q[p] = Σ_{j≠k} g_j / s_j^(p+1) for p < ORDER and q[ORDER] = Σ_{j≠k} g_j / |s_j|^(ORDER+1),
    s_j = d_j − d_k, in one pass (its single subtraction has nothing to reassociate)."""
    a = _moment_sums(d, g, d[k], 0, k)
    b = _moment_sums(d, g, d[k], k + 1, d.size)
    for p in range(ORDER + 1):
        q[p] = a[p] + b[p]


@njit(cache=True, error_model="numpy")
def _expanded(g_k, q, half):
    """Root τ ∈ (half, 0) of the secular equation expanded about its upper pole, or 0.0 when
    the expansion cannot vouch for it to rounding (the caller then iterates on the full sums).

    With the pole's own term kept exact, −g_k/τ + Σ_{p<ORDER} q_p τ^p − 1 = 0; the rest of
    Σ_{j≠k} g_j/(s_j − τ) is at most 2|τ|^ORDER q[ORDER] in size on the upper half of the
    interval (there |s_j − τ| ≥ |s_j|/2 for the poles below and ≥ s_j above), and the true
    function rises at least g_k/τ² there, so the root found moves by at most a relative
    2|τ|^(ORDER+1) q[ORDER]/g_k: accepted below 2^-56."""
    if not 1.0 - q[0] > 0.0:
        return 0.0
    tau = -g_k / (1.0 - q[0])
    for _ in range(30):
        f = -g_k / tau - 1.0
        fp = g_k / (tau * tau)
        power = 1.0
        for p in range(ORDER):
            if p:
                fp += p * q[p] * power
                power *= tau
            f += q[p] * power
        if not (fp > 0.0 and np.isfinite(f)):
            return 0.0
        step = f / fp
        tau -= step
        if not half < tau < 0.0:
            return 0.0
        if abs(step) <= _ACCEPT * abs(tau):
            size = abs(tau)
            if 2.0 * size ** (ORDER + 1) * q[ORDER] <= 2.0**-56 * g_k:
                return tau
            return 0.0
    return 0.0


@njit(cache=True, error_model="numpy")
def roots(d, g, lo, hi, origin, tau, delta):
    """Roots lo … hi−1 into ``origin``, ``tau``, ``delta`` (indexed by root); True when all
    converged. Most roots of a small step are settled by :func:`_expanded` after one pass
    over the poles; the others iterate on the full sums (:func:`_solve_from`)."""
    m = d.size
    s = np.empty(m)
    q = np.empty(ORDER + 1)
    for k in range(lo, hi):
        up = d[k]
        low = d[k + 1] if k + 1 < m else 0.0
        half = 0.5 * (low - up)  # τ of the midpoint, from the upper pole
        _moments(d, g, k, q)
        t = _expanded(g[k], q, half)
        if t < 0.0:
            origin[k] = k
            tau[k] = t
            delta[k] = up + t
            continue
        fo = 1.0 - q[0]  # 1 − Σ_{j≠k} g_j / s_j, from the same pass: the first-order start
        start = -g[k] / fo if fo > 0.0 else half
        if not (half < start < 0.0):
            start = 0.5 * half
        _shift(d, up, s)
        t, ok = _solve_from(d, g, s, k, k, low - up, 0.0, start)
        o = k
        if ok and t < half and k + 1 < m:  # in the lower half: measure from the lower pole
            o = k + 1
            _shift(d, low, s)
            t, ok = _solve_from(d, g, s, k, o, 0.0, up - low, (up + t) - low)
        if not ok:
            return False
        origin[k] = o
        tau[k] = t
        delta[k] = d[o] + t
    return True


@njit(cache=True, error_model="numpy")
def _fill_row(d, do, t, row):  # no fastmath: (d_j − d_o) − τ exactly as written
    for j in range(d.size):
        row[j] = 1.0 / ((d[j] - do) - t)


@njit(cache=True, fastmath=True, error_model="numpy")
def _reduce_row(row, g):
    """h = Σ g·row and w = Σ g·row²."""
    h = 0.0
    w = 0.0
    for j in range(row.size):
        gc = g[j] * row[j]
        h += gc
        w += gc * row[j]
    return h, w


@njit(cache=True, fastmath=True, error_model="numpy")
def _dot(a, b):
    acc = 0.0
    for j in range(a.size):
        acc += a[j] * b[j]
    return acc


@njit(cache=True, error_model="numpy")
def apply_rows(d, origin, tau, delta, g, y, length, at, owner, out, h, w, absha, curve):
    """Rows k of C, 1/((d_j − d_{o_k}) − τ_k), one at a time, each applied at once to every
    state p: h_k = Σ g C, w_k = Σ g C², α_pk = (y_p · C_k) / w_k, and with μ_k = 1 − δ_k
    (its powers as exp(t·log1p(−δ_k)), never rounding μ_k; as ±exp(t·log(δ_k − 1)) where
    δ_k > 1, a negative μ_k, as :func:`ktsweep.engines.stretch.powers` does)

        out[p] += μ_k^length[p] α_pk C_k,   absha[p] += |h_k α_pk|,
        curve[i] += h_k α_{owner[i], k} μ_k^at[i]   (the learning curve's times).

    Everything an advance needs from the roots in one pass, with no m × m or P × roots
    array: the numpy twin is :meth:`ktsweep.engines.stretch.StretchMap._chunks` and the
    products around it."""
    m = d.size
    row = np.empty(m)
    coef = np.empty(y.shape[0])
    for k in range(origin.size):
        _fill_row(d, d[origin[k]], tau[k], row)
        hk, wk = _reduce_row(row, g)
        h[k] = hk
        w[k] = wk
        flip = delta[k] > 1.0  # μ_k < 0 (inputs with ψ < 2): |μ_k| = δ_k − 1, exact
        log_mu = np.log(delta[k] - 1.0) if flip else np.log1p(-delta[k])
        for p in range(y.shape[0]):
            a = _dot(y[p], row) / wk
            coef[p] = hk * a
            absha[p] += abs(hk * a)
            c = _power(log_mu, length[p], flip) * a
            if c != 0.0:
                op = out[p]
                for j in range(m):
                    op[j] += c * row[j]
        for i in range(at.size):
            curve[i] += coef[owner[i]] * _power(log_mu, at[i], flip)


@njit(cache=True, error_model="numpy")
def _power(log_mu, t, flip):
    """μ^t from log|μ| and the sign of μ (``flip``: negative), t a whole number of steps."""
    v = np.exp(t * log_mu)
    if flip and t % 2.0 == 1.0:
        return -v
    return v


@njit(cache=True, fastmath=True, error_model="numpy")
def prepare(x, s2, fixed_ratio, inv_g, y, fixed):
    """fixed[p] = s2[p]·a_∞/s² and y[p] = x[p] − fixed[p] for every state; returns, per
    state, ‖W⁻¹y‖² = Σ y²/g and the state's scale max(Σ|x|, Σ fixed) (the quantities the
    root cut of an advance needs), in one pass instead of a dozen numpy calls."""
    rows, m = x.shape
    norm = np.empty(rows)
    scale = np.empty(rows)
    for p in range(rows):
        acc = 0.0
        sx = 0.0
        sf = 0.0
        for j in range(m):
            f = s2[p] * fixed_ratio[j]
            v = x[p, j] - f
            fixed[p, j] = f
            y[p, j] = v
            acc += v * v * inv_g[j]
            sx += abs(x[p, j])
            sf += f
        norm[p] = acc
        scale[p] = max(sx, sf, 1e-300)
    return norm, scale
