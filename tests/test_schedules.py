"""Step-size schedules of model.md §2 against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ktsweep.model.spectra import (
    cutoff_threshold,
    geometric_period,
    kstar,
    kstar_power,
    phase_product,
    schedule_phases,
    step_sizes,
)


def expand(kind: str, gamma0: float, steps: int, horizon: int) -> np.ndarray:
    """The library's schedule, one step size per step."""
    return step_sizes(schedule_phases(kind, gamma0, steps, horizon), steps)


def contract_schedule(kind: str, gamma0: float, steps: int, horizon: int) -> np.ndarray:
    """model.md §2 written literally (K = max(1, floor(H / log2 H)); K = 1 for H = 1)."""

    def period(h: int) -> int:
        return 1 if h < 2 else max(1, math.floor(h / math.log2(h)))

    out = np.empty(steps)
    for t in range(steps):
        if kind == "constant":
            out[t] = gamma0
        elif kind == "geometric":
            out[t] = gamma0 * 2.0 ** -(t // period(horizon))
        else:
            head = horizon // 2
            out[t] = gamma0 if t < head else gamma0 * 2.0 ** -((t - head) // period(horizon - head))
    return out


def test_geometric_hand_values() -> None:
    # H = 10: K = floor(10 / log2 10) = floor(3.01) = 3.
    expected = [0.8] * 3 + [0.4] * 3 + [0.2] * 3 + [0.1]
    np.testing.assert_array_equal(expand("geometric", 0.8, 10, 10), expected)
    # H = 100: K = floor(100 / 6.644) = 15; the last step t = 99 is in phase 6.
    g = expand("geometric", 1.0, 100, 100)
    assert geometric_period(100) == 15
    assert g[14] == 1.0 and g[15] == 0.5 and g[29] == 0.5 and g[30] == 0.25
    assert g[99] == 2.0**-6


def test_tail_geometric_hand_values() -> None:
    # H = 20: constant for t < 10, then geometric planned for 10 steps (K = 3).
    expected = [1.0] * 10 + [1.0] * 3 + [0.5] * 3 + [0.25] * 3 + [0.125]
    np.testing.assert_array_equal(expand("tail_geometric", 1.0, 20, 20), expected)
    # H = 21: head floor(21/2) = 10, tail planned for 11 steps: K = floor(11/3.459) = 3.
    g = expand("tail_geometric", 1.0, 21, 21)
    np.testing.assert_array_equal(g[:13], 1.0)
    np.testing.assert_array_equal(g[13:16], 0.5)
    np.testing.assert_array_equal(g[19:21], 0.125)


def test_constant_hand_values() -> None:
    np.testing.assert_array_equal(expand("constant", 0.3, 7, 7), [0.3] * 7)
    np.testing.assert_array_equal(expand("constant", 0.3, 7, 700), [0.3] * 7)


def test_planned_horizon_longer_than_run() -> None:
    # Geometric planned for 100 steps, 40 run: the first 40 steps of the 100-step plan.
    g = expand("geometric", 1.0, 40, 100)
    np.testing.assert_array_equal(g, expand("geometric", 1.0, 100, 100)[:40])
    np.testing.assert_array_equal(g, [1.0] * 15 + [0.5] * 15 + [0.25] * 10)
    # Tail-geometric planned for 1000, 300 run: still inside the constant head (500 steps).
    np.testing.assert_array_equal(expand("tail_geometric", 0.1, 300, 1000), 0.1)
    # Paper Fig. 3a student: 5000 steps of a 50,000-step geometric plan.
    assert geometric_period(50_000) == math.floor(50_000 / math.log2(50_000)) == 3203
    g = expand("geometric", 0.1, 5000, 50_000)
    assert g[3202] == 0.1 and g[3203] == 0.05 and g[-1] == 0.05


@pytest.mark.parametrize("kind", ["geometric", "tail_geometric", "constant"])
def test_schedule_matches_contract_over_many_horizons(kind: str) -> None:
    for horizon in range(6, 400, 7):
        for steps in sorted({1, horizon // 3, horizon - 1, horizon}):
            np.testing.assert_array_equal(
                expand(kind, 0.2, steps, horizon), contract_schedule(kind, 0.2, steps, horizon),
                err_msg=f"{kind} H={horizon} T={steps}",
            )


def test_geometric_period_small_horizons() -> None:
    assert geometric_period(1) == 1  # log2 1 = 0: one step per phase by convention
    assert geometric_period(3) == 1  # floor(3 / 1.585) = 1
    assert geometric_period(4) == 2  # floor(4 / 2) = 2
    assert geometric_period(5) == 2  # floor(5 / 2.32) = 2


def test_geometric_period_horizon_two() -> None:
    assert geometric_period(2) == 2
    np.testing.assert_array_equal(expand("geometric", 1.0, 2, 2), [1.0, 1.0])
    # tail_geometric with H = 4 plans its geometric tail for 2 steps: also affected.
    np.testing.assert_array_equal(expand("tail_geometric", 1.0, 4, 4), [1.0] * 4)


@pytest.mark.parametrize(
    ("kind", "steps", "horizon"),
    [("geometric", 100, 100), ("geometric", 37, 500), ("tail_geometric", 64, 64),
     ("tail_geometric", 90, 200), ("constant", 50, 50)],
)
def test_phase_product_is_product_of_step_factors(kind: str, steps: int, horizon: int) -> None:
    lam = np.arange(1, 21, dtype=np.float64) ** -1.3
    lam[15:] = 0.0  # rank-deficient modes: factor 1
    phases = schedule_phases(kind, 0.7, steps, horizon)
    gammas = step_sizes(phases, steps)
    expected = np.prod(1.0 - gammas[:, None] * lam[None, :], axis=0)
    np.testing.assert_allclose(phase_product(phases, steps, lam), expected, rtol=1e-12)
    np.testing.assert_array_equal(phase_product(phases, steps, lam)[15:], 1.0)
    # a prefix of the run: the product over its first t steps only
    t = steps // 3
    np.testing.assert_allclose(
        phase_product(phases, t, lam), np.prod(1.0 - gammas[:t, None] * lam, axis=0), rtol=1e-12
    )


def test_lemma1_cutoffs() -> None:
    """The one k* rule (bounds, figures, fits): thresholds written out by hand.

    Mutations: swapping ln and log2 in the upper threshold, dropping the factor 2, or
    counting λ_k >= threshold instead of > (the last is caught by the tie at k = 4)."""
    lam = np.arange(1, 101, dtype=float) ** -2.0
    upper = 2 * np.log(1024) * 10 / (0.5 * 1024)
    assert cutoff_threshold(1024, 0.5, "upper") == pytest.approx(upper, rel=1e-15)
    assert kstar(lam, upper) == int(np.sum(lam > upper)) == 1
    assert cutoff_threshold(1024, 0.5, "lower") == pytest.approx(10 / 512, rel=1e-15)
    assert kstar(lam, 1 / 16) == 3  # λ_4 = 1/16 exactly: not above the threshold
    assert kstar(lam, cutoff_threshold(1, 0.5)) == 0
    assert kstar(lam, cutoff_threshold(1024, 0.0)) == 0
    assert kstar_power(2.0, 1 / 16) == pytest.approx(4.0)
