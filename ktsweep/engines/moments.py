"""The diagonal second-moment recursion of one-pass SGD (docs/science/exact.md), many runs at once.

A *run* is one SGD trajectory in expectation: a spectrum λ, an initial second moment
a(0), a label-noise variance s², a batch size, a piecewise-constant schedule and a number
of steps. Two solvers share the :class:`Runs` / :class:`Moments` records:

- :func:`evolve` advances each constant-step stretch in closed form
  (:mod:`ktsweep.engines.stretch`), at a cost independent of its length; a stretch whose
  map is not strictly stable is stepped.
- :func:`evolve_steps` walks every step (blocks of up to 64, solved by the renewal
  recursion): the reference the closed form is tested against, with cost Σ_rows steps·d.

Both take the one-step map's coefficients and its stability from
:mod:`ktsweep.engines.onestep`. Divergence has one definition for every estimator
(:data:`DIVERGED_FACTOR`, :func:`divergence_limit`), and every solver ends with
:func:`settle`, which turns a number float64 cannot hold (an overflow, a NaN) into a
diverged row: no outcome of a run depends on the BLAS kernel beyond rounding.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ktsweep.engines.onestep import curvature, one_step
from ktsweep.engines.stretch import StretchMap, spectrum_key, stretch_map
from ktsweep.model.spectra import Phases, phase_product

DIVERGED_FACTOR = 1e4
"""A run diverged when, at any step, Σ_i a_i + s² (twice its excess risk plus the noise floor)
exceeds this multiple of its untrained value Σ_i a_i(0) + s². Stable SGD reaches at most the
stationary level s²/(1 − Σ_i g_i/d_i) (see :mod:`ktsweep.engines.stretch`), far below this unless
the step is within 10⁻⁴ of the stability edge; an unstable run crosses it geometrically fast.
Monte Carlo applies the same rule to each replicate (``mc``)."""


_BLAS: dict[str, Any] = {"controller": None, "depth": 0, "limiter": None}
_BLAS_LOCK = threading.Lock()


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run BLAS single-threaded inside (re-entrant, shared by threads; the last one out
    restores the previous limits).

    The solvers' products are small or medium (rows × d by d × roots), and a sweep already
    gives every core its own dask worker: OpenBLAS's extra threads busy-wait for work and, on
    a loaded machine, slow the engine many times over (measured: one d = 1000 point at
    N = n = 2^30, warm cache, 13.5 s with two BLAS threads against 0.9 s with one, load 12 on
    2 cores).
    """
    with _BLAS_LOCK:
        if _BLAS["depth"] == 0:
            if _BLAS["controller"] is None:
                from threadpoolctl import ThreadpoolController

                _BLAS["controller"] = ThreadpoolController()
            _BLAS["limiter"] = _BLAS["controller"].limit(limits=1, user_api="blas")
        _BLAS["depth"] += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS["depth"] -= 1
            if _BLAS["depth"] == 0:
                _BLAS["limiter"].restore_original_limits()


_STEP_BELOW = 1
"""Stretch pieces shorter than this many steps per mode are stepped, not decomposed."""


ROUND_OFF = 1e-14
"""Σa + s² may come out below 0 by rounding, down to this multiple of the divergence limit
(the largest value a run that is kept can have held, 10⁴ times its untrained one); below
that the number is no rounding error and the run counts as diverged."""


def divergence_limit(untrained: np.ndarray | float, noise: np.ndarray | float) -> np.ndarray:
    """The bound on Σ_i a_i + s² above which a run is diverged (one place for the rule)."""
    return DIVERGED_FACTOR * np.maximum(np.asarray(untrained) + np.asarray(noise), 1e-300)


@dataclass
class Runs:
    """Stacked runs; every array has a leading row dimension."""

    lam: np.ndarray  # (rows, d) spectrum
    a0: np.ndarray  # (rows, d) initial E[η_i²]
    noise: np.ndarray  # (rows,) label-noise variance s²
    batch: np.ndarray  # (rows,) batch size
    phases: list[Phases]  # per row
    steps: np.ndarray  # (rows,) steps run; −1: infinitely many (the limit, evolve only)
    kinds: list[str] | None = None  # per row schedule kind (needed for infinite rows)
    psi: np.ndarray | None = None  # (rows,) fourth moment E z_i⁴ of the inputs; None: 3

    def fourth_moment(self) -> np.ndarray:
        """ψ per row (3, the Gaussian, where not given)."""
        rows = len(self.steps)
        return np.full(rows, 3.0) if self.psi is None else np.asarray(self.psi, np.float64)


@dataclass
class Moments:
    """What the recursion returns per row."""

    a: np.ndarray  # (rows, d) final E[η_i²]
    contraction: np.ndarray  # (rows, d) P_i = Π_t (1 − γ_t λ_i)
    curve: np.ndarray  # (rows, C) excess risk ½Σa at checkpoints (NaN past the run)
    diverged: np.ndarray  # (rows,) bool

    @property
    def risk(self) -> np.ndarray:
        return 0.5 * self.a.sum(axis=1)


class _BlockOperators(NamedTuple):
    """A constant step's per-step factors and its k-step operators (:func:`_block_operators`)."""

    decay: np.ndarray  # (d,) D_i
    gain: np.ndarray  # (d,) g_i
    powers: np.ndarray  # (k, d) D_i^j
    renewal: np.ndarray  # (k, k) the renewal solution R


def _block_operators(lam: np.ndarray, gamma: float, inv_b: float, k: int, psi: float = 3.0
                     ) -> _BlockOperators | None:
    """Per-step factors D, g and the k-step operators for a constant step γ; None when they
    do not fit in float64 (the map grows by more than about 10^308 within k steps).

    Within a constant-γ stretch, S_j = Σ_i a_i(t+j) + s² obeys the renewal equation
    S_j = x_j + Σ_{l<j} κ_{j−1−l} S_l, x_j = Σ_i D_i^j a_i(t) + s², κ_q = Σ_i D_i^q g_i: a
    unit lower-triangular Toeplitz system. Its solution is S = R x with R the Toeplitz matrix
    of the renewal sequence ρ_0 = 1, ρ_j = Σ_{l<j} κ_{j−1−l} ρ_l (S's response to x = e_0),
    which is computed by that recursion, not by inverting the system: the entries of an
    unstable map's system overflow, and a general inverse of them then depends on the BLAS
    kernel (a singular-matrix error on one, inf on another). So k steps cost two small
    matrix products instead of 4k passes over the modes.
    """
    gl = gamma * lam
    decay = 1.0 - 2.0 * gl + gl * gl * curvature(inv_b, psi)
    gain = gl * gl * inv_b
    powers = np.empty((k, lam.size))
    powers[0] = 1.0
    with np.errstate(all="ignore"):
        if k > 1:
            np.cumprod(np.broadcast_to(decay, (k - 1, lam.size)), axis=0, out=powers[1:])
        kappa = powers @ gain
        rho = np.empty(k)
        rho[0] = 1.0
        for j in range(1, k):
            rho[j] = kappa[j - 1::-1] @ rho[:j]
    if not (np.isfinite(powers[-1]).all() and np.isfinite(rho).all()):
        return None
    lag = np.subtract.outer(np.arange(k), np.arange(k))
    renewal = np.where(lag >= 0, rho[np.maximum(lag, 0)], 0.0)
    return _BlockOperators(decay, gain, powers, renewal)


_GROWTH = 256.0
"""Largest size a power D_i^j of a negative per-step factor may reach within one block."""


def _block_length(lam: np.ndarray, gamma: float, inv_b: float, psi: float, block: int) -> int:
    """The longest block (at most ``block`` steps) whose powers of the factors D_i < −1 stay
    within :data:`_GROWTH` in size.

    The block's renewal solution sums D_i^j a_i with alternating signs where D_i < −1
    (possible for inputs with ψ < 2 at large steps, in a map that is stable all the same),
    and loses about |D_i|^(k−1) ε to cancellation: 64 steps at D = −2.2 lost every digit.
    Factors in [−1, ∞) keep the full block: their powers do not alternate in growing
    size (D ≥ 0 always for Gaussian inputs, whose blocks never shorten)."""
    gl = gamma * lam
    low = float(np.min(1.0 - 2.0 * gl + gl * gl * curvature(inv_b, psi), initial=0.0))
    if not low < -1.0:
        return block
    return max(1, min(block, 1 + int(np.log(_GROWTH) / np.log(-low))))


class _Checkpoints(NamedTuple):
    """The learning-curve checkpoints, and their ascending order (a stretch's checkpoints are
    a slice of it)."""

    steps: np.ndarray  # (C,) as given
    order: np.ndarray  # positions in ascending order of step
    ascending: np.ndarray  # steps[order]


def evolve_steps(runs: Runs, checkpoints: np.ndarray | None = None, block: int = 64
                 ) -> Moments:
    """:func:`_evolve_steps` with BLAS single-threaded (:func:`one_blas_thread`)."""
    with one_blas_thread():
        return _evolve_steps(runs, checkpoints, block)


@dataclass(eq=False)
class _ByLength:
    """The runs sorted by decreasing steps (the first ``active`` rows are the running ones),
    their parameters as float64 arrays."""

    order: np.ndarray  # sorted position → row of the runs
    lam: np.ndarray  # (rows, d)
    noise: np.ndarray  # (rows,)
    inv_b: np.ndarray  # (rows,) 1 / batch
    psi: np.ndarray  # (rows,)
    steps: np.ndarray  # (rows,)
    phases: list[Phases]


class _Start(NamedTuple):
    """A constant step that takes over a run at some step."""

    row: int
    gamma: float


@dataclass(eq=False)
class _Stepper:
    """The moments being stepped and each row's current block operators
    (:func:`_block_operators`); a diverged row holds NaN and the identity."""

    a: np.ndarray  # (rows, d) E[η_i²]
    diverged: np.ndarray  # (rows,) bool
    decay: np.ndarray  # (rows, d)
    gain: np.ndarray  # (rows, d)
    powers: np.ndarray  # (rows, k, d)
    renewal: np.ndarray  # (rows, k, k)

    @classmethod
    def start(cls, a: np.ndarray, k: int) -> _Stepper:
        """Rows at ``a``, each with the identity operators of blocks of ``k`` steps."""
        rows, d = a.shape
        return cls(a=a, diverged=np.zeros(rows, dtype=bool), decay=np.ones((rows, d)),
                   gain=np.zeros((rows, d)), powers=np.ones((rows, k, d)),
                   renewal=np.broadcast_to(np.eye(k), (rows, k, k)).copy())

    def take(self, row: int, ops: _BlockOperators) -> None:
        """Row ``row`` steps with ``ops`` from now on."""
        self.decay[row], self.gain[row], self.powers[row], self.renewal[row] = ops

    def freeze(self, idx: np.ndarray) -> None:
        """Rows ``idx`` are diverged: NaN moments, identity operators."""
        self.diverged[idx] = True
        self.decay[idx], self.gain[idx], self.powers[idx], self.a[idx] = 1.0, 0.0, 1.0, np.nan
        self.renewal[idx] = np.eye(self.renewal.shape[1])


def _evolve_steps(runs: Runs, checkpoints: np.ndarray | None, block: int) -> Moments:
    """Reference solver: iterate a_i ← (1 − 2γλ_i + γ²λ_i² c) a_i + (γ²λ_i²/B)(Σ_j a_j + s²),
    c = :func:`curvature` (1 + 1/B for Gaussian inputs).

    Steps advance in blocks of up to ``block`` (never across a schedule change or the end
    of a run); learning-curve checkpoints inside a block are read from its renewal solution.
    """
    rows, d = runs.a0.shape
    if (np.asarray(runs.steps) < 0).any():
        raise ValueError("evolve_steps cannot take infinitely many steps (steps = -1); "
                         "use evolve, which computes the limit")
    ckpt = np.zeros(0, dtype=np.int64) if checkpoints is None else np.asarray(checkpoints)
    curve = np.full((rows, len(ckpt)), np.nan)
    if rows == 0:
        return Moments(runs.a0.copy(), np.ones((0, d)), curve, np.zeros(0, bool))
    order = np.argsort(ckpt)
    ck = _Checkpoints(ckpt, order, ckpt[order])
    runs_by = _by_length(runs)
    a = np.array(runs.a0[runs_by.order], dtype=np.float64)
    state = _Stepper.start(a, _block_size(runs_by, block))
    limit = divergence_limit(a.sum(axis=1), runs_by.noise)
    _step_all(runs_by, state, limit, ck, curve)
    return _stepped_moments(runs_by, state, limit, curve)


def _by_length(runs: Runs) -> _ByLength:
    """``runs`` sorted by decreasing steps (stable)."""
    order = np.argsort(-np.asarray(runs.steps), kind="stable")
    return _ByLength(
        order=order, lam=np.ascontiguousarray(runs.lam[order], dtype=np.float64),
        noise=np.asarray(runs.noise, dtype=np.float64)[order],
        inv_b=1.0 / np.asarray(runs.batch, dtype=np.float64)[order],
        psi=runs.fourth_moment()[order], steps=np.asarray(runs.steps, dtype=np.int64)[order],
        phases=[runs.phases[i] for i in order])


def _block_size(runs: _ByLength, block: int) -> int:
    """Steps per block: at most ``block``, fewer where the (rows, k, d) operator stack would
    outgrow the cache or a factor's powers would lose digits (:func:`_block_length`)."""
    rows, d = runs.lam.shape
    k = int(max(8, min(block, (1 << 19) // max(1, rows * d))))
    return min([k] + [_block_length(runs.lam[r], gamma, runs.inv_b[r], runs.psi[r], k)
                      for r, ph in enumerate(runs.phases) for _, gamma in ph])


def _step_all(runs: _ByLength, state: _Stepper, limit: np.ndarray, ck: _Checkpoints,
              curve: np.ndarray) -> None:
    """Step every run to its end, a block at a time, in place; a block ends at a schedule
    change or a run's end, and every row changes its operators at its own changes."""
    starts: dict[int, list[_Start]] = {}
    for row, ph in enumerate(runs.phases):
        for start, gamma in ph:
            if start < runs.steps[row]:
                starts.setdefault(int(start), []).append(_Start(row, gamma))
    bounds = np.array(sorted(set(starts) | {int(s) for s in runs.steps}), dtype=np.int64)
    k = state.powers.shape[1]
    t, active = 0, len(runs.steps)
    with np.errstate(all="ignore"):
        while True:
            lo, hi = np.searchsorted(ck.ascending, [t, t + 1])
            for c in ck.order[lo:hi]:
                curve[:active, c] = 0.5 * state.a[:active].sum(axis=1)
            while active and runs.steps[active - 1] == t:
                active -= 1
            if not active:
                break
            for row, gamma in starts.get(t, ()):
                if state.diverged[row]:
                    continue
                ops = _block_operators(runs.lam[row], gamma, runs.inv_b[row], k,
                                       runs.psi[row])
                if ops is None:  # the step explodes within one block: diverged
                    state.freeze(np.array([row]))
                else:
                    state.take(row, ops)
            nxt = bounds[np.searchsorted(bounds, t, side="right")]
            m = int(min(k, nxt - t))
            _step_block(runs.noise, state, limit, ck, curve, t, m, active)
            t += m


def _step_block(noise: np.ndarray, state: _Stepper, limit: np.ndarray, ck: _Checkpoints,
                curve: np.ndarray, t: int, m: int, active: int) -> None:
    """Advance the first ``active`` rows by ``m`` steps from step ``t`` (in place) through
    the renewal solution S = R x, reading the checkpoints inside the block off S and freezing
    the rows whose Σa + s² crossed ``limit`` within it."""
    cur = state.a[:active]
    pw = state.powers[:active, :m]
    x = np.matmul(pw, cur[:, :, None])[:, :, 0]
    x += noise[:active, None]
    s = np.matmul(state.renewal[:active, :m, :m], x[:, :, None])[:, :, 0]
    lo, hi = np.searchsorted(ck.ascending, [t + 1, t + m])
    for c in ck.order[lo:hi]:
        curve[:active, c] = 0.5 * (s[:, ck.steps[c] - t] - noise[:active])
    w = np.matmul(s[:, None, ::-1], pw)[:, 0]
    state.a[:active] = pw[:, m - 1] * state.decay[:active] * cur + state.gain[:active] * w
    bad = ~(s.max(axis=1) < limit[:active]) & ~state.diverged[:active]
    if bad.any():
        state.freeze(np.flatnonzero(bad))


def _stepped_moments(runs: _ByLength, state: _Stepper, limit: np.ndarray, curve: np.ndarray
                     ) -> Moments:
    """The stepped runs' :class:`Moments` in the runs' own order: the last divergence checks
    (Σa + s² at the limit, Σa below 0 beyond rounding), the contractions, :func:`settle`."""
    a, rows = state.a, len(runs.steps)
    bad = ~(a.sum(axis=1) + runs.noise < limit)
    if bad.any():
        state.freeze(np.flatnonzero(bad))
    curve[~np.isfinite(curve)] = np.nan

    bad = ~(a.sum(axis=1) >= -ROUND_OFF * limit)
    if bad.any():
        state.freeze(np.flatnonzero(bad))
    with np.errstate(all="ignore"):
        contraction = np.stack(
            [phase_product(runs.phases[r], int(runs.steps[r]), runs.lam[r])
             for r in range(rows)]
        )
    contraction[state.diverged] = np.nan
    inverse_order = np.empty_like(runs.order)
    inverse_order[runs.order] = np.arange(rows)
    return settle(Moments(a[inverse_order], contraction[inverse_order], curve[inverse_order],
                          state.diverged[inverse_order]), limit[inverse_order])


_OPS: dict[tuple[Any, ...], _BlockOperators | None] = {}
"""Block operators of recent (λ, γ, B): the points of a sweep share their schedules' steps."""


def _step_stretch(lam: np.ndarray, a: np.ndarray, noise: float, gamma: float, inv_b: float,
                  length: int, times: np.ndarray, limit: float, block: int = 64,
                  psi: float = 3.0) -> tuple[np.ndarray, np.ndarray, bool]:
    """Step one run through a stretch its closed form cannot take (map not strictly stable).

    Returns a, ½Σa at ``times`` (1 ≤ t ≤ length) and whether Σa + s² crossed ``limit``;
    stops at the first block that crosses it (an unstable map grows geometrically, so this
    ends quickly whatever the stretch length).
    """
    curve = np.full(len(times), np.nan)
    block = _block_length(lam, gamma, inv_b, psi, block)
    key = (hash(lam.tobytes()), lam.size, gamma, inv_b, block, psi)
    try:  # (thread-safe: one lookup, and each thread keeps its own reference)
        ops = _OPS[key]
    except KeyError:
        ops = _block_operators(lam, gamma, inv_b, block, psi)
        if len(_OPS) > 256:
            _OPS.clear()
        _OPS[key] = ops
    if ops is None:
        return a, curve, True
    decay, gain, powers, renewal = ops
    t = 0
    with np.errstate(all="ignore"):
        while t < length:
            m = min(block, length - t)
            pw = powers[:m]
            s = renewal[:m, :m] @ (pw @ a + noise)
            for j, tj in enumerate(times):
                if t < tj <= t + m - 1:
                    curve[j] = 0.5 * (s[tj - t] - noise)
            a = pw[m - 1] * decay * a + gain * (s[::-1] @ pw)
            t += m
            total = a.sum() + noise
            for j, tj in enumerate(times):
                if tj == t:
                    curve[j] = 0.5 * (total - noise)
            if not (s.max() < limit and total < limit):
                return a, curve, True
    return a, curve, False


def evolve(runs: Runs, checkpoints: np.ndarray | None = None) -> Moments:
    """:func:`_evolve` with BLAS single-threaded (:func:`one_blas_thread`)."""
    with one_blas_thread():
        return _evolve(runs, checkpoints)


class _Piece(NamedTuple):
    """One constant-step stretch of a run, with the checkpoints inside it."""

    start: int
    stop: int
    gamma: float
    ck_lo: int  # its checkpoints, start < t ≤ stop: ck_order[ck_lo:ck_hi]
    ck_hi: int


class _Pending(NamedTuple):
    """A run's stretch of this round after its head is stepped; when it has a rest, the rest
    goes through its map in closed form."""

    row: int
    gamma: float
    length: int  # steps of the stretch
    head: int  # steps of its start already stepped
    inside: np.ndarray  # the curve positions of its checkpoints
    rel: np.ndarray  # their steps counted from the stretch's start (ascending)
    vals: np.ndarray  # their values, filled in as the stretch advances
    blew: bool  # the head crossed the divergence limit


@dataclass(eq=False)
class _Rows:
    """Every run's parameters (by row) and its moments as the rounds advance them."""

    lam: np.ndarray  # (rows, d)
    lam_key: list[tuple[int, int]]  # spectrum_key of each row's λ
    noise: np.ndarray  # (rows,)
    inv_b: np.ndarray  # (rows,) 1 / batch
    psi: np.ndarray  # (rows,)
    steps: np.ndarray  # (rows,) −1: infinitely many
    limit: np.ndarray  # (rows,) divergence_limit of the untrained run
    a: np.ndarray  # (rows, d) E[η_i²] so far
    contraction: np.ndarray  # (rows, d)
    curve: np.ndarray  # (rows, C)
    diverged: np.ndarray  # (rows,) bool


def _evolve(runs: Runs, checkpoints: np.ndarray | None) -> Moments:
    """Advance every run stretch by stretch in closed form (cost independent of N and n).

    Same contract as :func:`evolve_steps`; rows with ``steps = -1`` get the limit of
    infinitely many steps (:func:`limit_moments`). Rows advance in rounds, one stretch each;
    within a round, the rows whose stretch has the same map (same λ, γ, B: the runs of a
    sweep's points share their schedules' step sizes γ0·2^-j) go through it together, two
    matrix products for all of them (:meth:`~ktsweep.engines.stretch.StretchMap.advance_many`).
    Within a stretch, a prefix shorter than ``_STEP_BELOW·d`` steps (the stretch itself when
    short, else its start up to the checkpoints near it) is stepped, which is cheaper than
    decomposing (:func:`_step_head`); the rest is advanced in closed form, its checkpoints
    read as O(d) sums (:func:`_advance_together`). Divergence follows
    :data:`DIVERGED_FACTOR`: a strictly stable stretch cannot grow without bound, and its Σa
    is bounded above by the ``peak`` of the closed form; only when that bound reaches the
    limit is Σa evaluated along the stretch (64 log-spaced steps). A stretch that is not
    strictly stable is stepped until it ends or crosses the limit.
    """
    ckpt = np.zeros(0, dtype=np.int64) if checkpoints is None else np.asarray(checkpoints)
    order = np.argsort(ckpt, kind="stable")
    ck = _Checkpoints(ckpt, order, ckpt[order])
    st = _rows(runs, ckpt)
    _take_limits(runs, st)
    plans = _plans(runs, st, ck)
    done: list[int] = []  # rows whose stretch of this round is over, checked together
    # this call's maps by key (rows of a sweep share them)
    maps: dict[tuple[Any, ...], StretchMap | None] = {}
    depth = max((len(p) for p in plans.values()), default=0)
    with np.errstate(all="ignore"):
        for rnd in range(depth):
            groups: dict[int, tuple[StretchMap, list[_Pending]]] = {}
            for r, plan in plans.items():
                if st.diverged[r] or rnd >= len(plan):
                    continue
                sm = _map_of(st, r, plan[rnd].gamma, maps)
                pending = _step_head(st, r, plan[rnd], sm, ck)
                if pending.blew or pending.head == pending.length or sm is None:
                    _finish(st, pending, pending.blew, done)  # (no map: stepped whole)
                    continue
                groups.setdefault(id(sm), (sm, []))[1].append(pending)
            for sm, members in groups.values():
                _advance_together(st, sm, members, done)
            if done:
                _check_ended(st, done)
                done.clear()
    for r in plans:
        if not st.diverged[r]:
            st.contraction[r] = phase_product(runs.phases[r], int(st.steps[r]), st.lam[r])
            st.curve[r, ckpt > st.steps[r]] = np.nan
    return settle(Moments(st.a, st.contraction, st.curve, st.diverged), st.limit)


def _rows(runs: Runs, ckpt: np.ndarray) -> _Rows:
    """The runs' parameters as float64 arrays and their untrained moments (the curve read at
    checkpoint 0, NaN elsewhere)."""
    rows, d = runs.a0.shape
    a = np.array(runs.a0, dtype=np.float64)
    lam = np.ascontiguousarray(runs.lam, dtype=np.float64)
    noise = np.asarray(runs.noise, dtype=np.float64)
    curve = np.full((rows, len(ckpt)), np.nan)
    curve[:, ckpt == 0] = 0.5 * a.sum(axis=1)[:, None]
    return _Rows(
        lam=lam, lam_key=[spectrum_key(lam[r]) for r in range(rows)], noise=noise,
        inv_b=1.0 / np.asarray(runs.batch, dtype=np.float64), psi=runs.fourth_moment(),
        steps=np.asarray(runs.steps, dtype=np.int64),
        limit=divergence_limit(a.sum(axis=1), noise), a=a, contraction=np.ones((rows, d)),
        curve=curve, diverged=np.zeros(rows, dtype=bool),
    )


def _take_limits(runs: Runs, st: _Rows) -> None:
    """The rows of infinitely many steps (``steps = -1``) take their limit
    (:func:`limit_moments`), in place; a limit that does not exist or lies beyond the
    divergence limit is diverged."""
    for r in np.flatnonzero(st.steps < 0):
        kind = "geometric" if runs.kinds is None else runs.kinds[r]
        ends = limit_moments(st.lam[r], st.a[r], float(st.noise[r]), float(st.inv_b[r]), kind,
                             runs.phases[r][0][1], float(st.psi[r]))
        if ends is None or not ends[0].sum() + st.noise[r] < st.limit[r]:
            st.diverged[r] = True
        else:
            st.a[r], st.contraction[r] = ends


def _plans(runs: Runs, st: _Rows, ck: _Checkpoints) -> dict[int, list[_Piece]]:
    """Each finite row's stretches (empty ones dropped, the last cut at the run's end), with
    the slice of checkpoints inside each."""
    plans: dict[int, list[_Piece]] = {}
    for r in np.flatnonzero(st.steps >= 0).tolist():
        phases = runs.phases[r]
        end = int(st.steps[r])
        stops = [min(s, end) for s, _ in phases[1:]] + [end]
        keep = [(start, stop, gamma) for (start, gamma), stop in zip(phases, stops, strict=True)
                if stop > start]
        cut = np.searchsorted(ck.ascending, [x for start, stop, _ in keep
                                             for x in (start, stop)], side="right").tolist()
        plans[r] = [_Piece(start, stop, gamma, cut[2 * j], cut[2 * j + 1])
                    for j, (start, stop, gamma) in enumerate(keep)]
    return plans


def _map_of(st: _Rows, r: int, gamma: float, maps: dict[tuple[Any, ...], StretchMap | None]
            ) -> StretchMap | None:
    """Row ``r``'s stretch map at step ``gamma``, built once per (λ, γ, B, ψ) in ``maps``."""
    key = (st.lam_key[r], gamma, st.inv_b[r], st.psi[r])
    if key in maps:
        return maps[key]
    sm = maps[key] = stretch_map(st.lam[r], gamma, float(st.inv_b[r]), st.lam_key[r],
                                 float(st.psi[r]))
    return sm


def _step_head(st: _Rows, r: int, piece: _Piece, sm: StretchMap | None, ck: _Checkpoints
               ) -> _Pending:
    """Step the head of row ``r``'s stretch ``piece`` (in place on ``st.a``): the whole
    stretch where stepping it is the better way, else its prefix up to the checkpoints near
    its start.

    Short pieces are cheaper to step (O(t·d)) than to decompose (O(d²)): the stretch itself
    when short, else its prefix up to the checkpoints near its start (their gaps are short,
    so they would need every root of the map). A map whose fixed point lies beyond the limit
    is stepped too: the closed form reads a(t) as a_∞ + M^t (a − a_∞) and would lose ε·|a_∞|
    to cancellation (all of it at the edge, where a_∞ ∝ 1/f0 has no bound), while the steps
    reach the limit as a_∞ is approached, or end before.
    """
    d = st.lam.shape[1]
    length = piece.stop - piece.start
    inside = ck.order[piece.ck_lo:piece.ck_hi]
    rel = ck.ascending[piece.ck_lo:piece.ck_hi] - piece.start  # ascending
    if (sm is None or length <= _STEP_BELOW * d
            or not sm.steady(st.a[r], float(st.noise[r])) < st.limit[r]):
        head = length
    else:
        j = int(np.searchsorted(rel, _STEP_BELOW * d, side="right"))
        head = int(rel[j - 1]) if j else 0
    vals = np.full(rel.size, np.nan)
    blew = False
    if head:
        first = rel <= head
        st.a[r], vals[first], blew = _step_stretch(
            st.lam[r], st.a[r], float(st.noise[r]), piece.gamma, float(st.inv_b[r]), head,
            rel[first], float(st.limit[r]), psi=float(st.psi[r]))
    return _Pending(r, piece.gamma, length, head, inside, rel, vals, blew)


def _advance_together(st: _Rows, sm: StretchMap, members: list[_Pending], done: list[int]
                      ) -> None:
    """Advance the rest of every member's stretch through their shared map in closed form
    (stepped when a root of the map is not found), in place, and decide each one's
    divergence from the closed form's peak (Σa along the stretch where the peak reaches the
    limit)."""
    idx = [m.row for m in members]
    res = sm.advance_many(st.a[idx], st.noise[idx],
                          np.array([m.length - m.head for m in members]),
                          [m.rel[m.rel > m.head] - m.head for m in members])
    for k, m in enumerate(members):
        r, rest = m.row, m.length - m.head
        later = m.rel > m.head
        noise, limit = st.noise[r], st.limit[r]
        if res is None:  # a root was not found: step the rest
            st.a[r], m.vals[later], blew = _step_stretch(
                st.lam[r], st.a[r], float(noise), m.gamma, float(st.inv_b[r]),
                rest, m.rel[later] - m.head, float(limit), psi=float(st.psi[r]))
        else:
            blew = False
            if not res.peak[k] + noise < limit:
                probe = np.unique(np.geomspace(1, rest, 64).astype(np.int64))
                along = sm.advance(st.a[r], float(noise), rest, probe)
                blew = along is None or not (2.0 * along.curve.max() + noise < limit)
            st.a[r], m.vals[later] = res.a[k], res.curves[k]
        _finish(st, m, blew, done)


def _finish(st: _Rows, m: _Pending, blew: bool, done: list[int]) -> None:
    """Row ``m.row``'s stretch of this round is over: record its checkpoints, mark it for
    :func:`_check_ended` and, where it crossed the limit, diverged."""
    st.curve[m.row, m.inside] = m.vals
    done.append(m.row)
    if blew:
        st.diverged[m.row] = True


def _check_ended(st: _Rows, done: list[int]) -> None:
    """Rows whose Σa at a stretch's end is below 0 beyond rounding or whose Σa + s² is at the
    divergence limit are diverged (in place)."""
    ended = np.array(done)
    total = st.a[ended].sum(axis=1)
    st.diverged[ended[~((total >= -ROUND_OFF * st.limit[ended])
                        & (total + st.noise[ended] < st.limit[ended]))]] = True


def settle(m: Moments, limit: np.ndarray) -> Moments:
    """The solvers' last word on each row, in place (and returned).

    A row is diverged when its Σa + s² crossed ``limit`` (:func:`divergence_limit`, decided
    along the run), when any of its final second moments or contractions is not a finite
    number (an overflow, or an operation without an answer), or when Σa is below 0 by more
    than rounding (:data:`ROUND_OFF`); a diverged row's a and contraction are NaN. In the
    other rows a second moment or a learning-curve value below 0 is rounding of a true value
    near 0, and reads 0. So a row that is not diverged holds finite numbers, a ≥ 0."""
    with np.errstate(all="ignore"):
        sound = (np.isfinite(m.a).all(axis=1) & np.isfinite(m.contraction).all(axis=1)
                 & (m.a.sum(axis=1) >= -ROUND_OFF * np.asarray(limit)))
    m.diverged |= ~sound
    m.a[m.diverged] = np.nan
    m.contraction[m.diverged] = np.nan
    np.maximum(m.a, 0.0, out=m.a)  # NaN stays NaN
    np.maximum(m.curve, 0.0, out=m.curve)
    return m


def limit_moments(lam: np.ndarray, a0: np.ndarray, noise: float, inv_b: float, kind: str,
                  gamma0: float, psi: float = 3.0) -> tuple[np.ndarray, np.ndarray] | None:
    """a and P after infinitely many steps of a schedule planned for its own horizon.

    The limit exists iff γ0's map is strictly stable
    (:func:`~ktsweep.engines.onestep.strictly_stable`: every eigenvalue in (−1, 1)): the
    first stretch lasts unboundedly long at γ0, and the later, smaller steps are stable too
    (stability is monotone in γ, docs/science/limits.md §1); otherwise None (diverged).
    Modes with λ_i = 0 keep a_i and P_i = 1; every live mode has |1 − γλ_i| < 1 (a
    stable map drives a_i ≥ (E η_i)² to its fixed point from any start, also without noise,
    where that is 0), so P_i → 0. Live second moments go to the fixed point of the last
    step: for ``constant`` that is γ0's, a_∞,i = (g_i/d_i) s_eff² / (1 − Σ_j g_j/d_j) with
    s_eff² = s² + Σ_{λ_j=0} a_j (the unlearnable modes act as label noise); for the
    decaying schedules the step tends to 0, so does the fixed point, and a_i → 0.
    Derivation: docs/science/limits.md.
    """
    step = one_step(lam, gamma0, inv_b, psi)
    if not step.stable:
        return None
    live = step.live
    a = np.array(a0, dtype=np.float64)
    contraction = np.ones_like(a)
    contraction[live] = 0.0
    if kind == "constant":
        a[live] = step.ratio * (noise + float(np.delete(a, live).sum())) / step.f0
    else:
        a[live] = 0.0
    return a, contraction
