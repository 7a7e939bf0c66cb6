"""The estimators' names and the settings the config hands to them (the contract between the
config, the grid, the engines and the cube).

``exact`` and ``mc`` give per-point risks (the cube's ``estimator`` dimension, in this order);
``bound`` gives the paper's bounds beside them. Monte Carlo's settings are declared, with their
defaults and checks, by the config (``ktsweep.sweep.config.MCConfig``), which builds this
record; the engine only reads it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

Method = Literal["exact", "mc", "bound"]
"""An estimator's name (the config's ``methods``)."""
METHODS: tuple[str, ...] = get_args(Method)
"""Every estimator, in the order a run reports them."""
ESTIMATORS: tuple[str, ...] = ("exact", "mc")
"""The estimators with per-point risks: the cube's ``estimator`` dimension, in this order."""


def risk_estimators(methods: Iterable[str]) -> tuple[str, ...]:
    """Those of ``methods`` that give per-point risks, in the cube's order."""
    chosen = set(methods)
    return tuple(m for m in ESTIMATORS if m in chosen)


@dataclass(frozen=True)
class MCSettings:
    """Monte Carlo settings shared by every point of a run, as the engine receives them."""

    replicates: int
    seed: int
    device: str
    dtype: str
    fixed_target: bool
    require_device: bool
    kernel: str = "torch"  # torch (the reference), fused (compiled kernels) or auto
