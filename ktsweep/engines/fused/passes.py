"""The host side of the fused kernels: a point's four SGD runs as passes, and their results.

A *pass* is one or two models that see the same draws, run by one kernel call for all its
steps: the teacher (with the direct student when both take the same batch), the direct student
alone (other batch size, or a rotated student under Gaussian inputs, below), then the T2S and
ceiling students. Between passes the host forms the students' starting states from the
teacher's final one. Every draw comes from :mod:`ktsweep.engines.fused.stream`; the kernel of
the device (:mod:`~ktsweep.engines.fused.cpu`, :mod:`~ktsweep.engines.fused.gpu`) runs the
pass, and :func:`ktsweep.engines.mc.summarize` turns the final errors into the quantities,
exactly as for the torch path.

Models are kept in the stream's L slots (d coordinates, padding, the noise slot): the noise
slot holds −σ for a run with label noise and 0 for the T2S student, whose labels are the
teacher's, so a residual is one dot product; gains (γλ/B) are 0 beyond d, so those slots never
move.

A student whose eigenbasis Q is rotated against the teacher's sees the inputs Qᵀz. Under
Gaussian inputs Qᵀz is again a standard Gaussian vector, so its passes draw Qᵀz directly (no
O(d²) rotation a sample): the T2S and ceiling students still share their inputs, but the
direct student then draws its own (tag ``direct``) rather than sharing the teacher's, which
changes no expectation, only the correlation of the teacher's and the direct student's
estimates. Under other laws the kernel rotates each sample literally (O(d²) a sample; the CPU
kernel only).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ktsweep.engines.fused import stream
from ktsweep.engines.mc import Finals, Sampling
from ktsweep.engines.moments import divergence_limit
from ktsweep.model.geometry import student_basis
from ktsweep.model.params import Point, point_hash
from ktsweep.model.quantities import RUN_STEP_SIZE
from ktsweep.model.spectra import (
    Phases,
    run_phases,
    student_spectrum,
    target_coefficients,
    target_energy,
    target_scale,
    teacher_spectrum,
)

CHECK_EVERY = 256
"""Steps between divergence checks (as the torch path's); the kernels check at every
multiple and after the last step."""
MAX_COUNTERS = 1 << 31
"""c0 = b·K + k, batch · (⌈d/4⌉ + 1), stays below this (the GPU kernel forms it in int32)."""
MAX_SLOTS = 1 << 31
"""Models × replicates × L stays below this (the GPU kernel's offsets are int32)."""


@dataclass
class Model:
    """One run inside a pass: its state (R, L) and what the kernel needs to advance it."""

    state: torch.Tensor
    gains: torch.Tensor  # (phases, L)
    starts: np.ndarray  # first step of each phase
    offset: torch.Tensor | None = None  # risk = ½‖state + offset‖² over the first d slots
    record: bool = False  # learning curve recorded at the checkpoints
    rotate: bool = False  # inputs seen as Qᵀ z (rotated in the kernel)


@dataclass
class Pass:
    """Models sharing every draw of ``steps`` steps of ``batch`` samples; the kernel fills
    ``curves`` (M, R, C) and ``diverged`` (M, R) and advances each model's state in place."""

    key: tuple[int, int]
    tag: int
    d: int
    law: str
    nu: float
    batch: int
    steps: int
    models: list[Model]
    segments: np.ndarray  # (S, 3 + M): start, stop, checkpoint index at start, phase per model
    limit: float
    basis: torch.Tensor | None
    curves: torch.Tensor
    diverged: torch.Tensor


Runner = Callable[[Pass], None]
"""A device's kernel: runs a pass in place."""


def segments(models: Sequence[Model], steps: int, checkpoints: np.ndarray) -> np.ndarray:
    """The pass cut where a phase of any model starts or a checkpoint falls (rows: start, stop,
    checkpoint index at the start or −1, each model's phase), and a last row (steps, steps)
    that records a checkpoint at the final step."""
    ck = np.asarray(checkpoints, dtype=np.int64)
    cuts = {0, steps} | {int(c) for c in ck if c <= steps}
    for m in models:
        cuts |= {int(s) for s in m.starts if s < steps}
    bounds = sorted(cuts)
    at = {int(c): i for i, c in enumerate(ck)}
    rows = []
    for lo, hi in zip(bounds, bounds[1:] + [steps], strict=True):
        phase = [int(np.searchsorted(m.starts, lo, side="right")) - 1 for m in models]
        rows.append([lo, hi, at.get(lo, -1), *phase])
    return np.array(rows, dtype=np.int64)


def _gains(phases: Phases, lam: np.ndarray, batch: int, width: int, dtype: torch.dtype,
           device: torch.device) -> tuple[torch.Tensor, np.ndarray]:
    g = np.zeros((len(phases), width))
    for i, (_, gamma) in enumerate(phases):
        g[i, : lam.size] = (gamma / batch) * lam
    return (torch.tensor(g, dtype=dtype, device=device),
            np.array([s for s, _ in phases], dtype=np.int64))


def _slots(x: torch.Tensor, width: int, noise: float) -> torch.Tensor:
    """(R, d) → (R, L): the coordinates, zeros, ``noise`` in the noise slot."""
    out = torch.zeros((x.shape[0], width), dtype=x.dtype, device=x.device)
    out[:, : x.shape[1]] = x
    out[:, width - 4] = noise
    return out


def simulate_point(p: Point, gam: dict[str, float], how: Sampling, run: Runner,
                   tick: Callable[[int], object] | None = None) -> Finals:
    """One point's four runs by the fused kernel ``run``, as
    :func:`ktsweep.engines.mc.summarize` takes them (a stack of one point). ``gam``: the
    initial step of each run, by its :data:`~ktsweep.model.quantities.STEP_SIZES` name."""
    R, d, L = how.replicates, p.d, stream.width(p.d)
    dtype, device = how.dtype, how.device
    key = stream.point_key(how.seed, point_hash(p))
    lam_t, lam_s = teacher_spectrum(p), student_spectrum(p)
    c = target_coefficients(p)
    if c is None:  # gaussian target: one draw per replicate (or one for all)
        c = stream.target_normals(key, R, d, how.fixed_target)
    scale = np.sqrt(lam_t) if p.alpha_target is None else target_scale(p)
    theta = torch.tensor(np.broadcast_to(c * scale, (R, d)), dtype=dtype, device=device)
    q = None if p.aligned else torch.tensor(student_basis(p), dtype=dtype, device=device)

    def in_student(x: torch.Tensor) -> torch.Tensor:
        return x if q is None else x @ q

    sigma = math.sqrt(p.sigma2)
    energy = target_energy(p).sum()
    limit = float(0.5 * divergence_limit(np.array([energy]), np.array([p.sigma2]))[0])
    law = p.inputs
    draws_rotated = q is not None and law == "gaussian"  # students draw Qᵀz directly
    rotate = q is not None and not draws_rotated
    ck = np.asarray(how.checkpoints, dtype=np.int64)
    nu = 0.0 if p.inputs_nu is None else float(p.inputs_nu)
    # finite runs: Monte Carlo takes no point at N or n = ∞
    steps_t, steps_direct, steps_s = int(p.steps_t), int(p.steps_direct), int(p.steps_s)

    def model(x0: torch.Tensor, noise: float, role: str, lam: np.ndarray, batch: int,
              offset: torch.Tensor | None = None, record: bool = False, rotated: bool = False
              ) -> Model:
        """The model of the run ``role`` (teacher, direct, t2s, ceiling)."""
        gains, starts = _gains(run_phases(p, role, gam[RUN_STEP_SIZE[role]]), lam, batch, L,
                               dtype, device)
        return Model(_slots(x0, L, noise), gains, starts, offset, record, rotated)

    def run_pass(tag: str, models: list[Model], steps: int, batch: int,
                 skip: torch.Tensor | None = None, ticks: bool = True) -> Pass:
        ps = Pass(key, stream.TAGS[tag], d, law, nu, batch, steps, models,
                  segments(models, steps, ck), limit, q,
                  torch.full((len(models), R, len(ck)), math.nan, dtype=dtype, device=device),
                  torch.zeros((len(models), R), dtype=torch.bool, device=device))
        if skip is not None:  # replicates whose run cannot start (its teacher diverged)
            ps.diverged.copy_(skip)
            for m, bad in zip(models, skip, strict=True):
                m.state[bad] = math.nan
        run(ps)
        if tick is not None and ticks:
            tick(steps)
        return ps

    teacher = model(-theta, -sigma, "teacher", lam_t, p.batch_t, record=True)
    direct = model(-in_student(theta), -sigma, "direct", lam_s, p.batch_s, rotated=rotate)
    if p.batch_t == p.batch_s and not draws_rotated:
        first = run_pass("teacher", [teacher, direct], steps_t, p.batch_t)
        div_t, div_d = first.diverged[0], first.diverged[1]
        curve_t = first.curves[0]
    else:
        first = run_pass("teacher", [teacher], steps_t, p.batch_t)
        div_t, curve_t = first.diverged[0], first.curves[0]
        div_d = run_pass("direct", [direct], steps_direct, p.batch_s,
                         ticks=p.batch_t != p.batch_s).diverged[0]
    eta_t = teacher.state[:, :d]
    offset = in_student(eta_t)
    t2s = model(-in_student(eta_t + theta), 0.0, "t2s", lam_s, p.batch_s,
                offset=_slots(offset, L, 0.0), record=True, rotated=rotate)
    ceiling = model(-in_student(theta), -sigma, "ceiling", lam_s, p.batch_s, rotated=rotate)
    skip = torch.stack([div_t, torch.zeros_like(div_t)])
    second = run_pass("student", [t2s, ceiling], steps_s, p.batch_s, skip=skip)
    errors = {"teacher": in_student(eta_t), "direct": direct.state[:, :d],
              "t2s": t2s.state[:, :d] + offset, "ceiling": ceiling.state[:, :d]}
    flags = {"teacher": div_t, "direct": div_d, "t2s": second.diverged[0] | div_t,
             "ceiling": second.diverged[1]}
    diverged = {k: np.array([bool(v.any())]) for k, v in flags.items()}
    return Finals({k: v.unsqueeze(0) for k, v in errors.items()},
                  {"teacher": curve_t.unsqueeze(0), "t2s": second.curves[0].unsqueeze(0)},
                  diverged)
