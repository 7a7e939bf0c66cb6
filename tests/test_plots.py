"""Figures: planning from the layout, what each figure draws (read back from matplotlib's
artists) on the default config's shape and on a small cube, the notebook, and the labels
xarray's own plots take from the cube."""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import QuadMesh
from matplotlib.colors import to_rgba

from ktsweep import cli
from ktsweep.analysis import figures as plots
from ktsweep.analysis import report
from ktsweep.analysis.figures import crossover, maps, parity, spectral
from ktsweep.analysis.figures.params import Params
from ktsweep.model.cubespec import Flag
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


# -- reading a drawn figure back -------------------------------------------------------------
def _is_no_data(fig) -> bool:
    return any(t.get_text().endswith(": no data") for ax in fig.axes for t in ax.texts)


def _footer(fig) -> str:
    return fig.texts[-1].get_text().replace("\n", " ")


def _shown_at(fig, ds) -> dict:
    """The slice a figure's footer says it shows ('shown at: target=lowdim, N=256, ...'), as
    labels of the cube's coordinates."""
    part = next(p for p in _footer(fig).split("; ") if p.startswith("shown at: "))
    out = {}
    for kv in part[len("shown at: "):].split(", "):
        k, v = kv.split("=", 1)
        numeric = ds[k].dtype.kind in "fiu"
        out[k] = (math.inf if v == "∞" else float(v)) if numeric else v
    return out


def _line(ax, label: str):
    return next(line for line in ax.get_lines() if line.get_label() == label)


def _values(ds, name, at, estimator=None):
    da = ds[name].sel({k: v for k, v in at.items() if k in ds[name].dims})
    if estimator:
        ok = ds["status"].sel({k: v for k, v in at.items() if k in ds["status"].dims})
        da = da.sel(estimator=estimator).where(ok.sel(estimator=estimator) == 1)
    return np.asarray(da.values, float)


def _map_axes(fig):
    """The map's axes (the first; the colour bar's come after it)."""
    return fig.axes[0]


def _mesh(ax) -> QuadMesh:
    return next(c for c in ax.collections if isinstance(c, QuadMesh))


# -- planning ---------------------------------------------------------------------------------
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
    grid = {"N": [2**k for k in range(6, 12)], "n": [64, 128, 256, float("inf")]}
    lowdim = {"target": "lowdim", "k_dagger": 3}
    assert "w2s_crossover" in plots.planned_figures(_layout(grid, **lowdim))
    assert "w2s_crossover" not in plots.planned_figures(_layout(grid))  # gaussian
    assert "w2s_crossover" not in plots.planned_figures(  # 5 values of N, or 2 finite n
        _layout({**grid, "N": grid["N"][:5]}, **lowdim))
    assert "w2s_crossover" not in plots.planned_figures(
        _layout({**grid, "n": [64, 128, float("inf")]}, **lowdim))


def test_captions_cover_every_figure_and_match_the_report_files():
    assert set(plots.CAPTIONS) == set(plots.FIGURES)
    for name in plots.FIGURES:
        rst = REPO / "workflow" / "report" / f"{name}.rst"
        assert rst.read_text() == report.caption_rst(name), f"regenerate {rst}"


# -- the default config's shape ------------------------------------------------------------------
@pytest.fixture(scope="module")
def default_ds(default_cube):
    return store.open_cube(default_cube).load()


@pytest.fixture(scope="module")
def default_figures(default_ds):
    """Every planned figure of the default-shaped cube, drawn once."""
    cube = plots.FigureCube(default_ds)
    return {name: plots.draw_figure(cube, name) for name in plots.planned_figures(cube.layout)}


def _drawn_data_ok(fig) -> list[str]:
    """What a figure draws without data: lines with no finite point (no positive one on a
    log axis), maps with no finite cell."""
    bad = []
    for k, ax in enumerate(fig.axes):
        if ax.get_label() == "<colorbar>":
            continue
        for line in ax.get_lines():
            x, y = (np.asarray(v, float) for v in line.get_data())
            ok = np.isfinite(x) & np.isfinite(y)
            if ax.get_yscale() == "log":
                ok &= y > 0
            if not ok.any():
                bad.append(f"axes {k}: line {line.get_label()!r} has no finite point")
        for mesh in (c for c in ax.collections if isinstance(c, QuadMesh)):
            arr = np.ma.masked_invalid(mesh.get_array())
            if arr.count() == 0:
                bad.append(f"axes {k}: a map with no finite cell")
    return bad


def test_every_default_figure_draws_data(default_ds, default_figures):
    """On the default config's shape every planned figure draws: no 'no data' panel, every
    line has finite points and every map finite cells.

    Planted bugs caught: the representative slice for the learning curves (n = inf, where a
    curve holds only its step-0 value: 'no data'); a figure reading a variable the cube lacks
    or another estimator's (all NaN); a map whose every cell is masked."""
    layout = Layout.from_json(default_ds.attrs["ktsweep_config"])
    assert list(default_figures) == plots.planned_figures(layout)
    assert len(default_figures) == 14
    for name, fig in default_figures.items():
        assert not _is_no_data(fig), name
        assert not _drawn_data_ok(fig), (name, _drawn_data_ok(fig))


def test_the_maps_of_a_plane_share_a_slice_where_each_shows_both_sides(default_ds,
                                                                       default_figures):
    """pgr, w2s_ratio and der over (α_T, α_S) are drawn at one slice, and so over (N, n);
    at that slice each map has cells on both sides of its boundary, and the PGR map has
    cells with a gap to recover (not all hatched).

    Planted bugs caught: a slice rule per map (der at n = inf and gaussian, PGR and W2S at
    lowdim: three slices that cannot be read side by side); the joint score replaced by the
    W2S score alone (a PGR map of hatched cells only)."""
    for plane in ("alpha", "samples"):
        names = [f"{what}_phase_{plane}" for what in ("pgr", "w2s", "der")]
        slices = [_shown_at(default_figures[n], default_ds) for n in names]
        assert slices[0] == slices[1] == slices[2], (plane, slices)
        titles = {default_figures[n].get_suptitle().split("\n", 1)[1] for n in names}
        assert len(titles) == 1  # the title names the same slice
    at = _shown_at(default_figures["w2s_phase_alpha"], default_ds)
    w2s = _values(default_ds, "w2s_ratio", at, "exact")
    der = _values(default_ds, "der", at, "exact")
    assert (w2s < 1).any() and (w2s > 1).any()
    assert (der > 1).any() and (der < 1).any()
    pgr_mesh = _mesh(_map_axes(default_figures["pgr_phase_alpha"]))
    assert np.ma.masked_invalid(pgr_mesh.get_array()).count() >= 5


def test_slices_avoid_curves_that_hide_each_other(default_ds, default_figures):
    """risk_vs_N shows three distinct exact curves (α_T ≠ α_S, T2S not at its n = ∞ limit,
    where it equals the teacher); the per-mode figures hold α_T ≠ α_S; the denoising figure
    shows denoised modes; the learning curves sit at a finite n with an early-stopping
    minimum below the teacher's risk.

    Planted bugs caught: the representative slice (α_T = α_S = 3, n = inf: teacher and
    direct student one curve, a denoising ratio of exactly 1 at every mode, no learning
    curve); the distinct-curves score dropped."""
    fig = default_figures["risk_vs_N"]
    ax = fig.axes[0]
    curves = {label: _line(ax, f"{label} (exact)").get_ydata()
              for label in ("teacher", "direct student", "T2S student")}
    for (a, ya), (b, yb) in itertools.combinations(curves.items(), 2):
        assert np.nanmax(np.abs(np.log(ya / yb))) > np.log(1.1), (a, b)
    for name in ("spectral_horizon", "spectral_denoising"):
        at = _shown_at(default_figures[name], default_ds)
        assert at["alpha_t"] != at["alpha_s"], name
    ratio = _line(default_figures["spectral_denoising"].axes[0],
                  "T2S / teacher, per mode").get_ydata()
    assert (ratio < spectral.DENOISED).sum() >= 3
    fig = default_figures["t2s_curves"]
    at = _shown_at(fig, default_ds)
    assert math.isfinite(at["n"])
    y = _line(fig.axes[0], "T2S student (exact)").get_ydata()
    teacher = _values(default_ds, "risk_teacher", at, "exact")
    assert np.nanmin(y) < teacher < y[np.isfinite(y)][0]
    assert np.nanargmin(y) < np.flatnonzero(np.isfinite(y))[-1]  # an early stop


def test_figures_plot_the_cube_values(default_ds, default_figures):
    """Each figure's plotted data, read back from the matplotlib objects, equal the cube's
    values at the slice its footer names.

    Planted bugs caught: a figure plotting the wrong variable (risk_direct as teacher) or
    estimator, a transposed map, a footer naming another slice than the one drawn."""
    ds = default_ds
    fig = default_figures["risk_vs_N"]
    at = _shown_at(fig, ds)
    for run, label in (("teacher", "teacher"), ("direct", "direct student"),
                       ("t2s", "T2S student")):
        np.testing.assert_allclose(_line(fig.axes[0], f"{label} (exact)").get_ydata(),
                                   _values(ds, f"risk_{run}", at, "exact"), rtol=1e-12)
    for what, var in (("w2s", "w2s_ratio"), ("der", "der")):
        fig = default_figures[f"{what}_phase_alpha"]
        at = _shown_at(fig, ds)
        want = _values(ds, var, at, "exact")  # dims (alpha_t, alpha_s), drawn as (rows α_S)
        assert ds[var].sel(at).sel(estimator="exact").dims == ("alpha_t", "alpha_s")
        drawn = np.ma.filled(_mesh(_map_axes(fig)).get_array(), np.nan).reshape(
            want.shape[::-1]).T
        np.testing.assert_allclose(drawn, np.log10(want), rtol=1e-12)
    fig = default_figures["spectral_horizon"]
    at = _shown_at(fig, ds)
    np.testing.assert_allclose(_line(fig.axes[0], "teacher").get_ydata(),
                               _values(ds, "mode_teacher", at, "exact"), rtol=1e-6)
    fig = default_figures["t2s_curves"]
    at = _shown_at(fig, ds)
    y = _values(ds, "curve_t2s", at, "exact")
    np.testing.assert_allclose(_line(fig.axes[0], "T2S student (exact)").get_ydata(),
                               np.where(ds["step"].values > 0, y, np.nan), rtol=1e-6)
    fig = default_figures["bound_sandwich"]
    at = _shown_at(fig, ds)
    np.testing.assert_allclose(_line(fig.axes[0], "upper bound (Lemma 1)").get_ydata(),
                               _values(ds, "bound_upper_teacher", at), rtol=1e-12)
    np.testing.assert_allclose(_line(fig.axes[2], "upper bound (Theorem 1 transfer)")
                               .get_ydata(), _values(ds, "bound_t2s", at), rtol=1e-12)


def test_bound_figure_sits_where_the_bound_exists_and_marks_only_real_comparisons(
        default_ds, default_figures):
    """bound_sandwich is drawn where the proofs' step condition holds (the γ0 = 0.005 slice)
    and the transfer bound exists (finite n); red crosses mark exactly the N where the flag
    says 'no' and the bound exists. With the bound removed at those N (flag still 'no'),
    the crosses go: nothing is compared with a missing bound.

    Planted bugs caught: the representative slice (n = inf, no transfer bound: crosses
    under an empty panel); crosses drawn from the flag alone; the step condition ignored
    by the slice rule."""
    ds = default_ds
    fig = default_figures["bound_sandwich"]
    at = _shown_at(fig, ds)
    assert (_values(ds, "step_condition", at) == Flag.YES).all()
    bound = _values(ds, "bound_t2s", at)
    assert np.isfinite(bound).all()
    holds = _values(ds, "bound_t2s_holds", at)
    risk = _values(ds, "risk_t2s", at, "exact")
    crosses = [ln for ln in fig.axes[2].get_lines() if ln.get_label() == "exact above the bound"]
    if (holds == Flag.NO).any():
        np.testing.assert_allclose(crosses[0].get_ydata(), risk[holds == Flag.NO])
    else:
        assert not crosses
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "step condition holds" in labels and "untrained risk ½ Σ e_i" in labels
    # the bound missing at some N (everywhere, so the slice stays), its flag still 'no'
    nan_at = ds["N"].values[holds == Flag.NO] if (holds == Flag.NO).any() \
        else ds["N"].values[:2]
    changed = ds.copy()
    changed["bound_t2s"] = ds["bound_t2s"].where(~ds["N"].isin(nan_at))
    changed["bound_t2s_holds"] = ds["bound_t2s_holds"].where(~ds["N"].isin(nan_at),
                                                             int(Flag.NO))
    fig = plots.draw_figure(changed, "bound_sandwich")
    assert _shown_at(fig, changed) == at
    for line in fig.axes[2].get_lines():
        if line.get_label() == "exact above the bound":
            assert not np.isin(line.get_xdata(), nan_at).any()


def _contrast(a, b) -> float:
    def lum(c):
        lin = [x / 12.92 if x <= 0.04045 else ((x + 0.055) / 1.055) ** 2.4 for x in c[:3]]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_cell_values_are_readable_on_their_cells(default_figures):
    """Every printed cell value has a WCAG contrast ratio of at least 4.5 against its cell's
    colour (white on dark cells, black on light ones).

    Planted bug caught: black text on every cell (unreadable on the dark ends of the
    colour scales)."""
    checked = 0
    for name in ("pgr_phase_alpha", "w2s_phase_alpha", "der_phase_alpha", "der_phase_samples"):
        ax = _map_axes(default_figures[name])
        mesh = _mesh(ax)
        xs, ys = ax.get_xticks(), ax.get_yticks()
        arr = np.ma.masked_invalid(mesh.get_array()).reshape(len(ys), len(xs))
        for text in ax.texts:
            x, y = text.get_position()
            if text.get_transform() != ax.transData:
                continue
            i, j = int(np.argmin(np.abs(np.log(xs / x)))), int(np.argmin(np.abs(np.log(ys / y))))
            cell = (0.85, 0.85, 0.85) if arr.mask[j, i] else mesh.cmap(mesh.norm(arr[j, i]))
            assert _contrast(to_rgba(text.get_color()), cell) >= 4.5, (name, text.get_text())
            checked += 1
    assert checked > 50


def _renderer(fig):
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def test_titles_footers_and_legends_stay_clear_of_the_panels(default_figures):
    """No title or footer overlaps a panel, its tick labels, axis labels, legend or colour
    bar.

    Planted bugs caught: the layout's top edge set below the title (a title over the colour
    bar and the legend), a footer wrapped at too many characters per line (running off the
    figure) or given no reserved height (over the x tick labels)."""
    for name, fig in default_figures.items():
        r = _renderer(fig)
        width = fig.bbox.width
        title = fig._suptitle.get_window_extent(r)
        foot = fig.texts[-1].get_window_extent(r)
        assert foot.x1 <= width + 1 and title.x0 >= -1 and title.x1 <= width + 1, name
        for ax in fig.axes:
            box = ax.get_tightbbox(r)
            assert not title.overlaps(box), (name, ax.get_label())
            assert not foot.overlaps(box), (name, ax.get_label())


def test_log_colour_bars_have_uncrowded_ticks(default_figures):
    """On the ratio maps' colour bars (log scale centred at 1) neighbouring tick labels are at
    least one and a half label heights apart, and 1 is one of them.

    Planted bug caught: a fixed tick list thinned by count only (1.25, 1, 0.8 stacked on a
    bar that spans a factor 20)."""
    for name in ("w2s_phase_alpha", "der_phase_alpha", "w2s_phase_samples", "der_phase_samples"):
        fig = default_figures[name]
        r = _renderer(fig)
        bar = next(ax for ax in fig.axes if ax.get_label() == "<colorbar>")
        labels = [t for t in bar.get_yticklabels() if t.get_text()]
        assert "1" in [t.get_text() for t in labels], name
        boxes = sorted((t.get_window_extent(r) for t in labels), key=lambda b: b.y0)
        for a, b in itertools.pairwise(boxes):
            assert (b.y0 + b.y1) / 2 - (a.y0 + a.y1) / 2 >= 1.5 * a.height, name


def test_coinciding_curves_stay_visible_and_are_named(default_ds):
    """Where two runs' risks coincide at every N, each keeps its own marker and the legend
    and footer say which coincide.

    Planted bugs caught: one marker for every run (the teacher hidden under the direct
    student), the coincidence left unsaid."""
    ds = default_ds.copy()
    ds["risk_direct"] = ds["risk_teacher"]
    fig = plots.draw_figure(ds, "risk_vs_N")
    ax = fig.axes[0]
    lines = [_line(ax, f"{r} (exact)") for r in ("teacher", "direct student", "T2S student")]
    assert len({ln.get_marker() for ln in lines}) == 3
    assert "coincide here: teacher and direct student" in _footer(fig)
    assert any(t.get_text().startswith("coincide here") for t in ax.get_legend().get_texts())


def test_notebook_runs_from_any_folder_on_the_default_cube(default_cube, tmp_path):
    """examples/first_look.ipynb executes top to bottom (nbclient, a real kernel started in an
    unrelated folder) on the default-shaped cube, string target axis included, its cube given
    relative to the repository; it draws its two figures and prints its checks.

    Planted bugs caught: a cube path resolved against the kernel's working folder; a cell
    converting labels with float() (the string target axis); a cell using an API that no
    longer exists; a plotting cell that errors."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(REPO / "examples" / "first_look.ipynb", as_version=4)
    rel = os.path.relpath(default_cube, REPO)
    old = {k: os.environ.get(k) for k in ("KTSWEEP_CUBE", "PYTHONPATH")}
    os.environ.update(KTSWEEP_CUBE=rel, PYTHONPATH=str(REPO))
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2
    text = "".join(o.get("text", "") for o in outputs)
    assert "within ±2" in text and "fitted slope" in text
    assert "'target': 'gaussian'" in "".join(
        o.get("data", {}).get("text/plain", "") for o in outputs)


def test_xarray_plots_of_the_cube_are_labelled(default_ds):
    """xarray's automatic plots label a risk axis with a short name and the risk's unit, and
    every grid axis with a readable name; the pointer to the docs is in ``description``.

    Planted bugs caught: the long definition as long_name (xarray wraps it at 30 characters
    and the axis shows its last line, 'excluded [...]'); units left out; grid axes named
    'grid axis N'."""
    from matplotlib.figure import Figure
    from xarray.plot.utils import label_from_attrs

    ds = default_ds
    at = {"target": "gaussian", "alpha_t": 2.0, "alpha_s": 3.0, "n": 1024.0,
          "gamma0_t": ds["gamma0_t"].values[0], "estimator": "exact"}
    ax = Figure().add_subplot()
    ds["risk_t2s"].sel(at).plot(ax=ax)
    assert ax.get_ylabel().replace("\n", " ") == "T2S excess risk [1/2 convention]"
    assert ax.get_xlabel() == "teacher samples N"
    assert label_from_attrs(ds["mode_teacher"]).replace("\n", " ") == (
        "teacher per-mode excess risk [1/2 convention]")
    assert label_from_attrs(ds["der"]) == "data-efficiency ratio der"
    for axis, label in (("n", "student samples n"), ("alpha_t", "teacher spectral decay α_T"),
                        ("alpha_s", "student spectral decay α_S"), ("target", "target"),
                        ("gamma0_t", "teacher initial step γ0_T")):
        assert label_from_attrs(ds[axis]) == label
    assert label_from_attrs(ds["sigma2"]) == "label noise variance σ²"
    assert "docs/science/quantities.md" in ds["risk_t2s"].attrs["description"]
    for name in ds.data_vars:
        assert len(label_from_attrs(ds[name]).split("\n")) <= 2, name


# -- a small cube: finer checks -----------------------------------------------------------------
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
    assert planned == ALIGNED
    paths = plots.make_figures(ds, tmp_path / "fig")
    assert [p.name for p in paths] == [f"{n}.png" for n in planned]
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == sorted(p.name for p in paths)
    for p in paths:
        assert mpimg.imread(p).ndim == 3  # a readable PNG
    for name in planned:
        assert not _is_no_data(plots.draw_figure(ds, name)), name


def test_pgr_is_never_coloured_where_there_is_no_gap(cube):
    """A cell whose ceiling is not better than its teacher (or 0/0) is hatched, never coloured
    as PGR; the colour scale is symmetric about 0 over PGR's full range, not clipped to [0, 1].

    Planted bugs caught: drawing the raw pgr (no mask) colours the planted no-gap cells;
    masking with ceiling > teacher instead of >= leaves the equal (0/0) cell coloured; a
    scale that clips PGR's range or is lopsided about 0."""
    ds = store.open_cube(cube).load()
    at = _shown_at(plots.draw_figure(ds, "pgr_phase_alpha"), ds)
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
    mesh = np.ma.filled(_mesh(ax).get_array(), np.nan).reshape(2, 2)  # (alpha_s, alpha_t)
    gap = (_values(ds, "risk_teacher", at, "exact")
           - _values(ds, "risk_ceiling", at, "exact")).T
    assert (gap <= 0).sum() >= 2
    assert np.all(np.isnan(mesh[gap <= 0]))
    assert np.all(np.isfinite(mesh[gap > 0]))
    hatched = [c for c in ax.collections[1:] if c.get_hatch() == "//"]
    assert len(hatched) == 1
    assert np.ma.count(hatched[0].get_array()) == (gap <= 0).sum()  # every no-gap cell
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert maps.NO_GAP_LABEL in legend
    norm = _mesh(ax).norm
    assert norm.vmin == -norm.vmax and norm.vmax >= np.nanmax(np.abs(mesh))


def test_figures_drop_points_whose_status_is_not_ok(cube):
    """Planted bug caught: reading the variable without the status mask draws the diverged
    point."""
    ds = store.open_cube(cube).load()
    at = _shown_at(plots.draw_figure(ds, "risk_vs_N"), ds)
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
        assert _is_no_data(plots.draw_figure(ds, p.stem)), p.stem


def test_partially_missing_variables(cube):
    """Planted bugs caught: a figure that fails (instead of a 'no data' panel) when a variable
    it needs is missing, or that gives up although it still has data to draw."""
    ds = store.open_cube(cube).drop_vars(["der", "mode_t2s", "curve_t2s"])
    empty = {name: _is_no_data(plots.draw_figure(ds, name)) for name in plots.FIGURES}
    assert empty["der_vs_dalpha"] and empty["t2s_curves"] and empty["spectral_denoising"]
    assert empty["der_phase_alpha"]
    assert not empty["spectral_horizon"]  # teacher and direct still there
    assert not empty["pgr_phase_alpha"]  # no der, still a map


def test_cli_figures(cube, tmp_path, capsys):
    assert cli.main(["figures", str(cube), "--outdir", str(tmp_path / "f")]) == 0
    assert len(list((tmp_path / "f").glob("*.png"))) == len(ALIGNED)
    assert cli.main(["figures", str(tmp_path / "none.zarr"), "--outdir", str(tmp_path)]) == 2
    assert "ktsweep figures: error: no cube" in capsys.readouterr().err


def test_mc_parity_draws_every_point_and_its_z_score(cube):
    """The parity figure plots, per quantity, the Monte Carlo mean against the exact value at
    every point where both are ok, and z = (MC - exact) / se.

    Planted bugs caught: exact on both axes (every point on the diagonal), the z-score
    divided by the wrong se (e.g. the exact quantity's, or se**2), points without status ok
    drawn."""
    ds = store.open_cube(cube).load()
    fig = plots.draw_figure(ds, "mc_parity")
    assert not _is_no_data(fig)
    values, zs = fig.axes[0], fig.axes[1]
    lines = {c.get_label(): c for c in values.containers}
    mask = (ds["status"] == 1).all("estimator")
    for name in parity.PARITY:
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
    assert "mc_parity" not in plots.planned_figures(_layout({"N": [64, 128]}))


def test_risk_vs_n_legend_slopes_and_monte_carlo(cube):
    """One legend entry per line, each predicted slope drawn dotted below its curve, and the
    Monte Carlo points listed in the footer.

    Planted bugs caught: slope labels without the run ('predicted slope -0.500' twice),
    slope lines anchored on the curve itself (drawn exactly under it), Monte Carlo points
    drawn but not listed."""
    ds = store.open_cube(cube).load()
    fig = plots.draw_figure(ds, "risk_vs_N")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(labels) == len(set(labels))
    at = _shown_at(fig, ds)
    for run, label in (("teacher", "teacher"), ("direct", "direct student")):
        slope = [ln for ln in ax.get_lines() if ln.get_label().startswith(f"{label}: predicted")]
        assert len(slope) == 1 and slope[0].get_linestyle() == ":"
        curve = _values(ds, f"risk_{run}", at, "exact")
        np.testing.assert_allclose(slope[0].get_ydata()[-1], 0.5 * curve[-1])
    mc = [c for c in ax.containers if c.get_label() == "teacher (MC mean ± se)"]
    shown = sorted(float(x) for x in mc[0].lines[0].get_xdata()[
        np.isfinite(mc[0].lines[0].get_ydata())]) if mc else []
    listed = ("no Monte Carlo point on this slice" if not shown else
              "Monte Carlo at N = " + ", ".join(plots.common.fmt(x) for x in shown))
    assert listed in _footer(fig)


def test_titles_name_a_paper_figure_only_for_its_reproduction(cube):
    """Planted bug caught: a hard-coded '(paper Fig. 3a)' on every sweep's learning curves."""
    ds = store.open_cube(cube).load()
    assert "paper" not in plots.draw_figure(ds, "t2s_curves").get_suptitle()
    cfg = json.loads(ds.attrs["ktsweep_config"])
    cfg["name"] = "w2s_fig3a"
    renamed = ds.assign_attrs(ktsweep_config=json.dumps(cfg))
    title = plots.draw_figure(renamed, "t2s_curves").get_suptitle()
    assert title.split("\n")[0].endswith("(paper Fig. 3a)")


def test_spectral_horizon_marks_the_learned_modes(cube):
    """The marker sits on the last mode whose risk is below half its untrained risk.

    Planted bug caught: the horizon taken as the first unlearned mode minus one (an early
    dip above the threshold would hide every learned mode after it), or off by one."""
    assert spectral.learned_horizon(np.array([0.1, 0.6, 0.2, 0.9]), np.ones(4)) == 3
    assert spectral.learned_horizon(np.array([0.9, 0.9]), np.ones(2)) == 0
    ds = store.open_cube(cube).load()
    fig = plots.draw_figure(ds, "spectral_horizon")
    marks = {ln.get_label().split(":")[0]: ln for ln in fig.axes[0].get_lines()
             if "learned up to" in ln.get_label()}
    assert set(marks) == {"teacher", "direct student", "T2S student"}
    untrained = _line(fig.axes[0], "untrained ½ e_i").get_ydata()
    for label, mark in marks.items():
        i = int(mark.get_xdata()[0])
        y = _line(fig.axes[0], label).get_ydata()
        assert f"learned up to i = {i}" in mark.get_label()
        assert y[i - 1] < 0.5 * untrained[i - 1]
        assert not (y[i:] < 0.5 * untrained[i:]).any()


def test_captions_warn_when_tuning_hit_the_end_of_its_list(cube):
    """Planted bug caught: the tune_edge_* flags ignored (a γ0 pinned at the top of its tune
    list at every point, kd_fig2a's case, drawn without a word)."""
    ds = store.open_cube(cube).load()
    assert "γ0 tuned" not in _footer(plots.draw_figure(ds, "risk_vs_N"))
    edge = ds["tune_edge_t"].copy()
    edge[...] = 1
    ds["tune_edge_t"] = edge
    assert f"γ0 tuned to an end of its list at {edge.size} points (t)" in _footer(
        plots.draw_figure(ds, "risk_vs_N"))


def test_crossover_slope_count_is_the_slice_score(default_ds):
    """The crossover figure's slice has the most finite local slopes among the lowdim slices.

    Planted bug caught: the target left at the representative gaussian (no W2S optimum: an
    empty figure), or a slice picked without counting slopes."""
    cube = plots.FigureCube(default_ds)
    keep = ["N", "n"]
    at = crossover.crossover_slice(cube, keep)
    assert at["target"] == "lowdim"
    count = np.isfinite(crossover.w2s_min_risk_slopes(cube, at, "exact")[1]).sum()
    others = [dict(at, alpha_t=a) for a in cube.labels("alpha_t")]
    assert count == max(np.isfinite(crossover.w2s_min_risk_slopes(cube, o, "exact")[1]).sum()
                        for o in others) > 0


def test_figure_params_derive_ranks_and_alignment_as_a_point_does():
    """The record figures read gives the point's derived sizes from the point's own rules.
    Mutations: a property taken from the wrong one of Point's (rank_s for rank_t), or one
    that ignores the unset rank (None) or the mixing seed."""
    p = Params({"d": 50, "r_t": None, "r_s": 20, "angle": 0.0, "mixing_seed": None})
    assert (p.rank_t, p.rank_s, p.aligned) == (50, 20, True)
    q = Params({"d": 50, "r_t": 30, "r_s": None, "angle": 0.0, "mixing_seed": 3})
    assert (q.rank_t, q.rank_s, q.aligned) == (30, 50, False)
