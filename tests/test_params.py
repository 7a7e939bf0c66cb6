"""Point validation (errors name the parameter) and the canonical point hash."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from ktsweep.model.params import ParameterError, make_point, point_hash

BASE: dict[str, Any] = {"alpha_t": 1.5, "alpha_s": 2.0, "N": 1000, "n": 5000, "sigma2": 0.01,
                        "d": 100}

# Pinned once (ktsweep 0.1.0, CPython 3.11, x86-64 Linux). The hash names points in the
# result cube and seeds every Monte Carlo draw, so a change of platform, Python or hashing
# code that alters it would silently orphan stored results: this must fail loudly.
PINNED_HASH = "0668fac0e9e0c8da"


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"alpha_t": 0.0}, "alpha_t"),
        ({"alpha_s": -1.0}, "alpha_s"),
        ({"N": 0}, "N"),
        ({"n": -5}, "n"),
        ({"N": 10.5}, "N"),
        ({"sigma2": -0.1}, "sigma2"),
        ({"sigma2": float("nan")}, "sigma2"),
        ({"alpha_t": True}, "alpha_t"),
        ({"alpha_t": "abc"}, "alpha_t"),
        ({"d": 0}, "d"),
        ({"r_s": 101}, "r_s"),
        ({"r_t": 0}, "r_t"),
        ({"target": "lowdim", "k_dagger": 101}, "k_dagger"),
        ({"target": "lowdim", "k_dagger": 0}, "k_dagger"),
        ({"target": "sparse"}, "target"),
        ({"target": "lowdim"}, "k_dagger"),
        ({"beta": -0.5}, "beta"),
        ({"target": "power", "beta": 40}, "beta"),  # i^beta overflows float32 draws
        ({"target": "lowdim", "k_dagger": 2, "amplitude": 1e200}, "amplitude"),  # overflow
        ({"sigma2": 1e13}, "sigma2"),
        ({"batch_t": 0}, "batch_t"),
        ({"schedule_s": "cosine"}, "schedule_s"),
        ({"horizon_t": 999}, "horizon_t"),
        ({"batch_s": 10, "horizon_s": 499}, "horizon_s"),
        ({"gamma0_t": 0.0}, "gamma0_t"),
        ({"gamma0_t": -0.1}, "gamma0_t"),
        ({"gamma0_t": "fast"}, "gamma0_t"),
        ({"gamma0_t": [0.1, 0.2]}, "gamma0_t"),
        ({"gamma0_s": {"scale": 0}}, "gamma0_s"),
        ({"gamma0_s": {"scale": -1}}, "gamma0_s"),
        ({"gamma0_s": {"tune": []}}, "gamma0_s"),
        ({"gamma0_s": {"tune": 0.1}}, "gamma0_s"),
        ({"gamma0_s": {"tune": [0.1, -0.2]}}, "gamma0_s"),
        ({"gamma0_s": {"scale": 0.5, "tune": [0.1]}}, "gamma0_s"),
        ({"gamma0_s": {"step": 0.1}}, "gamma0_s"),
        ({"inputs": "laplace"}, "inputs"),
        ({"inputs": "student_t"}, "inputs_nu"),
        ({"inputs": "student_t", "inputs_nu": 4}, "inputs_nu"),
        ({"inputs_nu": 6}, "inputs_nu"),
    ],
)
def test_validation_error_names_parameter(changes: dict[str, Any], name: str) -> None:
    with pytest.raises(ParameterError, match=rf"'{name}'"):
        make_point({**BASE, **changes})


def test_unknown_and_missing_keys_are_named() -> None:
    with pytest.raises(ParameterError, match=r"unknown parameter 'alpha'"):
        make_point({**BASE, "alpha": 1.0})
    for key in ("alpha_t", "alpha_s", "N", "n", "sigma2"):
        values = {k: v for k, v in BASE.items() if k != key}
        with pytest.raises(ParameterError, match=rf"'{key}' is required"):
            make_point(values)


def test_horizon_equal_to_steps_and_longer_are_valid() -> None:
    p = make_point({**BASE, "batch_t": 10, "horizon_t": 100, "horizon_s": 50_000})
    assert p.steps_t == 100 and p.plan_t == 100
    assert p.steps_s == 5000 and p.plan_s == 50_000


def test_defaults_resolved() -> None:
    p = make_point(BASE)
    assert p.rank_t == p.rank_s == 100
    assert p.target == "gaussian" and p.batch_t == p.batch_s == 1
    assert p.schedule_t == p.schedule_s == "geometric"
    assert p.gamma0_t == p.gamma0_s == {"scale": 0.5}
    assert p.plan_t == p.steps_t == 1000 and p.plan_s == p.steps_s == 5000
    assert make_point({**BASE, "N": "1e4"}).N == 10_000  # YAML 1.1 reads 1e4 as a string


def test_hash_independent_of_key_order() -> None:
    forward = dict(BASE)
    backward = dict(reversed(list(BASE.items())))
    assert list(forward) != list(backward)
    assert point_hash(forward) == point_hash(backward)
    gam = {"gamma0_s": {"tune": [0.1, 0.05]}}
    assert point_hash({**BASE, **gam}) == point_hash({**BASE, "gamma0_s": {"tune": [0.05, 0.1]}})


def test_hash_independent_of_int_float_spelling() -> None:
    h = point_hash(BASE)
    assert point_hash({**BASE, "N": 1000.0, "n": 5000.0, "d": 100.0}) == h
    assert point_hash({**BASE, "alpha_s": 2, "sigma2": 1e-2}) == h
    assert point_hash({**BASE, "N": 2}) == point_hash({**BASE, "N": 2.0})
    assert point_hash({**BASE, "gamma0_t": 1}) == point_hash({**BASE, "gamma0_t": 1.0})


def test_hash_independent_of_spelled_out_defaults() -> None:
    spelled = {
        **BASE, "r_t": 100, "r_s": 100, "target": "gaussian", "amplitude": 1.0, "beta": 0,
        "batch_t": 1, "batch_s": 1, "schedule_t": "geometric", "schedule_s": "geometric",
        "horizon_t": 1000, "horizon_s": 5000, "gamma0_t": {"scale": 0.5},
        "gamma0_s": {"scale": 0.5}, "k_dagger": None,
    }
    assert point_hash(spelled) == point_hash(BASE) == make_point(BASE).key


def test_hash_distinguishes_values() -> None:
    h = point_hash(BASE)
    for change in ({"N": 1001}, {"alpha_t": 1.5000001}, {"gamma0_s": {"scale": 0.4}},
                   {"gamma0_s": 0.5}, {"schedule_t": "constant"}, {"horizon_s": 5001}):
        assert point_hash({**BASE, **change}) != h, change


def test_hash_pinned_value() -> None:
    assert point_hash(BASE) == PINNED_HASH


def test_neutral_inputs_keep_todays_hash_and_other_laws_change_it() -> None:
    """The input law at its neutral value (gaussian, no ν) is left out of the hash, so cubes
    and Monte Carlo seeds from before ``inputs`` existed stay valid; any other law is a
    different point. Catches: hashing ``inputs`` always (the pinned hash moves), or never
    (a Rademacher point would reuse the Gaussian point's cube entry and seeds)."""
    assert point_hash({**BASE, "inputs": "gaussian", "inputs_nu": None}) == PINNED_HASH
    others = {point_hash({**BASE, "inputs": law}) for law in ("rademacher", "uniform")}
    others |= {point_hash({**BASE, "inputs": "student_t", "inputs_nu": nu}) for nu in (5, 6.0)}
    assert len(others) == 4 and PINNED_HASH not in others


def test_hash_same_in_another_process() -> None:
    code = (
        "from ktsweep.model.params import point_hash; "
        "print(point_hash({'d': 100.0, 'sigma2': 0.01, 'n': 5000, 'N': 1000, "
        "'alpha_s': 2, 'alpha_t': 1.5}))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # str hashing differs; ours must not
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True, timeout=120)
    assert out.stdout.strip() == point_hash(BASE) == PINNED_HASH
