"""The fused GPU kernel (Triton): a pass of SGD runs inside one kernel launch.

:func:`run` launches one program per block of ``BLOCK_R`` replicates. A program loads its
models' states once, keeps them on chip (registers) for every step of the pass, draws each
sample's inputs in the kernel from the Philox counters of :mod:`ktsweep.engines.fused.stream`
(``tl.philox``: the same integers as the CPU kernel and the NumPy definition), and writes the
states, the learning-curve points and the diverged flags back at the end. Nothing is read from
or written to memory per step but a phase's gains when a segment starts.

Each model's L = 4K slots are held as four tiles of (BLOCK_R, BLOCK_K): tile m holds the slots
4k + m, which are exactly lane m of counter k, so one Philox call per counter feeds all four
tiles without any reshuffle. A residual is one reduction over the four tiles (the noise slot,
lane 0 of counter K − 1, holds −σ), the update four fused multiply-adds.

What it runs: batches (a loop over the batch's samples inside the step), every schedule
(a segment per phase), checkpoints, the divergence rule, every input law (Student-t by a
rejection loop), the rotated student under Gaussian inputs (its passes draw Qᵀz directly,
:mod:`~ktsweep.engines.fused.passes`), float32 and float64 states. Not: a rotated student under
non-Gaussian inputs (every sample would need Qᵀz, an O(d²) product in the step;
:func:`ktsweep.engines.fused.unsupported` says so and ``kernel: auto`` takes torch there).

Without a GPU the same kernel runs in Triton's interpreter (``TRITON_INTERPRET=1``, set before
triton is imported): the tests run it that way on small points.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ktsweep.engines.fused import stream
from ktsweep.engines.fused.passes import CHECK_EVERY, Pass

MAX_ATTEMPTS: tl.constexpr = tl.constexpr(stream.MAX_ATTEMPTS)
_TWO24: tl.constexpr = tl.constexpr(2.0**-24)
_PIO2_2M30: tl.constexpr = tl.constexpr(math.pi / 2 * 2.0**-30)
_SQRT3: tl.constexpr = tl.constexpr(math.sqrt(3.0))


@triton.jit
def _unit(x):
    """u(x) = (⌊x/2^8⌋ + 1)·2^-24 (x uint32)."""
    return ((x >> 8) + 1).to(tl.float32) * _TWO24


@triton.jit
def _sincos(x):
    """(sin θ, cos θ) of θ = 2π·x/2^32: the quadrant from the integer, then Cephes' sinf and
    cosf polynomials on r ∈ [−π/4, π/4) (as the CPU kernel)."""
    y = x + (1 << 29)
    q = y >> 30
    r = ((y & ((1 << 30) - 1)).to(tl.int32) - (1 << 29)).to(tl.float32) * _PIO2_2M30
    z = r * r
    s = r + r * z * ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1)
    c = 1.0 - 0.5 * z + z * z * ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z
                                 + 4.166664568298827e-2)
    swap = (q & 1) != 0
    sin = tl.where(swap, c, s)
    cos = tl.where(swap, s, c)
    sin = tl.where((q & 2) != 0, -sin, sin)
    cos = tl.where(((q ^ (q >> 1)) & 1) != 0, -cos, cos)
    return sin, cos


@triton.jit
def _gauss_pair(xu, xv):
    rho = tl.sqrt(-2.0 * tl.log(_unit(xu)))
    sin, cos = _sincos(xv)
    return rho * cos, rho * sin


@triton.jit
def _bailey(xu, xv, nu, scale):
    """One attempt of Bailey's polar method: (value, accepted)."""
    u = 2.0 * _unit(xu) - 1.0
    v = 2.0 * _unit(xv) - 1.0
    w = u * u + v * v
    ok = (w > 0.0) & (w <= 1.0)
    ws = tl.where(ok, w, 0.5)
    t = u * tl.sqrt(nu * (tl.exp(-2.0 / nu * tl.log(ws)) - 1.0) / ws) * scale
    return t, ok


@triton.jit
def _sample(seed, c0, c1, c2, c3, k, d, K, nu, LAW: tl.constexpr):
    """The four lane tiles of one sample's row (stream.rows): inputs of the law, the noise
    in lane 0 of counter K − 1, zeros elsewhere."""
    x0, x1, x2, x3 = tl.philox(seed, c0, c1, c2, c3)
    g0, g1 = _gauss_pair(x0, x1)
    g2, g3 = _gauss_pair(x2, x3)
    noise = g0
    if LAW == 1:
        g0 = tl.where(x0 >= 0x80000000, 1.0, -1.0)
        g1 = tl.where(x1 >= 0x80000000, 1.0, -1.0)
        g2 = tl.where(x2 >= 0x80000000, 1.0, -1.0)
        g3 = tl.where(x3 >= 0x80000000, 1.0, -1.0)
    elif LAW == 2:
        g0 = _SQRT3 * (2.0 * _unit(x0) - 1.0)
        g1 = _SQRT3 * (2.0 * _unit(x1) - 1.0)
        g2 = _SQRT3 * (2.0 * _unit(x2) - 1.0)
        g3 = _SQRT3 * (2.0 * _unit(x3) - 1.0)
    elif LAW == 3:
        scale = tl.sqrt((nu - 2.0) / nu)
        todo0 = 4 * k < d
        todo1 = 4 * k + 1 < d
        todo2 = 4 * k + 2 < d
        todo3 = 4 * k + 3 < d
        g0 = tl.zeros_like(g0)
        g1 = tl.zeros_like(g0)
        g2 = tl.zeros_like(g0)
        g3 = tl.zeros_like(g0)
        a = 0
        left = tl.max(tl.max((todo0 | todo1 | todo2 | todo3).to(tl.int32), axis=1), axis=0)
        while (left > 0) & (a < MAX_ATTEMPTS):
            f = (2 * a) << 8
            y0, y1, y2, y3 = tl.philox(seed, c0, c1, c2, c3 + f)
            t, ok = _bailey(y0, y1, nu, scale)
            g0 = tl.where(todo0 & ok, t, g0)
            todo0 = todo0 & ~ok
            t, ok = _bailey(y2, y3, nu, scale)
            g1 = tl.where(todo1 & ok, t, g1)
            todo1 = todo1 & ~ok
            y0, y1, y2, y3 = tl.philox(seed, c0, c1, c2, c3 + f + (1 << 8))
            t, ok = _bailey(y0, y1, nu, scale)
            g2 = tl.where(todo2 & ok, t, g2)
            todo2 = todo2 & ~ok
            t, ok = _bailey(y2, y3, nu, scale)
            g3 = tl.where(todo3 & ok, t, g3)
            todo3 = todo3 & ~ok
            a += 1
            left = tl.max(tl.max((todo0 | todo1 | todo2 | todo3).to(tl.int32), axis=1), axis=0)
    z0 = tl.where(4 * k < d, g0, tl.where(k == K - 1, noise, 0.0))
    z1 = tl.where(4 * k + 1 < d, g1, 0.0)
    z2 = tl.where(4 * k + 2 < d, g2, 0.0)
    z3 = tl.where(4 * k + 3 < d, g3, 0.0)
    return z0, z1, z2, z3


@triton.jit
def _risk(a0, a1, a2, a3, o0, o1, o2, o3, k, d):
    e0 = tl.where(4 * k < d, a0 + o0, 0.0)
    e1 = tl.where(4 * k + 1 < d, a1 + o1, 0.0)
    e2 = tl.where(4 * k + 2 < d, a2 + o2, 0.0)
    e3 = tl.where(4 * k + 3 < d, a3 + o3, 0.0)
    return 0.5 * tl.sum(e0 * e0 + e1 * e1 + e2 * e2 + e3 * e3, axis=1)


@triton.jit
def _dot(a0, a1, a2, a3, z0, z1, z2, z3):
    return tl.sum(a0 * z0 + a1 * z1 + a2 * z2 + a3 * z3, axis=1)


@triton.jit
def _pass_kernel(state, gains, segs, n_segs, offset, curves, dead_io, seed, tag, d, K, R, L,
                 n_phases, n_ck, batch, nu, limit, every,
                 M: tl.constexpr, LAW: tl.constexpr, ONE: tl.constexpr,
                 HAS_OFF: tl.constexpr, REC0: tl.constexpr, REC1: tl.constexpr,
                 BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    """One program: BLOCK_R replicates of the pass's M models (see :func:`run`)."""
    pid = tl.program_id(0)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    k = tl.arange(0, BLOCK_K)[None, :]
    rr = rows[:, None]
    inside = (rr < R) & (k < K)
    zero_k = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.int32)
    c2 = (rr + zero_k).to(tl.uint32)
    sa = state + rr * L + 4 * k
    a0 = tl.load(sa, mask=inside, other=0.0)
    a1 = tl.load(sa + 1, mask=inside, other=0.0)
    a2 = tl.load(sa + 2, mask=inside, other=0.0)
    a3 = tl.load(sa + 3, mask=inside, other=0.0)
    dead_a = tl.load(dead_io + rows, mask=rows < R, other=1) != 0
    if HAS_OFF:
        oa = offset + rr * L + 4 * k
        o0 = tl.load(oa, mask=inside, other=0.0)
        o1 = tl.load(oa + 1, mask=inside, other=0.0)
        o2 = tl.load(oa + 2, mask=inside, other=0.0)
        o3 = tl.load(oa + 3, mask=inside, other=0.0)
    else:
        o0 = tl.zeros_like(a0)
        o1 = o0
        o2 = o0
        o3 = o0
    if M == 2:
        sb = state + R * L + rr * L + 4 * k
        b0 = tl.load(sb, mask=inside, other=0.0)
        b1 = tl.load(sb + 1, mask=inside, other=0.0)
        b2 = tl.load(sb + 2, mask=inside, other=0.0)
        b3 = tl.load(sb + 3, mask=inside, other=0.0)
        dead_b = tl.load(dead_io + R + rows, mask=rows < R, other=1) != 0
    zero = tl.zeros_like(o0)
    for s in range(n_segs):
        start = tl.load(segs + s * (3 + M))
        stop = tl.load(segs + s * (3 + M) + 1)
        ck = tl.load(segs + s * (3 + M) + 2)
        pa = tl.load(segs + s * (3 + M) + 3)
        ga = gains + pa * L + 4 * k
        h0 = tl.load(ga, mask=k < K, other=0.0)
        h1 = tl.load(ga + 1, mask=k < K, other=0.0)
        h2 = tl.load(ga + 2, mask=k < K, other=0.0)
        h3 = tl.load(ga + 3, mask=k < K, other=0.0)
        if M == 2:
            pb = tl.load(segs + s * (3 + M) + 4)
            gb = gains + (n_phases + pb) * L + 4 * k
            j0 = tl.load(gb, mask=k < K, other=0.0)
            j1 = tl.load(gb + 1, mask=k < K, other=0.0)
            j2 = tl.load(gb + 2, mask=k < K, other=0.0)
            j3 = tl.load(gb + 3, mask=k < K, other=0.0)
        if ck >= 0:
            if REC0:
                risk = _risk(a0, a1, a2, a3, o0, o1, o2, o3, k, d)
                tl.store(curves + rows * n_ck + ck, tl.where(dead_a, float("nan"), risk),
                         mask=rows < R)
            if M == 2 and REC1:
                risk = _risk(b0, b1, b2, b3, zero, zero, zero, zero, k, d)
                tl.store(curves + (R + rows) * n_ck + ck,
                         tl.where(dead_b, float("nan"), risk), mask=rows < R)
        for step in range(start, stop):
            t = tl.cast(step, tl.int64)
            if (t > 0) & (t % every == 0):
                risk = _risk(a0, a1, a2, a3, o0, o1, o2, o3, k, d)
                dead_a = dead_a | ~(risk < limit)
                if M == 2:
                    risk = _risk(b0, b1, b2, b3, zero, zero, zero, zero, k, d)
                    dead_b = dead_b | ~(risk < limit)
            c1 = (t & 0xFFFFFFFF).to(tl.uint32) + zero_k.to(tl.uint32)
            c3 = (tag + ((t >> 32) << 16)).to(tl.uint32) + zero_k.to(tl.uint32)
            if ONE:
                c0 = (k + zero_k).to(tl.uint32)
                z0, z1, z2, z3 = _sample(seed, c0, c1, c2, c3, k, d, K, nu, LAW)
                ra = _dot(a0, a1, a2, a3, z0, z1, z2, z3)[:, None]
                a0 -= h0 * z0 * ra
                a1 -= h1 * z1 * ra
                a2 -= h2 * z2 * ra
                a3 -= h3 * z3 * ra
                if M == 2:
                    rb = _dot(b0, b1, b2, b3, z0, z1, z2, z3)[:, None]
                    b0 -= j0 * z0 * rb
                    b1 -= j1 * z1 * rb
                    b2 -= j2 * z2 * rb
                    b3 -= j3 * z3 * rb
            else:
                ua0 = zero
                ua1 = zero
                ua2 = zero
                ua3 = zero
                ub0 = zero
                ub1 = zero
                ub2 = zero
                ub3 = zero
                for b in range(batch):
                    c0 = (b * K + k + zero_k).to(tl.uint32)
                    z0, z1, z2, z3 = _sample(seed, c0, c1, c2, c3, k, d, K, nu, LAW)
                    ra = _dot(a0, a1, a2, a3, z0, z1, z2, z3)[:, None]
                    ua0 += z0 * ra
                    ua1 += z1 * ra
                    ua2 += z2 * ra
                    ua3 += z3 * ra
                    if M == 2:
                        rb = _dot(b0, b1, b2, b3, z0, z1, z2, z3)[:, None]
                        ub0 += z0 * rb
                        ub1 += z1 * rb
                        ub2 += z2 * rb
                        ub3 += z3 * rb
                a0 -= h0 * ua0
                a1 -= h1 * ua1
                a2 -= h2 * ua2
                a3 -= h3 * ua3
                if M == 2:
                    b0 -= j0 * ub0
                    b1 -= j1 * ub1
                    b2 -= j2 * ub2
                    b3 -= j3 * ub3
    risk = _risk(a0, a1, a2, a3, o0, o1, o2, o3, k, d)
    dead_a = dead_a | ~(risk < limit)
    nan_a = dead_a[:, None] & (k >= 0)
    tl.store(sa, tl.where(nan_a, float("nan"), a0), mask=inside)
    tl.store(sa + 1, tl.where(nan_a, float("nan"), a1), mask=inside)
    tl.store(sa + 2, tl.where(nan_a, float("nan"), a2), mask=inside)
    tl.store(sa + 3, tl.where(nan_a, float("nan"), a3), mask=inside)
    tl.store(dead_io + rows, dead_a.to(tl.int8), mask=rows < R)
    if M == 2:
        risk = _risk(b0, b1, b2, b3, zero, zero, zero, zero, k, d)
        dead_b = dead_b | ~(risk < limit)
        nan_b = dead_b[:, None] & (k >= 0)
        tl.store(sb, tl.where(nan_b, float("nan"), b0), mask=inside)
        tl.store(sb + 1, tl.where(nan_b, float("nan"), b1), mask=inside)
        tl.store(sb + 2, tl.where(nan_b, float("nan"), b2), mask=inside)
        tl.store(sb + 3, tl.where(nan_b, float("nan"), b3), mask=inside)
        tl.store(dead_io + R + rows, dead_b.to(tl.int8), mask=rows < R)


def launch_config(K: int, R: int, processors: int) -> tuple[int, int]:
    """(BLOCK_R, num_warps). Rows per program: as many as keep about four programs a
    multiprocessor (a program's steps run one after another, so a few replicates fill a GPU
    only in many programs), at most 1024 slots of a model a program; warps: about 8 slots a
    thread (a first guess: bench_gpu.py times others on the GPU)."""
    block_k = triton.next_power_of_2(K)
    most = max(1, 256 // block_k)
    want = max(1, R // (4 * processors))
    block_r = min(most, 1 << (want.bit_length() - 1))
    warps = max(1, min(8, block_r * block_k * 4 // 256))
    return block_r, warps


def run(ps: Pass, block_r: int | None = None, num_warps: int | None = None) -> None:
    """Run pass ``ps`` in place on its device (CUDA, or the interpreter's CPU tensors)."""
    models = ps.models
    if any(m.rotate for m in models):
        raise ValueError("the GPU kernel does not rotate inputs (rotated student under "
                         "non-Gaussian inputs): use kernel: torch")
    M, (R, L) = len(models), models[0].state.shape
    K = L // 4
    state = torch.stack([m.state for m in models]).contiguous()
    width = max(m.gains.shape[0] for m in models)
    gains = torch.zeros((M, width, L), dtype=state.dtype, device=state.device)
    for i, m in enumerate(models):
        gains[i, : m.gains.shape[0]] = m.gains
    off = models[0].offset
    offset = off.contiguous() if off is not None else state[0]
    dead = ps.diverged.to(torch.int8).contiguous()
    segs = torch.as_tensor(ps.segments, device=state.device).contiguous()
    curves = ps.curves.contiguous()
    if state.device.type == "cuda":
        processors = torch.cuda.get_device_properties(state.device).multi_processor_count
        auto_r, auto_w = launch_config(K, R, processors)
    else:  # the interpreter runs programs one after another, each step in NumPy calls
        auto_r, auto_w = triton.next_power_of_2(R), 1
    block_r = block_r or auto_r
    seed = ps.key[0] | (ps.key[1] << 32)
    _pass_kernel[(triton.cdiv(R, block_r),)](
        state, gains, segs, segs.shape[0], offset, curves, dead, seed, ps.tag, ps.d, K, R, L,
        width, curves.shape[-1], ps.batch, float(ps.nu), float(ps.limit), CHECK_EVERY,
        M=M, LAW=stream.LAWS[ps.law], ONE=ps.batch == 1, HAS_OFF=off is not None,
        REC0=models[0].record, REC1=M == 2 and models[1].record, BLOCK_R=block_r,
        BLOCK_K=triton.next_power_of_2(K), num_warps=num_warps or auto_w)
    for i, m in enumerate(models):
        m.state.copy_(state[i])
    ps.curves.copy_(curves)
    ps.diverged.copy_(dead != 0)
