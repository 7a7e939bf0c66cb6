"""Figures: planning from the layout, exactly the planned files written, the no-data case."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
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


def _height(path: Path) -> int:
    return mpimg.imread(path).shape[0]


NO_DATA_HEIGHT = 352  # plots._no_data: 6.4 x 3.2 inches at 110 dpi


# -- planning ------------------------------------------------------------------------------
def test_planned_figures_follow_the_layout():
    full = _layout({"alpha_t": [1.5, 2.0], "alpha_s": [1.5, 2.5], "N": [64, 128, 256],
                    "n": [64, 256]}, methods=("exact", "mc", "bound"))
    assert plots.planned_figures(full) == list(plots.FIGURES)
    assert plots.planned_figures(_layout({"N": [64, 128], "n": [64, 128]}, modes=False,
                                         curves=False)) == ["pgr_phase_samples", "risk_vs_N"]
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


def test_make_figures_writes_exactly_the_planned_files(cube, tmp_path):
    ds = store.open_cube(cube)
    planned = plots.planned_figures(Layout.from_json(ds.attrs["ktsweep_config"]))
    assert planned == list(plots.FIGURES)
    paths = plots.make_figures(ds, tmp_path / "fig")
    assert [p.name for p in paths] == [f"{n}.png" for n in planned]
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == sorted(p.name for p in paths)
    for p in paths:
        assert p.stat().st_size > 5000
        assert _height(p) > NO_DATA_HEIGHT, f"{p.name} fell back to 'no data'"


def test_no_data_figures_are_still_written(tmp_path):
    layout = _layout({"alpha_t": [1.5, 2.0], "alpha_s": [1.5, 2.5], "N": [64, 128]},
                     methods=("exact", "bound"))
    ds = store.template(layout).load()  # nothing computed: every status is 0
    paths = plots.make_figures(ds, tmp_path)
    assert [p.stem for p in paths] == plots.planned_figures(layout)
    for p in paths:
        assert p.exists() and p.stat().st_size > 0
        assert _height(p) == NO_DATA_HEIGHT


def test_partially_missing_variables(cube, tmp_path):
    ds = store.open_cube(cube).drop_vars(["der", "mode_t2s", "curve_t2s"])
    paths = plots.make_figures(ds, tmp_path)
    heights = {p.stem: _height(p) for p in paths}
    assert heights["der_vs_dalpha"] == NO_DATA_HEIGHT
    assert heights["t2s_curves"] == NO_DATA_HEIGHT
    assert heights["spectral_denoising"] == NO_DATA_HEIGHT
    assert heights["spectral_horizon"] > NO_DATA_HEIGHT  # teacher and direct still there
    assert heights["pgr_phase_alpha"] > NO_DATA_HEIGHT  # no der contour, still a map


def test_cli_figures(cube, tmp_path, capsys):
    assert cli.main(["figures", str(cube), "--outdir", str(tmp_path / "f")]) == 0
    assert len(list((tmp_path / "f").glob("*.png"))) == len(plots.FIGURES)
    assert cli.main(["figures", str(tmp_path / "none.zarr"), "--outdir", str(tmp_path)]) == 2
    assert "ktsweep figures: error: no cube" in capsys.readouterr().err
