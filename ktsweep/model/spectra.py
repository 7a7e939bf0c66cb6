"""Spectra, targets, schedules (docs/science/model.md, training.md) for every estimator."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ktsweep.model.params import Point
from ktsweep.model.quantities import SPECTRUM_FITS
from ktsweep.model.spectrum_files import load_spectrum

Phases = list[tuple[int, float]]
"""A schedule as (first step, step size) pairs, starts increasing, first start 0."""


def spectrum(alpha: float, d: int, rank: int | None = None) -> np.ndarray:
    """Eigenvalues λ_i = i^{-α} for i ≤ rank, 0 beyond (float64, length d)."""
    r = d if rank is None else rank
    lam = np.zeros(d)
    lam[:r] = np.arange(1, r + 1, dtype=np.float64) ** (-alpha)
    return lam


def measured_spectrum(path: str, d: int, rank: int) -> np.ndarray:
    """The top d eigenvalues of a spectrum file (decreasing), 0 beyond ``rank``."""
    lam = np.array(load_spectrum(path).values[:d], dtype=np.float64)
    lam[rank:] = 0.0
    return lam


def teacher_spectrum(p: Point) -> np.ndarray:
    if p.spectrum_t is not None:
        return measured_spectrum(p.spectrum_t, p.d, p.rank_t)
    return spectrum(p.alpha_t, p.d, p.rank_t)


def student_spectrum(p: Point) -> np.ndarray:
    if p.spectrum_s is not None:
        return measured_spectrum(p.spectrum_s, p.d, p.rank_s)
    return spectrum(p.alpha_s, p.d, p.rank_s)


def spectrum_fits(points: Sequence[Point]) -> dict[str, np.ndarray]:
    """:data:`SPECTRUM_FITS` of each point: the fitted α (also the point's ``alpha_t`` /
    ``alpha_s``, which the theory reads), its standard error and the eigenvalue indices
    (1-based, inclusive) it was fitted on."""
    out = {k: np.full(len(points), np.nan) for k in SPECTRUM_FITS}
    for i, p in enumerate(points):
        for m, path in (("t", p.spectrum_t), ("s", p.spectrum_s)):
            if path is not None:
                fit = load_spectrum(path).fit
                out[f"spectrum_alpha_{m}"][i] = fit.alpha
                out[f"spectrum_alpha_se_{m}"][i] = fit.alpha_se
                out[f"spectrum_fit_first_{m}"][i] = fit.first
                out[f"spectrum_fit_last_{m}"][i] = fit.last
    return out


def coefficient_power(p: Point) -> np.ndarray:
    """E[c_i²]: the target's expected squared coefficients in teacher feature coordinates."""
    i = np.arange(1, p.d + 1, dtype=np.float64)
    if p.target == "gaussian":
        return np.ones(p.d)
    if p.target == "lowdim":
        assert p.k_dagger is not None  # make_point requires it for this target
        return np.where(i <= p.k_dagger, p.amplitude**2, 0.0)
    return i**p.beta  # power


def target_scale(p: Point) -> np.ndarray:
    """s_i with θ*_i = s_i c_i in semantic coordinates: sqrt(λ_T,i), the target set in the
    teacher's feature coordinates (zero beyond r_t), or, with ``alpha_target``, i^(−α/2) on
    every semantic direction, so a rank-deficient teacher misses part of it."""
    if p.alpha_target is None:
        return np.sqrt(teacher_spectrum(p))
    return np.sqrt(spectrum(p.alpha_target, p.d))


def target_energy(p: Point) -> np.ndarray:
    """e_i = E[θ*_i²] = s_i² E[c_i²] (semantic coordinates, :func:`target_scale`; computed
    from λ, not s², so that the aligned model's energies are bit for bit what they were)."""
    lam = teacher_spectrum(p) if p.alpha_target is None else spectrum(p.alpha_target, p.d)
    return lam * coefficient_power(p)


def target_coefficients(p: Point) -> np.ndarray | None:
    """Deterministic coefficients c (lowdim, power); None for the random gaussian target."""
    if p.target == "gaussian":
        return None
    return np.sqrt(coefficient_power(p))


def resolve_gamma0(spec: float | dict, lam: np.ndarray) -> list[float]:
    """Candidate initial steps for one run: [value], [c / tr Σ] or the tuning list."""
    if isinstance(spec, dict):
        if "scale" in spec:
            return [spec["scale"] / float(lam.sum())]
        return [float(g) for g in spec["tune"]]
    return [float(spec)]


def cutoff_threshold(samples: float, gamma0: float, kind: str = "upper") -> float:
    """Lemma 1's eigenvalue threshold for a run of M samples (or steps) at initial step γ0.

    ``upper``: 2 ln M log2 M / (γ0 M) (the upper bound's k*); ``lower``: log2 M / (γ0 M) (the
    lower bound's). Infinite (no mode above it) for M ≤ 1 or a non-positive γ0.
    """
    if not samples > 1 or not gamma0 > 0 or not math.isfinite(gamma0):
        return math.inf
    log2m = math.log2(samples)
    if kind == "upper":
        return 2.0 * math.log(samples) * log2m / (gamma0 * samples)
    if kind == "lower":
        return log2m / (gamma0 * samples)
    raise ValueError(f"kind {kind!r} is invalid: upper or lower")


def kstar(lam: np.ndarray, threshold: float) -> int:
    """k* = max{k : λ_k > threshold} for a non-increasing spectrum (0 when none): the one
    cutoff rule of the bounds, the figures and the fits."""
    return int(np.count_nonzero(np.asarray(lam) > threshold))


def kstar_power(alpha: float, threshold: float) -> float:
    """The continuous k* of a power-law spectrum λ_k = k^-α: the k where λ_k = threshold."""
    return threshold ** (-1.0 / alpha)


def geometric_period(horizon: int) -> int:
    """K = max(1, floor(H / log2 H)): steps between halvings of the geometric schedule."""
    if horizon < 2:  # log2(1) = 0: a one-step plan never halves
        return 1
    return max(1, math.floor(horizon / math.log2(horizon)))


def schedule_phases(kind: str, gamma0: float, steps: int, horizon: int) -> Phases:
    """Piecewise-constant schedule (docs/science/training.md), cut to the ``steps`` run."""
    if kind == "constant":
        phases = [(0, gamma0)]
    elif kind == "geometric":
        k = geometric_period(horizon)
        phases = [(j * k, gamma0 * 2.0**-j) for j in range(-(-steps // k))]
    elif kind == "tail_geometric":
        head = horizon // 2
        k = geometric_period(horizon - head)
        phases = [(0, gamma0)] if head > 0 else []
        phases += [(head + j * k, gamma0 * 2.0**-j) for j in range(max(0, -(-(steps - head) // k)))]
    else:  # validated in params; kept for direct callers
        raise ValueError(f"unknown schedule kind {kind!r}")
    return [(s, g) for s, g in phases if s < steps] or [(0, gamma0)]


def run_phases(p: Point, run: str, gamma0: float) -> Phases:
    """The schedule of one of a point's four runs, which must be finite (Monte Carlo): the
    teacher's (N samples, batch_t, planned for horizon_t), the direct student's (N samples,
    batch_s, planned for its own steps) or the T2S and ceiling students' (n samples, batch_s,
    planned for horizon_s)."""
    if run == "teacher":
        kind, steps, plan = p.schedule_t, p.steps_t, p.plan_t
    elif run == "direct":
        kind, steps, plan = p.schedule_s, p.steps_direct, p.steps_direct
    elif run in ("t2s", "ceiling"):
        kind, steps, plan = p.schedule_s, p.steps_s, p.plan_s
    else:
        raise ValueError(f"run {run!r} is invalid: teacher, direct, t2s or ceiling")
    if math.isinf(steps):
        raise ValueError(f"the {run} run takes infinitely many steps (N or n = inf): it has "
                         "no schedule to step through")
    return schedule_phases(kind, gamma0, int(steps), int(plan))


def step_sizes(phases: Phases, steps: int) -> np.ndarray:
    """The schedule expanded to one step size per step (for tests and plots)."""
    out = np.empty(steps)
    bounds = [s for s, _ in phases[1:]] + [steps]
    for (start, g), stop in zip(phases, bounds, strict=True):
        out[start:stop] = g
    return out


def phase_product(phases: Phases, steps: int, lam: np.ndarray) -> np.ndarray:
    """P_i = Π_t (1 − γ_t λ_i) over the steps run: the mean's contraction per mode.

    Each stretch contributes (1 − γλ_i)^L as exp(L·log1p(−γλ_i)): raising the rounded
    1 − γλ_i to L = 2^35 would carry a relative error of L·2^-53 (about 4e-6).
    """
    bounds = [s for s, _ in phases[1:]] + [steps]
    lengths = np.array([max(0, min(stop, steps) - start)
                        for (start, _), stop in zip(phases, bounds, strict=True)], dtype=float)
    x = np.array([g for _, g in phases])[:, None] * lam[None, :]
    if (x < 1.0).all():  # the common case in one product (no sign can flip)
        return np.exp(lengths @ np.log1p(-x))
    out = np.ones_like(lam)
    for (start, g), stop in zip(phases, bounds, strict=True):
        length = min(stop, steps) - start
        if length > 0:
            x = g * lam
            with np.errstate(all="ignore"):
                small = np.exp(length * np.log1p(-np.minimum(x, 1.0)))
                out *= np.where(x < 1.0, small, (1.0 - x) ** length)
    return out


def phase_products(phases: Phases, times: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """P_i after each of ``times`` steps, shape (len(times), d): :func:`phase_product` for many
    times at once (one matrix product of steps-per-phase by log1p(−γλ))."""
    times = np.asarray(times, dtype=np.float64)
    starts = np.array([s for s, _ in phases], dtype=np.float64)
    gammas = np.array([g for _, g in phases])
    x = gammas[:, None] * lam[None, :]
    if (x >= 1.0).any():  # a sign can flip: per time, exactly
        return np.array([phase_product(phases, int(t), lam) for t in times])
    stops = np.append(starts[1:], np.inf)
    inside = np.clip(np.minimum(times[:, None], stops[None, :]) - starts[None, :], 0, None)
    return np.exp(inside @ np.log1p(-x))


def checkpoint_steps(max_steps: int, per_decade: int = 10) -> np.ndarray:
    """Learning-curve steps: 0 and round(10^(k/per_decade)) up to the first ≥ max_steps.

    The grid depends on ``max_steps`` only through its length, so a sweep extended to more
    samples keeps every checkpoint it had (curves of old points stay valid).
    """
    if max_steps <= 0:
        return np.zeros(1, dtype=np.int64)
    top = int(math.ceil(math.log10(max_steps) * per_decade - 1e-9))
    steps = np.unique(np.round(10.0 ** (np.arange(top + 1) / per_decade)).astype(np.int64))
    return np.concatenate([[0], steps])
