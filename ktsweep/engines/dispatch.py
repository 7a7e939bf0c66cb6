"""One entry point to the three estimators, so callers (CLI, sweep tasks) never branch on them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ktsweep.model.params import Point
from ktsweep.model.quantities import assemble

METHODS = ("exact", "mc", "bound")


@dataclass(frozen=True)
class MCSettings:
    """Monte Carlo settings shared by every point of a run."""

    replicates: int = 64
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    fixed_target: bool = False
    require_device: bool = False


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
    """Evaluate ``points`` with each method; returns method → name → array (point first)."""
    from . import bounds, exact, mc  # imported here: torch loads only when an engine runs

    s = mc_settings or MCSettings()
    out: dict[str, dict[str, np.ndarray]] = {}
    wanted = check_methods(methods)
    if points and "exact" in wanted and "bound" in wanted:  # bounds reuse the exact moments
        out["exact"], out["bound"] = _exact_and_bound(points, checkpoints)
    for m in wanted:
        if m in out:
            continue
        if not points:
            out[m] = {}
        elif m == "exact":
            out[m] = exact.evaluate(points, checkpoints)
        elif m == "mc":
            if s.require_device and s.device == "cuda" and not mc.torch.cuda.is_available():
                raise RuntimeError("mc.device is cuda with mc.require_device: true, but no CUDA "
                                   "GPU is visible here; run on a GPU node or set device: auto")
            out[m] = mc.simulate(points, s.replicates, s.seed, s.device, s.dtype, checkpoints,
                                 s.fixed_target)
        else:
            out[m] = bounds.evaluate(points)
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
