"""One entry point to the three estimators, so callers (CLI, sweep tasks) never branch on them.

Misaligned points (docs/science/geometry.md) need no branch here either: the exact engine takes
its general path for exactly the points whose student basis is rotated, and Monte Carlo
iterates those students in their own basis.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ktsweep.model.estimators import ESTIMATORS, METHODS, MCSettings
from ktsweep.model.geometry import geometry_quantities
from ktsweep.model.params import Point
from ktsweep.model.quantities import assemble
from ktsweep.model.spectra import spectrum_fits


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
    for m in ESTIMATORS:  # the geometry's static quantities ride with each estimator
        if m in out and points:
            out[m].update(geometry_quantities(points))
    return out


def _exact_and_bound(points: Sequence[Point], checkpoints: np.ndarray | None
                     ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Exact and bound results from one moment computation per group of points sharing d."""
    from . import bounds, exact

    parts = []
    for idx in exact.groups_by_d(points).values():
        pts = [points[i] for i in idx]
        ex, det = exact.evaluate_detail(pts, checkpoints)
        parts.append((idx, ex, bounds.from_detail(pts, ex, det)))
    if len(parts) == 1:
        return parts[0][1], parts[0][2]
    return (assemble(len(points), ((idx, ex) for idx, ex, _ in parts)),
            assemble(len(points), ((idx, bd) for idx, _, bd in parts)))
