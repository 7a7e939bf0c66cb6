"""The ``exact`` estimator: expected risks of all four runs from the moment recursion.

Deterministic float64, no sampling noise (docs/science/exact.md). Points are evaluated together:
every run of every point (and every γ0 candidate when tuning) is one row of a single
:func:`~ktsweep.engines.moments.evolve` call per phase (teacher-independent runs, then T2S).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

from ktsweep.engines.general import (
    FullStart,
    Geometry,
    TeacherMoments,
    geometry,
    offdiag_decay,
    overwrite_full,
    target_side,
    teacher_matrices,
    teacher_side,
)
from ktsweep.engines.moments import (
    DIVERGED_FACTOR,
    ROUND_OFF,
    Moments,
    Runs,
    evolve,
    one_blas_thread,
)
from ktsweep.model.geometry import target_second_moment
from ktsweep.model.inputs import fourth_moment
from ktsweep.model.params import Point
from ktsweep.model.quantities import assemble, with_ratios
from ktsweep.model.spectra import (
    Phases,
    phase_products,
    resolve_gamma0,
    schedule_phases,
    student_spectrum,
    target_energy,
    teacher_spectrum,
)

Role = Literal["teacher", "direct", "ceiling", "t2s"]
STUDENTS: tuple[Role, ...] = ("direct", "ceiling", "t2s")

Solver = Callable[[Runs, np.ndarray], Moments]
"""A moment solver: :func:`~ktsweep.engines.moments.evolve` or
:func:`~ktsweep.engines.moments.evolve_steps`."""


@dataclass(frozen=True, eq=False)  # (arrays inside: compared by identity)
class _Spec:
    """One run of one point, before evolution."""

    point: int  # the point's position in the batch
    role: Role
    lam: np.ndarray  # (d,) the run's spectrum
    a0: np.ndarray  # (d,) initial E[η_i²]
    noise: float  # label-noise variance s²
    batch: int
    steps: int | float  # math.inf: the limit of infinitely many steps
    kind: str  # schedule kind
    horizon: int | float | None  # steps the schedule is planned for; None: ``steps``
    gammas: list[float]  # the γ0 candidates (one unless tuned)
    psi: float  # fourth moment of the inputs


class _Row(NamedTuple):
    """One evolved row: a γ0 candidate of a spec."""

    spec: int  # position in the specs
    row: int  # row of the Runs
    gamma0: float


@dataclass
class Detail:
    """Per-point moments behind the exact quantities (used by bounds and tests).

    Teacher moments are in the semantic (teacher's) basis, student moments in the student's
    eigenbasis; ``*_s`` fields are teacher-side diagonals seen in the student's eigenbasis
    (the same arrays when the point is aligned).
    """

    energy: np.ndarray  # (P, d) e_i
    lam_t: np.ndarray
    lam_s: np.ndarray
    a_teacher: np.ndarray  # (P, d)
    p_teacher: np.ndarray  # (P, d)
    a_t2s: np.ndarray  # (P, d) E[(u_S - u_T)_i^2]
    p_t2s: np.ndarray
    u_teacher_sq: np.ndarray  # (P, d) E[u_T,i^2]
    a_direct: np.ndarray
    a_ceiling: np.ndarray
    gamma0: dict[str, np.ndarray]
    energy_s: np.ndarray  # (P, d) diagonal of E[θ* θ*^T] in the student's eigenbasis
    a_teacher_s: np.ndarray
    u_teacher_sq_s: np.ndarray


def _expand(specs: Sequence[_Spec]) -> tuple[Runs, list[_Row]]:
    """Rows for every (spec, γ0 candidate); returns the runs and a label for each row."""
    lam: list[np.ndarray] = []
    a0: list[np.ndarray] = []
    noise: list[float] = []
    batch: list[int] = []
    phases: list[Phases] = []
    steps: list[int] = []
    labels: list[_Row] = []
    psi: list[float] = []
    for s_idx, s in enumerate(specs):
        horizon = s.steps if s.horizon is None else s.horizon
        for g in s.gammas:
            labels.append(_Row(s_idx, len(lam), g))
            lam.append(s.lam)
            a0.append(s.a0)
            noise.append(s.noise)
            batch.append(s.batch)
            psi.append(s.psi)
            if math.isinf(s.steps):  # the limit: evolve needs only γ0 and the kind
                phases.append([(0, g)])
                steps.append(-1)
            else:  # a finite run's step counts are integers
                phases.append(schedule_phases(s.kind, g, int(s.steps), int(horizon)))
                steps.append(int(s.steps))
    runs = Runs(
        lam=np.array(lam),
        a0=np.array(a0),
        noise=np.array(noise),
        batch=np.array(batch),
        phases=phases,
        steps=np.array(steps, dtype=np.int64),
        kinds=[s.kind for s in specs for _ in s.gammas],
        psi=np.array(psi, dtype=np.float64),
    )
    return runs, labels


def _best(score: np.ndarray, diverged: np.ndarray, labels: Sequence[_Row], n_specs: int
          ) -> tuple[np.ndarray, np.ndarray]:
    """Per spec, the row with the lowest finite score among non-diverged candidates, and its
    γ0."""
    best_row = np.full(n_specs, -1)
    best_g = np.full(n_specs, np.nan)
    best_key: list[tuple[bool, float]] = [(True, np.inf)] * n_specs
    for s_idx, row, g in labels:
        val = float(score[row]) if np.isfinite(score[row]) else np.inf
        key = (bool(diverged[row]), val)
        if best_row[s_idx] < 0 or key < best_key[s_idx]:
            best_row[s_idx], best_g[s_idx], best_key[s_idx] = row, g, key
    return best_row, best_g


def _edge(p: Point, role: Role, chosen: float) -> float:
    """1.0 when a tuned γ0 was chosen at either end of its list (the optimum may lie outside
    the grid), 0.0 inside it, NaN when the run's γ0 was not tuned."""
    spec = p.gamma0_t if role == "teacher" else p.gamma0_s
    if not (isinstance(spec, dict) and "tune" in spec) or len(spec["tune"]) < 2:
        return np.nan
    grid = spec["tune"]
    return float(chosen in (min(grid), max(grid)))


@dataclass(frozen=True, eq=False)  # (arrays inside: compared by identity)
class _Batch:
    """What both phases read of a batch of points sharing ``d``, computed once."""

    lam_t: np.ndarray  # (P, d) teacher spectra
    lam_s: np.ndarray  # (P, d) student spectra
    energy: np.ndarray  # (P, d) target energies e_i, semantic basis
    energy_s: np.ndarray  # (P, d) the same seen in the students' eigenbases
    psi: list[float]  # fourth moment of each point's inputs
    geo: Geometry | None  # student bases; None: every point aligned


@dataclass(frozen=True, eq=False)
class _Teachers:
    """The teacher phase: each point's chosen teacher run and what the students read of it."""

    runs: Runs  # every (point, γ0 candidate) row
    moments: Moments
    row: np.ndarray  # (P,) each point's chosen row
    gamma0: np.ndarray  # (P,) its γ0
    a: np.ndarray  # (P, d) E[η_T,i²], semantic basis
    contraction: np.ndarray  # (P, d) P_T,i
    diverged: np.ndarray  # (P,) bool
    u_sq: np.ndarray  # (P, d) E[u_T,i²]
    decay: list[np.ndarray | None]  # off-diagonal decay of fixed-target rotated points
    seen: TeacherMoments  # the teacher's diagonals in the students' eigenbases


@dataclass(frozen=True, eq=False)
class _Students:
    """The student phase: the three students of every point and each role's chosen run."""

    runs: Runs
    moments: Moments
    mode_t2s: np.ndarray  # (rows, d) the T2S per-mode risk of every row (others: unused)
    row: dict[Role, np.ndarray]  # role → (P,) chosen row
    gamma0: dict[Role, np.ndarray]  # role → (P,) its γ0


@one_blas_thread()
def evaluate_detail(
    points: Sequence[Point], checkpoints: np.ndarray | None = None, solver: Solver = evolve,
    general: bool = False,
) -> tuple[dict[str, np.ndarray], Detail]:
    """Exact quantities and the moments behind them for points sharing ``d``.

    BLAS runs single-threaded throughout, not only inside the solver: a multi-threaded call
    in the bookkeeping around it leaves OpenBLAS's threads spinning (measured: 0.1 s of CPU
    on a 0.4 s cold point at d = 1000). Every exact caller (the sweep's tasks, bounds, the
    Monte Carlo tuner) comes through here.

    ``solver`` is :func:`~ktsweep.engines.moments.evolve` (closed form per stretch) or the
    reference :func:`~ktsweep.engines.moments.evolve_steps` (every step; tests only).
    Student runs of points whose student basis is rotated start from the diagonals of their
    semantic-basis moments seen in the student's eigenbasis (:mod:`ktsweep.engines.general`);
    per-mode outputs are in the student's eigenbasis. ``general``: take that path for aligned
    points too (Q = I; tests compare it with the aligned path).
    """
    if len({p.d for p in points}) > 1:
        raise ValueError("exact.evaluate_detail needs points sharing d; use evaluate()")
    ck = np.zeros(0, dtype=np.int64) if checkpoints is None else np.asarray(checkpoints)
    batch = _batch(points, general)
    teachers = _run_teachers(points, batch, ck, solver)
    students = _run_students(points, batch, teachers, ck, solver)
    out = _quantities(batch, teachers, students, _t2s_curve(points, batch, teachers, students,
                                                            ck))
    _settle_status(out, points, batch, teachers, students)
    _tune_edges(out, points, {"teacher": teachers.gamma0, **students.gamma0})
    with_ratios(out)
    no_w2s = np.array([math.isinf(p.n) for p in points])
    out["pgr"][no_w2s] = np.nan  # n = ∞: no weak-to-strong question (no finite student)
    out["w2s_ratio"][no_w2s] = np.nan
    return out, _detail(out, batch, teachers, students)


def _batch(points: Sequence[Point], general: bool) -> _Batch:
    """Spectra, target energies, input fourth moments and student bases of ``points``."""
    energy = np.array([target_energy(p) for p in points])
    geo = geometry(points, force=general)  # None: every point aligned
    return _Batch(
        lam_t=np.array([teacher_spectrum(p) for p in points]),
        lam_s=np.array([student_spectrum(p) for p in points]),
        energy=energy,
        energy_s=target_side(geo, energy),
        psi=[fourth_moment(p.inputs, p.inputs_nu) for p in points],
        geo=geo,
    )


def _run_teachers(points: Sequence[Point], b: _Batch, ck: np.ndarray, solver: Solver
                  ) -> _Teachers:
    """Evolve every teacher (each γ0 candidate a row), keep the best candidate of each point,
    and see its moments in the students' eigenbases."""
    specs = [_Spec(point=i, role="teacher", lam=b.lam_t[i], a0=b.energy[i], noise=p.sigma2,
                   batch=p.batch_t, steps=p.steps_t, kind=p.schedule_t, horizon=p.plan_t,
                   gammas=resolve_gamma0(p.gamma0_t, b.lam_t[i]), psi=b.psi[i])
             for i, p in enumerate(points)]
    runs, labels = _expand(specs)
    m = solver(runs, ck)
    best, g_best = _best(m.risk, m.diverged, labels, len(specs))
    a_t, p_t, div_t = m.a[best], m.contraction[best], m.diverged[best]  # one spec a point
    decay: list[np.ndarray | None] = [None] * len(points) if b.geo is None else [
        None if not b.geo.fixed_target[i] else offdiag_decay(
            b.lam_t[i], runs.phases[best[i]], int(runs.steps[best[i]]), 1.0 / p.batch_t)
        for i, p in enumerate(points)]
    return _Teachers(
        runs=runs, moments=m, row=best, gamma0=g_best, a=a_t, contraction=p_t, diverged=div_t,
        u_sq=b.energy * (1.0 - 2.0 * p_t) + a_t,  # E[u_T,i²]
        decay=decay,
        seen=teacher_side(b.geo, b.energy, a_t, p_t, decay),
    )


def _student_specs(points: Sequence[Point], b: _Batch, t: _Teachers) -> list[_Spec]:
    """The three students of every point, in point order. The direct and ceiling students
    learn the target; the T2S student learns the frozen teacher, error e = u_S − u_T, without
    label noise."""
    specs: list[_Spec] = []
    for i, p in enumerate(points):
        gs = resolve_gamma0(p.gamma0_s, b.lam_s[i])
        specs += [
            _Spec(point=i, role="direct", lam=b.lam_s[i], a0=b.energy_s[i], noise=p.sigma2,
                  batch=p.batch_s, steps=p.steps_direct, kind=p.schedule_s, horizon=None,
                  gammas=gs, psi=b.psi[i]),
            _Spec(point=i, role="ceiling", lam=b.lam_s[i], a0=b.energy_s[i], noise=p.sigma2,
                  batch=p.batch_s, steps=p.steps_s, kind=p.schedule_s, horizon=p.plan_s,
                  gammas=gs, psi=b.psi[i]),
            _Spec(point=i, role="t2s", lam=b.lam_s[i], a0=t.seen.u_teacher_sq[i], noise=0.0,
                  batch=p.batch_s, steps=p.steps_s, kind=p.schedule_s, horizon=p.plan_s,
                  gammas=gs, psi=b.psi[i]),
        ]
    return specs


def _full_starts(points: Sequence[Point], b: _Batch, t: _Teachers, specs: Sequence[_Spec],
                 labels: Sequence[_Row]) -> dict[int, FullStart]:
    """Rows whose diagonal run is not enough: students of rotated points with non-Gaussian
    inputs, whose off-diagonal moments feed the diagonal (:mod:`ktsweep.engines.general`).
    Returns row → its basis and its full start matrix in that basis."""
    if b.geo is None:
        return {}
    geo = b.geo
    full = [i for i, p in enumerate(points) if not p.aligned and b.psi[i] != 3.0]
    start: dict[Role, dict[int, np.ndarray]] = {r: {} for r in STUDENTS}
    for i in full:
        q = geo.q[i]
        start["direct"][i] = start["ceiling"][i] = q.T @ target_second_moment(points[i]) @ q
        start["t2s"][i] = q.T @ teacher_matrices(
            b.energy[i], t.a[i], t.contraction[i], bool(geo.fixed_target[i]), t.decay[i]
        ).u_teacher_sq @ q
    rows: dict[int, FullStart] = {}
    for lab in labels:
        spec = specs[lab.spec]
        if spec.point in start["t2s"]:
            rows[lab.row] = FullStart(geo.q[spec.point], start[spec.role][spec.point],
                                      b.psi[spec.point])
    return rows


def _run_students(points: Sequence[Point], b: _Batch, t: _Teachers, ck: np.ndarray,
                  solver: Solver) -> _Students:
    """Evolve every student in one call, so that the three go through the stretch maps they
    share together (one pass over each map's eigenvectors instead of two), then keep each
    role's best γ0 candidate: by its risk, the T2S student's by its risk against the target
    (not the teacher it learns)."""
    specs = _student_specs(points, b, t)
    runs, labels = _expand(specs)
    m = solver(runs, ck)
    full_rows = _full_starts(points, b, t, specs, labels)
    if full_rows:
        overwrite_full(m, runs, ck, full_rows)
    owner = np.array([specs[lab.spec].point for lab in labels])
    seen = t.seen
    mode_t2s = 0.5 * (m.a - 2.0 * m.contraction * seen.cross[owner] + seen.a_teacher[owner])
    is_t2s = np.array([specs[lab.spec].role == "t2s" for lab in labels])
    score = np.where(is_t2s, mode_t2s.sum(axis=1), m.risk)
    best, g_all = _best(score, m.diverged, labels, len(specs))
    # each student role's chosen row and γ0, by point (the specs run in point order)
    return _Students(
        runs=runs, moments=m, mode_t2s=mode_t2s,
        row={r: np.array([best[k] for k, s in enumerate(specs) if s.role == r])
             for r in STUDENTS},
        gamma0={r: np.array([g_all[k] for k, s in enumerate(specs) if s.role == r])
                for r in STUDENTS},
    )


def _t2s_curve(points: Sequence[Point], b: _Batch, t: _Teachers, s: _Students, ck: np.ndarray
               ) -> np.ndarray:
    """The T2S learning curve against the target, (P, C): the student's curve against its
    teacher needs P^S at every checkpoint, not only at the end."""
    m = s.moments
    curve = np.full((len(points), len(ck)), np.nan)
    for i, r in enumerate(s.row["t2s"]):
        ok = (ck <= points[i].steps_s) & np.isfinite(m.curve[r])
        if ok.any():
            pt = phase_products(s.runs.phases[r], ck[ok], b.lam_s[i])
            curve[i, ok] = m.curve[r, ok] - pt @ t.seen.cross[i] + 0.5 * t.a[i].sum()
    return curve


def _quantities(b: _Batch, t: _Teachers, s: _Students, curve_t2s: np.ndarray
                ) -> dict[str, np.ndarray]:
    """Per-mode risks, risks, learning curves and γ0 of the chosen runs, before the status
    rule."""
    m = s.moments
    out: dict[str, np.ndarray] = {
        "mode_teacher": 0.5 * t.seen.a_teacher,
        "mode_direct": 0.5 * m.a[s.row["direct"]],
        "mode_ceiling": 0.5 * m.a[s.row["ceiling"]],
        "mode_t2s": s.mode_t2s[s.row["t2s"]],
        "curve_teacher": t.moments.curve[t.row],
        "curve_t2s": curve_t2s,
        "gamma0_t": t.gamma0,
        "gamma0_direct": s.gamma0["direct"],
        "gamma0_ceiling": s.gamma0["ceiling"],
        "gamma0_s": s.gamma0["t2s"],
    }
    for name in ("teacher", "direct", "t2s", "ceiling"):
        out[f"risk_{name}"] = out[f"mode_{name}"].sum(axis=1)
    return out


def _settle_status(out: dict[str, np.ndarray], points: Sequence[Point], b: _Batch,
                   t: _Teachers, s: _Students) -> None:
    """Blank the diverged runs' outputs and set ``status``, in place.

    Only the runs that depend on a diverged run are blanked: the T2S student learns from the
    teacher, the direct and ceiling students do not. A run reported ok has finite per-mode
    risks and a risk ≥ 0; one that has not (no float64 value represents it, or a negative
    risk beyond rounding) is diverged, never ok with a gap. Values below 0 by rounding (a
    true value near 0) read 0.
    """
    div = s.moments.diverged
    blank = {
        "teacher": t.diverged,
        "direct": div[s.row["direct"]],
        "ceiling": div[s.row["ceiling"]],
        "t2s": t.diverged | div[s.row["t2s"]],
    }
    floor = -ROUND_OFF * DIVERGED_FACTOR * (b.energy.sum(axis=1) + np.array(
        [p.sigma2 for p in points]))
    with np.errstate(invalid="ignore"):
        for name in blank:
            sound = (np.isfinite(out[f"mode_{name}"]).all(axis=1)
                     & (out[f"risk_{name}"] >= floor))
            blank[name] = blank[name] | ~sound
            for k in (f"mode_{name}", f"curve_{name}"):
                if k in out:
                    np.maximum(out[k], 0.0, out=out[k])
            if (out[f"risk_{name}"] < 0).any():
                out[f"risk_{name}"] = out[f"mode_{name}"].sum(axis=1)
    blank["t2s"] |= blank["teacher"]
    for name, bad in blank.items():
        for k in (f"mode_{name}", f"risk_{name}", f"curve_{name}"):
            if k in out:
                out[k][bad] = np.nan
    diverged = np.logical_or.reduce(list(blank.values()))
    out["status"] = np.where(diverged, "diverged", "ok")


_EDGE_KEYS: tuple[tuple[Role, str], ...] = (
    ("teacher", "tune_edge_t"), ("direct", "tune_edge_direct"),
    ("ceiling", "tune_edge_ceiling"), ("t2s", "tune_edge_s"))


def _tune_edges(out: dict[str, np.ndarray], points: Sequence[Point],
                chosen: dict[Role, np.ndarray]) -> None:
    """Whether each run's chosen γ0 lies at an end of its tuned list (:func:`_edge`), in
    place; ``chosen``: role → (P,) γ0."""
    for role, key in _EDGE_KEYS:
        out[key] = np.array([_edge(p, role, chosen[role][i]) for i, p in enumerate(points)])


def _detail(out: dict[str, np.ndarray], b: _Batch, t: _Teachers, s: _Students) -> Detail:
    """The moments behind ``out`` (its γ0 arrays shared, not copied)."""
    m, row = s.moments, s.row
    return Detail(
        energy=b.energy, lam_t=b.lam_t, lam_s=b.lam_s, a_teacher=t.a, p_teacher=t.contraction,
        a_t2s=m.a[row["t2s"]], p_t2s=m.contraction[row["t2s"]], u_teacher_sq=t.u_sq,
        a_direct=m.a[row["direct"]], a_ceiling=m.a[row["ceiling"]],
        gamma0={k: out[k] for k in ("gamma0_t", "gamma0_s", "gamma0_direct", "gamma0_ceiling")},
        energy_s=b.energy_s, a_teacher_s=t.seen.a_teacher, u_teacher_sq_s=t.seen.u_teacher_sq,
    )


def evaluate(
    points: Sequence[Point], checkpoints: np.ndarray | None = None, solver: Solver = evolve
) -> dict[str, np.ndarray]:
    """Exact quantities for any points (grouped by ``d`` internally; per-mode arrays padded)."""
    return group_by_d(points, lambda pts: evaluate_detail(pts, checkpoints, solver)[0])


def groups_by_d(points: Sequence[Point]) -> dict[int, list[int]]:
    """Positions of the points sharing each d, in input order (the engine stacks points of
    one d; per-mode arrays of smaller d are padded when the groups are reassembled)."""
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(points):
        groups.setdefault(p.d, []).append(i)
    return groups


def group_by_d(points: Sequence[Point], fn: Callable[[list[Point]], dict[str, np.ndarray]]
               ) -> dict[str, np.ndarray]:
    """Apply ``fn`` to each group of points sharing ``d`` and reassemble in input order.

    Per-mode arrays of groups with smaller ``d`` are padded with NaN up to the largest ``d``.
    """
    groups = groups_by_d(points)
    if len(groups) == 1:
        return fn(list(points))
    return assemble(len(points), ((idx, fn([points[i] for i in idx]))
                                  for idx in groups.values()))
