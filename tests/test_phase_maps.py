"""Phase maps of w2s_ratio, der and PGR: the slice they are drawn at, the log colour scale
centred at 1, the region boundaries on the cell edges, the exactly-1 diagonal at n = inf.

The cube is conftest's ``phase_cube``: the W2S region exists only at finite n with the lowdim
target, the KD region at the largest n.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from matplotlib.collections import LineCollection

from ktsweep.analysis import figures as plots
from ktsweep.sweep import store
from ktsweep.sweep.layout import Layout

AXES = ("target", "alpha_t", "alpha_s", "N", "n")


@pytest.fixture(scope="module")
def ds(phase_cube):
    return store.open_cube(phase_cube).load()


def _shown_at(fig) -> dict:
    caption = fig.texts[-1].get_text()
    part = next(p for p in caption.split("; ") if p.startswith("shown at: "))
    out = {}
    for kv in part[10:].split(", "):
        k, v = kv.split("=")
        out[k] = v if k == "target" else float(v)
    return out


def _plane(ds, name, at):
    """The cube's plane over (alpha_t, alpha_s) at ``at``, exact, status ok."""
    da = ds[name].sel(at).sel(estimator="exact")
    ok = ds["status"].sel(at).sel(estimator="exact") == 1
    return da.where(ok).transpose("alpha_t", "alpha_s").values.astype(float)


def _mesh(fig) -> np.ndarray:
    """The colour array of the map, as (x, y) cells."""
    ax = fig.axes[0]
    arr = np.ma.filled(ax.collections[0].get_array(), np.nan)
    nx, ny = len(ax.get_xticks()), len(ax.get_yticks())
    return arr.reshape(ny, nx).T


def _boundary_segments(fig) -> int:
    lines = [c for c in fig.axes[0].collections if isinstance(c, LineCollection)]
    return sum(len(c.get_segments()) for c in lines)


def _pairs_across(inside: np.ndarray, outside: np.ndarray) -> int:
    """Neighbouring cells (4-neighbourhood) with one inside and one outside the region."""
    count = 0
    for i, j in itertools.product(range(inside.shape[0]), range(inside.shape[1])):
        for di, dj in ((1, 0), (0, 1)):
            a, b = (i, j), (i + di, j + dj)
            if b[0] < inside.shape[0] and b[1] < inside.shape[1]:
                count += (inside[a] and outside[b]) or (outside[a] and inside[b])
    return count


@pytest.mark.parametrize(("name", "var"), [("w2s_phase_alpha", "w2s_ratio"),
                                           ("der_phase_alpha", "der")])
def test_ratio_maps_colour_log_values_centred_at_one(ds, name, var):
    """The map colours log10 of the cube's values at the slice its footer names, on a scale
    symmetric about 0 (ratio 1), and draws the boundary on every edge between the sides.

    Mutations: plotting the ratio itself (linear) or a TwoSlopeNorm with unequal halves
    (ratios 2 and 1/2 in different shades), a transposed map, a boundary drawn by an
    interpolating contour (no edge segments) or one that counts the cells exactly 1 as
    inside the KD region (extra segments around the diagonal) fail here."""
    fig = plots.draw_figure(ds, name)
    at = _shown_at(fig)
    want = _plane(ds, var, at)
    np.testing.assert_allclose(_mesh(fig), np.log10(want), rtol=1e-12)
    norm = fig.axes[0].collections[0].norm
    assert norm.vmin == -norm.vmax > -np.inf
    region = plots.KD if var == "der" else plots.W2S
    inside, outside = region.sides(want)
    assert inside.any() and outside.any()
    assert _boundary_segments(fig) == _pairs_across(inside, outside) > 0


def test_w2s_map_slice_is_finite_n_where_both_sides_show_most(ds):
    """The W2S map is drawn at a finite n, at the slice with the best region score (both
    sides of w2s_ratio = 1 as balanced as the grid allows), not at the representative
    largest N and n.

    Mutations: the representative slice (n = inf, where w2s_ratio is NaN: 'no data', or the
    largest finite n), allowing n = inf, or scoring by the inside count alone (a slice that
    is all W2S, no boundary) fail here."""
    fig = plots.draw_figure(ds, "w2s_phase_alpha")
    at = _shown_at(fig)
    assert math.isfinite(at["n"])
    best = max(plots.region_score(_plane(ds, "w2s_ratio", dict(zip(("target", "N", "n"), c,
                                                                    strict=True))), plots.W2S)
               for c in itertools.product(["gaussian", "lowdim"], [64.0, 256.0],
                                          [32.0, 128.0, 512.0]))
    assert plots.region_score(_plane(ds, "w2s_ratio", at), plots.W2S) == best
    assert best[0] > 0
    inside, outside = plots.W2S.sides(_plane(ds, "w2s_ratio", at))
    assert 0 < inside.sum() < inside.size  # a boundary exists at the chosen slice
    pgr_at = _shown_at(plots.draw_figure(ds, "pgr_phase_alpha"))
    assert pgr_at == at  # PGR beside w2s_ratio, at the same slice


def test_der_map_at_the_largest_n_with_the_diagonal_exactly_one(ds):
    """The KD map is drawn at n = inf (the largest n), where der = 1 exactly on the diagonal:
    those cells are cross-hatched with their reason in the legend and count on neither side.

    Mutations: drawing der at a finite n (Theorem 3 is a statement about n -> inf), leaving
    the diagonal as an unexplained white stripe (no hatch, no legend entry), or a tolerance
    that misses the exactly-1 cells fail here."""
    fig = plots.draw_figure(ds, "der_phase_alpha")
    at = _shown_at(fig)
    assert at["n"] == math.inf
    der = _plane(ds, "der", at)
    np.testing.assert_allclose(np.diag(der), 1.0, rtol=plots.EXACT_ONE_RTOL)
    ax = fig.axes[0]
    hatched = [c for c in ax.collections if c.get_hatch() == "xx"]
    assert len(hatched) == 1
    mask = ~np.ma.getmaskarray(hatched[0].get_array()).reshape(3, 3).T
    np.testing.assert_array_equal(mask, np.eye(3, dtype=bool))
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert plots.EXACT_ONE_LABEL in legend
    assert any(t.startswith("α_S = α_T") for t in legend)


def test_samples_maps_show_n_inf_for_der_only(ds):
    """der over (N, n) keeps n = inf as its last row (tick '∞'); w2s_ratio over (N, n) drops
    it (undefined there) instead of drawing an empty row.

    Mutation: placing inf on a log axis as is (no finite position: the figure breaks or the
    row vanishes from der) or keeping the all-NaN row in the W2S map fail here."""
    der = plots.draw_figure(ds, "der_phase_samples")
    labels = [t.get_text() for t in der.axes[0].get_yticklabels()]
    assert labels[-1] == "∞" and len(labels) == 4
    assert np.isfinite(_mesh(der)[:, -1]).all()
    w2s = plots.draw_figure(ds, "w2s_phase_samples")
    labels = [t.get_text() for t in w2s.axes[0].get_yticklabels()]
    assert "∞" not in labels and len(labels) == 3


def test_a_map_without_its_region_says_so(ds):
    """With only the gaussian target (no W2S anywhere in this model), the W2S map carries a
    note instead of a silently missing boundary.

    Mutation: dropping the note (or scoring a slice with no W2S above one with W2S) fails."""
    only = ds.sel(target=["gaussian"])
    only.attrs = dict(ds.attrs)
    cfg = Layout.from_json(ds.attrs["ktsweep_config"]).config.to_dict()
    cfg["grid"]["target"] = ["gaussian"]
    only.attrs["ktsweep_config"] = Layout.from_config(cfg).to_json()
    fig = plots.draw_figure(only, "w2s_phase_alpha")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any(t.startswith("no cell with w2s_ratio < 1") for t in texts)
    assert _boundary_segments(fig) == 0


def test_cells_place_inf_one_step_beyond_the_grid():
    cells = plots._Cells.of([4096.0, 256.0, math.inf, 1024.0], log=True)
    assert list(cells.order) == [1, 3, 0, 2]
    np.testing.assert_allclose(cells.centres, [256, 1024, 4096, 16384])
    assert cells.labels == ["256", "1024", "4096", "∞"]
    assert np.all(np.diff(np.log(cells.edges)) > 0)
