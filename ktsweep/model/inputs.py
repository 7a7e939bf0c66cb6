"""Input distributions: the law of each coordinate of the semantic input z
(docs/science/inputs.md).

Coordinates are independent, symmetric and scaled to unit variance, so E[zzᵀ] = I whatever
the law and only the fourth moment ψ = E[z_i⁴] enters the exact second-moment recursion
(it multiplies the diagonal of E[zzᵀ A zzᵀ]). The names here are the values of the point
parameter ``inputs``; ``student_t`` also needs ``inputs_nu`` = ν > 4 (ψ is infinite at ν ≤ 4).

| name         | law of z_i (unit variance)            | ψ = E z_i⁴        |
| ------------ | ------------------------------------- | ----------------- |
| ``gaussian`` | N(0, 1)                               | 3                 |
| ``rademacher`` | ±1 with probability ½ each          | 1                 |
| ``uniform``  | U(−√3, √3)                            | 9/5               |
| ``student_t`` | t_ν · √((ν − 2)/ν)                   | 3(ν − 2)/(ν − 4)  |
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it draws: every point parses this module, and an
    import torch  # exact-only sweep job never needs torch (about 2 s of its start-up)

INPUTS: tuple[str, ...] = ("gaussian", "rademacher", "uniform", "student_t")
NEUTRAL = "gaussian"
"""The default law: the paper's model; a point at it hashes as it did before ``inputs``."""
MIN_NU = 4.0
"""Student-t degrees of freedom must exceed this (finite fourth moment)."""


def check_inputs(dist: str | None, nu: float | None) -> tuple[str, float | None]:
    """Resolve and validate (``inputs``, ``inputs_nu``); ValueError names the parameter.

    ``inputs_nu`` belongs to ``student_t`` only: it is required there and refused elsewhere
    (so that two spellings of one point cannot hash differently).
    """
    name = NEUTRAL if dist is None else dist
    if name not in INPUTS:
        raise ValueError(f"parameter 'inputs' = {dist!r} is invalid: one of {', '.join(INPUTS)}")
    if name != "student_t":
        if nu is not None:
            raise ValueError(f"parameter 'inputs_nu' = {nu!r} is invalid: it applies only to "
                             f"inputs = student_t (inputs = {name}); drop it")
        return name, None
    if nu is None:
        raise ValueError("parameter 'inputs_nu' is required when inputs = student_t "
                         f"(degrees of freedom ν > {MIN_NU:g})")
    if isinstance(nu, bool) or not isinstance(nu, int | float) or not math.isfinite(nu) \
            or nu <= MIN_NU:
        raise ValueError(f"parameter 'inputs_nu' = {nu!r} is invalid: student_t needs ν > "
                         f"{MIN_NU:g} (finite fourth moment); use a number above {MIN_NU:g}")
    return name, float(nu)


def fourth_moment(dist: str, nu: float | None = None) -> float:
    """ψ = E[z_i⁴] of a unit-variance coordinate (3 for the Gaussian)."""
    name, nu = check_inputs(dist, nu)
    if name == "gaussian":
        return 3.0
    if name == "rademacher":
        return 1.0
    if name == "uniform":
        return 9.0 / 5.0
    assert nu is not None
    return 3.0 * (nu - 2.0) / (nu - 4.0)


def _standard_gamma(shape_a: float, size: tuple[int, ...], generator: torch.Generator,
                    device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """Gamma(a, 1) draws for a ≥ 1 by Marsaglia–Tsang rejection, from ``generator`` alone.

    torch's own gamma sampler takes no generator, which would break the per-point seeding.
    Every round redraws the rejected entries (acceptance > 95 %), in a fixed order, so the
    result depends only on the generator's state and ``size``.
    """
    import torch

    dd = shape_a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * dd)
    out = torch.empty(size, device=device, dtype=torch.float64)
    flat = out.view(-1)
    todo = torch.arange(flat.numel(), device=device)
    while todo.numel():
        m = todo.numel()
        x = torch.randn(m, generator=generator, device=device, dtype=torch.float64)
        u = torch.rand(m, generator=generator, device=device, dtype=torch.float64)
        v = (1.0 + c * x) ** 3
        with torch.no_grad():
            ok = (v > 0) & (torch.log(u) < 0.5 * x * x + dd - dd * v
                            + dd * torch.log(v.clamp_min(1e-300)))
        flat[todo[ok]] = dd * v[ok]
        todo = todo[~ok]
    return out.to(dtype)


def sample_inputs(
    dist: str,
    nu: float | None,
    shape: tuple[int, ...],
    generator: torch.Generator,
    device: torch.device | str,
    dtype: torch.dtype,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Independent unit-variance draws of the law ``dist`` (ν for ``student_t``).

    Only ``generator`` supplies randomness (the caller seeds it per point and stream).
    ``gaussian`` is exactly ``torch.randn`` (the draws Monte Carlo made before other laws
    existed). ``out``: write into this tensor (its shape must be ``shape``) and return it.
    """
    import torch

    name, nu = check_inputs(dist, nu)
    if name == "gaussian":
        if out is not None:
            return torch.randn(shape, generator=generator, device=device, dtype=dtype, out=out)
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if name == "rademacher":
        z = (torch.rand(shape, generator=generator, device=device, dtype=dtype)
             .lt_(0.5).to(dtype).mul_(2.0).sub_(1.0))
    elif name == "uniform":
        z = (torch.rand(shape, generator=generator, device=device, dtype=dtype)
             .mul_(2.0).sub_(1.0).mul_(math.sqrt(3.0)))
    else:  # student_t: Z · sqrt((ν − 2) / V), V ~ χ²_ν = 2 Gamma(ν/2)
        assert nu is not None
        normal = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        chi2 = 2.0 * _standard_gamma(nu / 2.0, tuple(shape), generator, device, torch.float64)
        z = normal * torch.sqrt((nu - 2.0) / chi2).to(dtype)
    if out is not None:
        out.copy_(z)
        return out
    return z
