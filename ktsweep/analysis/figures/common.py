"""What every figure shares: the cube read by label, the choice of the slice a figure shows,
the frame of a figure (title, footer, 'no data' panel) and the registry record of a figure.

A figure plots some grid axes (``keep``) and holds every other one at one label; which label
is the figure's *slice rule*, a lexicographic list of scores computed with xarray over the held
axes (:func:`choose_slice`): the slice where the figure has most to show, ties going to the
representative order (the largest ``N`` and ``n``, the middle of any other axis). The footer
names the slice and the rule; the title names the slice.
"""

from __future__ import annotations

import functools
import json
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine

from ktsweep.analysis.cubeview import CubeView
from ktsweep.model.cubespec import RISK_UNITS
from ktsweep.model.quantities import TUNE_EDGES
from ktsweep.sweep.layout import Layout

RISK_AXIS = f"excess risk [{RISK_UNITS}]"
"""The y label of every risk axis (the unit text is the cube's ``units`` attribute)."""
DPI = 110
"""Resolution of the written PNG files."""


LAZY_DIMS = frozenset({"mode", "step"})
"""Dimensions of the variables :meth:`FigureCube.var` leaves lazy (dask-backed)."""


class NoDataError(Exception):
    """A planned figure has nothing to draw; the message says what is missing."""


# ---------------------------------------------------------------------------------------
# The cube, by label
# ---------------------------------------------------------------------------------------
class FigureCube:
    """A cube as the figures read it: status-masked variables by name and label.

    ``var`` loads a variable once (masked where its estimator's status is not ok) and keeps
    it; every figure then selects its slice with ``.sel``. Per-mode and per-step variables
    (:data:`LAZY_DIMS`) stay lazy instead: d or the checkpoint count times a grid variable,
    they would not fit in memory on a big grid (a 10^7-point cube's learning curves alone are
    1.8 GB), and dask reads what a figure selects or reduces chunk by chunk.
    """

    def __init__(self, ds: xr.Dataset):
        self.view = CubeView(ds)
        self.ds = ds
        self.layout = self.view.layout
        self.axes: list[str] = self.view.axes
        self.estimators: list[str] = self.view.methods
        self._loaded: dict[tuple[str, str | None], xr.DataArray] = {}

    @property
    def name(self) -> str:
        return self.layout.name

    @property
    def estimator(self) -> str | None:
        """The estimator a figure reads by default: exact (no sampling noise) if present."""
        if "exact" in self.estimators:
            return "exact"
        return self.estimators[0] if self.estimators else None

    def has(self, name: str) -> bool:
        return self.view.has(name)

    def var(self, name: str, estimator: str | None = None) -> xr.DataArray:
        """``name`` (for ``estimator`` where it has that dimension), NaN where the status of
        that estimator is not ok; :class:`NoDataError` when the cube lacks either."""
        if not self.has(name):
            raise NoDataError(f"variable {name!r} is not in the cube")
        if "estimator" in self.ds[name].dims:
            estimator = estimator or self.estimator
            if estimator not in self.estimators:
                raise NoDataError(f"no estimator {estimator!r} for {name!r}")
        else:
            estimator = None
        key = (name, estimator)
        if key not in self._loaded:
            da = self.view.masked(name, estimator)
            if estimator is not None:
                da = da.drop_vars("estimator", errors="ignore")
            self._loaded[key] = da if LAZY_DIMS & set(da.dims) else da.load()
        return self._loaded[key]

    def maybe(self, name: str, estimator: str | None = None) -> xr.DataArray | None:
        """:meth:`var`, or None where the cube lacks it."""
        try:
            return self.var(name, estimator)
        except NoDataError:
            return None

    def labels(self, axis: str) -> list[Any]:
        """The labels of a grid axis, in the cube's order, as Python scalars."""
        return [v.item() if hasattr(v, "item") else v for v in self.ds[axis].values]

    def held(self, keep: Sequence[str]) -> list[str]:
        """The grid axes a figure over ``keep`` holds at one label."""
        return [a for a in self.axes if a not in keep]

    def tune_edges(self) -> str:
        """Which runs' tuned γ0 sits at an end of its tune list, at how many points ('' when
        none)."""
        out = []
        for name in TUNE_EDGES:
            if self.has(name):
                n = int((self.ds[name] == 1).sum())
                if n:
                    out.append(f"{n} points ({name.removeprefix('tune_edge_')})")
        return ", ".join(out)


def preference(values: Sequence[Any], axis: str) -> np.ndarray:
    """Rank of each label in the representative order (0 first): ``N`` and ``n`` from the
    largest down, any other axis from its middle value outwards."""
    size = len(values)
    if axis in ("N", "n"):
        order = np.argsort(-np.asarray(values, dtype=float), kind="stable")
    else:
        mid = (size - 1) // 2
        order = np.array(sorted(range(size), key=lambda i: (abs(i - mid), i)), dtype=int)
    rank = np.empty(size, dtype=int)
    rank[order] = np.arange(size)
    return rank


def choose_slice(cube: FigureCube, keep: Sequence[str], scores: Sequence[xr.DataArray] = (),
                 allow: Mapping[str, Sequence[Any]] | None = None) -> dict[str, Any]:
    """The labels of every held axis (every grid axis not in ``keep``): among the ``allow``
    ed labels, the slice with the lexicographically largest ``scores`` (DataArrays over
    some held axes; NaN counts as the lowest), ties going to the representative order."""
    held = cube.held(keep)
    if not held:
        return {}
    allow = allow or {}
    coords = {a: [v for v in cube.labels(a) if a not in allow or v in allow[a]] or
              cube.labels(a) for a in held}
    frame = xr.DataArray(np.zeros([len(coords[a]) for a in held]), coords=coords, dims=held)
    keys = []
    for score in scores:
        s = score.sel({a: coords[a] for a in score.dims if a in coords})
        s = s.broadcast_like(frame).transpose(*held)
        keys.append(-np.nan_to_num(np.asarray(s.values, float).ravel(), nan=-np.inf,
                                   neginf=-np.inf))
    for a in held:
        rank = preference(coords[a], a)
        keys.append(np.broadcast_to(
            rank.reshape([-1 if b == a else 1 for b in held]), frame.shape).ravel())
    best = int(np.lexsort(keys[::-1])[0])
    index = np.unravel_index(best, frame.shape)
    return {a: coords[a][i] for a, i in zip(held, index, strict=True)}


def two_sided(inside: xr.DataArray, outside: xr.DataArray, keep: Sequence[str]) -> xr.DataArray:
    """How well a slice shows a boundary: the smaller of the counts of cells on each side."""
    dims = [d for d in keep if d in inside.dims]
    return xr.ufuncs.minimum(inside.sum(dims), outside.sum(dims))


def sel(da: xr.DataArray, at: Mapping[str, Any]) -> xr.DataArray:
    """``da`` at the labels of ``at`` that are its dimensions (a variable need not span
    every grid axis)."""
    return da.sel({k: v for k, v in at.items() if k in da.dims})


# ---------------------------------------------------------------------------------------
# Words: values, slices, footers, titles
# ---------------------------------------------------------------------------------------
SYMBOLS = {"alpha_t": "α_T", "alpha_s": "α_S", "gamma0_t": "γ0_T", "gamma0_s": "γ0_S",
           "k_dagger": "k†", "sigma2": "σ²"}
"""How a title writes an axis name."""


def fmt(v: Any) -> str:
    """A label as text: integral floats without a fraction, ∞ for infinity, maps as JSON."""
    if isinstance(v, float | np.floating):
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        if math.isfinite(v) and v == int(v):
            return str(int(v))
        return f"{float(v):g}"
    if isinstance(v, dict):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def slice_title(at: Mapping[str, Any]) -> str:
    """The slice for a title: 'target lowdim, N = 256, n = 512, γ0_T = 0.005'."""
    parts = []
    for k, v in at.items():
        parts.append(f"{k} {v}" if k == "target" else f"{SYMBOLS.get(k, k)} = {fmt(v)}")
    return ", ".join(p.replace(" ", "\u00a0") for p in parts)  # wrap between parts only


def footer(cube: FigureCube, at: Mapping[str, Any], rule: str, estimator: str | None,
           extra: str = "") -> str:
    """The footer: the sweep, its fixed and tied parameters, the slice shown ('shown at:',
    labels as in the cube, so ``ds.sel`` reproduces it), the slice rule and the estimator."""
    layout = cube.layout
    parts = [f"sweep '{layout.name}'"]
    fixed = ", ".join(f"{k}={fmt(v)}" for k, v in layout.fixed.items())
    if fixed:
        parts.append(f"fixed: {fixed}")
    if layout.tie:
        parts.append("tied: " + ", ".join(f"{k} = {a}" for k, a in layout.tie.items()))
    if at:
        parts.append("shown at: " + ", ".join(f"{k}={fmt(v)}" for k, v in at.items()))
    if rule:
        parts.append(f"slice rule: {rule}")
    if estimator:
        parts.append(f"estimator: {estimator}")
    if extra:
        parts.append(extra)
    edge = cube.tune_edges()
    if edge:
        parts.append(f"γ0 tuned to an end of its list at {edge} (tune_edge_*): the best step "
                     "may lie outside it, widen the list")
    return "; ".join(parts)


REPRODUCTIONS: dict[str, dict[str, str]] = {
    "kd_fig2a": {"risk_vs_N": "Fig. 2a"},
    "kd_fig2b": {"der_vs_dalpha": "Fig. 2b"},
    "w2s_fig3a": {"t2s_curves": "Fig. 3a"},
}
"""The paper configs (config/paper/<name>.yaml) and the figure each reproduces: only these
sweeps' figures are titled with a paper figure number."""


def title(cube: FigureCube, figure: str, text: str, at: Mapping[str, Any]) -> str:
    """The title: what is drawn (with the paper figure it reproduces), then the slice."""
    paper = REPRODUCTIONS.get(cube.name, {}).get(figure)
    head = f"{text} (paper {paper})" if paper else text
    where = slice_title(at)
    return f"{head}\nsweep '{cube.name}'" + (f": {where}" if where else "")


# ---------------------------------------------------------------------------------------
# The frame
# ---------------------------------------------------------------------------------------
FOOTER_PT = 7.0
"""Font size of the footer."""


def new_figure(ncols: int = 1, width: float = 6.4, height: float = 4.8
               ) -> tuple[Figure, list[Any]]:
    """A figure of ``ncols`` panels in a row (constrained layout)."""
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    return fig, list(fig.subplots(1, ncols, squeeze=False)[0])


def finish(fig: Figure, heading: str, text: str) -> Figure:
    """Title on top and the footer below the panels; the layout keeps both clear of the
    panels, legends and colour bars (the footer's height is reserved from its line count)."""
    width = int(66 * fig.get_figwidth() / 6.4)  # 10.5-pt characters per title line
    fig.suptitle("\n".join(part for line in heading.split("\n")
                           for part in _wrap(line, width)), fontsize=10.5)
    chars = int(104 * fig.get_figwidth() / 6.4)  # 7-pt characters per footer line
    lines = _wrap(text, chars)
    height = (len(lines) * FOOTER_PT * 1.35 + 6) / 72 / fig.get_figheight()
    engine = fig.get_layout_engine()
    if not isinstance(engine, ConstrainedLayoutEngine):
        raise TypeError("finish needs a figure of new_figure (constrained layout)")
    engine.set(rect=(0, height, 1, 1 - height))
    fig.text(0.01, 0.005, "\n".join(lines), fontsize=FOOTER_PT, ha="left", va="bottom")
    return fig


def _wrap(text: str, width: int) -> list[str]:
    """Break ``text`` into lines of at most ``width`` characters at spaces."""
    import textwrap

    return textwrap.wrap(text, width=width, break_long_words=False, break_on_hyphens=False)


def plain_log_axis(axis: Any) -> None:
    """A log axis labelled at 1, 2 and 5 times powers of ten in plain numbers (a log axis
    spanning one or two decades otherwise shows one or two labels)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: fmt(float(v))))
    axis.set_minor_formatter(NullFormatter())


def no_data(name: str, reason: str) -> Figure:
    """The panel written for a planned figure whose data are all missing."""
    fig = Figure(figsize=(6.4, 3.2))
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.6, f"{name}: no data", ha="center", va="center", fontsize=14)
    ax.text(0.5, 0.35, reason, ha="center", va="center", fontsize=9, wrap=True)
    return fig


def need(da: xr.DataArray, what: str) -> xr.DataArray:
    """``da`` if any of its values is finite, else :class:`NoDataError` naming ``what``."""
    if not np.isfinite(np.asarray(da.values, float)).any():
        raise NoDataError(f"{what}: every value is missing on this slice (not computed, "
                          "diverged or switched off)")
    return da


def positive(da: xr.DataArray) -> xr.DataArray:
    """``da`` where it is finite and positive (log axes), NaN elsewhere."""
    return da.where(np.isfinite(da) & (da > 0))


def contrast_text(rgba: Sequence[float]) -> str:
    """Black or white, whichever reads better on a cell of colour ``rgba`` (the larger WCAG
    contrast ratio against the colour's relative luminance)."""
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3]]
    lum = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    return "black" if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else "white"


RUN_STYLE = {"teacher": ("C0", "teacher", "o", "-", 2.8),
             "direct": ("C1", "direct student", "s", "--", 1.8),
             "t2s": ("C2", "T2S student", "^", "-.", 1.2),
             "ceiling": ("C3", "ceiling student", "D", ":", 1.2)}
"""Per run: colour, label, marker, line style and width. The widest is drawn first and each
run has its own marker and dashes, so a curve that coincides with another stays visible."""


@dataclass(frozen=True)
class FigureSpec:
    """One figure: its file name (``<name>.png``), when the grid supports it (from the layout
    alone), how it is drawn, and its caption (rendered for the report by
    :mod:`ktsweep.analysis.report`)."""

    name: str
    needs: Callable[[Layout], bool]
    draw: Callable[[FigureCube], Figure]
    caption: str


def estimated(layout: Layout, *axes: str) -> bool:
    """Per-point risks exist and every one of ``axes`` is a grid axis."""
    return bool(layout.estimators) and all(a in layout.axes for a in axes)


COINCIDE_RTOL = 0.1
"""Two curves closer than this relative distance at every shared point look like one on a
log plot of several decades."""


def coincide(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two curves (same x) are within :data:`COINCIDE_RTOL` wherever both exist (and
    share at least one point)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    both = np.isfinite(a) & np.isfinite(b)
    if not both.any():
        return False
    return bool(np.all(np.abs(a[both] - b[both]) <= COINCIDE_RTOL * np.abs(b[both])))


def distinct_pairs(curves: Sequence[xr.DataArray], along: Sequence[str]) -> xr.DataArray:
    """How many pairs of ``curves`` (DataArrays over the grid) differ by more than
    :data:`COINCIDE_RTOL` somewhere along ``along``: per held slice, 0 to n(n-1)/2."""
    along = list(along)
    pairs = [(abs(a - b) > COINCIDE_RTOL * abs(b)).any(along).astype(int)
             for i, a in enumerate(curves) for b in curves[i + 1:]]
    return functools.reduce(operator.add, pairs) if pairs else xr.DataArray(0)
