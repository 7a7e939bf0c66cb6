"""Phase maps of w2s_ratio, der and PGR: the one slice the maps of a plane share, the log
colour scale centred at 1, the region boundaries on the cell edges, the exactly-1 diagonal at
n = inf.

The cube is conftest's ``phase_cube``: the W2S region exists only at finite n with the lowdim
target, the KD region at the largest n.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from matplotlib.collections import LineCollection, QuadMesh

from ktsweep.analysis import figures as plots
from ktsweep.analysis.figures import maps
from ktsweep.sweep import store
from ktsweep.sweep.layout import Layout


@pytest.fixture(scope="module")
def ds(phase_cube):
    return store.open_cube(phase_cube).load()


def _shown_at(fig) -> dict:
    caption = fig.texts[-1].get_text().replace("\n", " ")
    part = next(p for p in caption.split("; ") if p.startswith("shown at: "))
    out: dict = {}
    for kv in part[10:].split(", "):
        k, v = kv.split("=")
        out[k] = v if k == "target" else (math.inf if v == "∞" else float(v))
    return out


def _plane(ds, name, at):
    """The cube's plane over (alpha_t, alpha_s) at ``at``, exact, status ok."""
    da = ds[name].sel(at).sel(estimator="exact")
    ok = ds["status"].sel(at).sel(estimator="exact") == 1
    return da.where(ok).transpose("alpha_t", "alpha_s").values.astype(float)


def _mesh(fig) -> np.ndarray:
    """The colour array of the map, as (x, y) cells."""
    ax = fig.axes[0]
    mesh = next(c for c in ax.collections if isinstance(c, QuadMesh))
    arr = np.ma.filled(mesh.get_array(), np.nan)
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


def _only(ds, **axes):
    """``ds`` restricted to some labels of its axes, with a layout that says so."""
    sub = ds.sel({k: v for k, v in axes.items()})
    sub.attrs = dict(ds.attrs)
    cfg = Layout.from_json(ds.attrs["ktsweep_config"]).config.to_dict()
    cfg["grid"].update(axes)
    sub.attrs["ktsweep_config"] = Layout.from_config(cfg).to_json()
    return sub


@pytest.mark.parametrize(("name", "var"), [("w2s_phase_alpha", "w2s_ratio"),
                                           ("der_phase_alpha", "der")])
def test_ratio_maps_colour_log_values_centred_at_one(ds, name, var):
    """The map colours log10 of the cube's values at the slice its footer names, on a scale
    symmetric about 0 (ratio 1), and draws the boundary on every edge between the sides.

    Planted bugs caught: plotting the ratio itself (linear) or a scale with unequal halves
    (ratios 2 and 1/2 in different shades), a transposed map, a boundary drawn by an
    interpolating contour (no edge segments)."""
    fig = plots.draw_figure(ds, name)
    at = _shown_at(fig)
    want = _plane(ds, var, at)
    np.testing.assert_allclose(_mesh(fig), np.log10(want), rtol=1e-12)
    norm = next(c for c in fig.axes[0].collections if isinstance(c, QuadMesh)).norm
    assert norm.vmin == -norm.vmax > -np.inf
    region = maps.KD if var == "der" else maps.W2S
    inside, outside = region.sides(want)
    assert inside.any() and outside.any()
    assert _boundary_segments(fig) == _pairs_across(inside, outside) > 0


def test_the_maps_of_a_plane_share_the_slice_with_the_best_joint_score(ds):
    """The pgr, w2s_ratio and der maps over (α_T, α_S) are drawn at one slice: the one whose
    smallest two-sided count (w2s_ratio = 1, der = 1, and PGR = 0 among cells with a gap) is
    the largest of the grid, ties going to the larger sum of the three counts.

    Planted bugs caught: a slice rule per map (KD at its own best slice), the maximum of
    the counts instead of their minimum (a slice where one map shows one side only)."""
    figs = {n: plots.draw_figure(ds, f"{n}_phase_alpha") for n in ("pgr", "w2s", "der")}
    at = _shown_at(figs["w2s"])
    assert _shown_at(figs["pgr"]) == at == _shown_at(figs["der"])

    def counts(s):
        w2s, der = _plane(ds, "w2s_ratio", s), _plane(ds, "der", s)
        gap = _plane(ds, "risk_teacher", s) - _plane(ds, "risk_ceiling", s) > 0
        one = np.isclose(der, 1.0, rtol=maps.EXACT_ONE_RTOL, atol=0.0)
        parts = (min((w2s < 1).sum(), (w2s > 1).sum()),
                 min(((der > 1) & ~one).sum(), ((der < 1) & ~one).sum()),
                 min((gap & (w2s < 1)).sum(), (gap & (w2s > 1)).sum()))
        return min(parts), sum(parts)

    best = max(counts(dict(zip(("target", "N", "n"), c, strict=True)))
               for c in itertools.product(["gaussian", "lowdim"], [64.0, 256.0],
                                          [32.0, 128.0, 512.0, math.inf]))
    assert counts(at) == best and best[0] > 0
    assert math.isfinite(at["n"])  # W2S and PGR are undefined at n = inf


def test_der_map_at_n_inf_hatches_the_diagonal_exactly_one(ds):
    """At n = inf der = 1 exactly on the diagonal α_S = α_T: those cells are cross-hatched
    with their reason in the legend and count on neither side of the KD boundary.

    Planted bugs caught: the diagonal left as an unexplained white stripe (no hatch, no
    legend entry); the exactly-1 cells counted as inside the KD region (extra boundary
    segments around the diagonal)."""
    only = _only(ds, n=[math.inf])
    fig = plots.draw_figure(only, "der_phase_alpha")
    at = _shown_at(fig)
    assert at["n"] == math.inf
    der = _plane(only, "der", at)
    np.testing.assert_allclose(np.diag(der), 1.0, rtol=maps.EXACT_ONE_RTOL)
    ax = fig.axes[0]
    hatched = [c for c in ax.collections if c.get_hatch() == "xx"]
    assert len(hatched) == 1
    mask = ~np.ma.getmaskarray(hatched[0].get_array()).reshape(3, 3).T
    np.testing.assert_array_equal(mask, np.eye(3, dtype=bool))
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert maps.EXACT_ONE_LABEL in legend
    assert any(t.startswith("α_S = α_T") for t in legend)
    inside = np.isfinite(der) & (der > 1) & ~np.isclose(der, 1.0, rtol=1e-9, atol=0.0)
    assert _boundary_segments(fig) == _pairs_across(inside, np.isfinite(der) & ~inside) > 0


def test_samples_maps_show_n_inf_for_der_only(ds):
    """der over (N, n) keeps n = inf as its last row (tick '∞'); w2s_ratio over (N, n) drops
    it (undefined there) instead of drawing an empty row, and says so in its footer.

    Planted bugs caught: placing inf on a log axis as is (no finite position: the figure
    breaks or the row vanishes from der) or keeping the all-NaN row in the W2S map."""
    der = plots.draw_figure(ds, "der_phase_samples")
    labels = [t.get_text() for t in der.axes[0].get_yticklabels()]
    assert labels[-1] == "∞" and len(labels) == 4
    assert np.isfinite(_mesh(der)[:, -1]).all()
    w2s = plots.draw_figure(ds, "w2s_phase_samples")
    labels = [t.get_text() for t in w2s.axes[0].get_yticklabels()]
    assert "∞" not in labels and len(labels) == 3
    assert "n = ∞ left out" in w2s.texts[-1].get_text().replace("\n", " ")


def test_a_map_without_its_region_says_so(ds):
    """With only the gaussian target (no W2S anywhere in this model), the W2S map carries a
    note instead of a silently missing boundary.

    Planted bug caught: dropping the note, or a note claiming the region lies elsewhere."""
    fig = plots.draw_figure(_only(ds, target=["gaussian"]), "w2s_phase_alpha")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "no cell with w2s_ratio < 1 at this slice: no W2S region anywhere in this grid" \
        in texts
    assert _boundary_segments(fig) == 0


def test_cells_place_inf_one_step_beyond_the_grid():
    cells = maps.Cells.of([4096.0, 256.0, math.inf, 1024.0], log=True)
    np.testing.assert_allclose(cells.values, [256, 1024, 4096, math.inf])
    np.testing.assert_allclose(cells.centres, [256, 1024, 4096, 16384])
    assert cells.labels == ["256", "1024", "4096", "∞"]
    assert np.all(np.diff(np.log(cells.edges)) > 0)


def test_colour_bar_ticks_and_cell_text():
    """Ratio colour-bar ticks are 1 and symmetric pairs t, 1/t at least lim/4 apart in log10;
    cell text gives the digits that tell a value's side of 1.

    Planted bugs caught: ticks thinned by count only (1.25 and 0.8 beside 1 on a bar over a
    factor 100); a value 0.997 printed as '1' beside a boundary that puts it below 1."""
    for lim in (0.05, 0.3, 1.3, 2.3):
        ticks = maps.ratio_ticks(lim)
        logs = np.log10(ticks)
        assert 0.0 in logs and np.allclose(sorted(logs), sorted(-logs))
        assert np.all(np.diff(logs) >= lim / maps.RATIO_TICKS_PER_SIDE - 1e-12)
        assert np.all(np.abs(logs) <= lim + 1e-12) and len(ticks) >= 3
    assert maps.cell_text(0.997) == "0.997"
    assert maps.cell_text(1.0023) == "1.002"
    assert maps.cell_text(1.0) == "1"
    assert maps.cell_text(190.4) == "190"
    assert maps.cell_text(2.2e-5) == "2.2e-5"
