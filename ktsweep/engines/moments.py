"""The diagonal second-moment recursion of one-pass SGD (docs/science/exact.md), many runs at once.

A *run* is one SGD trajectory in expectation: a spectrum λ, an initial second moment
a(0), a label-noise variance s², a batch size, a piecewise-constant schedule and a number
of steps. Runs are stacked as rows of (rows, d) float64 arrays; the step loop is shared
and touches only rows still running, so the cost is Σ_rows steps·d, not rows·max(steps)·d.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ktsweep.model.spectra import Phases, phase_product

DIVERGED_FACTOR = 1e8
"""A run whose Σa exceeds this multiple of its start (plus s²) is declared diverged."""


@dataclass
class Runs:
    """Stacked runs; every array has a leading row dimension."""

    lam: np.ndarray  # (rows, d) spectrum
    a0: np.ndarray  # (rows, d) initial E[η_i²]
    noise: np.ndarray  # (rows,) label-noise variance s²
    batch: np.ndarray  # (rows,) batch size
    phases: list[Phases]  # per row
    steps: np.ndarray  # (rows,) steps run


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


def _block_operators(lam: np.ndarray, gamma: float, inv_b: float, k: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Per-step factors D, g and the k-step operators for a constant step γ.

    Within a constant-γ stretch, S_j = Σ_i a_i(t+j) + s² obeys the renewal equation
    S_j = Σ_i D_i^j a_i(t) + s² + Σ_{l<j} κ_{j−1−l} S_l with κ_q = Σ_i D_i^q g_i, so k steps
    cost two small matrix products instead of 4k passes over the modes.
    """
    gl = gamma * lam
    decay = 1.0 - 2.0 * gl + gl * gl * (1.0 + inv_b)
    gain = gl * gl * inv_b
    powers = np.empty((k, lam.size))
    powers[0] = 1.0
    if k > 1:
        np.cumprod(np.broadcast_to(decay, (k - 1, lam.size)), axis=0, out=powers[1:])
    kappa = powers @ gain
    if not (np.isfinite(powers[-1]).all() and np.isfinite(kappa).all()):
        return None
    lower = np.eye(k)
    for j in range(1, k):
        lower[j, :j] = -kappa[j - 1 :: -1][:j]
    inverse = np.linalg.inv(lower)  # unit lower-triangular: always invertible when finite
    if not np.isfinite(inverse).all():
        return None
    return decay, gain, powers, inverse


def evolve(runs: Runs, checkpoints: np.ndarray | None = None, block: int = 64) -> Moments:
    """Iterate a_i ← (1 − 2γλ_i + γ²λ_i²(1 + 1/B)) a_i + (γ²λ_i²/B)(Σ_j a_j + s²).

    Steps advance in blocks of up to ``block`` (never across a schedule change or the end
    of a run); learning-curve checkpoints inside a block are read from its renewal solution.
    """
    rows, d = runs.a0.shape
    ckpt = np.zeros(0, dtype=np.int64) if checkpoints is None else np.asarray(checkpoints)
    curve = np.full((rows, len(ckpt)), np.nan)
    if rows == 0:
        return Moments(runs.a0.copy(), np.ones((0, d)), curve, np.zeros(0, bool))

    order = np.argsort(-np.asarray(runs.steps), kind="stable")
    lam = np.ascontiguousarray(runs.lam[order], dtype=np.float64)
    a = np.array(runs.a0[order], dtype=np.float64)
    noise = np.asarray(runs.noise, dtype=np.float64)[order]
    inv_b = 1.0 / np.asarray(runs.batch, dtype=np.float64)[order]
    steps = np.asarray(runs.steps, dtype=np.int64)[order]
    phases = [runs.phases[i] for i in order]
    # keep the (rows, k, d) operator stack near cache size: larger stacks take shorter blocks
    k = int(max(8, min(block, (1 << 19) // max(1, rows * d))))

    events: dict[int, list[tuple[int, float]]] = {}
    for row, ph in enumerate(phases):
        for start, gamma in ph:
            if start < steps[row]:
                events.setdefault(int(start), []).append((row, gamma))
    bounds = np.array(sorted(set(events) | {int(s) for s in steps}), dtype=np.int64)
    ck_order = np.argsort(ckpt)
    ck_sorted = ckpt[ck_order]

    decay = np.ones((rows, d))
    gain = np.zeros((rows, d))
    powers = np.ones((rows, k, d))
    inverse = np.broadcast_to(np.eye(k), (rows, k, k)).copy()
    start_total = a.sum(axis=1) + noise
    limit = DIVERGED_FACTOR * np.maximum(start_total, 1e-300)
    diverged = np.zeros(rows, dtype=bool)

    def freeze(idx: np.ndarray) -> None:
        diverged[idx] = True
        decay[idx], gain[idx], powers[idx], a[idx] = 1.0, 0.0, 1.0, np.nan
        inverse[idx] = np.eye(k)

    t, active = 0, rows
    with np.errstate(all="ignore"):
        while True:
            lo, hi = np.searchsorted(ck_sorted, [t, t + 1])
            for c in ck_order[lo:hi]:
                curve[:active, c] = 0.5 * a[:active].sum(axis=1)
            while active and steps[active - 1] == t:
                active -= 1
            if not active:
                break
            for row, gamma in events.get(t, ()):
                if diverged[row]:
                    continue
                ops = _block_operators(lam[row], gamma, inv_b[row], k)
                if ops is None:  # the step explodes within one block: diverged
                    freeze(np.array([row]))
                else:
                    decay[row], gain[row], powers[row], inverse[row] = ops
            nxt = bounds[np.searchsorted(bounds, t, side="right")]
            m = int(min(k, nxt - t))
            cur = a[:active]
            pw = powers[:active, :m]
            x = np.matmul(pw, cur[:, :, None])[:, :, 0]
            x += noise[:active, None]
            s = np.matmul(inverse[:active, :m, :m], x[:, :, None])[:, :, 0]
            lo, hi = np.searchsorted(ck_sorted, [t + 1, t + m])
            for c in ck_order[lo:hi]:
                curve[:active, c] = 0.5 * (s[:, ckpt[c] - t] - noise[:active])
            w = np.matmul(s[:, None, ::-1], pw)[:, 0]
            a[:active] = pw[:, m - 1] * decay[:active] * cur + gain[:active] * w
            bad = ~(s.max(axis=1) < limit[:active]) & ~diverged[:active]
            if bad.any():
                freeze(np.flatnonzero(bad))
            t += m
    bad = ~(a.sum(axis=1) + noise < limit)
    if bad.any():
        freeze(np.flatnonzero(bad))
    curve[~np.isfinite(curve)] = np.nan

    with np.errstate(all="ignore"):
        contraction = np.stack(
            [phase_product(phases[r], int(steps[r]), lam[r]) for r in range(rows)]
        )
    contraction[diverged] = np.nan
    inverse_order = np.empty_like(order)
    inverse_order[order] = np.arange(rows)
    return Moments(a[inverse_order], contraction[inverse_order], curve[inverse_order],
                   diverged[inverse_order])
