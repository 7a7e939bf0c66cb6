"""Misaligned student bases and targets outside the teacher's span (docs/science/geometry.md).

The general exact engine against the full d × d recursion stepped literally, against the
aligned engine at neutral parameters and against Monte Carlo; Lemma 2's alignment bias against
its closed form and against the exact engine's N = n = ∞ limit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ktsweep.engines import exact, mc
from ktsweep.engines.general import evolve_full
from ktsweep.model.geometry import (
    alignment_bias,
    alignment_bias_closed,
    haar_orthogonal,
    student_basis,
    target_second_moment,
)
from ktsweep.model.inputs import fourth_moment
from ktsweep.model.params import ParameterError, make_point, point_hash
from ktsweep.model.quantities import MODE_RISKS, RISKS
from ktsweep.model.spectra import (
    resolve_gamma0,
    schedule_phases,
    student_spectrum,
    teacher_spectrum,
)

BASE = {"alpha_t": 1.0, "alpha_s": 1.5, "N": 200, "n": 300, "sigma2": 0.1, "d": 10}
PINNED = {"alpha_t": 1.5, "alpha_s": 2.0, "N": 1000, "n": 5000, "sigma2": 0.01, "d": 100}
PINNED_HASH = "0668fac0e9e0c8da"  # test_params.PINNED_HASH: the aligned point's key

ROTATED = {  # together they cover each geometry parameter, target kind, schedule and batch
    "angle": {"angle": 40},
    "mixing": {"mixing_seed": 3, "mixing_dim": 6},
    "outside_span": {"angle": 60, "r_t": 5, "r_s": 8, "alpha_target": 1.2, "target": "power",
                     "beta": 0.5, "batch_s": 3, "schedule_s": "tail_geometric"},
    "lowdim_mixed": {"mixing_seed": 7, "angle": 25, "target": "lowdim", "k_dagger": 4,
                     "amplitude": 0.5, "batch_t": 2, "schedule_t": "constant",
                     "gamma0_s": {"tune": [0.1, 0.3]}},
}


def point(**kw):
    return make_point({**BASE, **kw})


def full_reference(p) -> dict[str, float | np.ndarray]:
    """The four risks from the d × d recursion in semantic coordinates, step by step (no use
    of the student-basis structure), and the per-mode T2S risk in the student's basis."""
    psi = fourth_moment(p.inputs, p.inputs_nu)
    lt, ls = teacher_spectrum(p), student_spectrum(p)
    q = student_basis(p)
    hs, ht, m = q @ np.diag(ls) @ q.T, np.diag(lt), target_second_moment(p)
    gt, gs = resolve_gamma0(p.gamma0_t, lt)[0], resolve_gamma0(p.gamma0_s, ls)[0]
    a_t, p_t = evolve_full(ht, m, p.sigma2, p.batch_t,
                           schedule_phases(p.schedule_t, gt, p.steps_t, p.plan_t), p.steps_t, psi)
    a_d, _ = evolve_full(hs, m, p.sigma2, p.batch_s, schedule_phases(
        p.schedule_s, gs, p.steps_direct, p.steps_direct), p.steps_direct, psi)
    ph_s = schedule_phases(p.schedule_s, gs, p.steps_s, p.plan_s)
    a_c, _ = evolve_full(hs, m, p.sigma2, p.batch_s, ph_s, p.steps_s, psi)
    cross = a_t - m @ p_t.T  # E[u_T η_T^T]
    u_t = a_t + m - m @ p_t.T - p_t @ m  # E[u_T u_T^T]
    a_s, p_s = evolve_full(hs, u_t, 0.0, p.batch_s, ph_s, p.steps_s, psi)
    t2s = a_s - p_s @ cross - (p_s @ cross).T + a_t  # E[(u_S − θ*)(u_S − θ*)^T]
    return {"risk_teacher": 0.5 * np.trace(a_t), "risk_direct": 0.5 * np.trace(a_d),
            "risk_ceiling": 0.5 * np.trace(a_c), "risk_t2s": 0.5 * np.trace(t2s),
            "mode_t2s": 0.5 * np.diag(q.T @ t2s @ q)}


NON_GAUSSIAN = {  # rotated students whose inputs have ψ ≠ 3: the full-matrix student path
    "rademacher": {"angle": 40, "inputs": "rademacher", "gamma0_s": 0.6, "batch_s": 2},
    "uniform_power": {"mixing_seed": 3, "inputs": "uniform", "target": "power", "beta": 0.5,
                      "r_t": 6, "alpha_target": 1.2, "gamma0_s": {"tune": [0.3, 0.7]}},
    "student_t": {"angle": 60, "mixing_seed": 1, "mixing_dim": 4, "inputs": "student_t",
                  "inputs_nu": 9, "batch_t": 2},
}
FULL_CASES = {**{k: v for k, v in ROTATED.items() if "tune" not in str(v)},
              **{k: v for k, v in NON_GAUSSIAN.items() if "tune" not in str(v)}}


@pytest.mark.parametrize("name", list(FULL_CASES))
def test_general_engine_equals_full_recursion(name: str) -> None:
    """The closed form (aligned solver on student-basis diagonals, teacher off-diagonals
    decayed per stretch) equals the full recursion stepped literally.

    Planted bugs caught: W^T x taken as W x (the mixing is not symmetric); the deterministic
    target's off-diagonal θ*θ*^T dropped (outside_span fails by 3e-2 relative); the teacher's
    off-diagonal decay left out (R = 1); per-mode T2S risk left in the semantic basis; for
    non-Gaussian inputs, the fourth-moment term taken in the student's basis (the aligned
    solver's curvature 1 + (ψ − 2)/B on the student diagonal: rademacher off by 2e-3,
    uniform_power by 1e-3 relative).
    """
    p = point(**FULL_CASES[name])
    ref = full_reference(p)
    got = exact.evaluate([p])
    for k in RISKS:
        assert got[k][0] == pytest.approx(ref[k], rel=1e-11, abs=1e-14), k
    np.testing.assert_allclose(got["mode_t2s"][0], ref["mode_t2s"], rtol=1e-9, atol=1e-14)


NEUTRAL_POINTS = [  # schedules, targets, batch sizes, ranks, horizons, the limit
    {},
    {"target": "power", "beta": 0.5, "schedule_s": "tail_geometric", "batch_s": 4},
    {"target": "lowdim", "k_dagger": 3, "amplitude": 0.3, "schedule_t": "constant",
     "r_t": 6, "r_s": 8, "horizon_s": 900, "gamma0_s": {"tune": [0.05, 0.2, 0.4]}},
    {"batch_t": 3, "r_s": 4, "alpha_t": 1.3, "N": 1000, "n": 5000},
    {"N": math.inf, "n": math.inf, "schedule_s": "constant", "gamma0_s": 0.2},
]


@pytest.mark.parametrize("size", [1, 2, 5])
def test_neutral_general_path_equals_aligned_engine(size: int) -> None:
    """At neutral geometry the general path (forced, Q = I) gives the aligned engine's numbers
    to 1e-12, for batches of 1, 2 and 5 points covering schedules, targets, batch sizes, ranks.

    Planted bug caught: direct and ceiling students started from the semantic energies while
    the T2S one uses the student-basis diagonals (or the reverse); mode_teacher read from the
    wrong array."""
    pts = [point(**kw) for kw in NEUTRAL_POINTS[:size]]
    ck = np.array([0, 1, 10, 100, 300])
    aligned, _ = exact.evaluate_detail(pts, ck)
    general, _ = exact.evaluate_detail(pts, ck, general=True)
    for k, v in aligned.items():
        if v.dtype.kind == "f":
            np.testing.assert_allclose(general[k], v, rtol=1e-12, atol=1e-15, err_msg=k)


def test_full_recursion_at_neutral_equals_aligned_recursion() -> None:
    """The d × d recursion with Q = I stays diagonal and equals the aligned engine's teacher
    and direct runs (catches a wrong coefficient of H A H or of tr(A) H² in evolve_full)."""
    p = point(batch_t=2, target="power", beta=1.0)
    ref = full_reference(p)
    got = exact.evaluate([p])
    for k in ("risk_teacher", "risk_direct", "risk_ceiling", "risk_t2s"):
        assert got[k][0] == pytest.approx(ref[k], rel=1e-12), k


def test_kurtosis_term_of_full_recursion_against_monte_carlo() -> None:
    """The ψ − 3 term of the full recursion against Rademacher inputs (ψ = 1), rotated H,
    in float64 Monte Carlo (0.5 se). Planted bug caught: the term left out (ψ = 3): 89 se."""
    d, steps, batch, gamma, reps = 6, 20, 2, 0.45, 50_000
    q = student_basis(point(d=d, angle=35, mixing_seed=2))
    h = q @ np.diag(np.arange(1, d + 1, dtype=float) ** -1.0) @ q.T
    rng = np.random.default_rng(5)
    a0 = np.diag(rng.uniform(0.2, 1.0, d))
    a_ref, _ = evolve_full(h, a0, 0.05, batch, [(0, gamma)], steps, psi=1.0)
    eta = rng.standard_normal((reps, d)) * np.sqrt(np.diag(a0))
    for _ in range(steps):
        z = rng.choice([-1.0, 1.0], size=(reps, batch, d))
        eps = math.sqrt(0.05) * rng.standard_normal((reps, batch))
        r = np.einsum("rbd,rd->rb", z, eta) - eps
        eta = eta - gamma / batch * np.einsum("rb,rbd->rd", r, z) @ h
    risk = 0.5 * (eta**2).sum(1)
    se = risk.std(ddof=1) / math.sqrt(reps)
    assert abs(risk.mean() - 0.5 * np.trace(a_ref)) < 4 * se


AGREE = {**ROTATED, **NON_GAUSSIAN}


@pytest.fixture(scope="module")
def agreement():
    pts = [point(**kw) for kw in AGREE.values()]
    return pts, exact.evaluate(pts), mc.simulate(pts, replicates=1500, seed=11, device="cpu",
                                                  dtype="float64")


@pytest.mark.parametrize("name", list(AGREE))
def test_general_exact_agrees_with_monte_carlo(name: str, agreement) -> None:
    """Within 4 se on every risk and per-mode risk (student basis), with the student's mixing
    matrices applied literally to the inputs in MC. Planted bugs caught: MC's direct student
    started from −θ* instead of −Q^T θ* (3 of 4 points fail, up to 970 se); the
    deterministic target treated as uncorrelated in the exact engine (outside_span: ~35 se).
    Blind spot: for Gaussian inputs Q^T z has the law of z, so MC using unrotated inputs
    would pass here. The full-matrix path skipped for non-Gaussian inputs: student_t fails
    (4.1 se on risk_direct); the smaller error at rademacher and uniform_power is below this
    test's reach and caught by test_general_engine_equals_full_recursion."""
    _, ex, m = agreement
    i = list(AGREE).index(name)
    for k in RISKS:
        assert abs(m[k][i] - ex[k][i]) < 4 * m[k + "_se"][i], (k, m[k][i], ex[k][i])
    for k in MODE_RISKS:
        z = np.abs(m[k][i] - ex[k][i]) / np.maximum(m[k + "_se"][i], 1e-12)
        assert np.nanmax(z) < 5.0, (k, np.nanmax(z))  # d modes: 5 se for the maximum


@pytest.mark.parametrize("kw", [
    {"angle": 30, "r_t": 4, "r_s": 7, "d": 9, "alpha_target": 1.0},
    {"angle": 70, "r_t": 3, "r_s": 6, "target": "power", "beta": 0.3, "alpha_target": 1.1},
    {"angle": 20, "r_t": 2, "r_s": 5, "d": 8, "target": "lowdim", "k_dagger": 6,
     "alpha_target": 0.5},
    {"angle": 90, "r_t": 5, "r_s": 5, "d": 11, "alpha_target": 0.0},
])
def test_alignment_bias_closed_form_and_limit(kw) -> None:
    """Lemma 2: the bias from the projectors equals its closed form in the angle, and equals
    risk_t2s − risk_direct of the exact engine in the limit N = n = ∞ (the teacher reaches
    Π_T w*, the T2S student Π_S Π_T w*, the direct student Π_S w*). Planted bugs caught:
    cos and sin swapped in the closed form; the cross term 2cs·x dropped (power/lowdim
    cases); Π_T^⊥ taken as Π_T."""
    p = point(**kw)
    bias = alignment_bias(p)
    assert bias > 1e-3
    assert alignment_bias_closed(p) == pytest.approx(bias, rel=1e-12)
    limit = point(**kw, N=math.inf, n=math.inf)
    ex = exact.evaluate([limit])
    assert ex["risk_t2s"][0] - ex["risk_direct"][0] == pytest.approx(bias, rel=1e-9)


def test_alignment_bias_vanishes_in_the_teacher_span() -> None:
    """Without alpha_target the target lies in the teacher's span: no bias at any angle."""
    assert alignment_bias(point(angle=50, r_t=4)) == 0.0
    assert math.isnan(alignment_bias_closed(point(mixing_seed=1)))


def test_neutral_parameters_keep_the_hash() -> None:
    """Spelling the geometry parameters out at their neutral value keeps the aligned point's
    key (so today's cubes and MC seeds stay); any non-neutral value changes it."""
    assert point_hash(PINNED) == PINNED_HASH
    spelled = {**PINNED, "angle": 0, "mixing_seed": None, "mixing_dim": None,
               "alpha_target": None}
    assert point_hash(spelled) == PINNED_HASH
    keys = {point_hash({**PINNED, **c}) for c in (
        {"angle": 1e-6}, {"mixing_seed": 0}, {"mixing_seed": 1}, {"alpha_target": 1.5},
        {"mixing_seed": 0, "mixing_dim": 50})}
    assert len(keys) == 5 and PINNED_HASH not in keys
    assert point_hash({**PINNED, "mixing_seed": 0}) == point_hash(
        {**PINNED, "mixing_seed": 0, "mixing_dim": 100})  # the default dimension spelled out


def test_haar_mixing_is_orthogonal_and_seeded() -> None:
    a, b = haar_orthogonal(4, 7), haar_orthogonal(4, 7)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a @ a.T, np.eye(7), atol=1e-13)
    assert not np.allclose(a, haar_orthogonal(5, 7))
    q = student_basis(point(mixing_seed=4, mixing_dim=7, angle=10))
    np.testing.assert_allclose(q.T @ q, np.eye(10), atol=1e-13)


@pytest.mark.parametrize(("kw", "words"), [
    ({"angle": 120}, "'angle'"), ({"angle": -1}, "0..90"),
    ({"mixing_dim": 4}, "needs mixing_seed"), ({"mixing_seed": 1, "mixing_dim": 11}, "2..d"),
    ({"mixing_seed": -2}, "'mixing_seed'"), ({"alpha_target": -0.5}, "'alpha_target'"),
    ({"angle": 10, "d": 1}, "d >= 2"),
])
def test_geometry_validation_names_the_field(kw, words) -> None:
    with pytest.raises(ParameterError, match=words):
        point(**kw)


def test_geometry_quantities_reach_every_estimator_and_the_bound() -> None:
    """dispatch.run gives each estimator the alignment bias and its closed form, and the
    bound's three Theorem 1 terms add up to bound_t2s with (III) the alignment bias.
    Planted bugs caught: (III) left out of bound_t2s; the bias attached to the exact result
    only (the mc cube slots would stay NaN)."""
    from ktsweep.engines.dispatch import run
    from ktsweep.model.estimators import MCSettings

    pts = [point(angle=30, r_t=5, alpha_target=1.0), point()]
    out = run(pts, ("exact", "mc", "bound"), mc_settings=MCSettings(
        replicates=4, seed=0, device="cpu", dtype="float32", fixed_target=False,
        require_device=False))
    for m in ("exact", "mc"):
        np.testing.assert_allclose(out[m]["alignment_bias"], out[m]["alignment_bias_closed"],
                                   rtol=1e-12)
    assert out["exact"]["alignment_bias"][0] > 0.01 and out["exact"]["alignment_bias"][1] == 0
    b = out["bound"]
    np.testing.assert_array_equal(b["bound_t2s_term3"], out["exact"]["alignment_bias"])
    np.testing.assert_allclose(b["bound_t2s"], b["bound_t2s_term1"] + b["bound_t2s_term2"]
                               + b["bound_t2s_term3"], rtol=1e-12)


def test_misalignment_figure_reads_the_cube(tmp_path) -> None:
    """A small angle × α_S cube through the real runner and store: the figure is planned, its
    right panel plots the cube's bias and closed form (equal, growing as ½ sin²θ e_10 for the
    shipped config's geometry), its left panel log2 der. Planted bugs caught: der not
    log-scaled, panels swapped, the figure not planned for (angle, alpha_s) axes."""
    import xarray as xr
    from matplotlib.collections import QuadMesh

    from ktsweep.analysis import figures
    from ktsweep.sweep import runner, store
    from ktsweep.sweep.layout import Layout

    cfg = {"name": "mis", "grid": {"angle": [0, 45, 90], "alpha_s": [1.0, 2.0]},
           "fixed": {**{k: v for k, v in BASE.items() if k != "alpha_s"}, "d": 12, "r_t": 3,
                     "r_s": 3, "alpha_target": 1.0, "N": 64, "n": 256},
           "methods": ["exact"], "outputs": {"modes": False, "curves": False}}
    layout = Layout.from_config(cfg)
    path = tmp_path / "cube.zarr"
    store.init_cube(layout, path)
    for chunk in layout.chunk_ids():
        runner.run_chunk(layout, chunk, path, threads=1, processes=False, report=lambda s: None)
    assert "misalignment" in figures.planned_figures(layout)
    ds = xr.open_zarr(path, consolidated=False)
    fig = figures.draw_figure(ds, "misalignment")
    left, right = fig.axes[:2]  # the colorbar comes after them
    closed, projected = (line.get_ydata() for line in right.get_lines())
    e4 = 4.0**-1.0  # the pair (3, 4): the student's 3rd eigenvector leans onto e_4
    np.testing.assert_allclose(closed, 0.5 * np.sin(np.radians([0, 45, 90])) ** 2 * e4,
                               atol=1e-15)
    np.testing.assert_allclose(projected, ds["alignment_bias"].values[:, 0], rtol=0)
    np.testing.assert_allclose(projected, closed, rtol=1e-12, atol=1e-15)
    mesh = next(c for c in left.collections if isinstance(c, QuadMesh))
    der = ds["der"].sel(estimator="exact").transpose("alpha_s", "angle").values
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(der.shape), np.log2(der))


def test_w2s_onset_from_a_cube() -> None:
    """Theorem 4's n0 read from a cube with an n axis (the store's template, filled with the
    exact engine's w2s_ratio and status point by point) is the first n whose w2s_ratio is
    below 1, with the n before it as the lower bracket; a diverged point is skipped. Planted
    bugs caught: the last n instead of the first; the axis left unsorted (n is given in
    decreasing order); the status mask ignored."""
    from ktsweep.analysis.onset import w2s_onset
    from ktsweep.model.cubespec import Status
    from ktsweep.sweep import store
    from ktsweep.sweep.layout import Layout

    fixed = {"alpha_t": 1.0, "alpha_s": 1.0, "N": 400, "sigma2": 1.0, "d": 30,
             "target": "lowdim", "k_dagger": 3, "amplitude": 0.3, "batch_s": 4}
    cfg = {"name": "onset", "grid": {"n": [4096, 1024, 256, 64, 16], "angle": [0, 60]},
           "fixed": fixed, "methods": ["exact"], "outputs": {"modes": False, "curves": False}}
    layout = Layout.from_config(cfg)
    ds = store.template(layout).load()
    ratios = {}
    for idx, p in layout.iter_points():
        ratios[idx] = exact.evaluate([p])["w2s_ratio"][0]
        ds["w2s_ratio"][idx + (0,)] = ratios[idx]
        ds["status"][idx + (0,)] = Status.OK
    # w2s_ratio over n = 16, 64, 256, ...: 1.37, 0.73, 0.33, ... at both angles
    assert ratios[(4, 0)] > 1 > ratios[(3, 0)]
    out = w2s_onset(ds)
    np.testing.assert_array_equal(out["n0"].values, [64, 64])
    np.testing.assert_array_equal(out["n0_below"].values, [16, 16])
    ds["status"][(3, 1, 0)] = Status.DIVERGED  # n = 64 at 60 degrees: not a W2S point
    out = w2s_onset(ds)
    np.testing.assert_array_equal(out["n0"].values, [64, 256])
