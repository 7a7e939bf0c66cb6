"""Input laws (ktsweep.model.inputs): unit variance, the stated ψ, seeding, validation."""

from __future__ import annotations

import math

import pytest
import torch

from ktsweep.model.inputs import INPUTS, check_inputs, fourth_moment, sample_inputs

LAWS = [("gaussian", None), ("rademacher", None), ("uniform", None), ("student_t", 12.0),
        ("student_t", 6.5)]


def _gen(seed: int = 7) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(("dist", "nu"), LAWS)
def test_samples_have_zero_mean_unit_variance_and_stated_fourth_moment(dist, nu) -> None:
    """Sample moments of 2²⁰ draws within 5 standard errors of 0, 1 and ψ.

    Catches: a Student-t scaled by √(ν/(ν−2)) instead of √((ν−2)/ν) (variance ν²/(ν−2)²),
    a uniform on (−1, 1) (variance 1/3), a χ² drawn as Gamma(ν) instead of 2·Gamma(ν/2)
    (variance off), a table ψ that disagrees with the sampler (e.g. 3(ν−2)/(ν−4) written
    3ν/(ν−4)). For ν = 6.5 the eighth moment is infinite, so only mean and variance are
    checked there (the sample ψ converges too slowly to test).
    """
    z = sample_inputs(dist, nu, (1 << 20,), _gen(), "cpu", torch.float64)
    n = z.numel()
    sq = z.square()
    assert abs(z.mean().item()) < 5 * z.std().item() / math.sqrt(n)
    assert abs(sq.mean().item() - 1.0) < 5 * sq.std().item() / math.sqrt(n) + 1e-12
    if nu is None or nu > 8:
        quad = sq.square()
        se = quad.std().item() / math.sqrt(n)
        assert abs(quad.mean().item() - fourth_moment(dist, nu)) < 5 * se + 1e-12


def test_fourth_moments_match_closed_forms() -> None:
    """Catches a ψ table that drifts from the docs (3, 1, 9/5, 3(ν−2)/(ν−4))."""
    assert fourth_moment("gaussian") == 3.0
    assert fourth_moment("rademacher") == 1.0
    assert fourth_moment("uniform") == pytest.approx(1.8, rel=1e-15)
    assert fourth_moment("student_t", 6.0) == pytest.approx(6.0, rel=1e-15)
    assert fourth_moment("student_t", 1e9) == pytest.approx(3.0, rel=1e-8)


def test_gaussian_is_exactly_randn_and_draws_are_seeded() -> None:
    """Gaussian draws are bit-identical to torch.randn from the same generator (today's Monte
    Carlo stream), and every law repeats under the same seed and changes with another.

    Catches: a gaussian branch that rescales or draws in another dtype, a sampler that uses
    torch's global generator (a different seed would then give the same draws only by luck,
    and the same seed different draws)."""
    ref = torch.randn((3, 5), generator=_gen(3), dtype=torch.float32)
    got = sample_inputs("gaussian", None, (3, 5), _gen(3), "cpu", torch.float32)
    assert torch.equal(ref, got)
    buf = torch.empty((3, 5))
    sample_inputs("gaussian", None, (3, 5), _gen(3), "cpu", torch.float32, out=buf)
    assert torch.equal(ref, buf)
    for dist, nu in LAWS:
        a = sample_inputs(dist, nu, (4, 64), _gen(11), "cpu", torch.float32)
        b = sample_inputs(dist, nu, (4, 64), _gen(11), "cpu", torch.float32)
        c = sample_inputs(dist, nu, (4, 64), _gen(12), "cpu", torch.float32)
        assert a.dtype == torch.float32 and a.shape == (4, 64)
        assert torch.equal(a, b) and not torch.equal(a, c), dist


@pytest.mark.parametrize(
    ("dist", "nu", "name"),
    [("laplace", None, "inputs"), ("student_t", None, "inputs_nu"),
     ("student_t", 4.0, "inputs_nu"), ("student_t", 3, "inputs_nu"),
     ("student_t", float("inf"), "inputs_nu"), ("gaussian", 5.0, "inputs_nu"),
     ("rademacher", 8, "inputs_nu")],
)
def test_bad_laws_name_the_parameter(dist, nu, name) -> None:
    with pytest.raises(ValueError, match=rf"'{name}'"):
        check_inputs(dist, nu)


def test_names_resolve() -> None:
    assert check_inputs(None, None) == ("gaussian", None)
    assert check_inputs("student_t", 5) == ("student_t", 5.0)
    assert set(INPUTS) == {"gaussian", "rademacher", "uniform", "student_t"}
