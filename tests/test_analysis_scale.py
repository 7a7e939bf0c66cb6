"""Analysis that scales with the grid: what figures read of a cube per parameter combination.

A 10^7-point cube has 10^5 combinations of its non-sample axes; figures compute a theory value
at each (:func:`~ktsweep.analysis.figures.params.over_parameters`), so reading the cube once per
combination is what decides whether figures take minutes or hours
(benchmarks/bench_analysis_scale.py measures the whole commands).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from dask.callbacks import Callback

from ktsweep.analysis.figures.params import over_parameters, params_at
from ktsweep.model.cubespec import Flag
from ktsweep.sweep import store


class Computes(Callback):
    """Counts the dask computations started inside its ``with`` block."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def _start(self, dsk) -> None:
        self.count += 1


@pytest.fixture(scope="module")
def ds(phase_cube):
    """The phase cube, lazily read, with steps and tune flags that differ within slabs: the
    student's step varies along N at the first alpha_T (no one step there), and one point's
    student step was tuned (every other point's flag undetermined)."""
    cube = store.open_cube(phase_cube)
    first = cube["alpha_t"] == cube["alpha_t"][0]
    gamma = cube["gamma0_s"].where(~first, cube["gamma0_s"] * cube["N"] / 64.0)
    tuned = cube["tune_edge_s"].copy(data=np.full(cube["tune_edge_s"].shape,
                                                  Flag.UNDETERMINED, dtype=np.int8))
    tuned[{a: -1 for a in tuned.dims}] = Flag.NO
    return cube.assign(gamma0_s=gamma.chunk(), tune_edge_s=tuned.chunk())


def same(a: object, b: object) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a)
                      and math.isnan(b))


@pytest.mark.parametrize("axes", [None, ["alpha_t"], ["alpha_s", "N"]])
def test_over_parameters_gives_params_at_of_every_combination(ds, axes):
    """Each combination's parameters are exactly those :func:`params_at` reads at its labels
    (same keys in the same order, same values). Planted bugs caught: a step taken from a
    slab with several steps (lo without lo == hi), the tuned flag reduced with all instead of
    any, coordinates read where they vary along axes the combination leaves free, the axis
    labels overridden by the coordinates."""
    axes = list(ds["status"].dims[:-1]) if axes is None else axes
    rows = over_parameters(ds, axes, lambda p: p.as_dict())
    assert rows
    kinds = set()
    for at, got in rows:
        want = params_at(ds, at).as_dict()
        assert list(got) == list(want), at
        assert all(same(got[k], want[k]) for k in want), (at, got, want)
        kinds.add((math.isnan(got.get("gamma0_s", 0.0)), got.get("tuned_s")))
    if axes == list(ds["status"].dims[:-1]):  # the planted slabs are all seen
        assert (True, False) in kinds and (False, False) in kinds and (False, True) in kinds


def test_over_parameters_reads_each_variable_once(ds):
    """The cube's data variables are read once for all combinations (the two runs' step and
    tune-edge variables: four reads), not once per combination. Planted bug caught: the
    per-combination loop over :func:`params_at` (four reads per combination, 72 here)."""
    axes = list(ds["status"].dims[:-1])
    counter = Computes()
    with counter:
        rows = over_parameters(ds, axes, lambda p: p)
    assert len(rows) > 4
    assert counter.count <= 4


FROM_MODES_AND_CURVES = ("t2s_curves", "spectral_horizon", "spectral_denoising")
"""The figures that read per-mode risks or learning curves."""


def drawn(fig) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Every line of a figure: (label, x, y), and its title."""
    out = [(line.get_label(), np.asarray(line.get_xdata(), float),
            np.asarray(line.get_ydata(), float)) for ax in fig.axes for line in ax.get_lines()]
    return [*out, (fig._suptitle.get_text() if fig._suptitle else "", np.array([]),
                   np.array([]))]


def test_figures_read_per_mode_and_per_step_variables_lazily(default_cube):
    """A figure cube keeps the per-mode risks and learning curves dask-backed (on a
    10^7-point cube they are GBs) while it loads the grid variables, and the figures drawn
    from them are those drawn from a cube loaded whole: same lines, same slice. Planted bugs
    caught: every variable loaded (the lazy check), a lazy variable's slice or reduction
    read differently (the comparison)."""
    from ktsweep.analysis import figures as plots

    lazy = plots.FigureCube(store.open_cube(default_cube))
    assert lazy.var("curve_t2s").chunks is not None
    assert lazy.var("mode_teacher").chunks is not None
    assert lazy.var("risk_t2s").chunks is None
    loaded = plots.FigureCube(store.open_cube(default_cube).load())
    for name in FROM_MODES_AND_CURVES:
        got, want = drawn(plots.draw_figure(lazy, name)), drawn(plots.draw_figure(loaded, name))
        assert [g[0] for g in got] == [w[0] for w in want], name
        for (label, gx, gy), (_, wx, wy) in zip(got, want, strict=True):
            np.testing.assert_array_equal(gx, wx, err_msg=f"{name}: {label}")
            np.testing.assert_array_equal(gy, wy, err_msg=f"{name}: {label}")
