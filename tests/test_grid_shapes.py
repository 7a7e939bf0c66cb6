"""Every grid shape the schema accepts goes through the analysis (fits and figures).

Property-based: hypothesis draws a subset of the axes (alpha_t, alpha_s, N, n, sigma2), one
to four values each, a target and d in 20..60, with or without Monte Carlo; the small cube is
computed for real (exact + bound, zarr store, dask in-process) and fitted and drawn.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from e2e import build_in_process
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ktsweep.analysis import figures, fits
from ktsweep.sweep.layout import Layout

VALUES = {
    "alpha_t": [1.25, 1.5, 2.0, 3.0],
    "alpha_s": [1.25, 1.5, 2.0, 3.0],
    "N": [32, 64, 128, 256],
    "n": [16, 64, 128, 256],
    "sigma2": [0.0, 0.1, 0.5, 1.0],
}
DEFAULTS = {"alpha_t": 1.5, "alpha_s": 2.0, "N": 128, "n": 64, "sigma2": 0.1}


@st.composite
def grids(draw) -> dict:
    """A config: any subset of the axes with 1-4 (sorted) values each, the rest fixed."""
    axes = draw(st.lists(st.sampled_from(list(VALUES)), unique=True, min_size=1,
                         max_size=len(VALUES)))
    grid = {}
    for a in axes:
        idx = draw(st.lists(st.integers(0, 3), min_size=1, max_size=4, unique=True))
        grid[a] = [VALUES[a][i] for i in sorted(idx)]
    fixed = {a: v for a, v in DEFAULTS.items() if a not in grid}
    target = draw(st.sampled_from(["gaussian", "lowdim"]))
    fixed.update(d=draw(st.integers(20, 60)), target=target)
    if target == "lowdim":
        fixed["k_dagger"] = 3
    methods = ["exact", "bound"] + (["mc"] if draw(st.booleans()) else [])
    cfg = {"name": "shape", "grid": grid, "fixed": fixed, "methods": methods,
           "outputs": {"modes": True, "curves": True}, "jobs": {"points_per_job": 256}}
    if "mc" in methods:
        cfg["mc"] = {"replicates": 4, "device": "cpu"}
    return cfg


def _build(cfg: dict, path):
    """The cube in this process (e2e.build_in_process): the shape, not the scheduler, is
    under test (dask runs elsewhere)."""
    return build_in_process(cfg, path)


def _fit_and_draw(cfg: dict, tmp) -> None:
    ds = _build(cfg, tmp / "cube.zarr")
    table = fits.fit_cube(ds)
    assert set(fits.frame(table)["verdict"]) <= set(fits.VERDICTS)
    fits.write_fits(table, tmp / "fits.csv", tmp / "fits.md")
    md = (tmp / "fits.md").read_text()
    assert md.startswith("# Exponent fits")
    for family, reason in table.attrs["unfitted"].items():  # every family not fitted says why
        assert f"{family}: {reason}" in md
    for name in figures.planned_figures(Layout.from_config(cfg)):
        plt.close(figures.draw_figure(ds, name))


_SETTINGS = dict(deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@settings(max_examples=5, **_SETTINGS)
@given(cfg=grids())
def test_any_grid_shape_fits_and_draws(cfg, tmp_path_factory):
    """A handful of shapes in the default run (a cube costs seconds).

    Mutation: restoring the old W2S search (holding every axis but N and n while reading
    learning curves) crashes on an n axis of one or two values (issue 9's ValueError)."""
    _fit_and_draw(cfg, tmp_path_factory.mktemp("shape"))


@pytest.mark.slow
@settings(max_examples=40, **_SETTINGS)
@given(cfg=grids())
def test_many_grid_shapes_fit_and_draw(cfg, tmp_path_factory):
    """The same property over 40 shapes (a few minutes)."""
    _fit_and_draw(cfg, tmp_path_factory.mktemp("shape"))


@pytest.mark.parametrize("n_values", [[64], [64, 256]])
def test_short_n_axis_uses_learning_curves(n_values, tmp_path):
    """The plain alpha_t x alpha_s x N x n sweep with n of one or two values: the W2S families
    come from the learning curves, one group per n value (the issue's crash).

    Mutation: the old held-axes rule (others = all but N and n) raises ValueError here."""
    cfg = {"name": "short_n", "grid": {"alpha_t": [1.5], "alpha_s": [2.0],
                                       "N": [32, 64, 128, 256], "n": n_values},
           "fixed": {"sigma2": 0.5, "d": 30, "target": "lowdim", "k_dagger": 3},
           "methods": ["exact"], "outputs": {"modes": False, "curves": True}}
    table = fits.fit_cube(_build(cfg, tmp_path / "cube.zarr"))
    df = fits.frame(table)
    w2s = df[df.family == "w2s_min_risk"]
    assert len(w2s) == len(n_values)
    assert sorted(w2s.n) == sorted(float(v) for v in n_values)
    assert set(w2s.alpha_t) == {1.5} and set(w2s.alpha_s) == {2.0}
    assert np.all(w2s.notes.str.contains("learning-curve checkpoints"))
    assert "ceiling" in table.attrs["unfitted"]  # n too short for a rate
