"""Figures: planning from the layout, exactly the planned files written, the no-data case."""

from __future__ import annotations

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
    assert plots.planned_figures(full) == list(plots.FIGURES)
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
    assert planned == list(plots.FIGURES)
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
    assert len(list((tmp_path / "f").glob("*.png"))) == len(plots.FIGURES)
    assert cli.main(["figures", str(tmp_path / "none.zarr"), "--outdir", str(tmp_path)]) == 2
    assert "ktsweep figures: error: no cube" in capsys.readouterr().err
