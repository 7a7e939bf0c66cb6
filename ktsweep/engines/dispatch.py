"""One entry point to the three estimators, so callers (CLI, sweep tasks) never branch on them.

Misaligned points (docs/science/geometry.md) need no branch here either: the exact engine takes
its general path for exactly the points whose student basis is rotated, and Monte Carlo
iterates those students in their own basis.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ktsweep.model.geometry import geometry_quantities
from ktsweep.model.params import Point
from ktsweep.model.quantities import assemble
from ktsweep.model.spectra import spectrum_fits

METHODS = ("exact", "mc", "bound")


@dataclass(frozen=True)
class MCSettings:
    """Monte Carlo settings shared by every point of a run, as the engine receives them.

    The keys, their defaults and their checks are the config's (``ktsweep.sweep.config.MCConfig``
    builds this record); the engine only reads it.
    """

    replicates: int
    seed: int
    device: str
    dtype: str
    fixed_target: bool
    require_device: bool
    kernel: str = "torch"


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


def check_methods(methods: Iterable[str]) -> tuple[str, ...]:
    """Validate a method list (order kept, duplicates dropped)."""
    out: list[str] = []
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"method {m!r} is invalid: choose from {', '.join(METHODS)}")
        if m not in out:
            out.append(m)
    if not out:
        raise ValueError("methods is empty: choose at least one of " + ", ".join(METHODS))
    return tuple(out)


def run(
    points: Sequence[Point],
    methods: Iterable[str] = ("exact",),
    checkpoints: np.ndarray | None = None,
    mc_settings: MCSettings | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Evaluate ``points`` with each method; returns method → name → array (point first).

    ``mc_settings`` is required when ``mc`` is among the methods.
    """
    from . import bounds, exact  # imported here, and mc (torch) only when it runs

    out: dict[str, dict[str, np.ndarray]] = {}
    wanted = check_methods(methods)
    if "mc" in wanted and mc_settings is None:
        raise ValueError("method mc needs mc_settings (replicates, seed, device, ...)")
    s = mc_settings
    if points and "exact" in wanted and "bound" in wanted:  # bounds reuse the exact moments
        out["exact"], out["bound"] = _exact_and_bound(points, checkpoints)
    for m in wanted:
        if m in out:
            continue
        if not points:
            out[m] = {}
        elif m == "exact":
            out[m] = exact.evaluate(points, checkpoints)
        elif m == "mc" and s is not None:
            from . import mc

            if s.require_device and s.device == "cuda" and not mc.torch.cuda.is_available():
                raise RuntimeError("mc.device is cuda with mc.require_device: true, but no CUDA "
                                   "GPU is visible here; run on a GPU node or set device: auto")
            out[m] = mc.simulate(points, s.replicates, s.seed, s.device, s.dtype, checkpoints,
                                 s.fixed_target, kernel=s.kernel)
        else:
            out[m] = bounds.evaluate(points)
    if points:
        fits = spectrum_fits(points)  # per point, whichever estimator wrote it
        for res in out.values():
            res.update(fits)
    for m in ("exact", "mc"):  # the geometry's static quantities ride with each estimator
        if m in out and points:
            out[m].update(geometry_quantities(points))
    return out


def _exact_and_bound(points: Sequence[Point], checkpoints: np.ndarray | None
                     ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Exact and bound results from one moment computation per group of points sharing d."""
    from . import bounds, exact

    groups: dict[int, list[int]] = {}
    for i, p in enumerate(points):
        groups.setdefault(p.d, []).append(i)
    ex_parts, bd_parts = [], []
    for idx in groups.values():
        pts = [points[i] for i in idx]
        ex, det = exact.evaluate_detail(pts, checkpoints)
        ex_parts.append((idx, ex))
        bd_parts.append((idx, bounds.from_detail(pts, ex, det)))
    if len(groups) == 1:
        return ex_parts[0][1], bd_parts[0][1]
    return assemble(len(points), ex_parts), assemble(len(points), bd_parts)
