"""What an evaluation costs: nominal seconds of one core and peak memory, per estimator.

The model follows each engine's work: the exact engine advances every constant-step stretch in
closed form, at a cost linear in d per stretch once its roots are cached (a run of T steps has
about log2 T stretches; a rotated student with non-Gaussian inputs is stepped instead, d³ a
step); Monte Carlo pays a dispatch cost per SGD step and R·(d + 1) multiply-adds per step. The
constants are nominal: measured once on the 2-core reference machine (benchmarks/
bench_workflow.py reports them again beside its measurements), so that sizing jobs from them is
deterministic (a cube's chunking, hence its key, never depends on a timing). ``ktsweep plan``
scales them by a calibration on the machine it runs on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ktsweep.model.inputs import fourth_moment
from ktsweep.model.params import Point

EXACT_PER_STRETCH = 3.4e-5
"""Seconds per stretch of one run, independent of d (bookkeeping of an advance)."""
EXACT_PER_STRETCH_MODE = 4.7e-7
"""Seconds per stretch and mode (the roots and products of a cached map; measured at
N = n = 2^14, d = 10…1000: 2.3 ms a point at d = 10, 6 ms at 200, 30 ms at 1000)."""
FULL_STEP_PER_MODE3 = 2.0e-9
"""Seconds per step and d³ of a student stepped on d × d matrices (rotated, non-Gaussian)."""
MC_PER_STEP = 1.0e-4
"""Seconds per SGD step of a Monte Carlo point (torch dispatch of the four runs' updates)."""
MC_PER_UNIT = 5.0e-9
"""Seconds per replicate, mode and step of Monte Carlo on the CPU."""
POINT_OVERHEAD = 5.0e-4
"""Seconds per point outside the engines: the job's bookkeeping, staging and commit."""


@dataclass(frozen=True)
class Work:
    """What an evaluation's cost depends on, read off a point."""

    d: int
    steps_t: float  # math.inf: the limit (one closed-form step)
    steps_direct: float
    steps_s: float
    tune_t: int  # γ0 candidates of the teacher (a tune list's length, else 1)
    tune_s: int
    stepped_students: bool  # rotated student with non-Gaussian inputs: d × d matrices
    batch: int  # the larger batch (Monte Carlo's draw buffer)

    @classmethod
    def of(cls, p: Point) -> Work:
        def candidates(g: object) -> int:
            return len(g["tune"]) if isinstance(g, dict) and "tune" in g else 1

        stepped = not p.aligned and fourth_moment(p.inputs, p.inputs_nu) != 3.0
        return cls(p.d, p.steps_t, p.steps_direct, p.steps_s, candidates(p.gamma0_t),
                   candidates(p.gamma0_s), stepped, max(p.batch_t, p.batch_s))


def stretches(steps: float) -> float:
    """About how many constant-step stretches a run has (log2 of its steps; 1 for a limit)."""
    return 1.0 if math.isinf(steps) else 1.0 + math.log2(1.0 + steps)


def exact_seconds(w: Work) -> float:
    """Nominal seconds of one core for the exact engine's four runs of a point (the bounds
    reuse its moments)."""
    per = EXACT_PER_STRETCH + EXACT_PER_STRETCH_MODE * w.d
    teacher = w.tune_t * stretches(w.steps_t) * per
    if w.stepped_students:
        finite = [s for s in (w.steps_direct, w.steps_s, w.steps_s) if math.isfinite(s)]
        return teacher + w.tune_s * sum(finite) * w.d**3 * FULL_STEP_PER_MODE3
    students = w.tune_s * (stretches(w.steps_direct) + 2 * stretches(w.steps_s)) * per
    return teacher + students


def mc_seconds(w: Work, replicates: int) -> float:
    """Nominal seconds of one core for Monte Carlo at a point: every SGD step of its runs
    (the direct student shares the teacher's draws when their batches agree); 0 where N or n
    is infinite (not simulated)."""
    if not (math.isfinite(w.steps_t) and math.isfinite(w.steps_s)):
        return 0.0
    steps = w.steps_t + w.steps_s + (w.steps_direct if w.steps_direct != w.steps_t else 0)
    return steps * (MC_PER_STEP + MC_PER_UNIT * replicates * (w.d + 1))


def seconds(p: Point, methods: tuple[str, ...], replicates: int = 0) -> float:
    """Nominal seconds of one core for a point under ``methods`` (Monte Carlo where it runs
    there: the caller says by including it), overhead included."""
    w = Work.of(p)
    total = POINT_OVERHEAD
    if "exact" in methods or "bound" in methods:
        total += exact_seconds(w)
    if "mc" in methods:
        total += mc_seconds(w, replicates)
    return total


def mc_bytes(d: int, batch: int, replicates: int, itemsize: int, checkpoints: int,
             points: int = 1) -> int:
    """Estimated peak bytes of one Monte Carlo engine call on ``points`` stacked points.

    About 16 arrays of (R, d + 1) values (the target, four models' states cloned while they
    run, and the per-step temporaries), the draw buffer of (R, batch, d + 1), and four learning
    curves of (R, checkpoints); the 16 is measured (peak RSS of d = 2000, R = 2048, float32:
    266 MB), so a sweep or ``ktsweep point`` can refuse a size before allocating it.
    """
    per_point = replicates * ((d + 1) * (16 + batch) + 4 * checkpoints)
    return int(points * per_point * itemsize)
