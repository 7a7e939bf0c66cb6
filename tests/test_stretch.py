"""The closed-form stretch solver against the step recursion and against exact arithmetic.

Tolerances of issue 8: ≤ 1e-9 relative on the four total risks, ≤ 1e-6 on every per-mode
risk above 1e-12 of its total, on points covering every schedule, target, batch size, rank
and horizon (including plans longer than the run).
"""

from __future__ import annotations

from collections.abc import Callable

import mpmath
import numpy as np
import pytest

from ktsweep.engines import exact
from ktsweep.engines.moments import evolve_steps
from ktsweep.engines.stretch import stretch_map
from ktsweep.model.params import Point
from ktsweep.model.quantities import CURVES, MODE_RISKS, RISKS
from ktsweep.model.spectra import checkpoint_steps

COVER = [
    {"schedule_t": "geometric", "schedule_s": "geometric"},
    {"schedule_t": "tail_geometric", "schedule_s": "tail_geometric", "N": 3000, "n": 5000},
    {"schedule_t": "constant", "schedule_s": "constant", "gamma0_t": 0.05, "gamma0_s": 0.05},
    {"batch_t": 3, "batch_s": 7, "sigma2": 0.5, "N": 4000, "n": 9000},
    {"target": "lowdim", "k_dagger": 5, "amplitude": 0.1, "sigma2": 1.0, "r_t": 12, "r_s": 15,
     "d": 40},
    {"target": "power", "beta": 0.6, "alpha_t": 1.8, "alpha_s": 2.5, "N": 20000, "n": 20000},
    {"horizon_t": 50_000, "horizon_s": 200_000, "schedule_s": "tail_geometric", "N": 6000,
     "n": 40_000},
    {"alpha_t": 1.0, "alpha_s": 1.5, "d": 120, "N": 2**16, "n": 2**15,
     "gamma0_t": {"tune": [0.05, 0.2, 0.5]}, "gamma0_s": {"scale": 0.9}},
    {"sigma2": 0.0, "N": 1, "n": 2},
    {"r_s": 8, "schedule_s": "constant", "gamma0_s": 0.1, "N": 5000, "n": 7000},
]


def _compare(p: Point) -> None:
    ck = checkpoint_steps(max(p.steps_t, p.steps_s, p.steps_direct))
    fast = exact.evaluate([p], ck)
    ref = exact.evaluate([p], ck, solver=evolve_steps)
    assert fast["status"][0] == ref["status"][0] == "ok"
    for k in RISKS:
        assert fast[k][0] == pytest.approx(ref[k][0], rel=1e-9), k
    for k in MODE_RISKS:
        big = ref[k][0] > 1e-12 * np.nansum(ref[k][0])
        np.testing.assert_allclose(fast[k][0][big], ref[k][0][big], rtol=1e-6, err_msg=k)
    for k in CURVES:
        np.testing.assert_allclose(fast[k][0], ref[k][0], rtol=1e-9, err_msg=k)
    for k in ("gamma0_t", "gamma0_s", "gamma0_direct", "gamma0_ceiling"):
        assert fast[k][0] == ref[k][0], k


@pytest.mark.parametrize("numba", [True, False])
@pytest.mark.parametrize("case", COVER)
def test_closed_form_matches_step_recursion(case: dict, numba: bool,
                                            small_point: Callable[..., Point],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """With the compiled kernels and without them (numba missing: LAPACK roots, numpy
    products). Planted bugs this catches: E_k(t) computed as (1 − μ^t)/δ with μ^t = (1 − δ)^t
    rounded (tail modes off by ~1e-7 at these lengths), h_k dropped from Σa, the λ = 0 modes
    not folded into the noise (rank cases), a checkpoint read one step late."""
    from ktsweep.engines import stretch

    monkeypatch.setattr(stretch, "_COMPILED_FROM", 0)  # these maps are small
    if not numba:
        monkeypatch.setattr(stretch, "compiled", lambda: None)
    stretch.clear_cache()
    try:
        _compare(small_point(**{"gamma0_t": 0.3, "gamma0_s": 0.2, **case}))
    finally:
        stretch.clear_cache()


def _exact_stretch(lam: list[float], a0: list[float], s2: float, gamma: float, batch: int,
                   length: int) -> list[mpmath.mpf]:
    """a after ``length`` steps by binary powering of the affine map in 60-digit arithmetic."""
    mpmath.mp.dps = 60
    d = len(lam)
    lam_m = [mpmath.mpf(x) for x in lam]
    g = mpmath.mpf(gamma)
    mat = mpmath.zeros(d + 1, d + 1)
    for i in range(d):
        gl = g * lam_m[i]
        gain = gl * gl / batch
        for j in range(d):
            mat[i, j] = gain
        mat[i, i] += 1 - 2 * gl + gl * gl * (1 + mpmath.mpf(1) / batch)
        mat[i, d] = gain * mpmath.mpf(s2)
    mat[d, d] = 1
    vec = mpmath.matrix([mpmath.mpf(x) for x in a0] + [1])
    power = mat**length
    out = power * vec
    return [out[i] for i in range(d)]


def test_tail_modes_near_one_at_huge_length() -> None:
    """μ within 1e-12 of 1 and 2^36 steps: the closed form keeps 1e-9 relative accuracy.

    A naive formula (μ_k = 1 − δ_k rounded, then μ_k**L) is off by about L·2^-53 ≈ 8e-6 here;
    the test asserts that too, so it would catch a solver that rounds μ.
    """
    lam = np.array([1.0, 1e-3, 3e-9, 1e-10, 0.0])
    a0 = np.array([0.5, 0.2, 0.3, 0.4, 0.1])
    gamma, batch, length, s2 = 0.2, 2, 2**36, 0.05
    sm = stretch_map(lam, gamma, 1.0 / batch)
    assert sm is not None
    res = sm.advance(a0, s2, length, np.zeros(0))
    assert res is not None
    fast = res[0]
    ref = np.array([float(x) for x in _exact_stretch(list(lam), list(a0), s2, gamma, batch,
                                                     length)])
    np.testing.assert_allclose(fast, ref, rtol=1e-9)
    sm.ensure(1.0)  # every root
    mu_naive = 1.0 - sm.delta
    naive_tail = np.exp(length * np.log(mu_naive))  # what rounding μ first would give
    exact_tail = np.exp(length * np.log1p(-sm.delta))
    kept = exact_tail > 1e-3  # the modes this stretch barely moves
    assert kept.any()
    assert np.max(np.abs(naive_tail[kept] / exact_tail[kept] - 1)) > 1e-7


def test_roots_needed_down_to_the_last_roots_lower_bound() -> None:
    """The last root lies above f0·d_{m−1}, not above d_{m−1}: near the stability limit
    (f0 = 0.015) it is 40x below the last pole, so a stretch long enough to damp every pole
    still needs it, and the closed form then agrees with stepping; a much longer stretch needs
    no root at all and lands on the fixed point. Mutations: the last interval's lower end
    taken as d_{m−1} (this stretch then skips its one slow root); taken as 0 (the long
    stretch computes roots it cannot use)."""
    from ktsweep.engines import stretch
    from ktsweep.engines.moments import _step_stretch

    m, gamma, s2 = 20, 0.23, 0.1
    lam = np.arange(1, m + 1, dtype=np.float64) ** -0.5
    a0 = np.random.default_rng(4).uniform(0.1, 1.0, m) * lam
    none = np.zeros(0, dtype=np.int64)
    sm = stretch._solve(lam, gamma, 1.0)
    assert sm is not None and sm.f0 < 0.02
    res = sm.advance(a0, s2, 2000, none)
    assert res is not None
    assert sm.d[-1] * 2000 > 150 and sm.lo == m - 1  # every pole damped, one root kept
    ref = _step_stretch(lam, a0, s2, gamma, 1.0, 2000, none, np.inf)
    np.testing.assert_allclose(res[0], ref[0], rtol=1e-9)

    # with a mode that does not learn (λ = 0: its a stays and acts as label noise), and a
    # learning curve asked for deep inside the stretch
    lam0, a00 = np.append(lam, 0.0), np.append(a0, 0.3)
    fresh = stretch._solve(lam0, gamma, 1.0)
    res = fresh.advance(a00, s2, 2**40, np.array([2**39, 2**40]))
    assert res is not None and fresh.lo == m  # no root computed
    fixed = (sm.g / sm.d) * (s2 + 0.3) / (1.0 - np.sum(sm.g / sm.d))  # Sherman–Morrison
    np.testing.assert_allclose(res[0][sm.live], fixed, rtol=1e-12)
    assert res[0][m] == 0.3
    np.testing.assert_allclose(res[1], 0.5 * (fixed.sum() + 0.3), rtol=1e-12)


def test_checkpoint_inside_a_stretch_uses_the_closed_form(small_point: Callable[..., Point]
                                                          ) -> None:
    """A constant schedule is one stretch; curves at many steps inside it match stepping.
    Planted bug: curve evaluated at t − 1 (off by one) fails at 1e-9."""
    p = small_point(schedule_t="constant", schedule_s="constant", gamma0_t=0.1, gamma0_s=0.1,
                    N=3000, n=3000)
    ck = np.arange(0, 3001, 37)
    fast = exact.evaluate([p], ck)
    ref = exact.evaluate([p], ck, solver=evolve_steps)
    for k in CURVES:
        np.testing.assert_allclose(fast[k][0], ref[k][0], rtol=1e-9)


def test_threads_share_the_map_cache_safely(small_point: Callable[..., Point]) -> None:
    """Sweep tasks run on dask worker threads of one process and share the cache of stretch
    maps (roots are added on demand). Two threads evaluating points with the same spectra
    must give the single-threaded numbers (to rounding: which roots a map already holds
    depends on what ran before, and changes the last bits). Planted bug: no lock around the
    cache (once 'OrderedDict mutated during iteration' in a sweep) or around adding roots."""
    from concurrent.futures import ThreadPoolExecutor

    from ktsweep.engines.stretch import clear_cache

    pts = [small_point(d=150, N=2**k, n=2**(k + 3), gamma0_t=0.3, gamma0_s=0.2)
           for k in range(8, 20)]
    ck = checkpoint_steps(2**22)
    clear_cache()
    alone = [exact.evaluate([p], ck) for p in pts]
    clear_cache()
    with ThreadPoolExecutor(2) as pool:
        both = list(pool.map(lambda p: exact.evaluate([p], ck), pts))
    for x, y in zip(alone, both, strict=True):
        for k in RISKS + CURVES:
            np.testing.assert_allclose(x[k], y[k], rtol=1e-13, err_msg=k)


def test_runs_sharing_a_map_advance_together_as_alone(small_point: Callable[..., Point]
                                                      ) -> None:
    """Points sharing the spectra (different N, n, σ², batch of the ceiling only through n)
    go through each stretch map together, one matrix product for all rows; each must get
    what it gets alone and what the step recursion gives. Planted bugs this catches: every
    row of a group decayed by the first row's stretch length; a row's learning curve summed
    with another row's coefficients; a row's noise taken from its neighbour."""
    pts = [small_point(d=30, N=N, n=n, sigma2=s2, gamma0_t=0.3, gamma0_s=0.2)
           for N, n, s2 in ((3000, 9000, 0.1), (7000, 2500, 0.5), (20000, 40000, 0.02))]
    ck = checkpoint_steps(40000)
    together = exact.evaluate(pts, ck)
    for i, p in enumerate(pts):
        alone = exact.evaluate([p], ck)
        for k in (*RISKS, *CURVES):
            np.testing.assert_allclose(together[k][i], alone[k][0], rtol=1e-12, err_msg=k)
    _compare(pts[1])


@pytest.mark.parametrize("numba", [True, False])
@pytest.mark.parametrize("keep", [False, True])
def test_root_suffix_grows_alike_kept_or_rebuilt(keep: bool, numba: bool,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A map first asked for a long stretch needs only its slowest roots (a suffix); a later
    short one extends the suffix. C is built in row blocks inside the advance that needs the
    rows, which also reduces the h, w of new roots; a map on numpy's path small enough keeps C
    (forced on or off here; a compiled map never does) from its third advance on (the first
    two apply C row by row without storing it: a lone point's maps never touch an m × m
    buffer) and builds only the rows of new roots into it, others rebuild it. In any order of
    the calls, every result must match stepping (1e-9), with the compiled kernels and with
    numpy's (numba missing). Planted bugs this
    catches: new rows of a kept map written or read at the buffer's start instead of the
    suffix's; kept rows marked valid before they are built; pending h, w never reduced (the
    map then fails and silently steps: asserted against too) or reduced for offset rows, or
    marked reduced when an advance applied only the roots after them."""
    from ktsweep.engines import stretch
    from ktsweep.engines.moments import _step_stretch

    monkeypatch.setattr(stretch, "_KEEP_ROWS", 10**9 if keep else 0)
    monkeypatch.setattr(stretch, "_COMPILED_FROM", 0)  # a small map: compiled all the same
    if not numba:  # the GPU machine's case: LAPACK roots, numpy products
        monkeypatch.setattr(stretch, "compiled", lambda: None)
    monkeypatch.setattr(stretch, "_BLOCK_BYTES", 0)  # the fewest rows per block: 16
    m, gamma, inv_b, s2 = 400, 0.3, 0.5, 0.1
    lam = np.arange(1, m + 1, dtype=np.float64) ** -1.0
    a0 = np.random.default_rng(0).uniform(0.1, 1.0, m) * lam
    none = np.zeros(0, dtype=np.int64)  # roots: 171 for long, 344 for mid, all for short
    long, mid, short = (2**14, none), (2**12, none), (3000, np.array([150, 900, 3000]))
    near = (11_000, none)  # a little more than long needs: the extension doubles past it
    ref = {n: _step_stretch(lam, a0, s2, gamma, inv_b, n, t, np.inf)
           for n, t in (long, mid, short, near)}
    for order in ((long, long, mid, mid, short), (short, long, long), (long, short, long),
                  (long, near, short)):
        sm = stretch._solve(lam, gamma, inv_b)
        assert sm is not None
        seen = []
        for n, t in order:
            res = sm.advance(a0, s2, n, t)
            assert res is not None and not sm.failed
            seen.append(sm.lo)
            if len(seen) < stretch._KEEP_FROM:
                assert sm._rows is None  # first uses: C applied row by row, not stored
            np.testing.assert_allclose(res[0], ref[n][0], rtol=1e-9)
            np.testing.assert_allclose(res[1], ref[n][1], rtol=1e-9)
        assert (sm._rows is not None) == (keep and not numba)  # compiled maps never keep C
        if order[2] is mid:
            assert m > seen[0] > seen[2] > seen[-1]  # a suffix first, then extended twice
        if order[1] is near:  # roots computed past the need, their h, w left pending
            assert seen[1] == seen[0] - (m - seen[0])


def test_long_stretch_applies_only_the_roots_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A map that holds every root from a short stretch applies, for a long stretch of the
    same step, only the slow roots that one needs (a sweep shares maps between horizons: the
    2^20 schedule's step sizes recur in the 2^40 one), and still agrees with stepping.
    Mutation: applying every computed root (right numbers, 1.7x the work at 2^40 warm)."""
    pytest.importorskip("numba")
    from ktsweep.engines import secular, stretch
    from ktsweep.engines.moments import _step_stretch

    applied: list[int] = []
    real = secular.apply_rows

    def spy(d, origin, *args):
        applied.append(origin.size)
        return real(d, origin, *args)

    monkeypatch.setattr(secular, "apply_rows", spy)
    monkeypatch.setattr(stretch, "_COMPILED_FROM", 0)
    m, gamma, s2 = 200, 0.2, 0.1
    lam = np.arange(1, m + 1, dtype=np.float64) ** -1.0
    a0 = np.random.default_rng(5).uniform(0.1, 1.0, m) * lam
    none = np.zeros(0, dtype=np.int64)
    sm = stretch._solve(lam, gamma, 1.0)
    assert sm is not None
    assert sm.advance(a0, s2, 50, none) is not None and sm.lo == 0  # short: every root
    res = sm.advance(a0, s2, 2**14, none)
    assert res is not None
    assert applied[0] == m and 0 < applied[1] < m // 2
    ref = _step_stretch(lam, a0, s2, gamma, 1.0, 2**14, none, np.inf)
    np.testing.assert_allclose(res[0], ref[0], rtol=1e-9)


def test_blas_limit_is_restored_and_reentrant() -> None:
    """The engines run BLAS single-threaded only while they run. Planted bugs: the limit
    left in place after the call (every later NumPy product in the process single-threaded),
    or lifted by an inner call while an outer one still runs."""
    from threadpoolctl import threadpool_info

    from ktsweep.engines.moments import one_blas_thread

    def blas() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas()
    assert before, "NumPy's BLAS not found by threadpoolctl: the test would prove nothing"
    with one_blas_thread():
        with one_blas_thread():
            assert set(blas()) <= {1}
        assert set(blas()) <= {1}
    assert blas() == before


def test_exact_bookkeeping_runs_blas_single_threaded(monkeypatch: pytest.MonkeyPatch,
                                                    small_point: Callable[..., Point]) -> None:
    """Outside the solver too: exact.evaluate_detail, which every exact caller goes through
    (the sweep's tasks, bounds, the Monte Carlo tuner), holds BLAS to one thread, since a
    multi-threaded product there leaves OpenBLAS's threads spinning. Planted bug: the limit
    only in exact.evaluate, which the sweep's tasks do not call."""
    from threadpoolctl import threadpool_info

    from ktsweep.engines import exact as exact_mod

    def blas() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    if max(blas(), default=1) < 2:
        pytest.skip("BLAS runs one thread here already: the test would prove nothing")
    seen: list[int] = []
    inner = exact_mod.fourth_moment

    def spy(*args):
        seen.extend(blas())
        return inner(*args)

    monkeypatch.setattr(exact_mod, "fourth_moment", spy)
    exact_mod.evaluate_detail([small_point()])
    assert seen and set(seen) == {1}


def test_cache_over_budget_drops_kept_c_before_roots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over ``_CACHE_BYTES`` the least recently used map gives up its kept C but keeps its
    roots (they cost more to find than C to rebuild), the budget holds at every lookup (C is
    kept after a map is cached, so checking only at insertion lets it grow without bound),
    and a map whose C was dropped still steps right. Mutations: trimming only when a map is
    inserted; popping whole maps before releasing C; a release that leaves C marked kept."""
    from ktsweep.engines import stretch
    from ktsweep.engines.moments import _step_stretch

    m, inv_b, s2 = 300, 1.0, 0.1
    lam = np.arange(1, m + 1, dtype=np.float64) ** -1.5
    a0 = np.random.default_rng(1).uniform(0.1, 1.0, m) * lam
    c_bytes = 8 * m * m
    monkeypatch.setattr(stretch, "_CACHE_BYTES", int(1.5 * c_bytes))
    stretch.clear_cache()
    try:
        key = stretch.spectrum_key(lam)
        first = stretch.stretch_map(lam, 0.2, inv_b, key)
        for _ in range(stretch._KEEP_FROM):  # keeps C from this use on
            assert first.advance(a0, s2, 500, np.zeros(0, dtype=np.int64)) is not None
        assert first._rows is not None
        second = stretch.stretch_map(lam, 0.1, inv_b, key)
        for _ in range(stretch._KEEP_FROM):
            second.advance(a0, s2, 500, np.zeros(0, dtype=np.int64))
        stretch.stretch_map(lam, 0.1, inv_b, key)  # a lookup (cache hit) enforces the budget
        stats = stretch.cache_stats()
        assert stats["bytes"] <= stretch._CACHE_BYTES and stats["maps"] == 2
        # the running byte count the budget is checked against is the sum it stands for
        assert stretch._base_total + stretch._kept_total == stats["bytes"]
        assert first._rows is None and second._rows is not None
        assert stretch.stretch_map(lam, 0.2, inv_b, key) is first  # roots kept, not popped
        assert first.lo < m
        assert stretch.cache_stats()["roots"] == (m - first.lo) + (m - second.lo)
        res = first.advance(a0, s2, 500, np.zeros(0, dtype=np.int64))
        ref = _step_stretch(lam, a0, s2, 0.2, inv_b, 500, np.zeros(0, dtype=np.int64), np.inf)
        np.testing.assert_allclose(res[0], ref[0], rtol=1e-9)
    finally:
        stretch.clear_cache()
