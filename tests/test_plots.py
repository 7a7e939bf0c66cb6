"""Figures: planning from the layout, exactly the planned files written, the no-data case."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from ktsweep import cli
from ktsweep.analysis import figures as plots
from ktsweep.analysis import report
from ktsweep.sweep import runner as sweep
from ktsweep.sweep import store
from ktsweep.sweep.layout import Layout

REPO = Path(__file__).resolve().parents[1]
BASE = {"alpha_t": 2.0, "alpha_s": 2.0, "N": 64, "n": 64, "sigma2": 0.1, "d": 20}
# misalignment needs an angle axis, w2s_crossover the lowdim target and 6 values of N
ALIGNED = [f for f in plots.FIGURES if f not in ("misalignment", "w2s_crossover")]


def _layout(grid: dict, methods=("exact",), modes=True, curves=True, **fixed) -> Layout:
    fixed = {k: v for k, v in {**BASE, **fixed}.items() if k not in grid}
    return Layout.from_config({"name": "p", "grid": grid, "fixed": fixed,
                               "methods": list(methods),
                               "outputs": {"modes": modes, "curves": curves}})


def _build(cfg: dict, path) -> None:
    layout = Layout.from_config(cfg)
    store.init_cube(layout, path)
    for chunk in layout.chunk_ids():
        sweep.run_chunk(layout, chunk, path, threads=1, processes=False, report=lambda s: None)


# -- planning ------------------------------------------------------------------------------
def test_planned_figures_follow_the_layout():
    full = _layout({"alpha_t": [1.5, 2.0], "alpha_s": [1.5, 2.5], "N": [64, 128, 256],
                    "n": [64, 256]}, methods=("exact", "mc", "bound"))
    assert plots.planned_figures(full) == ALIGNED
    assert plots.planned_figures(_layout({"N": [64, 128], "n": [64, 128]}, modes=False,
                                         curves=False)) == [
        "pgr_phase_samples", "w2s_phase_samples", "der_phase_samples", "risk_vs_N"]
    assert plots.planned_figures(_layout({"N": [64, 128]}, methods=("bound",))) == [
        "bound_sandwich"]
    assert plots.planned_figures(_layout({"k_dagger": [1, 5]}, target="lowdim", curves=True,
                                         modes=True)) == [
        "t2s_curves", "spectral_horizon", "spectral_denoising"]
    assert plots.planned_figures(_layout({"alpha_s": [1.5, 2.5]}, modes=False)) == [
        "der_vs_dalpha", "t2s_curves"]
    crossover = {"N": [2**k for k in range(6, 12)], "n": [64, 128, 256, float("inf")]}
    lowdim = {"target": "lowdim", "k_dagger": 3}
    assert "w2s_crossover" in plots.planned_figures(_layout(crossover, **lowdim))
    assert "w2s_crossover" not in plots.planned_figures(_layout(crossover))  # gaussian
    assert "w2s_crossover" not in plots.planned_figures(  # 5 values of N, or 2 finite n
        _layout({**crossover, "N": crossover["N"][:5]}, **lowdim))
    assert "w2s_crossover" not in plots.planned_figures(
        _layout({**crossover, "n": [64, 128, float("inf")]}, **lowdim))


def test_captions_cover_every_figure_and_match_the_report_files():
    assert set(plots.CAPTIONS) == set(plots.FIGURES)
    for name in plots.FIGURES:
        rst = REPO / "workflow" / "report" / f"{name}.rst"
        assert rst.read_text() == report.caption_rst(name), f"regenerate {rst}"


# -- drawing -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    cfg = {"name": "plots",
           "grid": {"alpha_t": [1.5, 2.0], "alpha_s": [1.5, 2.5], "N": [64, 128, 256, 512],
                    "n": [128, 512]},
           "fixed": {"sigma2": 0.1, "d": 30},
           "methods": ["exact", "mc", "bound"],
           "mc": {"replicates": 4, "device": "cpu",
                  "subgrid": {"alpha_t": [2.0], "alpha_s": [2.5], "n": [512]}},
           "outputs": {"checkpoints_per_decade": 5},
           "jobs": {"points_per_job": 64}}
    path = tmp_path_factory.mktemp("cube") / "cube.zarr"
    _build(cfg, path)
    return path


def _is_no_data(fig) -> bool:
    return any(t.get_text().endswith(": no data") for ax in fig.axes for t in ax.texts)


def _shown_at(fig) -> dict[str, float]:
    """The slice a figure's caption says it shows ('shown at: a=1.5, N=64')."""
    caption = fig.texts[-1].get_text()
    part = next(p for p in caption.split("; ") if p.startswith("shown at: "))
    return {k: float(v) for k, v in (kv.split("=") for kv in part[10:].split(", "))}


def _line(ax, label: str):
    return next(line for line in ax.get_lines() if line.get_label() == label)


def _cube_values(ds, name, at, estimator=None):
    da = ds[name].sel(at)
    if estimator:
        da = da.sel(estimator=estimator).where(ds["status"].sel(at).sel(estimator=estimator)
                                               == 1)
    return da.values


def test_make_figures_writes_exactly_the_planned_files(cube, tmp_path):
    ds = store.open_cube(cube)
    planned = plots.planned_figures(Layout.from_json(ds.attrs["ktsweep_config"]))
    assert planned == ALIGNED
    paths = plots.make_figures(ds, tmp_path / "fig")
    assert [p.name for p in paths] == [f"{n}.png" for n in planned]
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == sorted(p.name for p in paths)
    for p in paths:
        assert mpimg.imread(p).ndim == 3  # a readable PNG
    for name in planned:
        assert not _is_no_data(plots.draw_figure(ds, name)), name


def test_figures_plot_the_cube_values(cube):
    """Each figure's plotted data, read back from the matplotlib objects, equals the cube's
    values at the slice its caption names.

    Mutations: a figure plotting the wrong variable (risk_direct as teacher), the wrong
    estimator, a transposed phase map, or a caption naming another slice than the one drawn
    fail here (a PNG-height check passes all of them)."""
    ds = store.open_cube(cube).load()
    fig = plots.draw_figure(ds, "risk_vs_N")
    at = _shown_at(fig)
    ax = fig.axes[0]
    for run, label in (("teacher", "teacher"), ("t2s", "T2S student")):
        np.testing.assert_allclose(_line(ax, f"{label} (exact)").get_ydata(),
                                   _cube_values(ds, f"risk_{run}", at, "exact"), rtol=1e-12)
    mc = [c for c in ax.containers if c.get_label() == "teacher (MC mean ± se)"][0]
    np.testing.assert_allclose(mc.lines[0].get_ydata(),
                               _cube_values(ds, "risk_teacher", at, "mc"), rtol=1e-12)

    fig = plots.draw_figure(ds, "pgr_phase_alpha")
    at = _shown_at(fig)
    mesh = fig.axes[0].collections[0].get_array()  # drawn as (alpha_s rows, alpha_t columns)
    assert ds["pgr"].sel(at).sel(estimator="exact").dims == ("alpha_t", "alpha_s")
    gap = (_cube_values(ds, "risk_teacher", at, "exact")
           - _cube_values(ds, "risk_ceiling", at, "exact"))
    want = np.where(gap > 0, _cube_values(ds, "pgr", at, "exact"), np.nan).T
    np.testing.assert_allclose(np.ma.filled(mesh, np.nan).reshape(want.shape), want,
                               rtol=1e-12)

    fig = plots.draw_figure(ds, "spectral_horizon")
    at = _shown_at(fig)
    np.testing.assert_allclose(_line(fig.axes[0], "teacher").get_ydata(),
                               _cube_values(ds, "mode_teacher", at, "exact"), rtol=1e-6)

    fig = plots.draw_figure(ds, "bound_sandwich")
    at = _shown_at(fig)
    np.testing.assert_allclose(_line(fig.axes[0], "upper bound (Lemma 1)").get_ydata(),
                               _cube_values(ds, "bound_upper_teacher", at), rtol=1e-12)
    np.testing.assert_allclose(_line(fig.axes[2], "upper bound (Theorem 1 transfer)")
                               .get_ydata(), _cube_values(ds, "bound_t2s", at), rtol=1e-12)

    fig = plots.draw_figure(ds, "t2s_curves")
    at = _shown_at(fig)
    y = _cube_values(ds, "curve_t2s", at, "exact").astype(float)
    y = np.where(ds["step"].values > 0, y, np.nan)
    np.testing.assert_allclose(_line(fig.axes[0], "T2S student").get_ydata(), y, rtol=1e-6)


def test_pgr_is_never_coloured_where_there_is_no_gap(cube):
    """A cell whose ceiling is not better than its teacher (or 0/0) is hatched, never coloured
    as PGR; the colour scale is diverging around 0, not clipped to [0, 1].

    Mutations: drawing the raw pgr (no mask) colours the planted no-gap cells; masking with
    ceiling > teacher instead of >= leaves the equal (0/0) cell coloured."""
    ds = store.open_cube(cube).load()
    at = _shown_at(plots.draw_figure(ds, "pgr_phase_alpha"))
    teacher = ds["risk_teacher"].copy()
    ceiling = ds["risk_ceiling"].copy()
    sel = {**at, "estimator": "exact"}
    ceiling.loc[{**sel, "alpha_t": 2.0, "alpha_s": 1.5}] = 2.0 * teacher.loc[
        {**sel, "alpha_t": 2.0, "alpha_s": 1.5}]  # ceiling worse than teacher
    ceiling.loc[{**sel, "alpha_t": 1.5, "alpha_s": 1.5}] = teacher.loc[
        {**sel, "alpha_t": 1.5, "alpha_s": 1.5}]  # no gap at all: 0/0
    ds["risk_ceiling"] = ceiling
    fig = plots.draw_figure(ds, "pgr_phase_alpha")
    ax = fig.axes[0]
    mesh = np.ma.filled(ax.collections[0].get_array(), np.nan).reshape(2, 2)  # (alpha_s, alpha_t)
    gap = (_cube_values(ds, "risk_teacher", at, "exact")
           - _cube_values(ds, "risk_ceiling", at, "exact")).T
    assert (gap <= 0).sum() >= 2
    assert np.all(np.isnan(mesh[gap <= 0]))
    assert np.all(np.isfinite(mesh[gap > 0]))
    hatched = [c for c in ax.collections[1:] if c.get_hatch() == "//"]
    assert len(hatched) == 1
    assert np.ma.count(hatched[0].get_array()) == (gap <= 0).sum()  # every no-gap cell
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert plots.NO_GAP_LABEL in legend
    norm = ax.collections[0].norm
    assert norm.vcenter == 0.0 and norm.vmax > 0 > norm.vmin


def test_figures_drop_points_whose_status_is_not_ok(cube):
    """Mutation: reading the variable without the status mask draws the diverged point."""
    ds = store.open_cube(cube).load()
    at = _shown_at(plots.draw_figure(ds, "risk_vs_N"))
    status = ds["status"].copy()
    status.loc[{**at, "N": 128.0, "estimator": "exact"}] = 2
    ds["status"] = status
    fig = plots.draw_figure(ds, "risk_vs_N")
    y = _line(fig.axes[0], "teacher (exact)").get_ydata()
    N = list(ds["N"].values)
    assert np.isnan(y[N.index(128.0)]) and np.isfinite(y[N.index(64.0)])


def test_no_data_figures_are_still_written(tmp_path):
    layout = _layout({"alpha_t": [1.5, 2.0], "alpha_s": [1.5, 2.5], "N": [64, 128]},
                     methods=("exact", "bound"))
    ds = store.template(layout).load()  # nothing computed: every status is 0
    paths = plots.make_figures(ds, tmp_path)
    assert [p.stem for p in paths] == plots.planned_figures(layout)
    for p in paths:
        assert p.exists() and p.stat().st_size > 0
        assert _is_no_data(plots.draw_figure(ds, p.stem)), p.stem


def test_partially_missing_variables(cube):
    ds = store.open_cube(cube).drop_vars(["der", "mode_t2s", "curve_t2s"])
    empty = {name: _is_no_data(plots.draw_figure(ds, name)) for name in plots.FIGURES}
    assert empty["der_vs_dalpha"] and empty["t2s_curves"] and empty["spectral_denoising"]
    assert not empty["spectral_horizon"]  # teacher and direct still there
    assert not empty["pgr_phase_alpha"]  # no der contour, still a map


def test_cli_figures(cube, tmp_path, capsys):
    assert cli.main(["figures", str(cube), "--outdir", str(tmp_path / "f")]) == 0
    assert len(list((tmp_path / "f").glob("*.png"))) == len(ALIGNED)
    assert cli.main(["figures", str(tmp_path / "none.zarr"), "--outdir", str(tmp_path)]) == 2
    assert "ktsweep figures: error: no cube" in capsys.readouterr().err


# -- the first-run fixes (issue 11) -------------------------------------------------------------
def test_mc_parity_draws_every_point_and_its_z_score(cube):
    """The parity figure plots, per quantity, the Monte Carlo mean against the exact value at
    every point where both are ok, and z = (MC - exact) / se.

    Mutations caught: exact on both axes (every point on the diagonal), the z-score divided
    by the wrong se (e.g. the exact quantity's, or se**2), points without status ok drawn."""
    ds = store.open_cube(cube).load()
    fig = plots.draw_figure(ds, "mc_parity")
    assert not _is_no_data(fig)
    values, zs = fig.axes[0], fig.axes[1]
    lines = {c.get_label(): c for c in values.containers}
    mask = (ds["status"] == 1).all("estimator")
    for name in plots.PARITY:
        ex = ds[name].sel(estimator="exact").where(mask).values.reshape(-1)
        mc = ds[name].sel(estimator="mc").where(mask).values.reshape(-1)
        se = ds[f"{name}_se"].where(mask).values.reshape(-1)
        ok = np.isfinite(ex) & np.isfinite(mc) & (se > 0)
        assert ok.sum() >= 2, name
        drawn = lines[name].lines[0]
        np.testing.assert_allclose(drawn.get_xdata(), ex[ok], rtol=1e-12)
        np.testing.assert_allclose(drawn.get_ydata(), mc[ok], rtol=1e-12)
        z_line = [ln for ln in zs.get_lines() if ln.get_marker() == drawn.get_marker()
                  and ln.get_color() == drawn.get_color()][0]
        np.testing.assert_allclose(z_line.get_xdata(), (mc[ok] - ex[ok]) / se[ok],
                                   rtol=1e-12)
    exact_only = _layout({"N": [64, 128]})
    assert "mc_parity" not in plots.planned_figures(exact_only)


def test_risk_vs_n_legend_slopes_and_monte_carlo(cube):
    """One legend entry per line, each predicted slope drawn dashed, and the slice with the
    most Monte Carlo points along N.

    Mutations caught: slope labels without the run ('predicted slope -0.500' twice), slope
    lines anchored on the curve itself (drawn exactly under it), the representative slice
    kept although Monte Carlo exists only elsewhere."""
    ds = store.open_cube(cube).load()
    fig = plots.draw_figure(ds, "risk_vs_N")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(labels) == len(set(labels))
    at = _shown_at(fig)
    for run, label in (("teacher", "teacher"), ("direct", "direct student")):
        slope = [ln for ln in ax.get_lines() if ln.get_label().startswith(f"{label}: predicted")]
        assert len(slope) == 1 and slope[0].get_linestyle() == "--"
        curve = _cube_values(ds, f"risk_{run}", at, "exact")
        assert plots.SLOPE_SHIFT < 1  # parallel to its curve, not on top of it
        np.testing.assert_allclose(slope[0].get_ydata()[-1], plots.SLOPE_SHIFT * curve[-1])
    # Monte Carlo ran only at alpha_t = 2, alpha_s = 2.5, n = 512: the figure must go there
    assert at["alpha_t"] == 2.0 and at["alpha_s"] == 2.5 and at["n"] == 512
    mc = [c for c in ax.containers if c.get_label() == "teacher (MC mean ± se)"][0]
    assert np.isfinite(mc.lines[0].get_ydata()).sum() == ds.sizes["N"]
    assert "Monte Carlo at N = 64, 128, 256, 512" in fig.texts[-1].get_text()


def test_titles_name_a_paper_figure_only_for_its_reproduction(cube):
    """Mutation caught: a hard-coded '(paper Fig. 3a)' on every sweep's learning curves."""
    ds = store.open_cube(cube).load()
    assert "paper" not in plots.draw_figure(ds, "t2s_curves")._suptitle.get_text()
    cfg = json.loads(ds.attrs["ktsweep_config"])
    cfg["name"] = "w2s_fig3a"
    renamed = ds.assign_attrs(ktsweep_config=json.dumps(cfg))
    title = plots.draw_figure(renamed, "t2s_curves")._suptitle.get_text()
    assert title.endswith("(paper Fig. 3a)")


def test_bound_sandwich_says_what_it_shows(cube):
    """Red crosses exactly where bound_t2s_holds = 0; the step-condition swatch only where the
    condition holds somewhere; the untrained risk drawn.

    Mutations caught: the legend's swatch drawn unconditionally, crosses at every N, the
    vacuous upper bound left without the untrained-risk reference."""
    ds = store.open_cube(cube).load()
    fig = plots.draw_figure(ds, "bound_sandwich")
    at = _shown_at(fig)
    holds = ds["bound_t2s_holds"].sel(at).values
    risk = _cube_values(ds, "risk_t2s", at, "exact")
    crosses = [ln for ln in fig.axes[2].get_lines() if ln.get_label() == "exact above the bound"]
    if (holds == 0).any():
        np.testing.assert_allclose(crosses[0].get_ydata(), risk[holds == 0])
    else:
        assert not crosses
    cond = ds["step_condition"].sel(at).values
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert ("step condition holds" in labels) == bool((cond == 1).any())
    assert "untrained risk ½ Σ e_i" in labels


def test_spectral_horizon_marks_the_learned_modes(cube):
    """The marker sits on the last mode whose risk is below half its untrained risk.

    Mutation caught: the horizon taken as the first unlearned mode minus one (an early dip
    above the threshold would hide every learned mode after it), or off by one."""
    assert plots.learned_horizon(np.array([0.1, 0.6, 0.2, 0.9]), np.ones(4)) == 3
    assert plots.learned_horizon(np.array([0.9, 0.9]), np.ones(2)) == 0
    ds = store.open_cube(cube).load()
    fig = plots.draw_figure(ds, "spectral_horizon")
    marks = {ln.get_label().split(":")[0]: ln.get_xdata()[0] for ln in fig.axes[0].get_lines()
             if "learned up to" in ln.get_label()}
    assert set(marks) == {"teacher", "direct student", "T2S student"}
    for label, i in marks.items():
        assert label and f"learned up to i = {int(i)}" in " ".join(
            ln.get_label() for ln in fig.axes[0].get_lines())


def test_captions_warn_when_tuning_hit_the_end_of_its_list(cube):
    """Mutation caught: the tune_edge_* flags ignored (a γ0 pinned at the top of its tune list
    at every point, kd_fig2a's case, drawn without a word)."""
    ds = store.open_cube(cube).load()
    assert "γ0 tuned" not in plots.draw_figure(ds, "risk_vs_N").texts[-1].get_text()
    edge = ds["tune_edge_t"].copy()
    edge[...] = 1.0
    ds["tune_edge_t"] = edge
    caption = plots.draw_figure(ds, "risk_vs_N").texts[-1].get_text()
    assert f"γ0 tuned to an end of its list at {edge.size} points (t)" in caption
