"""The ``mc`` estimator: the SGD of docs/science/training.md, literally, for R replicates in torch.

Points sharing (d, batch_t, batch_s) and alignment are stacked into one tensor program;
replicates are a tensor dimension. Each model is iterated in its error coordinates
η = u − θ* (u = Σ^{1/2} w the effective parameter), which is the same recursion as SGD on w,
written so that the float32 state holds the small quantity that decides the risk. A student
whose eigenbasis Q is rotated against the teacher's is iterated in Q's coordinates.

Randomness: every point owns torch generators seeded from (base seed, point hash, stream),
and draws its own (R, B, d + 1) block per step (inputs z and the label noise ε; inputs of
another law than the Gaussian are redrawn by :func:`~ktsweep.model.inputs.sample_inputs`). A point's
numbers are therefore the same alone or stacked, in any order, on any worker (for a given
device, dtype and R). The teacher and the direct student see the same N samples when their
batch sizes match; the T2S and ceiling students see the same n inputs (common random
numbers: each estimate is still unbiased, and their differences are less noisy).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from ktsweep.engines.exact import evaluate_detail, group_by_d
from ktsweep.engines.moments import divergence_limit
from ktsweep.model.geometry import student_basis
from ktsweep.model.inputs import NEUTRAL as NEUTRAL_INPUTS
from ktsweep.model.inputs import sample_inputs
from ktsweep.model.params import Point, derive_seed, point_hash
from ktsweep.model.quantities import (
    RUN_STEP_SIZE,
    STEP_SIZES,
    TUNE_EDGES,
    assemble,
    with_ratios,
)
from ktsweep.model.spectra import (
    Phases,
    resolve_gamma0,
    run_phases,
    student_spectrum,
    target_coefficients,
    target_energy,
    target_scale,
    teacher_spectrum,
)

DTYPES = {"float32": torch.float32, "float64": torch.float64}
KERNELS = ("torch", "fused", "auto")
"""How a point's SGD runs: ``torch`` (this module: draws by torch's generators, the
reference), ``fused`` (:mod:`ktsweep.engines.fused`: one compiled kernel a pass, numba on the
CPU, Triton on a GPU; an error where it cannot run a point), ``auto`` (fused where it can,
torch elsewhere)."""
GROUP_BYTES = 1 << 29
"""Largest random-draw buffer plus states of one stacked group (points are split beyond)."""
_CHECK_EVERY = 256
_PROGRESS: ContextVar[Callable[[int], object] | None] = ContextVar("mc_progress", default=None)


@dataclass(frozen=True, eq=False)  # (arrays inside: compared by identity)
class Sampling:
    """How points are simulated, beside the points and their step sizes (what every kernel,
    torch's or a fused one, takes)."""

    replicates: int
    seed: int  # the base seed every draw of a point derives from
    device: torch.device
    dtype: torch.dtype
    checkpoints: np.ndarray  # learning-curve steps
    fixed_target: bool  # one draw of a gaussian target shared by every replicate


class Finals(NamedTuple):
    """A kernel's results for P stacked points, as :func:`summarize` takes them."""

    errors: dict[str, torch.Tensor]  # run → final error (P, R, d), in the student's basis
    curves: dict[str, torch.Tensor]  # teacher and t2s → learning curve (P, R, C)
    diverged: dict[str, np.ndarray]  # run → (P,) bool


@contextlib.contextmanager
def reporting(callback: Callable[[int], object]) -> Iterator[None]:
    """Within this block, :func:`simulate` calls ``callback(k)`` as it advances: k more
    point-steps done (one SGD step of one stacked point, all its replicates and models).
    The total a call will report is :func:`work_steps` of its points."""
    token = _PROGRESS.set(callback)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def work_steps(points: Sequence[Point]) -> int:
    """Point-steps :func:`simulate` runs for ``points``: the teacher's steps (the direct
    student rides along when the batch sizes match, else runs its own), then the students'.
    Points at N or n = ∞ are not simulated."""
    return int(sum(p.steps_t + p.steps_s + (p.steps_direct if p.batch_t != p.batch_s else 0)
                   for p in points if not (math.isinf(p.N) or math.isinf(p.n))))


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cuda`` without a GPU warns and uses the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        warnings.warn("device 'cuda' requested but no GPU is visible; running on the CPU",
                      RuntimeWarning, stacklevel=2)
        return torch.device("cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device {device!r} is invalid: use cpu, cuda, cuda:N or auto")
    return torch.device(device)


def initial_step_sizes(points: Sequence[Point]) -> dict[str, np.ndarray]:
    """γ0 of the four runs per point; ``{tune: [...]}`` is resolved by the exact risk."""
    out = {k: np.empty(len(points)) for k in STEP_SIZES}
    out.update({k: np.full(len(points), np.nan) for k in TUNE_EDGES})
    tuned = [i for i, p in enumerate(points)
             if isinstance(p.gamma0_t, dict) and "tune" in p.gamma0_t
             or isinstance(p.gamma0_s, dict) and "tune" in p.gamma0_s]
    for i, p in enumerate(points):
        out["gamma0_t"][i] = resolve_gamma0(p.gamma0_t, teacher_spectrum(p))[0]
        g = resolve_gamma0(p.gamma0_s, student_spectrum(p))[0]
        for k in ("gamma0_s", "gamma0_direct", "gamma0_ceiling"):
            out[k][i] = g
    if tuned:
        res = group_by_d([points[i] for i in tuned], lambda pts: evaluate_detail(pts)[0])
        for k in STEP_SIZES + TUNE_EDGES:
            out[k][tuned] = res[k]
    return out


@dataclass
class _Model:
    """One SGD run inside a loop; tensors are in loop order (point dimension first)."""

    state: torch.Tensor  # (P, R, d) error coordinates
    lam: torch.Tensor  # (P, 1, d)
    phases: list[Phases]  # per point
    noisy: bool
    offset: torch.Tensor | None = None  # risk = ½‖state + offset‖²
    curve: torch.Tensor | None = None  # (P, R, C) when recorded
    basis: torch.Tensor | None = None  # (P, d, d) Q: the state is in Q's coordinates, z → Q^T z


def _risk(m: _Model, rows: slice) -> torch.Tensor:
    x = m.state[rows] if m.offset is None else m.state[rows] + m.offset[rows]
    return 0.5 * x.square().sum(-1)


def _run_loop(
    models: list[_Model],
    gens: list[torch.Generator],
    steps: np.ndarray,
    batch: int,
    sigma: torch.Tensor,
    limit: torch.Tensor,
    checkpoints: np.ndarray,
    diverged: np.ndarray,
    laws: list[tuple[str, float | None]],
) -> None:
    """Advance ``models`` (sharing every draw) for ``steps[p]`` steps of point p, in place.

    Points must be sorted by decreasing ``steps``: the first ``active`` rows are running.
    ``laws[p]``: point p's input law (``inputs``, ``inputs_nu``). A non-Gaussian law redraws
    z from the same generator after the block's Gaussian draw, which keeps the noise ε.
    """
    P, R, d = models[0].state.shape
    dev, dt = models[0].state.device, models[0].state.dtype
    buf = torch.empty((P, R, batch, d + 1), device=dev, dtype=dt)
    gain = [torch.zeros((P, 1, d), device=dev, dtype=dt) for _ in models]
    events: dict[int, list[tuple[int, int, float]]] = {}
    for mi, m in enumerate(models):
        for p in range(P):
            for start, gamma in m.phases[p]:
                if start < steps[p]:
                    events.setdefault(int(start), []).append((p, mi, gamma))
    ck_at: dict[int, list[int]] = {}
    for c, t in enumerate(checkpoints):
        ck_at.setdefault(int(t), []).append(c)
    sig = sigma.view(P, 1, 1) if batch > 1 else sigma.view(P, 1)
    active = P
    tick, ticked = _PROGRESS.get(), 0
    for t in range(int(steps[0]) + 1):
        for c in ck_at.get(t, ()):
            for m in models:
                if m.curve is not None:
                    m.curve[:active, :, c] = _risk(m, slice(0, active))
        while active and steps[active - 1] == t:
            active -= 1
        if not active:
            break
        for p, mi, gamma in events.get(t, ()):
            if not diverged[p, mi]:
                gain[mi][p] = (gamma / batch) * models[mi].lam[p]
        if t % _CHECK_EVERY == 0 and t:
            _check(models, limit, diverged, gain, active)
            if tick is not None:
                tick(int(steps[:P].clip(max=t).sum()) - ticked)
                ticked = int(steps[:P].clip(max=t).sum())
        for p in range(active):
            torch.randn((R, batch, d + 1), generator=gens[p], out=buf[p])
            if laws[p][0] != NEUTRAL_INPUTS:
                sample_inputs(*laws[p], (R, batch, d), gens[p], dev, dt, out=buf[p, :, :, :d])
        seen: dict[int, torch.Tensor] = {}  # the inputs in each basis, rotated once per step
        if batch == 1:
            z0 = buf[:active, :, 0, :d]
            eps = buf[:active, :, 0, d]
            for m, g in zip(models, gain, strict=True):
                z = _inputs_in(m.basis, z0, active, seen)
                st = m.state[:active]
                r = (z * st).sum(-1)
                if m.noisy:
                    r.sub_(sig[:active] * eps)
                st.addcmul_(z * r.unsqueeze(-1), g[:active], value=-1.0)
        else:
            z0 = buf[:active, :, :, :d]
            eps = buf[:active, :, :, d]
            for m, g in zip(models, gain, strict=True):
                z = _inputs_in(m.basis, z0, active, seen)
                st = m.state[:active]
                r = torch.matmul(z, st.unsqueeze(-1)).squeeze(-1)
                if m.noisy:
                    r.sub_(sig[:active] * eps)
                grad = torch.matmul(r.unsqueeze(-2), z).squeeze(-2)
                st.addcmul_(grad, g[:active], value=-1.0)
    _check(models, limit, diverged, gain, P)
    if tick is not None:
        tick(int(steps.sum()) - ticked)


def _inputs_in(basis: torch.Tensor | None, z: torch.Tensor, active: int,
               seen: dict[int, torch.Tensor]) -> torch.Tensor:
    """The semantic inputs ``z`` (rows) in a model's coordinates: ``z Q`` (``Q^T z`` per
    sample), literally, so that non-Gaussian inputs keep their law in the semantic basis."""
    if basis is None:
        return z
    if id(basis) not in seen:
        q = basis[:active] if z.dim() == 3 else basis[:active].unsqueeze(1)
        seen[id(basis)] = torch.matmul(z, q)
    return seen[id(basis)]


def _check(models: list[_Model], limit: torch.Tensor, diverged: np.ndarray,
           gain: list[torch.Tensor], active: int) -> None:
    """Freeze runs whose risk is non-finite or passed the limit in any replicate (the rule of
    :data:`~ktsweep.engines.moments.DIVERGED_FACTOR`); other runs, of the same point
    included, are untouched. ``diverged`` is (points, models)."""
    for mi, (m, g) in enumerate(zip(models, gain, strict=True)):
        worst = _risk(m, slice(0, active)).amax(-1)
        bad = (~(worst < limit[:active])).cpu().numpy()
        for p in np.flatnonzero(bad & ~diverged[:active, mi]):
            diverged[p, mi] = True
            g[p] = 0.0
            m.state[p] = float("nan")


def _replicates_last(x: torch.Tensor) -> np.ndarray:
    """float64 NumPy copy with the replicate axis (axis 1) last and contiguous.

    Reducing a contiguous last axis makes each point's statistics independent of how many
    other points share the tensor (torch's strided reductions are not).
    """
    return np.ascontiguousarray(np.moveaxis(x.double().cpu().numpy(), 1, -1))


def _moments(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over the replicate axis (axis 1)."""
    v = _replicates_last(x)
    v[~np.isfinite(v)] = np.nan  # a frozen (diverged) point's records: NaN, not inf
    mean = v.mean(-1)
    if v.shape[-1] < 2:
        return mean, np.full_like(mean, np.nan)
    return mean, v.std(-1, ddof=1) / math.sqrt(v.shape[-1])


def _ratio_se(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Delta-method standard error of mean(a)/mean(b) from paired replicates (P, R)."""
    x, y = _replicates_last(a), _replicates_last(b)
    R = x.shape[-1]
    if R < 2:
        return np.full(x.shape[0], np.nan)
    mx, my = x.mean(-1, keepdims=True), y.mean(-1, keepdims=True)
    with np.errstate(all="ignore"):
        infl = (x - mx) / my - mx * (y - my) / my**2
    return infl.std(-1, ddof=1) / math.sqrt(R)


@dataclass(frozen=True, eq=False)  # (arrays inside: compared by identity)
class _Group:
    """What every run of one stacked group shares: its points, their step sizes, how they are
    sampled, their label noise and divergence limits, and which runs diverged so far."""

    points: Sequence[Point]
    gam: dict[str, np.ndarray]  # the step sizes (:data:`STEP_SIZES`) per point
    how: Sampling
    keys: list[str]  # point_hash of each point: what its draws derive from
    laws: list[tuple[str, float | None]]  # each point's input law (inputs, inputs_nu)
    sigma: torch.Tensor  # (P,) label-noise standard deviation
    limit: torch.Tensor  # (P,) divergence limit on a replicate's risk
    diverged: dict[str, np.ndarray]  # run → (P,) bool, updated as the runs advance

    def tensor(self, x: object) -> torch.Tensor:
        """``x`` on the group's device and dtype."""
        return _tensor(self.how, x)

    def generators(self, stream: str) -> list[torch.Generator]:
        """One generator per point for ``stream``, seeded from (base seed, point, stream)."""
        return [torch.Generator(device=self.how.device).manual_seed(
            derive_seed(self.how.seed, k, stream)) for k in self.keys]

    def phases(self, run: str) -> list[Phases]:
        """Each point's schedule for ``run`` at its step size."""
        return [run_phases(p, run, self.gam[RUN_STEP_SIZE[run]][i])
                for i, p in enumerate(self.points)]


def _simulate_group(points: Sequence[Point], gam: dict[str, np.ndarray], how: Sampling
                    ) -> dict[str, np.ndarray]:
    """One stacked tensor program for points sharing (d, batch_t, batch_s) and alignment: the
    teacher (and the direct student) on N samples, then the T2S and ceiling students on n.

    Students of rotated points (docs/science/geometry.md) are iterated in their eigenbasis Q:
    their state is Q^T η and each semantic input z is rotated to Q^T z before it is used.
    """
    g = _group(points, gam, how)
    P, R = len(points), how.replicates
    bt, bs = points[0].batch_t, points[0].batch_s
    lam_t = g.tensor(np.array([teacher_spectrum(p) for p in points])).unsqueeze(1)
    lam_s = g.tensor(np.array([student_spectrum(p) for p in points])).unsqueeze(1)
    theta = _target(g, lam_t)
    # students of rotated points run in their eigenbasis Q; None: every point aligned
    basis = None if all(p.aligned for p in points) else g.tensor(
        np.array([student_basis(p) for p in points]))
    nan_curve = torch.full((P, R, len(how.checkpoints)), float("nan"), device=how.device,
                           dtype=how.dtype)
    curve_t, curve_t2s = nan_curve.clone(), nan_curve.clone()  # filled in by _run_stacked
    teacher = _Model(-theta.clone(), lam_t, g.phases("teacher"), True, curve=curve_t)
    direct = _Model(-_in_basis(theta, basis), lam_s, g.phases("direct"), True, basis=basis)
    steps_t = np.array([p.steps_t for p in points])
    if bt == bs:  # the direct student sees the teacher's samples
        _run_stacked(g, [teacher, direct], ["teacher", "direct"], g.generators("teacher"),
                     steps_t, bt)
    else:
        _run_stacked(g, [teacher], ["teacher"], g.generators("teacher"), steps_t, bt)
        _run_stacked(g, [direct], ["direct"], g.generators("direct"),
                     np.array([p.steps_direct for p in points]), bs)
    g.diverged["t2s"] |= g.diverged["teacher"]  # it learns from the teacher
    offset = _in_basis(teacher.state, basis)
    t2s = _Model(-_in_basis(teacher.state + theta, basis), lam_s, g.phases("t2s"), False,
                 offset=offset, curve=curve_t2s, basis=basis)
    ceiling = _Model(-_in_basis(theta, basis), lam_s, g.phases("ceiling"), True, basis=basis)
    _run_stacked(g, [t2s, ceiling], ["t2s", "ceiling"], g.generators("student"),
                 np.array([p.steps_s for p in points]), bs)

    errors = {"teacher": _in_basis(teacher.state, basis),  # per-mode risks in the student's basis
              "direct": direct.state, "t2s": t2s.state + offset, "ceiling": ceiling.state}
    return summarize(Finals(errors, {"teacher": curve_t, "t2s": curve_t2s}, g.diverged), gam)


def _group(points: Sequence[Point], gam: dict[str, np.ndarray], how: Sampling) -> _Group:
    """The shared state of a stacked group, no run diverged yet."""
    energy = np.array([target_energy(p).sum() for p in points])
    sigma2 = np.array([p.sigma2 for p in points])
    return _Group(
        points=points, gam=gam, how=how, keys=[point_hash(p) for p in points],
        laws=[(p.inputs, p.inputs_nu) for p in points],
        sigma=_tensor(how, [math.sqrt(p.sigma2) for p in points]),
        # risk-unit form of moments.divergence_limit (which bounds Σa + s² = 2·risk + s²)
        limit=_tensor(how, 0.5 * divergence_limit(energy, sigma2)),
        diverged={name: np.zeros(len(points), dtype=bool)
                  for name in ("teacher", "direct", "t2s", "ceiling")})


def _tensor(how: Sampling, x: object) -> torch.Tensor:
    """``x`` on the sampling's device and dtype."""
    return torch.tensor(x, device=how.device, dtype=how.dtype)


def _target(g: _Group, lam_t: torch.Tensor) -> torch.Tensor:
    """The target's coordinates θ* in the teacher's semantic basis, (P, R, d): a gaussian
    target drawn per replicate (or once, shared, with ``fixed_target``) from the point's
    ``target`` stream, a deterministic one as given; scaled by √λ_T, or by the target's own
    scale where it is set in the semantic basis."""
    how = g.how
    P, R, d = len(g.points), how.replicates, g.points[0].d
    theta = torch.empty((P, 1 if how.fixed_target else R, d), device=how.device,
                        dtype=how.dtype)
    for i, (p, gen) in enumerate(zip(g.points, g.generators("target"), strict=True)):
        c = target_coefficients(p)
        if c is None:  # gaussian target: one draw per replicate (or one shared draw)
            theta[i] = torch.randn((theta.shape[1], d), generator=gen, device=how.device,
                                   dtype=how.dtype)
        else:
            theta[i] = g.tensor(c)
    scale = lam_t.sqrt()
    for i, p in enumerate(g.points):
        if p.alpha_target is not None:  # the target set in the semantic basis
            scale[i, 0] = g.tensor(target_scale(p))
    theta.mul_(scale)
    return theta.expand(P, R, d)


def _in_basis(x: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    """Semantic coordinates ``x`` (P, R, d) in the students' eigenbases (``x Q``)."""
    return x if basis is None else torch.matmul(x, basis)


def _run_stacked(g: _Group, models: list[_Model], names: list[str],
                 generators: list[torch.Generator], steps: np.ndarray, batch: int) -> None:
    """Run ``models`` (named ``names`` in ``g.diverged``), which share every draw, for
    ``steps[p]`` steps of point p, in place: the points go through :func:`_run_loop` sorted
    by decreasing steps and come back in their own order."""
    order = np.argsort(-steps, kind="stable")
    idx = torch.as_tensor(order, device=g.how.device)
    bases = {id(m.basis): m.basis[idx] for m in models if m.basis is not None}
    sub = [_Model(m.state[idx].clone(), m.lam[idx], [m.phases[i] for i in order], m.noisy,
                  None if m.offset is None else m.offset[idx],
                  None if m.curve is None else m.curve[idx].clone(),
                  None if m.basis is None else bases[id(m.basis)]) for m in models]
    div = np.stack([g.diverged[n][order] for n in names], axis=1)
    _run_loop(sub, [generators[i] for i in order], steps[order], batch, g.sigma[idx],
              g.limit[idx], np.asarray(g.how.checkpoints), div, [g.laws[i] for i in order])
    for m, s in zip(models, sub, strict=True):
        m.state[idx] = s.state
        if m.curve is not None and s.curve is not None:
            m.curve[idx] = s.curve
    for j, n in enumerate(names):
        g.diverged[n][order] |= div[:, j]


def summarize(finals: Finals, gam: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every quantity of a stack of points from their runs' :class:`Finals` and the step sizes
    used (shared by every kernel)."""
    errors, curves, diverged = finals
    out: dict[str, np.ndarray] = {}
    per_rep = {}
    for name, err in errors.items():
        modes = 0.5 * err.square()
        per_rep[name] = modes.sum(-1)
        out[f"risk_{name}"], out[f"risk_{name}_se"] = _moments(per_rep[name])
        out[f"mode_{name}"], out[f"mode_{name}_se"] = _moments(modes)
        if name in curves:
            out[f"curve_{name}"], out[f"curve_{name}_se"] = _moments(curves[name])
    with_ratios(out)
    rt, rd, rs, rc = (per_rep[k] for k in ("teacher", "direct", "t2s", "ceiling"))
    out["der_se"] = _ratio_se(rd, rs)
    out["w2s_ratio_se"] = _ratio_se(rs, rt)
    out["pgr_se"] = np.where(np.isnan(out["pgr"]), np.nan, _ratio_se(rt - rs, rt - rc))
    for name, bad in diverged.items():  # only the diverged runs (T2S: or its teacher)
        for k in (f"risk_{name}", f"mode_{name}", f"curve_{name}"):
            for key in (k, k + "_se"):
                if key in out:
                    out[key][bad] = np.nan
    with_ratios(out)
    for k in ("der", "pgr", "w2s_ratio"):
        out[k + "_se"][~np.isfinite(out[k])] = np.nan
    any_bad = np.logical_or.reduce(list(diverged.values()))
    out["status"] = np.where(any_bad, "diverged", "ok")
    out.update({k: v.copy() for k, v in gam.items()})
    return out


def _group_size(p: Point, replicates: int, itemsize: int) -> int:
    """How many points fit in one stacked program under :data:`GROUP_BYTES`."""
    per_point = replicates * p.d * (max(p.batch_t, p.batch_s) + 8) * itemsize
    if not p.aligned:  # the student basis Q and the inputs seen in it
        per_point += (p.d * p.d + replicates * p.d * max(p.batch_t, p.batch_s)) * itemsize
    return max(1, GROUP_BYTES // per_point)


def simulate(
    points: Sequence[Point],
    replicates: int = 64,
    seed: int = 0,
    device: str | torch.device = "auto",
    dtype: str = "float32",
    checkpoints: np.ndarray | None = None,
    fixed_target: bool = False,
    threads: int | None = 1,
    kernel: str = "torch",
) -> dict[str, np.ndarray]:
    """Monte Carlo mean and standard error of every quantity, per point, in input order.

    ``kernel``: one of :data:`KERNELS`. The fused kernels draw another stream than torch's
    (docs/science/montecarlo.md), so the kernel, like the seed, is part of what identifies a
    result.

    ``threads``: torch intra-op threads while running on the CPU (None: leave torch's
    setting). One is the fastest here: at d = 1000, R = 256 a step's tensors are too small to
    repay thread hand-offs (4.4 vs 5.4 ns per replicate·mode·step with two threads on two
    cores, benchmarks/bench_mc.py); run points in parallel with dask workers instead.
    """
    if replicates < 1:
        raise ValueError(f"replicates = {replicates} is invalid: need >= 1")
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is invalid: use one of {', '.join(DTYPES)}")
    if kernel not in KERNELS:
        raise ValueError(f"kernel {kernel!r} is invalid: use one of {', '.join(KERNELS)}")
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    dt = DTYPES[dtype]
    ck = np.zeros(0, dtype=np.int64) if checkpoints is None else np.asarray(checkpoints)
    gam = initial_step_sizes(points)
    groups: dict[tuple[int, int, int, bool], list[int]] = {}
    limit = np.array([math.isinf(p.N) or math.isinf(p.n) for p in points], dtype=bool)
    fused = [i for i in map(int, np.flatnonzero(~limit))
             if _takes_fused(points[i], kernel, dev, replicates)]
    for i, p in enumerate(points):
        if not limit[i] and i not in fused:  # N or n = inf: no simulation reaches the limit
            groups.setdefault((p.d, p.batch_t, p.batch_s, p.aligned), []).append(i)
    previous = torch.get_num_threads()
    if threads is not None and dev.type == "cpu":
        torch.set_num_threads(threads)
    how = Sampling(replicates, seed, dev, dt, ck, fixed_target)
    try:
        parts = _run_groups(points, groups, gam, how)
        if fused:
            from ktsweep.engines import fused as fused_kernels

            parts.append((fused, fused_kernels.simulate(
                [points[i] for i in fused], {k: v[fused] for k, v in gam.items()}, how,
                threads, _PROGRESS.get())))
        out = assemble(len(points), parts)
    finally:
        torch.set_num_threads(previous)
    if limit.any():
        status = out.get("status", np.full(len(points), "", dtype="<U8"))
        out["status"] = np.where(limit, "missing", status)
        out.update({k: v.copy() for k, v in gam.items()})
    return out


def _takes_fused(p: Point, kernel: str, device: torch.device, replicates: int) -> bool:
    """Whether point ``p`` runs on the fused kernel (``fused`` that cannot run it: an error)."""
    if kernel == "torch":
        return False
    from ktsweep.engines.fused import unsupported

    reason = unsupported(p, device, replicates)
    if reason is not None and kernel == "fused":
        raise ValueError(f"kernel fused cannot run point {point_hash(p)}: {reason}; use "
                         "kernel: auto (fused where it can) or torch")
    return reason is None


def _run_groups(points: Sequence[Point], groups: dict[tuple[int, int, int, bool], list[int]],
                gam: dict[str, np.ndarray], how: Sampling
                ) -> list[tuple[list[int], dict[str, np.ndarray]]]:
    """Simulate every stacked group (split to fit memory): (indices, results) parts."""
    parts = []
    with torch.no_grad():
        for idx in groups.values():
            size = _group_size(points[idx[0]], how.replicates, torch.finfo(how.dtype).bits // 8)
            for lo in range(0, len(idx), size):
                part = idx[lo : lo + size]
                parts.append((part, _simulate_group(
                    [points[i] for i in part], {k: v[part] for k, v in gam.items()}, how)))
    return parts
