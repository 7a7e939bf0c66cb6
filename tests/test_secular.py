"""The compiled kernels of the closed form against their references: the secular roots
against LAPACK ``dlasd4`` (the engine's fallback), the row-by-row products against numpy."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")  # the GPU machine's carried site has none (.ci/gpu_wheels.py)

from ktsweep.engines import secular, stretch  # noqa: E402
from ktsweep.engines.moments import curvature  # noqa: E402


def _map(lam: np.ndarray, gamma: float, inv_b: float) -> tuple[np.ndarray, np.ndarray]:
    x = gamma * lam
    d = x * (2.0 - x * curvature(inv_b, 3.0))
    g = x * x * inv_b
    order = np.argsort(-d, kind="stable")
    return d[order], g[order]


def _lapack(d: np.ndarray, g: np.ndarray):
    ratio = g / d
    sm = stretch.StretchMap(np.arange(d.size), d, g, ratio, 1.0 - ratio.sum(), d.size)
    return sm._roots_lapack(0, d.size)


def _cases():
    rng = np.random.default_rng(7)
    for alpha in (1.1, 2.0, 3.0):
        for m in (2, 3, 50, 400):
            lam = np.arange(1, m + 1, dtype=np.float64) ** -alpha
            # from a step near the stability limit down to the tiny steps of a 2^35 tail
            for gamma in (0.9, 0.3, 0.3 / 2**7, 0.3 / 2**19, 0.3 / 2**35):
                for inv_b in (1.0, 0.1):
                    yield f"alpha={alpha}, m={m}, gamma={gamma:.2g}, 1/B={inv_b}", lam, gamma, inv_b
    for i in range(12):
        m = int(rng.integers(2, 300))
        lam = np.sort(rng.uniform(1e-6, 1.0, m))[::-1]
        yield f"random {i}, m={m}", lam, float(rng.uniform(0.01, 0.9)), 1.0


def test_roots_agree_with_lapack_to_relative_precision() -> None:
    """Every root: the same nearest pole as LAPACK (either, near the middle of its interval)
    and τ = δ − d_o, δ to 1e-12 relative, on
    power-law maps from a step near the stability limit to a 2^-35 tail step (where τ is
    1e-12 of d_o and a formula that adds τ to d_o keeps only a few digits of it).

    Mutations this catches: the shifted poles formed inside the fastmath sums (the compiler
    reassociates (d_j − d_o) − τ into d_j − (d_o + τ): τ off by up to 1e-8); the origin
    always the upper pole (origins differ, and τ loses digits for roots near the lower
    pole); a model step accepted at 1e-5 instead of 1e-9."""
    checked = 0
    for name, lam, gamma, inv_b in _cases():
        d, g = _map(lam, gamma, inv_b)
        if not (d > 0).all() or not 1.0 - (g / d).sum() > 0:
            continue
        m = d.size
        origin, tau, delta = np.empty(m, np.int64), np.empty(m), np.empty(m)
        assert secular.roots(d, g, 0, m, origin, tau, delta), name
        o_ref, t_ref, d_ref = _lapack(d, g)
        np.testing.assert_allclose(delta, d_ref, rtol=1e-12, atol=0, err_msg=name)
        # the nearer pole; either serves a root near the middle of its interval
        low = np.append(d[1:], 0.0)
        middle = np.abs(delta - 0.5 * (d + low)) < 0.1 * (d - low)
        same = origin == o_ref
        assert (same | middle).all(), name
        np.testing.assert_allclose(tau[same], t_ref[same], rtol=1e-12, atol=0, err_msg=name)
        checked += 1
    assert checked >= 100


def test_expansion_accepts_only_roots_it_can_vouch_for() -> None:
    """The one-pass expansion about the upper pole (:func:`secular._expanded`): every root it
    accepts agrees with LAPACK to 4e-15 relative, it settles most roots of the test maps
    (the small steps' tail roots), and its guard matters: the same expansion without the
    bound is wrong by more than 1e-12 on some roots, which it refuses. Mutations: the bound
    summed with one power of |1/s| too few (accepted roots then drift to 1e-14); the
    acceptance level loosened to 2^-20 (the LAPACK agreement above fails)."""
    accepted = total = unguarded_wrong = refused_wrong = 0
    for name, lam, gamma, inv_b in _cases():
        d, g = _map(lam, gamma, inv_b)
        if d.size < 2 or not (d > 0).all() or not 1.0 - (g / d).sum() > 0:
            continue
        o_ref, t_ref, _ = _lapack(d, g)
        q = np.empty(secular.ORDER + 1)
        for k in range(d.size):
            half = 0.5 * ((d[k + 1] if k + 1 < d.size else 0.0) - d[k])
            secular._moments(d, g, k, q)
            t = secular._expanded(g[k], q, half)
            q[secular.ORDER] = 0.0  # the same expansion, unguarded
            loose = secular._expanded(g[k], q, half)
            total += 1
            if t < 0.0:
                accepted += 1
                assert o_ref[k] == k, name
                assert abs(t / t_ref[k] - 1.0) <= 4e-15, (name, k)
            elif o_ref[k] == k and loose < 0.0 and abs(loose / t_ref[k] - 1.0) > 1e-12:
                refused_wrong += 1
            if o_ref[k] == k and loose < 0.0 and abs(loose / t_ref[k] - 1.0) > 1e-12:
                unguarded_wrong += 1
    assert accepted >= 0.8 * total
    assert unguarded_wrong > 100 and refused_wrong == unguarded_wrong


def test_single_mode_root_is_exact() -> None:
    """m = 1: g/(d − δ) = 1, so δ = d − g and τ = −g exactly (LAPACK returns no differences
    for one mode; the engine's results do not depend on τ there, but the kernel gets it)."""
    d, g = np.array([0.3]), np.array([0.02])
    origin, tau, delta = np.empty(1, np.int64), np.empty(1), np.empty(1)
    assert secular.roots(d, g, 0, 1, origin, tau, delta)
    assert origin[0] == 0 and tau[0] == -0.02 and delta[0] == pytest.approx(0.28, rel=1e-15)


def test_rows_applied_one_at_a_time_match_the_matrix_products() -> None:
    """h = C g, w = C² g, α = (y Cᵀ)/w, out = (μ^length ∘ α) C, Σ|h α| and the curve's
    Σ_k h_k α_{owner,k} μ_k^t for several states, against numpy on the full C (1e-12).
    Mutations: the decay read at another state's length; w without the square; out
    overwritten instead of accumulated; the curve's coefficient taken from the wrong state."""
    rng = np.random.default_rng(3)
    lam = np.arange(1, 301, dtype=np.float64) ** -1.5
    d, g = _map(lam, 0.2, 1.0)
    m = d.size
    origin, tau, delta = np.empty(m, np.int64), np.empty(m), np.empty(m)
    assert secular.roots(d, g, 0, m, origin, tau, delta)
    lo = 40  # a suffix of roots, as the engine computes them
    o, t, dl = origin[lo:], tau[lo:], delta[lo:]
    y = rng.normal(size=(3, m))
    length = np.array([30.0, 300.0, 3000.0])
    at = np.array([5.0, 50.0, 7.0, 900.0])
    owner = np.array([0, 0, 1, 2])
    C = 1.0 / ((d[None, :] - d[o][:, None]) - t[:, None])
    h_ref, w_ref = C @ g, np.square(C) @ g
    alpha_ref = (y @ C.T) / w_ref
    log_mu = np.log1p(-dl)
    out_ref = 0.5 + (np.exp(length[:, None] * log_mu) * alpha_ref) @ C
    ha = h_ref * alpha_ref
    curve_ref = 0.25 + np.einsum("pk,pk->p", np.exp(at[:, None] * log_mu), ha[owner])
    out, absha, curve = np.full((3, m), 0.5), np.zeros(3), np.full(4, 0.25)
    h, w = np.empty(m - lo), np.empty(m - lo)
    secular.apply_rows(d, o, t, dl, g, y, length, at, owner, out, h, w, absha, curve)
    np.testing.assert_allclose(h, h_ref, rtol=1e-12)
    np.testing.assert_allclose(w, w_ref, rtol=1e-12)
    np.testing.assert_allclose(absha, np.abs(ha).sum(axis=1), rtol=1e-10)
    np.testing.assert_allclose(out, out_ref, rtol=1e-10, atol=1e-12 * np.abs(out_ref).max())
    np.testing.assert_allclose(curve, curve_ref, rtol=1e-10,
                               atol=1e-12 * np.abs(curve_ref).max())


def test_prepare_matches_numpy() -> None:
    """The fixed point, y = x − fixed, Σ y²/g and the scale, against their numpy forms
    (mutations: the scale without the fixed point's sum; y measured from 0)."""
    rng = np.random.default_rng(8)
    x = rng.uniform(0.0, 1.0, (3, 50))
    s2 = np.array([0.1, 0.0, 100.0])  # the last: the fixed point outweighs x
    ratio, g = rng.uniform(0.01, 0.1, 50), rng.uniform(1e-6, 1e-2, 50)
    y, fixed = np.empty_like(x), np.empty_like(x)
    norm, scale = secular.prepare(x, s2, ratio, 1.0 / g, y, fixed)
    f_ref = s2[:, None] * ratio[None, :]
    np.testing.assert_allclose(fixed, f_ref, rtol=1e-15)
    np.testing.assert_allclose(y, x - f_ref, rtol=1e-14)
    np.testing.assert_allclose(norm, np.square(x - f_ref) @ (1.0 / g), rtol=1e-12)
    np.testing.assert_allclose(scale, np.maximum(np.abs(x).sum(1), f_ref.sum(1)), rtol=1e-12)


def test_unconverged_roots_fall_back_to_lapack(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the compiled solver reports failure the map takes LAPACK's roots for the range,
    and stepping still agrees (mutation: returning the unfinished arrays)."""
    from ktsweep.engines.moments import _step_stretch

    monkeypatch.setattr(secular, "roots", lambda *args: False)
    monkeypatch.setattr(stretch, "_COMPILED_FROM", 0)
    m = 120
    lam = np.arange(1, m + 1, dtype=np.float64) ** -2.0
    a0 = np.random.default_rng(2).uniform(0.1, 1.0, m) * lam
    sm = stretch._solve(lam, 0.3, 1.0)
    assert sm is not None
    none = np.zeros(0, dtype=np.int64)
    res = sm.advance(a0, 0.1, 700, none)
    ref = _step_stretch(lam, a0, 0.1, 0.3, 1.0, 700, none, np.inf)
    assert res is not None and not sm.failed
    np.testing.assert_allclose(res[0], ref[0], rtol=1e-9)


def test_small_maps_never_load_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    """Below ``_COMPILED_FROM`` live modes a map takes LAPACK and numpy, so a sweep at small d
    does not pay numba's load (about 1.1 s a process) for a few ms (mutation: the threshold
    dropped)."""
    def refuse():
        raise AssertionError("numba asked for by a small map")

    monkeypatch.setattr(stretch, "compiled", refuse)
    lam = np.arange(1, 101, dtype=np.float64) ** -2.0
    sm = stretch._solve(lam, 0.3, 1.0)
    assert sm is not None
    assert sm.advance(lam.copy(), 0.1, 500, np.zeros(0, dtype=np.int64)) is not None
