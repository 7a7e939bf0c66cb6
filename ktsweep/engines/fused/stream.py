"""The fused kernels' random stream: every draw a pure function of (key, pass, step, replicate,
sample, coordinate), from Philox-4x32-10 counters (docs/science/montecarlo.md, "Fused kernels").

This module is the stream's definition, written in NumPy for whole arrays of counters: the
host draws the Gaussian targets with it, and the tests hold both kernels (numba on the CPU,
Triton on the GPU) to it. The kernels compute the same integers exactly and the same
transforms to float32 rounding (their own log, sine and cosine).

Layout. A point's key is ``derive_seed(seed, point hash, "fused")`` (63 bits), its low and
high 32 bits the two Philox key words. One Philox call maps a counter (c0, c1, c2, c3) to four
32-bit words x0..x3, its four *lanes*. A sample of a pass at step t of replicate r reads the
counters

    c0 = b·K + k     (b the sample of the step's batch, k < K = ⌈d/4⌉ + 1)
    c1 = t mod 2^32
    c2 = r
    c3 = tag + 2^8·f + 2^16·⌊t / 2^32⌋     (f: the attempt field, 0 except Student-t)

Input coordinate j < d is lane j mod 4 of counter k = ⌊j/4⌋; the label noise is lane 0 of
counter k = ⌈d/4⌉, Gaussian under every input law. So a sample fills a row of L = 4K values:
d inputs, zeros up to 4⌈d/4⌉, the noise, three zeros (the kernels keep each model's state on
the same L slots, with −σ in the noise slot, so the residual is one dot product).

Transforms of a lane's word x (u(x) = (⌊x/2^8⌋ + 1)·2^-24, uniform on (0, 1] in steps of 2^-24):

- Gaussian (Box–Muller on the lane pairs (0, 1) and (2, 3)): ρ = √(−2 ln u(x_{2p})),
  θ = 2π·x_{2p+1}/2^32; lane 2p is ρ cos θ, lane 2p+1 is ρ sin θ. ρ ≤ √(48 ln 2) = 5.77: the
  pair's radius is cut where u's grid ends (probability 2^-24 a pair).
- Rademacher: +1 where x ≥ 2^31, else −1.
- Uniform: √3·(2u(x) − 1).
- Student-t with ν degrees of freedom, scaled to unit variance: Bailey's polar method. Attempt
  a = 0, 1, ... of lane m reads the counter with f = 2a + ⌊m/2⌋ and its lanes
  (2(m mod 2), 2(m mod 2) + 1) as U = 2u − 1, V = 2u' − 1; the first attempt with
  0 < W = U² + V² ≤ 1 gives U·√(ν(W^(−2/ν) − 1)/W)·√((ν − 2)/ν). After :data:`MAX_ATTEMPTS`
  rejections (probability (1 − π/4)^64 < 10^-42) the value is 0.

Tags: :data:`TAGS`. Targets (gaussian kind) are the Gaussian lanes of tag 3 at step 0,
sample 0, replicate r (0 for every replicate with ``fixed_target``).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from ktsweep.model.params import derive_seed

ROUNDS = 10
"""Philox rounds (Random123's and Triton's default)."""
MULT = (0xD2511F53, 0xCD9E8D57)
"""Philox-4x32 round multipliers."""
WEYL = (0x9E3779B9, 0xBB67AE85)
"""Philox-4x32 key increments per round."""
M32 = 0xFFFFFFFF
TAGS = {"teacher": 0, "direct": 1, "student": 2, "target": 3}
"""Pass of a draw: the teacher (the direct student rides along where it shares the draws), the
direct student on its own, the T2S and ceiling students, the Gaussian target."""
LAWS = {"gaussian": 0, "rademacher": 1, "uniform": 2, "student_t": 3}
"""Input laws (:mod:`ktsweep.model.inputs`) by the code the kernels take."""
MAX_ATTEMPTS = 64
"""Student-t rejection attempts per coordinate (the attempt field holds 2a + 1 < 2^8)."""
MAX_STEP = 1 << 48
"""Steps a counter can address (32 bits in c1, 16 in c3)."""


def point_key(seed: int, point_hash: str) -> tuple[int, int]:
    """The two Philox key words of a point (low, high 32 bits of its 63-bit seed)."""
    k = derive_seed(seed, point_hash, "fused")
    return k & M32, k >> 32


def round_keys(key: tuple[int, int]) -> np.ndarray:
    """The key words of each round, (ROUNDS, 2) uint64 (what the CPU kernel reads)."""
    r = np.arange(ROUNDS, dtype=np.uint64)
    out = np.empty((ROUNDS, 2), dtype=np.uint64)
    for i in range(2):
        out[:, i] = (np.uint64(key[i]) + r * np.uint64(WEYL[i])) & np.uint64(M32)
    return out


def counters(d: int) -> int:
    """K = ⌈d/4⌉ + 1: counters per sample (inputs, then the noise)."""
    return -(-d // 4) + 1


def width(d: int) -> int:
    """L = 4K: the slots of a sample's row (and of a model's state in the kernels)."""
    return 4 * counters(d)


def noise_slot(d: int) -> int:
    """The row slot of the label noise: lane 0 of counter ⌈d/4⌉."""
    return 4 * (counters(d) - 1)


def word3(tag: int, step: npt.ArrayLike, field: npt.ArrayLike = 0) -> np.ndarray:
    """c3 of a draw (NumPy integers broadcast)."""
    step = np.asarray(step, dtype=np.uint64)
    return (np.uint64(tag) + (np.asarray(field, dtype=np.uint64) << np.uint64(8))
            + ((step >> np.uint64(32)) << np.uint64(16)))


def philox(c0: npt.ArrayLike, c1: npt.ArrayLike, c2: npt.ArrayLike, c3: npt.ArrayLike,
           key: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Philox-4x32-10 of counters (arrays broadcast, values < 2^32) under ``key``: four uint64
    arrays of 32-bit words."""
    c = [np.asarray(x, dtype=np.uint64) & np.uint64(M32) for x in (c0, c1, c2, c3)]
    c = list(np.broadcast_arrays(*c))
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    m32, s32 = np.uint64(M32), np.uint64(32)
    for _ in range(ROUNDS):
        p0 = c[0] * np.uint64(MULT[0])
        p1 = c[2] * np.uint64(MULT[1])
        c = [(p1 >> s32) ^ c[1] ^ k0, p1 & m32, (p0 >> s32) ^ c[3] ^ k1, p0 & m32]
        k0 = (k0 + np.uint64(WEYL[0])) & m32
        k1 = (k1 + np.uint64(WEYL[1])) & m32
    return tuple(c)


def unit(x: np.ndarray) -> np.ndarray:
    """u(x) = (⌊x/2^8⌋ + 1)·2^-24 on (0, 1], exact in float32."""
    return ((np.asarray(x, dtype=np.uint64) >> np.uint64(8)) + np.uint64(1)) * 2.0**-24


def gaussian(x: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """Box–Muller of the lane pairs: four float64 arrays (the definition; kernels round)."""
    out = []
    for p in (0, 1):
        rho = np.sqrt(-2.0 * np.log(unit(x[2 * p])))
        theta = 2.0 * math.pi * (x[2 * p + 1].astype(np.float64) * 2.0**-32)
        out += [rho * np.cos(theta), rho * np.sin(theta)]
    return tuple(out)


def _student_t(key: tuple[int, int], c0: np.ndarray, c1: np.ndarray, c2: np.ndarray, tag: int,
               step: np.ndarray, m: np.ndarray, nu: float) -> np.ndarray:
    """Student-t values of lanes ``m`` at counters (c0, c1, c2) (Bailey's polar method)."""
    shape = np.broadcast_shapes(np.shape(c0), np.shape(c1), np.shape(c2), np.shape(m))
    out = np.zeros(shape)
    todo = np.ones(shape, dtype=bool)
    m = np.broadcast_to(m, shape)
    scale = math.sqrt((nu - 2.0) / nu)
    for a in range(MAX_ATTEMPTS):
        if not todo.any():
            break
        x = philox(c0, c1, c2, word3(tag, step, 2 * a + (m >> 1)), key)
        odd = (m & 1).astype(bool)
        u = 2.0 * unit(np.where(odd, x[2], x[0])) - 1.0
        v = 2.0 * unit(np.where(odd, x[3], x[1])) - 1.0
        w = u * u + v * v
        ok = todo & (w > 0.0) & (w <= 1.0)
        with np.errstate(all="ignore"):
            t = u * np.sqrt(nu * (w ** (-2.0 / nu) - 1.0) / w) * scale
        out = np.where(ok, t, out)
        todo &= ~ok
    return out


def rows(key: tuple[int, int], tag: int, step: npt.ArrayLike, rep: npt.ArrayLike,
         sample: npt.ArrayLike, d: int, law: str = "gaussian", nu: float | None = None
         ) -> np.ndarray:
    """The rows of L slots that the kernels read, for (step, replicate, sample) arrays
    (broadcast together): shape (..., L), float64."""
    step, rep, sample = np.broadcast_arrays(*(np.asarray(v, dtype=np.uint64)
                                              for v in (step, rep, sample)))
    K = counters(d)
    k = np.arange(K, dtype=np.uint64)
    c0 = sample[..., None] * np.uint64(K) + k
    c1 = (step & np.uint64(M32))[..., None]
    c2 = rep[..., None]
    st = step[..., None]
    x = philox(c0, c1, c2, word3(tag, st), key)
    g = gaussian(x)
    lanes = np.stack(g, axis=-1)  # (..., K, 4)
    if law == "rademacher":
        lanes[..., :-1, :] = np.where(np.stack(x, -1)[..., :-1, :] >= 2**31, 1.0, -1.0)
    elif law == "uniform":
        lanes[..., :-1, :] = math.sqrt(3.0) * (2.0 * unit(np.stack(x, -1)[..., :-1, :]) - 1.0)
    elif law == "student_t":
        assert nu is not None
        m = np.arange(4, dtype=np.uint64)
        lanes[..., :-1, :] = _student_t(key, c0[..., :-1, None], c1[..., None],
                                        c2[..., None], tag, st[..., None], m, nu)
    elif law != "gaussian":
        raise ValueError(f"unknown input law {law!r}")
    out = lanes.reshape(lanes.shape[:-2] + (4 * K,))
    out[..., d:noise_slot(d)] = 0.0
    out[..., noise_slot(d) + 1:] = 0.0
    return out


def target_normals(key: tuple[int, int], replicates: int, d: int, shared: bool) -> np.ndarray:
    """(R, d) standard normals of the Gaussian target (one row for all with ``shared``)."""
    reps = np.zeros(replicates, dtype=np.uint64) if shared else np.arange(replicates,
                                                                         dtype=np.uint64)
    return rows(key, TAGS["target"], 0, reps, 0, d)[:, :d]
