"""The fused CPU kernel: every step of a pass of SGD runs inside one compiled loop (numba).

:func:`run_pass` advances one or two models that share every draw (the teacher and the direct
student, or the T2S and ceiling students) for all steps of a pass. Replicates run in parallel
(``prange``: numba's threads); each replicate draws its inputs in the loop from the Philox
counters of :mod:`ktsweep.engines.fused.stream`, so no draw touches memory beyond the row of
the current sample, and its models' states (a few kB) stay in the core's L1 cache for the
whole pass. A step of a model is one dot product (the residual, label noise included: the
state holds −σ in the noise slot) and one scaled update.

The loops over a row are written so that LLVM vectorises them: Philox on 64-bit lanes whose
upper halves it can see are zero (so each 32-bit product is one ``vpmuludq``), and the
logarithm, sine and cosine of Box–Muller as float32 polynomials (numba's ``math.log`` is a
scalar libm call without Intel's SVML, which would cost more than the rest of the step). The
polynomials are Cephes' ``logf``, ``sinf`` and ``cosf`` on their reduced ranges; the angle is
reduced exactly, on the integer, to a quadrant and r ∈ [−π/4, π/4).

Fast-math flags (:data:`_FAST`) let LLVM reassociate the dot products (vector partial sums)
and contract multiply-adds: a run is deterministic on a given machine, and agrees with another
machine's (another vector width) to float rounding, not bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

_FAST = {"reassoc", "contract", "arcp", "nsz"}
"""LLVM's fast-math flags but ``nnan`` and ``ninf``: the divergence rule compares risks that
can be inf or NaN."""
_M32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_A = np.uint64(0xD2511F53)
_B = np.uint64(0xCD9E8D57)
_U = np.uint32
_TWO24 = np.float32(2.0**-24)
_PIO2_2M30 = np.float32(math.pi / 2 * 2.0**-30)
_SQRT3 = np.float32(math.sqrt(3.0))


@njit(inline="always")
def _round(c0, c1, c2, c3, k0, k1):
    p0 = c0 * _A
    p1 = c2 * _B
    return ((p1 >> _S32) ^ c1 ^ k0, p1 & _M32, (p0 >> _S32) ^ c3 ^ k1, p0 & _M32)


@njit(inline="always")
def philox(c0, c1, c2, c3, keys):
    """Philox-4x32-10 on uint64 words < 2^32; ``keys``: (10, 2) round keys (masked here, so
    LLVM knows every operand of a product fits 32 bits and multiplies with ``vpmuludq``)."""
    for i in range(10):
        c0, c1, c2, c3 = _round(c0, c1, c2, c3, keys[i, 0] & _M32, keys[i, 1] & _M32)
    return c0, c1, c2, c3


@njit(fastmath=_FAST, error_model="numpy")
def _words(w, keys, c0, c1, c2, c3, first, count):
    """The four words of counters c0 + first, ..., c0 + first + count − 1 into w (uint32,
    4 a counter, at the counter's own place). Ranges, not slices: a slice of an array costs
    two reference-count updates, which add up at small d."""
    for k in range(first, first + count):
        x0, x1, x2, x3 = philox(c0 + np.uint64(k), c1, c2, c3, keys)
        w[4 * k] = _U(x0)
        w[4 * k + 1] = _U(x1)
        w[4 * k + 2] = _U(x2)
        w[4 * k + 3] = _U(x3)


@njit(inline="always", fastmath=_FAST)
def _unit(x):
    """u(x) = (⌊x/2^8⌋ + 1)·2^-24 in float32 (exact)."""
    return np.float32(np.int32(x >> _U(8)) + np.int32(1)) * _TWO24


@njit(inline="always", fastmath=_FAST)
def _log(u):
    """Natural log of a float32 u in (0, 1] (Cephes logf: u = 2^e·x, x in [√½, √2))."""
    i = np.float32(u).view(np.int32)
    e = np.float32(((i >> np.int32(23)) & np.int32(0xFF)) - np.int32(126))
    x = np.int32((i & np.int32(0x007FFFFF)) | np.int32(0x3F000000)).view(np.float32)
    small = x < np.float32(0.70710678)
    e = e - np.float32(1.0) if small else e
    x = x + x - np.float32(1.0) if small else x - np.float32(1.0)
    z = x * x
    y = ((((((((np.float32(7.0376836292e-2) * x - np.float32(1.1514610310e-1)) * x
               + np.float32(1.1676998740e-1)) * x - np.float32(1.2420140846e-1)) * x
             + np.float32(1.4249322787e-1)) * x - np.float32(1.6668057665e-1)) * x
           + np.float32(2.0000714765e-1)) * x - np.float32(2.4999993993e-1)) * x
         + np.float32(3.3333331174e-1)) * x * z
    y += np.float32(-2.12194440e-4) * e - np.float32(0.5) * z
    return x + y + np.float32(0.693359375) * e


@njit(inline="always", fastmath=_FAST)
def _sincos(x):
    """(sin θ, cos θ) of θ = 2π·x/2^32 for a 32-bit word x, in float32."""
    y = _U(x + _U(1 << 29))
    q = y >> _U(30)
    r = np.float32(np.int32(y & _U((1 << 30) - 1)) - np.int32(1 << 29)) * _PIO2_2M30
    z = r * r
    s = r + r * z * ((np.float32(-1.9515295891e-4) * z + np.float32(8.3321608736e-3)) * z
                     - np.float32(1.6666654611e-1))
    c = (np.float32(1.0) - np.float32(0.5) * z
         + z * z * ((np.float32(2.443315711809948e-5) * z - np.float32(1.388731625493765e-3))
                    * z + np.float32(4.166664568298827e-2)))
    swap = (q & _U(1)) != _U(0)
    sin = c if swap else s
    cos = s if swap else c
    sin = -sin if (q & _U(2)) != _U(0) else sin
    cos = -cos if ((q ^ (q >> _U(1))) & _U(1)) != _U(0) else cos
    return sin, cos


@njit(fastmath=_FAST, error_model="numpy")
def _gaussian(w, row, first, pairs):
    """Box–Muller of the word pairs first .. first + pairs − 1 of w into row."""
    for p in range(first, first + pairs):
        rho = np.sqrt(np.float32(-2.0) * _log(_unit(w[2 * p])))
        sin, cos = _sincos(w[2 * p + 1])
        row[2 * p] = rho * cos
        row[2 * p + 1] = rho * sin


@njit(fastmath=_FAST, error_model="numpy")
def _student_t(keys, c0, c1, c2, c3, m, nu):
    """One Student-t coordinate (lane ``m`` of counter c0), unit variance (Bailey's polar
    method; the attempt field of c3 counts 2a + ⌊m/2⌋)."""
    lo = 2 * (m & 1)
    scale = math.sqrt((nu - 2.0) / nu)
    for a in range(64):
        f = np.uint64(2 * a + (m >> 1)) << np.uint64(8)
        x = philox(c0, c1, c2, c3 + f, keys)
        xu = x[0] if lo == 0 else x[2]
        xv = x[1] if lo == 0 else x[3]
        u = 2.0 * float(_unit(_U(xu))) - 1.0
        v = 2.0 * float(_unit(_U(xv))) - 1.0
        w = u * u + v * v
        if 0.0 < w <= 1.0:
            return np.float32(u * math.sqrt(nu * (math.exp(-2.0 / nu * math.log(w)) - 1.0) / w)
                              * scale)
    return np.float32(0.0)


@njit(fastmath=_FAST, error_model="numpy")
def fill_row(row, w, keys, c0, c1, c2, c3, d, law, nu):
    """One sample's row of L = 4K slots (:func:`ktsweep.engines.fused.stream.rows`) from
    counters c0 .. c0 + K − 1 with words c1, c2, c3; w: a uint32 scratch of L words."""
    L = row.size
    K = L // 4
    noise = L - 4
    if law == 3:
        for j in range(d):
            row[j] = _student_t(keys, c0 + np.uint64(j >> 2), c1, c2, c3, j & 3, nu)
        _words(w, keys, c0, c1, c2, c3, K - 1, 1)
    else:
        _words(w, keys, c0, c1, c2, c3, 0, K)
    if law == 0:
        _gaussian(w, row, 0, L // 2)
    else:
        _gaussian(w, row, noise // 2, 1)
        if law == 1:
            for j in range(d):
                row[j] = np.float32(1.0) if w[j] >= _U(1 << 31) else np.float32(-1.0)
        elif law == 2:
            for j in range(d):
                row[j] = _SQRT3 * (np.float32(2.0) * _unit(w[j]) - np.float32(1.0))
    for j in range(d, noise):
        row[j] = np.float32(0.0)
    for j in range(noise + 1, L):
        row[j] = np.float32(0.0)


@njit(fastmath=_FAST, error_model="numpy")
def _rotate(src, dst, q, d):
    """dst = Qᵀ src on the first d slots (the inputs in the student's eigenbasis), the other
    slots (noise, padding) copied."""
    for k in range(d):
        dst[k] = np.float32(0.0)
    for j in range(d):
        zj = src[j]
        for k in range(d):
            dst[k] += zj * q[j, k]
    for k in range(d, src.size):
        dst[k] = src[k]


@njit(fastmath=_FAST, error_model="numpy")
def _risk(st, off, d):
    acc = 0.0
    for j in range(d):
        x = float(st[j] + off[j])
        acc += x * x
    return 0.5 * acc


@njit(fastmath=_FAST, error_model="numpy")
def _step_pair(x, i, a, b, ga, gb, zero):
    """One step of two models on row i of x (batch 1): both residuals in one pass over the
    row, both updates in another."""
    ra = zero
    rb = zero
    for j in range(a.size):
        ra += x[i, j] * a[j]
        rb += x[i, j] * b[j]
    for j in range(a.size):
        a[j] -= ga[j] * x[i, j] * ra
        b[j] -= gb[j] * x[i, j] * rb


@njit(fastmath=_FAST, error_model="numpy")
def _steps_pair(x, n, a, b, ga, gb, zero):
    """Steps on rows 0 .. n − 1 of x of two models (batch 1), one pass over the slots a step:
    each update also forms the next row's residuals from the state it has just written
    (the same sums as a pass of their own; one pass less)."""
    ra = zero
    rb = zero
    for j in range(a.size):
        ra += x[0, j] * a[j]
        rb += x[0, j] * b[j]
    for i in range(n - 1):
        na = zero
        nb = zero
        for j in range(a.size):
            a[j] -= ga[j] * x[i, j] * ra
            b[j] -= gb[j] * x[i, j] * rb
            na += x[i + 1, j] * a[j]
            nb += x[i + 1, j] * b[j]
        ra = na
        rb = nb
    for j in range(a.size):
        a[j] -= ga[j] * x[n - 1, j] * ra
        b[j] -= gb[j] * x[n - 1, j] * rb


@njit(fastmath=_FAST, error_model="numpy")
def _step(x, first, samples, st, g, res, zero):
    """One step of one model on the rows first .. first + samples − 1 of x (its batch)."""
    L = st.size
    for b in range(samples):
        acc = zero
        for j in range(L):
            acc += x[first + b, j] * st[j]
        res[b] = acc
    for j in range(L):
        acc = zero
        for b in range(samples):
            acc += res[b] * x[first + b, j]
        st[j] -= g[j] * acc


@njit(fastmath=_FAST, error_model="numpy")
def _gaussian_rows(rows, words, keys, counter, step, t0, c2, tag, count, d, L):
    """Gaussian rows of consecutive steps t0, t0 + 1, ... of batch 1 at once: one long
    vectorised loop over the ``count`` counters (counter i is counter[i] of step
    t0 + step[i]: tables, so the loop needs no division), then Box–Muller over all their
    pairs; rows and words are flat (a row's L slots are its K counters' words, in order)."""
    base = np.uint64(t0)
    for i in range(count):
        t = base + step[i]
        x0, x1, x2, x3 = philox(counter[i], t & _M32, c2,
                                tag + ((t >> _S32) << np.uint64(16)), keys)
        words[4 * i] = _U(x0)
        words[4 * i + 1] = _U(x1)
        words[4 * i + 2] = _U(x2)
        words[4 * i + 3] = _U(x3)
    _gaussian(words, rows, 0, 2 * count)
    noise = L - 4
    for r in range(count * 4 // L):
        for j in range(r * L + d, r * L + noise):
            rows[j] = np.float32(0.0)
        for j in range(r * L + noise + 1, (r + 1) * L):
            rows[j] = np.float32(0.0)


@njit(fastmath=_FAST, error_model="numpy")
def _look(state, offset, curves, diverged, record, r, ck, check, limit, d):
    """At a step boundary: record the checkpoint ``ck`` (−1: none) of the models that record,
    then, with ``check``, freeze the models whose risk is not below ``limit`` (their state
    becomes NaN). Returns whether a model of replicate r still runs."""
    live = False
    for m in range(state.shape[0]):
        if diverged[m, r]:
            continue
        if ck >= 0 or check:
            risk = _risk(state[m, r], offset[m, r], d)
            if ck >= 0 and record[m]:
                curves[m, r, ck] = risk
            if check and not risk < limit:
                diverged[m, r] = True
                state[m, r, :] = np.nan
                continue
        live = True
    return live


ROW_SLOTS = 1024
"""Gaussian rows of batch 1 are drawn this many slots at a time (about 1024 // L steps ahead;
their draws do not depend on the state): one long vectorised loop instead of one a step,
whose start-up costs as much as the row at d ≈ 100."""


@njit(parallel=True, fastmath=_FAST, error_model="numpy", cache=True)
def run_pass(keys, tag, d, law, nu, batch, state, gains, segs, offset, record, rotate, q,
             limit, curves, diverged, every, zero):
    """Advance the models of one pass, in place, for every replicate and step.

    keys: (10, 2) uint64 round keys; tag: the pass's c3 (uint64); law: the input law's code
    (:data:`~ktsweep.engines.fused.stream.LAWS`), nu its ν; batch: samples per step.
    state: (M, R, L) model states in the L slots (noise slot: −σ, or 0 without label noise);
    gains: (M, phases, L) γλ/B per slot (0 beyond d); segs: (S, 3 + M) int64 rows
    [start, stop, checkpoint, phase of each model] (:func:`~ktsweep.engines.fused.passes.
    segments`): at a row's start step the checkpoint's risk is recorded (−1: none), then
    steps start .. stop − 1 run. Every ``every`` steps and after the last, each replicate's
    risk of each model is held to ``limit``: not below it, or not finite, marks the model in
    ``diverged`` (M, R), sets its state to NaN and stops it. offset: (M, R, L), the risk of a
    model is ½‖state + offset‖² over the first d slots; record: (M,) whether a model records
    its curve into curves (M, R, C); rotate: (M,) whether a model sees the inputs as Qᵀ z
    (q: (d, d)); zero: 0 in the state's dtype. A model already marked in ``diverged`` is
    skipped.
    """
    M, R, L = state.shape
    K = L // 4
    rotating = False
    for m in range(M):
        rotating = rotating or rotate[m]
    ahead = batch == 1 and law == 0 and not rotating  # Gaussian rows drawn steps ahead
    depth = max(1, ROW_SLOTS // L) if ahead else batch
    counter = np.empty(depth * K, dtype=np.uint64)  # counter i: (counter, step) of the block
    step = np.empty(depth * K, dtype=np.uint64)
    for i in range(depth * K):
        counter[i] = i % K
        step[i] = i // K
    last = segs[segs.shape[0] - 1, 1]
    for r in prange(R):
        flat = np.zeros(depth * L, dtype=np.float32)
        rows = flat.reshape(depth, L)
        words = np.zeros(depth * L, dtype=np.uint32)
        turned = np.zeros((batch if rotating else 1, L), dtype=np.float32)
        res = np.zeros(batch, dtype=state.dtype)
        first, other = state[0, r], state[M - 1, r]  # views made once: each costs refcounts
        pair = M == 2 and batch == 1 and not rotating
        c2 = np.uint64(r)
        live = True
        for s in range(segs.shape[0]):
            start, stop = segs[s, 0], segs[s, 1]
            live = _look(state, offset, curves, diverged, record, r, segs[s, 2], False, limit,
                         d)
            if not live:
                break
            ga, gb = gains[0, segs[s, 3]], gains[M - 1, segs[s, 2 + M]]
            t0 = start
            while live and t0 < stop:
                if t0 > 0 and t0 % every == 0:  # a block never holds a check but first
                    live = _look(state, offset, curves, diverged, record, r, -1, True, limit,
                                 d)
                    if not live:
                        break
                n = min(depth, stop - t0, every - t0 % every) if ahead else 1
                if ahead:
                    _gaussian_rows(flat, words, keys, counter, step, t0, c2, tag, n * K, d, L)
                    if pair and not (diverged[0, r] or diverged[1, r]):
                        _steps_pair(rows, n, first, other, ga, gb, zero)
                        t0 += n
                        continue
                else:
                    tu = np.uint64(t0)
                    c1 = tu & _M32
                    c3 = tag + ((tu >> _S32) << np.uint64(16))
                    for b in range(batch):
                        fill_row(rows[b], words, keys, np.uint64(b * K), c1, c2, c3, d, law,
                                 nu)
                        if rotating:
                            _rotate(rows[b], turned[b], q, d)
                for i in range(n):
                    if pair and not (diverged[0, r] or diverged[1, r]):
                        _step_pair(rows, i, first, other, ga, gb, zero)
                        continue
                    for m in range(M):
                        if not diverged[m, r]:
                            _step(turned if rotate[m] else rows, i, batch,
                                  first if m == 0 else other, ga if m == 0 else gb, res,
                                  zero)
                t0 += n
            if not live:
                break
        if live or last == 0:
            _look(state, offset, curves, diverged, record, r, -1, True, limit, d)


@njit(parallel=True, fastmath=_FAST, error_model="numpy", cache=True)
def draw_floor(keys, tag, d, law, nu, batch, replicates, steps, sink):
    """The generator alone, drawing what :func:`run_pass` draws the way it draws it: every
    row of ``steps`` steps of ``replicates`` replicates (Gaussian rows of batch 1 a block of
    steps at a time), each row's first slot summed into ``sink[r]`` (so no draw is elided).
    The benchmarks' floor of the fused CPU kernel."""
    L = 4 * (-(-d // 4) + 1)
    K = L // 4
    ahead = batch == 1 and law == 0
    depth = max(1, ROW_SLOTS // L) if ahead else batch
    counter = np.empty(depth * K, dtype=np.uint64)
    step = np.empty(depth * K, dtype=np.uint64)
    for i in range(depth * K):
        counter[i] = i % K
        step[i] = i // K
    for r in prange(replicates):
        flat = np.zeros(depth * L, dtype=np.float32)
        words = np.zeros(depth * L, dtype=np.uint32)
        acc = np.float32(0.0)
        c2 = np.uint64(r)
        t0 = 0
        while t0 < steps:
            n = min(depth, steps - t0) if ahead else 1
            if ahead:
                _gaussian_rows(flat, words, keys, counter, step, t0, c2, tag, n * K, d, L)
                for i in range(n):
                    acc += flat[i * L]
            else:
                tu = np.uint64(t0)
                c1 = tu & _M32
                c3 = tag + ((tu >> _S32) << np.uint64(16))
                for b in range(batch):
                    fill_row(flat, words, keys, np.uint64(b * K), c1, c2, c3, d, law, nu)
                    acc += flat[0]
            t0 += n
        sink[r] = acc
