"""Independent step-by-step references for the exact engine's tests (small d, short runs).

- :func:`diagonal_run`: the diagonal recursion a_i ← q_i a_i + g_i (Σa + s²), one float64 step
  at a time, written out here from docs/science/inputs.md (no solver code).
- :func:`full_point`: the four runs of a point on d × d second-moment matrices in semantic
  coordinates, one :func:`ktsweep.engines.general.evolve_full` step at a time (any input law,
  aligned or rotated student), with the T2S risk from its cross moment
  (docs/science/exact.md, docs/science/geometry.md).

Both follow each run to its end (or until its Σa + s² passes 10^6 times the divergence limit
or stops being finite) and report the run's peak of Σa + s² against the limit, so that a test
can tell a clear verdict from a borderline one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ktsweep.engines.general import evolve_full
from ktsweep.engines.moments import DIVERGED_FACTOR
from ktsweep.model.geometry import student_basis, target_second_moment
from ktsweep.model.inputs import fourth_moment
from ktsweep.model.params import Point
from ktsweep.model.spectra import (
    resolve_gamma0,
    schedule_phases,
    step_sizes,
    student_spectrum,
    teacher_spectrum,
)

FAR = 1e6
"""A run is followed until Σa + s² passes this multiple of the limit (then: clearly diverged)."""


@dataclass
class Run:
    """One reference run: its totals ½Σa after every step (NaN past where it was stopped),
    its final moments (None once stopped) and max_t (Σa + s²) / limit."""

    half_sums: np.ndarray
    final: np.ndarray | None
    peak: float

    @property
    def diverged(self) -> bool:
        return not self.peak <= 1.0


def diagonal_run(lam: np.ndarray, a0: np.ndarray, noise: float, batch: int, psi: float,
                 gammas: np.ndarray) -> Run:
    """The diagonal recursion stepped literally through ``gammas``."""
    c = 1.0 + (psi - 2.0) / batch
    a = np.array(a0, dtype=np.float64)
    limit = DIVERGED_FACTOR * (a.sum() + noise)
    sums = np.full(len(gammas) + 1, np.nan)
    sums[0] = 0.5 * a.sum()
    peak = (a.sum() + noise) / limit
    with np.errstate(all="ignore"):
        for t, gamma in enumerate(gammas, start=1):
            x = gamma * lam
            a = (1.0 - 2.0 * x + c * x * x) * a + (x * x / batch) * (a.sum() + noise)
            total = a.sum() + noise
            sums[t] = 0.5 * a.sum()
            peak = max(peak, total / limit) if np.isfinite(total) else np.inf
            if not peak < FAR:
                return Run(sums, None, peak)
    return Run(sums, a, peak)


def _full_run(h: np.ndarray, a0: np.ndarray, noise: float, batch: int, psi: float,
              gammas: np.ndarray) -> tuple[Run, np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """A full-matrix run: the Run, its final contraction, and A, P after every step."""
    a = np.array(a0, dtype=np.float64)
    p = np.eye(h.shape[0])
    limit = DIVERGED_FACTOR * (np.trace(a) + noise)
    sums = np.full(len(gammas) + 1, np.nan)
    sums[0] = 0.5 * np.trace(a)
    peak = (np.trace(a) + noise) / limit
    a_t, p_t = [a], [p]
    with np.errstate(all="ignore"):
        for t, gamma in enumerate(gammas, start=1):
            a, step = evolve_full(h, a, noise, batch, [(0, float(gamma))], 1, psi)
            p = step @ p
            total = np.trace(a) + noise
            sums[t] = 0.5 * np.trace(a)
            peak = max(peak, total / limit) if np.isfinite(total) else np.inf
            a_t.append(a)
            p_t.append(p)
            if not peak < FAR:
                return Run(sums, None, peak), p, a_t, p_t
    return Run(sums, a, peak), p, a_t, p_t


def full_point(p: Point) -> dict[str, Run]:
    """The four runs of ``p`` (finite N and n, fixed γ0), with ``half_sums`` the risk after
    every step (for T2S: against the target, cross term included; ``final`` is then the
    student's own second moment)."""
    psi = fourth_moment(p.inputs, p.inputs_nu)
    lam_t, lam_s = teacher_spectrum(p), student_spectrum(p)
    q = student_basis(p)
    h_t, h_s = np.diag(lam_t), q @ np.diag(lam_s) @ q.T
    m = target_second_moment(p)
    g_t = resolve_gamma0(p.gamma0_t, lam_t)[0]
    g_s = resolve_gamma0(p.gamma0_s, lam_s)[0]
    steps_t, steps_d, steps_s = int(p.steps_t), int(p.steps_direct), int(p.steps_s)
    gam_t = step_sizes(schedule_phases(p.schedule_t, g_t, steps_t, p.plan_t), steps_t)
    gam_d = step_sizes(schedule_phases(p.schedule_s, g_s, steps_d, steps_d), steps_d)
    gam_s = step_sizes(schedule_phases(p.schedule_s, g_s, steps_s, p.plan_s), steps_s)
    teacher, p_t, _, _ = _full_run(h_t, m, p.sigma2, p.batch_t, psi, gam_t)
    out = {"teacher": teacher,
           "direct": _full_run(h_s, m, p.sigma2, p.batch_s, psi, gam_d)[0],
           "ceiling": _full_run(h_s, m, p.sigma2, p.batch_s, psi, gam_s)[0]}
    if teacher.final is None:
        out["t2s"] = Run(np.full(steps_s + 1, np.nan), None, np.inf)
        return out
    a_t = teacher.final
    cross = a_t - m @ p_t.T  # E[u_T η_Tᵀ]
    start = a_t + m - m @ p_t.T - p_t @ m  # E[u_T u_Tᵀ]
    student, _, a_s, p_s = _full_run(h_s, start, 0.0, p.batch_s, psi, gam_s)
    sums = np.full(steps_s + 1, np.nan)
    for t, (a, pp) in enumerate(zip(a_s, p_s, strict=True)):
        sums[t] = 0.5 * (np.trace(a) - 2.0 * np.trace(pp @ cross) + np.trace(a_t))
    out["t2s"] = Run(sums, student.final, max(student.peak, teacher.peak))
    return out
