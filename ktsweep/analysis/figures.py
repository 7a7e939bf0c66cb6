"""Figures of a result cube (PNG, matplotlib's Agg canvas, no pyplot state).

:func:`planned_figures` decides the figure names from the :class:`~ktsweep.sweep.layout.Layout`
alone (Snakemake declares them as outputs before any cube exists); :func:`make_figures` writes
exactly those files, drawing a 'no data' panel where a planned figure's data are all missing.
Every figure shows one slice of the grid: the axes it plots, every other axis held at a
*representative* value (the largest ``N`` and ``n``, the middle value of other axes, moving
outwards until data exist); the caption line at the bottom names them with the fixed parameters.
Risks are excess risks with the ½ factor (docs/science/model.md#risk-convention)."""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.collections import LineCollection
from matplotlib.colors import ListedColormap, Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from scipy.interpolate import CubicSpline

from ktsweep.analysis.cubeview import CubeView
from ktsweep.analysis.fits import effective_horizon, optimum, refine_optimum
from ktsweep.model import theory
from ktsweep.model.params import ParameterError
from ktsweep.model.quantities import TUNE_EDGES, step_size_variable
from ktsweep.model.spectra import (
    cutoff_threshold,
    kstar,
    student_spectrum,
    target_energy,
    teacher_spectrum,
)
from ktsweep.sweep.layout import Layout

RISK_UNITS = "excess risk (½ convention)"
DPI = 110
"""Resolution of the written PNG files."""
class NoDataError(Exception):
    """A planned figure has nothing to draw; the message says what is missing."""


# ---------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------
def planned_figures(layout: Layout) -> list[str]:
    """The figure names this grid supports, decided from the layout alone."""
    return [spec.name for spec in REGISTRY if spec.needs(layout)]


def _estimated(layout: Layout, *axes: str) -> bool:
    """Per-point risks exist and every one of ``axes`` is a grid axis."""
    return bool(layout.estimators) and all(a in layout.axes for a in axes)


# ---------------------------------------------------------------------------------------
# Data access
# ---------------------------------------------------------------------------------------
class _View(CubeView):
    """A cube with its layout, and helpers to take status-masked slices as numpy arrays."""

    @property
    def method(self) -> str | None:
        """The preferred estimator: exact (no noise) if present, else mc."""
        return "exact" if "exact" in self.methods else (self.methods[0] if self.methods else None)

    def take(self, name: str, at: dict[str, int], method: str | None = None,
             order: Sequence[str] = ()) -> np.ndarray:
        """Values of ``name`` at grid indices ``at`` (method selected), dims ``order`` first.

        Entries whose ``status`` for that method is not ok become NaN.
        """
        if not self.has(name):
            raise NoDataError(f"variable {name!r} is not in the cube")
        if "estimator" in self.ds[name].dims and (method is None or method not in self.methods):
            raise NoDataError(f"no method {method!r} for {name!r}")
        da = self.masked(name, method)
        da = da.isel({k: v for k, v in at.items() if k in da.dims})
        rest = [d for d in da.dims if d not in order]
        return np.asarray(da.transpose(*order, *rest).values, dtype=np.float64)

    def se(self, name: str, at: dict[str, int], order: Sequence[str] = ()) -> np.ndarray | None:
        if not self.has(f"{name}_se"):
            return None
        da = self.ds[f"{name}_se"].isel({k: v for k, v in at.items()
                                         if k in self.ds[f"{name}_se"].dims})
        rest = [d for d in da.dims if d not in order]
        return np.asarray(da.transpose(*order, *rest).values, dtype=np.float64)

    def coord(self, axis: str) -> np.ndarray:
        return np.asarray(self.ds[axis].values)

    def preference(self, axis: str) -> list[int]:
        """The indices of ``axis`` in the order a held axis tries them: N and n from the
        largest value down, any other axis from its middle value outwards."""
        size = len(self.layout.axes[axis])
        if axis in ("N", "n"):
            return list(range(size - 1, -1, -1))
        mid = (size - 1) // 2
        return sorted(range(size), key=lambda i: (abs(i - mid), i))

    def representative(self, keep: Sequence[str], probe: str, method: str | None = None,
                       prefer_all: bool = False) -> dict[str, int]:
        """Indices of every axis not in ``keep``: the largest N and n, the middle of the others
        (then outwards), the first such choice where ``probe`` has data (for every estimator
        first if ``prefer_all``, so that Monte Carlo points on a sub-grid get shown)."""
        held = [a for a in self.axes if a not in keep]
        prefs = [self.preference(a) for a in held]
        first = {a: p[0] for a, p in zip(held, prefs, strict=True)}
        if not self.has(probe):
            return first
        tries = [self.methods] if prefer_all and len(self.methods) > 1 else []
        tries.append([method])
        for methods in tries:
            for combo in itertools.islice(itertools.product(*prefs), 512):
                at = dict(zip(held, combo, strict=True))
                try:
                    if all(np.isfinite(self.take(probe, at, m)).any() for m in methods):
                        return at
                except NoDataError:
                    break
        return first

    def values(self, at: dict[str, int]) -> dict[str, Any]:
        return {a: self.layout.axes[a][i] for a, i in at.items()}

    def point_at(self, at: dict[str, int]):
        """The full Point at grid indices ``at``; None if invalid."""
        try:
            return self.point(self.values(at))
        except ParameterError:
            return None

    def caption(self, at: dict[str, int], method: str | None, extra: str = "") -> str:
        fixed = ", ".join(f"{k}={_fmt(v)}" for k, v in self.layout.fixed.items())
        held = ", ".join(f"{k}={_fmt(v)}" for k, v in self.values(at).items())
        parts = [f"sweep '{self.layout.name}'"]
        if fixed:
            parts.append(f"fixed: {fixed}")
        tie = self.layout.tie
        if tie:
            parts.append("tied: " + ", ".join(f"{k} = {a}" for k, a in tie.items()))
        if held:
            parts.append(f"shown at: {held}")
        if method:
            parts.append(f"method: {method}")
        if extra:
            parts.append(extra)
        edge = self.tune_edges()
        if edge:
            parts.append(f"γ0 tuned to an end of its list at {edge} (tune_edge_*): the best "
                         "step may lie outside it, widen the list")
        return "; ".join(parts)

    def tune_edges(self) -> str:
        """Which runs' tuned γ0 sits at an end of its tune list, and at how many points of
        the sweep ('' when none)."""
        out = []
        for name in TUNE_EDGES:
            if self.has(name):
                n = int((self.ds[name] == 1).sum())
                if n:
                    out.append(f"{n} points ({name.removeprefix('tune_edge_')})")
        return ", ".join(out)


def _fmt(v: Any) -> str:
    if isinstance(v, float) and math.isfinite(v) and v == int(v):
        return str(int(v))
    if isinstance(v, dict):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


# ---------------------------------------------------------------------------------------
# Drawing helpers
# ---------------------------------------------------------------------------------------
def _figure(ncols: int = 1, width: float = 6.4, height: float = 4.8):
    fig = Figure(figsize=(width * ncols if ncols > 1 else width, height), layout="constrained")
    axs = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axs


def _finish(fig: Figure, title: str, caption: str) -> Figure:
    fig.suptitle(title, fontsize=11)
    width_chars = 110 * fig.get_figwidth() / 6.4  # 7-pt characters per wrapped caption line
    lines = max(1, -(-len(caption) // int(width_chars)))
    bottom = 0.02 + 0.028 * lines
    fig.get_layout_engine().set(rect=(0, bottom, 1, 0.94 - bottom / 4))
    fig.text(0.01, 0.01, caption, fontsize=7, ha="left", va="bottom", wrap=True)
    return fig


def _no_data(name: str, reason: str) -> Figure:
    fig = Figure(figsize=(6.4, 3.2))
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.6, f"{name}: no data", ha="center", va="center", fontsize=14)
    ax.text(0.5, 0.35, reason, ha="center", va="center", fontsize=9, wrap=True)
    return fig


def _need(arr: np.ndarray, what: str) -> np.ndarray:
    if not np.isfinite(arr).any():
        raise NoDataError(f"{what}: every value is missing (not computed, diverged or "
                          "switched off)")
    return arr


def _positive(arr: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(arr) & (arr > 0), arr, np.nan)


# ---------------------------------------------------------------------------------------
# Phase maps: PGR, w2s_ratio and der over (alpha_t, alpha_s) and over (N, n)
# ---------------------------------------------------------------------------------------
NO_GAP_LABEL = "no gap to recover (ceiling >= teacher, or 0/0): PGR not shown"
EXACT_ONE_LABEL = ("der = 1 exactly: α_S = α_T at n = ∞ (the T2S student converges to its "
                   "teacher, which is the direct student)")
_RATIO_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 1, 1.1, 1.25, 1.5, 2,
                3, 5, 10, 20, 50, 100)
EXACT_ONE_RTOL = 1e-9
"""A ratio within this relative distance of 1 is 'exactly 1' (hatched, not coloured as a side)."""


@dataclass(frozen=True)
class Region:
    """A region of a phase map: where ``name`` is above (or below) 1, and how the map picks
    the held sample sizes (``n_rule``: 'finite' or 'largest')."""

    name: str
    above: bool
    label: str
    n_rule: str
    n_text: str  # the n part of the slice rule, for the footer

    def rule(self, keep: Sequence[str]) -> str:
        """The slice rule in words for the figure footer (the n part only where n is held)."""
        text = f"slice where both sides of {self.name} = 1 show most"
        return text if "n" in keep else f"{text}, {self.n_text}"

    def sides(self, field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Masks of the finite cells inside the region and outside it (cells exactly 1 are
        outside: neither W2S nor KD)."""
        f = np.asarray(field, float)
        finite = np.isfinite(f)
        with np.errstate(invalid="ignore"):
            one = finite & np.isclose(f, 1.0, rtol=EXACT_ONE_RTOL, atol=0.0)
            inside = finite & ~one & ((f > 1.0) if self.above else (f < 1.0))
        return inside, finite & ~inside


W2S = Region("w2s_ratio", False, "W2S", "finite", "n finite (n = ∞ has no W2S)")
KD = Region("der", True, "KD", "largest", "at the largest n (Theorem 3 is about n -> ∞)")


def region_score(field: np.ndarray, region: Region) -> tuple[int, int]:
    """How well a slice shows ``region``: (cells on the smaller side of 1, cells inside)."""
    inside, outside = region.sides(field)
    return int(min(inside.sum(), outside.sum())), int(inside.sum())


def phase_slice(v: _View, keep: Sequence[str], region: Region) -> dict[str, int]:
    """The held grid indices of a phase map of ``region`` over the ``keep`` axes.

    Among the held values (n restricted by ``region.n_rule``: finite values for W2S, the largest
    value, ∞ where swept, for KD) the slice with the highest :func:`region_score`; ties go to the
    representative order (largest N and n, middle of the others). Falls back to
    :meth:`_View.representative` where the region's variable has no data.
    """
    held = [a for a in v.axes if a not in keep]
    prefs = []
    for a in held:
        order = v.preference(a)
        if a == "n":
            vals = np.asarray(v.layout.axes["n"], float)
            if region.n_rule == "largest":
                order = [int(np.argmax(vals))]
            else:
                order = [i for i in order if np.isfinite(vals[i])] or order
        prefs.append(order)
    best, best_score = None, (-1, -1)
    if v.has(region.name):
        for combo in itertools.islice(itertools.product(*prefs), 4096):
            at = dict(zip(held, combo, strict=True))
            field = v.take(region.name, at, v.method, keep)
            if not np.isfinite(field).any():
                continue
            score = region_score(field, region)
            if score > best_score:
                best, best_score = at, score
    return best if best is not None else v.representative(keep, region.name, v.method)


def pgr_shown(pgr: np.ndarray, teacher: np.ndarray, ceiling: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """PGR where it means something, and the mask of cells where it does not.

    PGR = (teacher − T2S) / (teacher − ceiling) measures a recovered gap; where the ceiling is
    not better than the teacher there is no gap (the ratio's sign flips or it is 0/0), so
    those cells are NaN in the first array and True in the second (hatched in the maps).
    """
    with np.errstate(invalid="ignore"):
        gap = np.asarray(teacher, float) - np.asarray(ceiling, float)
        no_gap = np.isfinite(gap) & ~(gap > 0)
    return np.where(no_gap, np.nan, pgr), no_gap


@dataclass
class _Cells:
    """One axis of a phase map: the order its values are drawn in (ascending), cell centres
    (∞ one grid step beyond the largest finite value), cell edges and tick labels."""

    order: np.ndarray
    centres: np.ndarray
    edges: np.ndarray
    labels: list[str]
    log: bool

    @classmethod
    def of(cls, values: Sequence[Any], log: bool) -> _Cells:
        v = np.asarray(values, float)
        order = np.argsort(v, kind="stable")
        v = v[order]
        pos = v.copy()
        fin = np.isfinite(v)
        f = v[fin]
        if (~fin).any():
            if log:
                pos[~fin] = f[-1] * (max(f[-1] / f[-2], 2.0) if len(f) >= 2 else 4.0)
            else:
                pos[~fin] = f[-1] + (f[-1] - f[-2] if len(f) >= 2 else 1.0)
        t = np.log(pos) if log else pos
        if len(t) >= 2:
            mids = (t[1:] + t[:-1]) / 2
            edges = np.concatenate([[2 * t[0] - mids[0]], mids, [2 * t[-1] - mids[-1]]])
        else:
            edges = np.array([t[0] - 0.5, t[0] + 0.5])
        labels = ["∞" if not np.isfinite(x) else _fmt(float(x)) for x in v]
        return cls(order, pos, np.exp(edges) if log else edges, labels, log)

    def apply(self, ax, which: str, label: str) -> None:
        set_scale, set_lim, set_ticks, set_label = (
            (ax.set_xscale, ax.set_xlim, ax.set_xticks, ax.set_xlabel) if which == "x" else
            (ax.set_yscale, ax.set_ylim, ax.set_yticks, ax.set_ylabel))
        if self.log:
            set_scale("log")
        set_lim(self.edges[0], self.edges[-1])
        set_ticks(self.centres, self.labels)
        set_ticks([], minor=True)
        set_label(label)


def _boundary(ax, xc: _Cells, yc: _Cells, inside: np.ndarray, outside: np.ndarray,
              color: str, label: str) -> Line2D | None:
    """The region's boundary along the cell edges that separate an inside cell from an
    outside one (on a coarse grid an interpolated contour invents a position between cells;
    the edges are what the data decide). Returns a legend handle, or None if there is none."""
    xe, ye = xc.edges, yc.edges
    segs = []
    nx, ny = inside.shape
    for i, j in itertools.product(range(nx), range(ny)):
        if i + 1 < nx and ((inside[i, j] and outside[i + 1, j])
                           or (outside[i, j] and inside[i + 1, j])):
            segs.append([(xe[i + 1], ye[j]), (xe[i + 1], ye[j + 1])])
        if j + 1 < ny and ((inside[i, j] and outside[i, j + 1])
                           or (outside[i, j] and inside[i, j + 1])):
            segs.append([(xe[i], ye[j + 1]), (xe[i + 1], ye[j + 1])])
    if not segs:
        return None
    ax.add_collection(LineCollection(segs, colors=color, linewidths=2.4, label=label,
                                     capstyle="round"))
    return Line2D([], [], color=color, lw=2.4, label=label)


def _annotate(ax, xc: _Cells, yc: _Cells, values: np.ndarray, fmt: str) -> None:
    if values.size > 100:
        return
    for i, j in itertools.product(range(values.shape[0]), range(values.shape[1])):
        if np.isfinite(values[i, j]):
            ax.text(xc.centres[i], yc.centres[j], format(values[i, j], fmt), ha="center",
                    va="center", fontsize=7)


def _hatch(ax, xc: _Cells, yc: _Cells, mask: np.ndarray, hatch: str, label: str) -> Patch:
    ax.pcolor(xc.edges, yc.edges, np.ma.masked_where(~mask, np.ones(mask.shape)).T,
              cmap=ListedColormap(["0.85"]), hatch=hatch, edgecolor="0.55", linewidth=0.0)
    return Patch(facecolor="0.85", edgecolor="0.55", hatch=hatch, label=label)


def _diagonal(ax, xc: _Cells, yc: _Cells) -> Line2D:
    lo = max(xc.edges[0], yc.edges[0])
    hi = min(xc.edges[-1], yc.edges[-1])
    ax.plot([lo, hi], [lo, hi], color="0.4", lw=0.9, ls=":")
    return Line2D([], [], color="0.4", lw=0.9, ls=":",
                  label="α_S = α_T (student's model = teacher's)")


def _note_if_one_sided(ax, region: Region, inside: np.ndarray, outside: np.ndarray) -> None:
    """Say on the map why no boundary is drawn (the slice rule maximises the inside count
    second, so an empty region here is empty on every slice of the grid)."""
    rel = ">" if region.above else "<"
    if not inside.any():
        text = (f"no cell with {region.name} {rel} 1 on any slice of this grid: "
                f"no {region.label} region here")
    elif not outside.any():
        text = f"every cell has {region.name} {rel} 1: the boundary lies outside the grid"
    else:
        return
    ax.text(0.5, 1.01, text, transform=ax.transAxes, ha="center", va="bottom", fontsize=7)


def _legend(ax, handles: list) -> None:
    """Below the map, so that no cell is hidden."""
    handles = [h for h in handles if h is not None]
    if handles:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13),
                  fontsize=6.5, facecolor="0.95", ncols=1)


def _ratio_map(ax, fig, xc: _Cells, yc: _Cells, field: np.ndarray, region: Region
               ) -> list:
    """``field`` on a diverging colour scale centred at 1 in log space (equal colour for equal
    factors above and below 1), the region's boundary on the cell edges, cells exactly 1
    hatched; returns the legend handles."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(np.isfinite(field) & (field > 0), np.log10(field), np.nan)
    lim = max(float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 0.0, 0.05)
    mesh = ax.pcolormesh(xc.edges, yc.edges, np.ma.masked_invalid(z).T, cmap="RdBu_r",
                         norm=Normalize(vmin=-lim, vmax=lim))
    ticks = [t for t in _RATIO_TICKS if abs(math.log10(t)) <= lim + 1e-12]
    step, mid = -(-len(ticks) // 9), ticks.index(1)  # at most 9 ticks, 1 among them
    ticks = [t for i, t in enumerate(ticks) if (i - mid) % step == 0]
    cb = fig.colorbar(mesh, ax=ax)
    cb.set_ticks([math.log10(t) for t in ticks], labels=[_fmt(float(t)) for t in ticks])
    inside_word = "> 1: " if region.above else "< 1: "
    cb.set_label(f"{region.name} (log scale, centred at 1; {inside_word}{region.label})")
    _annotate(ax, xc, yc, field, ".2g")
    inside, outside = region.sides(field)
    handles = [_boundary(ax, xc, yc, inside, outside, "black",
                         f"{region.name} = 1 ({region.label} boundary, between cells)")]
    one = np.isfinite(field) & ~inside & np.isclose(field, 1.0, rtol=EXACT_ONE_RTOL, atol=0.0)
    if one.any():
        handles.append(_hatch(ax, xc, yc, one, "xx", EXACT_ONE_LABEL if region is KD
                              else f"{region.name} = 1 exactly"))
    _note_if_one_sided(ax, region, inside, outside)
    return handles


def _pgr_map(ax, fig, xc: _Cells, yc: _Cells, pgr: np.ndarray, no_gap: np.ndarray,
             w2s: np.ndarray) -> list:
    """PGR on a diverging scale centred at 0 (T2S = teacher), its full range (not clipped),
    no-gap cells hatched, the W2S boundary on the cell edges; returns the legend handles."""
    finite = pgr[np.isfinite(pgr)]
    lo = min(float(finite.min()) if finite.size else -1.0, -1e-3)
    hi = max(float(finite.max()) if finite.size else 1.0, 1e-3)
    mesh = ax.pcolormesh(xc.edges, yc.edges, np.ma.masked_invalid(pgr).T, cmap="PuOr_r",
                         norm=TwoSlopeNorm(vcenter=0.0, vmin=lo, vmax=hi))
    fig.colorbar(mesh, ax=ax, label="PGR (0: T2S = teacher; > 0 recovers the gap; 1: ceiling)")
    _annotate(ax, xc, yc, pgr, ".2f")
    inside, outside = W2S.sides(w2s)
    handles = [_boundary(ax, xc, yc, inside, outside, "black",
                         "w2s_ratio = 1 (W2S boundary, between cells)")]
    if no_gap.any():
        handles.append(_hatch(ax, xc, yc, no_gap, "//", NO_GAP_LABEL))
    return handles


_AXIS_LABEL = {"alpha_t": "teacher decay α_T", "alpha_s": "student decay α_S",
               "N": "teacher samples N", "n": "student samples n"}


def _plane(v: _View, keep: list[str], region: Region, names: Sequence[str]
           ) -> tuple[dict[str, int], _Cells, _Cells, dict[str, np.ndarray]]:
    """The slice of a phase map, its two axes' cells and the planes of ``names`` in drawing
    order; an n axis of a W2S map drops n = ∞ (pgr and w2s_ratio are NaN there)."""
    at = phase_slice(v, keep, region)
    log = keep == ["N", "n"]
    xc, yc = (_Cells.of(v.layout.axes[a], log) for a in keep)
    planes = {}
    for name in names:
        arr = (v.take(name, at, v.method, keep) if v.has(name)
               else np.full((len(xc.order), len(yc.order)), np.nan))
        planes[name] = arr[np.ix_(xc.order, yc.order)]
    if log and region is W2S:
        n_sorted = np.asarray(v.layout.axes["n"], float)[yc.order]
        finite = np.isfinite(n_sorted)
        if finite.any() and not finite.all():
            yc = _Cells.of(n_sorted[finite], True)
            planes = {k: a[:, finite] for k, a in planes.items()}
    return at, xc, yc, planes


def _phase_figure(v: _View, keep: list[str], what: str) -> Figure:
    region = KD if what == "der" else W2S
    names = ("pgr", "w2s_ratio", "risk_teacher", "risk_ceiling") if what == "pgr" else (what,)
    at, xc, yc, planes = _plane(v, keep, region, names)
    fig, (ax,) = _figure(height=6.0)
    if what == "pgr":
        pgr, no_gap = pgr_shown(_need(planes["pgr"], "pgr"), planes["risk_teacher"],
                                planes["risk_ceiling"])
        handles = _pgr_map(ax, fig, xc, yc, pgr, no_gap, planes["w2s_ratio"])
    else:
        handles = _ratio_map(ax, fig, xc, yc, _need(planes[what], what), region)
    xc.apply(ax, "x", _AXIS_LABEL[keep[0]])
    yc.apply(ax, "y", _AXIS_LABEL[keep[1]])
    if keep == ["alpha_t", "alpha_s"]:
        handles.append(_diagonal(ax, xc, yc))
    _legend(ax, handles)
    title = {"pgr": "PGR", "w2s_ratio": "W2S: w2s_ratio = T2S / teacher",
             "der": "KD: der = direct / T2S"}[what]
    over = "(α_T, α_S)" if keep[0] == "alpha_t" else "the sample budgets (N, n)"
    return _finish(fig, f"{title} over {over}", v.caption(at, v.method, region.rule(keep)))


def _phase(keep: list[str], what: str) -> Callable[[_View], Figure]:
    """The drawing function of one phase map: ``what`` over the plane ``keep``."""
    def draw(v: _View) -> Figure:
        return _phase_figure(v, keep, what)
    return draw


_ALPHA, _SAMPLES = ["alpha_t", "alpha_s"], ["N", "n"]


def _phase_spec(name: str, keep: list[str], what: str, caption: str) -> FigureSpec:
    """A phase map's registry entry: needed where both axes of ``keep`` are estimated."""
    return FigureSpec(name, lambda lay: _estimated(lay, *keep), _phase(keep, what), caption)


# ---------------------------------------------------------------------------------------
# The other figures
# ---------------------------------------------------------------------------------------
REPRODUCTIONS: dict[str, dict[str, str]] = {
    "kd_fig2a": {"risk_vs_N": "Fig. 2a"},
    "kd_fig2b": {"der_vs_dalpha": "Fig. 2b"},
    "w2s_fig3a": {"t2s_curves": "Fig. 3a"},
}
"""The paper configs (config/paper/<name>.yaml) and the figure each reproduces: only these
sweeps' figures are titled with a paper figure number."""


def _title(v: _View, figure: str, text: str) -> str:
    paper = REPRODUCTIONS.get(v.layout.name, {}).get(figure)
    return f"{text} (paper {paper})" if paper else f"{text}, sweep '{v.layout.name}'"


_RUN_STYLE = {"teacher": ("C0", "teacher"), "direct": ("C1", "direct student"),
              "t2s": ("C2", "T2S student"), "ceiling": ("C3", "ceiling student")}


_RUN_MARK = {"teacher": ("o", 2.6), "direct": ("s", 1.6), "t2s": ("^", 1.0),
             "ceiling": ("D", 1.0)}
"""Marker and line width per run: the thickest drawn first, so no curve hides another."""
SLOPE_SHIFT = 0.5
"""Predicted-slope lines are drawn at this factor below the curve they are anchored to, so a
correct prediction runs parallel to its curve instead of hiding under it."""


def _most_mc(v: _View, keep: list[str], probe: str, fallback: dict[str, int]) -> dict[str, int]:
    """The held indices where ``probe`` has the most Monte Carlo values along ``keep`` (ties:
    ``fallback``'s, the representative choice), so Monte Carlo shows at every N it exists."""
    if "mc" not in v.methods or not v.has(probe):
        return fallback
    da = v.masked(probe, "mc")
    count = np.isfinite(da).sum(keep)
    best = int(count.max())
    if best == 0 or int(count.isel({a: i for a, i in fallback.items() if a in count.dims})) \
            == best:
        return fallback
    flat = np.unravel_index(int(np.argmax(count.values)), count.shape)
    return {a: int(i) for a, i in zip(count.dims, flat, strict=True)}


def fig_risk_vs_n(v: _View) -> Figure:
    keep = ["N"]
    m = v.method
    at = _most_mc(v, keep, "risk_teacher",
                  v.representative(keep, "risk_teacher", m, prefer_all=True))
    N = v.coord("N").astype(float)
    p = v.point_at(at)
    pred = theory.predictions(p) if p is not None else {}
    pred_key = {"teacher": "risk_teacher", "direct": "risk_direct", "t2s": "risk_t2s_limit"}
    fig, (ax,) = _figure()
    drawn = False
    mc_at: set[float] = set()
    for run in ("teacher", "direct", "t2s"):
        color, label = _RUN_STYLE[run]
        marker, width = _RUN_MARK[run]
        name = f"risk_{run}"
        if not v.has(name):
            continue
        if "exact" in v.methods:
            y = _positive(v.take(name, at, "exact", keep))
            if np.isfinite(y).any():
                ax.plot(N, y, "-", marker=marker, ms=3 + width, mfc="none", lw=width,
                        color=color, label=f"{label} (exact)")
                drawn = True
        if "mc" in v.methods:
            y = _positive(v.take(name, at, "mc", keep))
            se = v.se(name, at, keep)
            if np.isfinite(y).any():
                ax.errorbar(N, y, yerr=se, fmt=marker, ms=5, color=color, mec="k", mew=0.6,
                            capsize=2, label=f"{label} (MC mean ± se)", zorder=5)
                mc_at |= set(N[np.isfinite(y)].tolist())
                drawn = True
        ref = v.take(name, at, m, keep) if m else np.array([np.nan])
        ok = np.flatnonzero(np.isfinite(_positive(ref)))
        slope = pred.get(pred_key[run])
        if len(ok) >= 2 and slope is not None:
            k = ok[-1]
            ax.plot(N[ok], SLOPE_SHIFT * ref[k] * (N[ok] / N[k]) ** slope, "--",
                    color=color, lw=1, label=f"{label}: predicted slope {slope:.3f}")
    if not drawn:
        raise NoDataError("risk_teacher / risk_direct / risk_t2s are all missing on this slice")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("teacher samples N")
    ax.set_ylabel(RISK_UNITS)
    ax.legend(fontsize=7)
    notes = [f"dashed: docs/science/rates.md slopes, drawn ×{SLOPE_SHIFT:g} below the curve "
             "they are anchored to (its largest N)"]
    if "mc" in v.methods:
        where = ", ".join(_fmt(x) for x in sorted(mc_at)) or "none"
        notes.append(f"Monte Carlo at N = {where} (mc.subgrid / mc.stride of the config)")
    return _finish(fig, _title(v, "risk_vs_N", "Excess risk vs N"),
                   v.caption(at, None, "; ".join(notes)))


def fig_der_vs_dalpha(v: _View) -> Figure:
    keep = ["alpha_t", "alpha_s"] if "alpha_t" in v.axes else ["alpha_s"]
    m = v.method
    at = v.representative(keep, "der", m, prefer_all=True)
    a_s = v.coord("alpha_s").astype(float)
    fig, (ax,) = _figure()
    drawn = False
    if "alpha_t" in v.axes:
        a_ts = v.coord("alpha_t").astype(float)
    else:
        p = v.point_at(at)
        a_ts = np.array([p.alpha_t if p is not None else np.nan])
    for i, a_t in enumerate(a_ts):
        sub = dict(at, alpha_t=i) if "alpha_t" in v.axes else at
        color = f"C{i % 10}"
        for meth, fmt in (("exact", "-o"), ("mc", "s")):
            if meth not in v.methods or not v.has("der"):
                continue
            y = v.take("der", sub, meth, ["alpha_s"])
            if not np.isfinite(y).any():
                continue
            label = f"α_T = {a_t:g} ({meth})"
            if meth == "mc":
                ax.errorbar(a_s - a_t, y, yerr=v.se("der", sub, ["alpha_s"]), fmt=fmt,
                            color=color, ms=4, capsize=2, mfc="none", label=label)
            else:
                ax.plot(a_s - a_t, y, fmt, color=color, ms=3, label=label)
            drawn = True
    if not drawn:
        raise NoDataError("der is missing on this slice")
    ax.axhline(1.0, color="0.4", lw=0.8, ls=":")
    ax.axvline(0.0, color="0.8", lw=0.8)
    ax.set_xlabel("spectral gap α_S − α_T")
    ax.set_ylabel("data-efficiency ratio der = R_direct / R_T2S (dimensionless)")
    ax.legend(fontsize=7, ncol=2)
    return _finish(fig, _title(v, "der_vs_dalpha", "Distillation advantage vs spectral gap"),
                   v.caption(at, None, "der > 1: KD beats direct training"))


def fig_t2s_curves(v: _View) -> Figure:
    keep = ["k_dagger"] if "k_dagger" in v.axes else []
    m = v.method
    at = v.representative(keep, "curve_t2s", m)
    steps = v.coord("step").astype(float)
    fig, (ax,) = _figure()
    values = v.coord("k_dagger") if keep else [None]
    drawn = drew_mc = False
    for i, kd in enumerate(values):
        sub = dict(at, k_dagger=i) if keep else at
        y = _positive(v.take("curve_t2s", sub, m, ["step"]).reshape(-1))
        y = np.where(steps > 0, y, np.nan)
        if not np.isfinite(y).any():
            continue
        color = f"C{i % 10}"
        label = f"k† = {_fmt(float(kd))}" if kd is not None else "T2S student"
        ax.plot(steps, y, "-", color=color, label=label)
        if m == "mc":
            se = v.se("curve_t2s", sub, ["step"])
            if se is not None:
                se = se.reshape(-1)
                ax.fill_between(steps, y - se, y + se, color=color, alpha=0.2)
        if m != "mc" and "mc" in v.methods:  # Monte Carlo points over the exact curve
            y_mc = _positive(v.take("curve_t2s", sub, "mc", ["step"]).reshape(-1))
            se = v.se("curve_t2s", sub, ["step"])
            keep_mc = np.isfinite(y_mc) & (steps > 0)
            keep_mc &= np.arange(steps.size) % 3 == 0  # every third checkpoint: readable
            if keep_mc.any():
                err = None if se is None else se.reshape(-1)[keep_mc]
                ax.errorbar(steps[keep_mc], y_mc[keep_mc], yerr=err, fmt="o", ms=3,
                            color=color, capsize=2, lw=0.8)
                drew_mc = True
        j = int(np.nanargmin(y))
        ax.plot(steps[j], y[j], "v", color=color, ms=8, mec="k")
        rt = v.take("risk_teacher", sub, m).reshape(-1)
        if np.isfinite(rt).any():
            ax.axhline(float(rt[0]), color=color, ls=":", lw=1)
        drawn = True
    if not drawn:
        raise NoDataError("curve_t2s is missing on this slice (curves switched off or not "
                          "computed)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("student SGD steps")
    ax.set_ylabel(f"T2S {RISK_UNITS}")
    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="k", ls="", marker="v", label="minimum (early stop)"),
                Line2D([], [], color="k", ls=":", label="teacher's final risk")]
    if drew_mc:
        handles.append(Line2D([], [], color="k", ls="", marker="o", ms=3,
                              label="Monte Carlo mean ± se"))
    ax.legend(handles=handles, fontsize=7)
    return _finish(fig, _title(v, "t2s_curves", "T2S learning curves"), v.caption(at, m))


def _kstars(v: _View, at: dict[str, int], p) -> dict[str, int]:
    """Each run's cutoff: bound estimator's Lemma 1 k* where stored, else the formula."""
    out: dict[str, int] = {}
    if p is None:
        return out
    runs = {"teacher": (teacher_spectrum(p), p.N, "gamma0_t"),
            "direct": (student_spectrum(p), p.N, "gamma0_direct"),
            "t2s": (student_spectrum(p), p.n, "gamma0_s")}
    for run, (lam, samples, gname) in runs.items():
        stored = f"kstar_upper_{run}"
        if v.has(stored):
            k = v.take(stored, at).reshape(-1)
            if np.isfinite(k).any():
                out[run] = int(k[0])
                continue
        gname = step_size_variable(gname, v.axes)
        g = v.take(gname, at).reshape(-1) if v.has(gname) else np.array([np.nan])
        out[run] = kstar(lam, cutoff_threshold(samples, float(g[0]), "upper"))
    return out


LEARNED = 0.5
"""A mode counts as learned when its risk is below this fraction of its untrained risk."""


def learned_horizon(mode_risk: np.ndarray, untrained: np.ndarray) -> int:
    """The measured horizon: the largest mode index i (1-based) whose risk is below
    :data:`LEARNED` × its untrained risk ½ e_i (0 when none is)."""
    with np.errstate(invalid="ignore"):
        ok = np.flatnonzero(np.asarray(mode_risk) < LEARNED * np.asarray(untrained))
    return int(ok[-1]) + 1 if ok.size else 0


_KSTAR_STYLES = ("--", "-.", ":")


def fig_spectral_horizon(v: _View) -> Figure:
    m = v.method
    at = v.representative([], "mode_teacher", m)
    mode = v.coord("mode").astype(float)
    p = v.point_at(at)
    fig, (ax,) = _figure()
    drawn = False
    untrained = np.full(len(mode), np.nan)
    if p is not None:
        untrained[: p.d] = 0.5 * target_energy(p)
        ax.plot(mode, _positive(untrained), color="0.6", lw=1, label="untrained ½ e_i")
    kstars = _kstars(v, at, p)
    horizons: dict[str, int] = {}
    for run in ("teacher", "direct", "t2s"):
        name = f"mode_{run}"
        if not v.has(name):
            continue
        y = _positive(v.take(name, at, m, ["mode"]).reshape(-1))
        if not np.isfinite(y).any():
            continue
        color, label = _RUN_STYLE[run]
        marker, width = _RUN_MARK[run]
        ax.plot(mode, y, "-", color=color, lw=width, label=label)
        h = learned_horizon(y, untrained)
        horizons[run] = h
        if h:
            ax.plot(mode[h - 1], y[h - 1], marker, color=color, ms=9, mec="k", zorder=5,
                    label=f"{label}: learned up to i = {h}")
        drawn = True
    if not drawn:
        raise NoDataError("per-mode risks are missing on this slice")
    by_value: dict[int, list[str]] = {}
    for run, k in kstars.items():
        if k and run in horizons:
            by_value.setdefault(k, []).append(_RUN_STYLE[run][1])
    for n, (k, who) in enumerate(sorted(by_value.items())):
        ax.axvline(k, color="k", ls=_KSTAR_STYLES[n % 3], lw=1,
                   label=f"Lemma 1 k* = {k}: {', '.join(who)}")
    zero = [_RUN_STYLE[r][1] for r, k in kstars.items() if not k and r in horizons]
    extra = f"; Lemma 1 k* = 0 (not drawn): {', '.join(zero)}" if zero else ""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("mode index i (λ_i = i^−α)")
    ax.set_ylabel(f"per-mode {RISK_UNITS}")
    ax.legend(fontsize=6)
    return _finish(fig, "Spectral horizon: per-mode risk, learned modes and Lemma 1's k*",
                   v.caption(at, m, f"marker: last mode with risk < {LEARNED:g} × untrained; "
                             "k*: Lemma 1's upper-bound cutoff, log factors included "
                             "(docs/science/bounds.md), so it sits below the visible knee" + extra))


def fig_spectral_denoising(v: _View) -> Figure:
    m = v.method
    at = v.representative([], "mode_t2s", m)
    mode = v.coord("mode").astype(float)
    t = _positive(v.take("mode_teacher", at, m, ["mode"]).reshape(-1))
    s = _positive(v.take("mode_t2s", at, m, ["mode"]).reshape(-1))
    ok = np.isfinite(t) & np.isfinite(s)
    if not ok.any():
        raise NoDataError("per-mode risks of teacher and T2S student are missing on this slice")
    fig, (ax,) = _figure()
    ratio = np.where(ok, s / np.where(ok, t, 1.0), np.nan)
    ax.plot(mode, ratio, "-", color=_RUN_STYLE["t2s"][0], lw=1.2,
            label="T2S / teacher, per mode")
    if v.has("mode_direct"):
        d = _positive(v.take("mode_direct", at, m, ["mode"]).reshape(-1))
        with np.errstate(invalid="ignore", divide="ignore"):
            ax.plot(mode, d / t, "--", color=_RUN_STYLE["direct"][0], lw=1,
                    label="direct / teacher, per mode (no teacher labels)")
    below = ok & (ratio < 1)
    ax.fill_between(mode, ratio, 1.0, where=below, color=_RUN_STYLE["t2s"][0], alpha=0.25,
                    label=f"denoised: T2S below its teacher ({int(below.sum())} of "
                          f"{int(ok.sum())} modes)")
    ax.axhline(1.0, color="0.3", lw=1, ls=":", label="T2S = teacher")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("mode index i")
    ax.set_ylabel("per-mode risk relative to the teacher (dimensionless)")
    ax.legend(fontsize=7)
    verdict = ("no mode is denoised at this point: the student inherits the teacher's "
               "errors mode by mode" if not below.any() else
               f"{int(below.sum())} modes denoised")
    return _finish(fig, "Spectral denoising: T2S error relative to its teacher, per mode",
                   v.caption(at, m, verdict))


def fig_bound_sandwich(v: _View) -> Figure:
    keep = ["N"]
    at = v.representative(keep, "bound_upper_teacher")
    N = v.coord("N").astype(float)
    fig, axs = _figure(ncols=3, width=4.4, height=4.6)
    cond = v.take("step_condition", at, None, keep).reshape(-1) \
        if v.has("step_condition") else np.full(len(N), np.nan)
    holds = v.take("bound_t2s_holds", at, None, keep).reshape(-1) \
        if v.has("bound_t2s_holds") else np.full(len(N), np.nan)
    edges = np.sqrt(N[1:] * N[:-1]) if len(N) > 1 else np.array([])
    lo_edge = np.concatenate([[N[0] / 1.3], edges])
    hi_edge = np.concatenate([edges, [N[-1] * 1.3]])
    p = v.point_at(at)
    untrained = 0.5 * float(np.sum(target_energy(p))) if p is not None else np.nan
    drawn = False
    notes: list[str] = []
    exact = "exact" in v.methods
    panels = (("teacher", "bound_lower_teacher", "bound_upper_teacher", "Lemma 1"),
              ("direct", "bound_lower_direct", "bound_upper_direct", "Lemma 1"),
              ("t2s", None, "bound_t2s", "Theorem 1 transfer"))
    for ax, (run, lower, upper, which) in zip(axs, panels, strict=True):
        color, label = _RUN_STYLE[run]
        for i in np.flatnonzero(cond == 1):
            ax.axvspan(lo_edge[i], hi_edge[i], color="0.9", lw=0,
                       label="step condition holds" if i == np.flatnonzero(cond == 1)[0]
                       else None)
        if np.isfinite(untrained):
            ax.axhline(untrained, color="0.55", lw=1, ls=":", label="untrained risk ½ Σ e_i")
        if lower and v.has(lower):
            y = _positive(v.take(lower, at, None, keep).reshape(-1))
            if np.isfinite(y).any():
                ax.plot(N, y, "v-", color="0.4", ms=4, label="lower bound (App. A)")
                drawn = True
        if v.has(upper):
            y = _positive(v.take(upper, at, None, keep).reshape(-1))
            if np.isfinite(y).any():
                ax.plot(N, y, "^-", color="k", ms=4, label=f"upper bound ({which})")
                drawn = True
                if run != "t2s" and np.nanmin(y) > untrained:
                    ax.text(0.03, 0.03, "upper bound above the untrained risk:\nvacuous at "
                            "these sizes (corrections.md)", transform=ax.transAxes,
                            fontsize=6, va="bottom")
        if exact and v.has(f"risk_{run}"):
            y = _positive(v.take(f"risk_{run}", at, "exact", keep).reshape(-1))
            if np.isfinite(y).any():
                ax.plot(N, y, "o-", color=color, ms=4, label="exact")
                if run == "t2s":
                    bad = np.flatnonzero(holds == 0)
                    if bad.size:
                        ax.plot(N[bad], y[bad], "x", color="red", ms=9, mew=1.6,
                                label="exact above the bound")
                        notes.append(f"T2S exact risk above the Theorem 1 bound at "
                                     f"{bad.size} of {len(N)} N (see "
                                     "docs/science/corrections.md)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("teacher samples N")
        ax.set_ylabel(RISK_UNITS)
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=6)
    if not drawn:
        raise NoDataError("bound variables are missing on this slice")
    if not (cond == 1).any():
        notes.append("the step condition holds at no N shown: no bound is guaranteed here")
    return _finish(fig, "Bounds vs exact risk (lower ≤ exact ≤ upper?)",
                   v.caption(at, "bound" + (" + exact" if exact else ""), "; ".join(notes)))


PARITY = ("risk_teacher", "risk_direct", "risk_t2s", "risk_ceiling", "der", "w2s_ratio")
"""Quantities compared in the Monte Carlo vs exact parity figure (each has ``_se``)."""
_PARITY_MARKERS = "osD^vP"


def parity_table(v: _View) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per quantity: (exact, Monte Carlo mean, Monte Carlo se) at every grid point where both
    estimators are ok and the standard error is positive (flattened, grid C order)."""
    out = {}
    for name in PARITY:
        if not (v.has(name) and v.has(f"{name}_se")):
            continue
        ex = v.take(name, {}, "exact").reshape(-1)
        mc = v.take(name, {}, "mc").reshape(-1)
        se = v.se(name, {}).reshape(-1)
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(ex) & np.isfinite(mc) & np.isfinite(se) & (se > 0)
        if ok.any():
            out[name] = (ex[ok], mc[ok], se[ok])
    return out


def fig_mc_parity(v: _View) -> Figure:
    table = parity_table(v)
    if not table:
        raise NoDataError("no grid point has both an exact and a Monte Carlo value")
    fig, (ax, az) = _figure(ncols=2, width=4.8, height=4.4)
    lo, hi = np.inf, -np.inf
    zs = []
    for k, (name, (ex, mc, se)) in enumerate(table.items()):
        style = {"color": f"C{k}", "marker": _PARITY_MARKERS[k % len(_PARITY_MARKERS)]}
        ax.errorbar(ex, mc, yerr=se, ls="", ms=4, mfc="none", capsize=2, label=name, **style)
        z = (mc - ex) / se
        zs.append(z)
        jitter = (np.arange(z.size) % 7 - 3) * 0.04
        az.plot(z, np.full(z.size, k) + jitter, ls="", ms=4, mfc="none", **style)
        lo, hi = min(lo, ex.min(), (mc - se).min()), max(hi, ex.max(), (mc + se).max())
    pad = 0.05 * (hi - lo if hi > lo else 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.3", lw=1, ls="--",
            label="MC = exact")
    ax.set_xlabel("exact (expectation over data and noise)")
    ax.set_ylabel("Monte Carlo mean ± se")
    ax.set_title("values", fontsize=9)
    ax.legend(fontsize=7)
    z_all = np.concatenate(zs)
    within = float(np.mean(np.abs(z_all) <= 2))
    for edge in (-2, 2):
        az.axvline(edge, color="0.5", lw=0.8, ls=":")
    az.axvline(0, color="0.3", lw=0.8)
    az.set_yticks(range(len(table)), list(table))
    az.set_xlabel("z = (MC − exact) / se")
    az.set_title(f"z-scores: {within:.0%} of {z_all.size} within ±2 (expect ≈ 95%)",
                 fontsize=9)
    reps = v.layout.config.mc.replicates
    return _finish(fig, "Monte Carlo vs exact, every point where both exist",
                   f"sweep '{v.layout.name}'; {reps} replicates; every grid point on the "
                   "Monte Carlo sub-grid (no slice)")


def fig_misalignment(v: _View) -> Figure:
    """KD and W2S boundaries over (angle, α_S), and Lemma 2's bias against its closed form."""
    m = v.method
    keep = ["angle", "alpha_s"]
    for axis in keep:
        if axis not in v.axes:
            raise NoDataError(f"{axis} is not a grid axis of this cube")
    at = v.representative(keep, "der", m)
    der = _need(v.take("der", at, m, keep), "der")
    w2s = v.take("w2s_ratio", at, m, keep) if v.has("w2s_ratio") else np.full_like(der, np.nan)
    x, y = v.coord("angle").astype(float), v.coord("alpha_s").astype(float)
    fig, (ax, bx) = _figure(2, width=5.4)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.log2(_positive(der))
    span = max(float(np.nanmax(np.abs(gain))) if np.isfinite(gain).any() else 1.0, 1e-3)
    mesh = ax.pcolormesh(x, y, np.ma.masked_invalid(gain).T, shading="nearest", cmap="RdBu_r",
                         norm=TwoSlopeNorm(vcenter=0.0, vmin=-span, vmax=span))
    fig.colorbar(mesh, ax=ax, label="log2 der (> 0: distillation beats direct training)")
    xc, yc = _Cells.of(x, log=False), _Cells.of(y, log=False)
    sort = np.ix_(xc.order, yc.order)
    d_s, w_s = der[sort], w2s[sort]
    handles = [h for h in (
        _boundary(ax, xc, yc, d_s > 1.0, d_s < 1.0, "black", "der = 1 (KD boundary)"),
        _boundary(ax, xc, yc, w_s < 1.0, w_s > 1.0, "darkgreen", "w2s_ratio = 1 (W2S boundary)"),
    ) if h is not None]
    inside = np.isfinite(w2s) & (w2s < 1.0)
    if inside.any():
        gx, gy = np.meshgrid(x, y, indexing="ij")
        ax.scatter(gx[inside], gy[inside], marker="o", s=14, facecolor="none",
                   edgecolor="darkgreen")
        handles.append(Line2D([], [], marker="o", ls="", mfc="none", color="darkgreen",
                              label="w2s_ratio < 1 (T2S beats its teacher)"))
    if handles:
        ax.legend(handles=handles, loc="upper left", fontsize=7, facecolor="0.95")
    ax.set_xlabel("student basis rotation angle (degrees)")
    ax.set_ylabel("student decay α_S")
    ax.set_title("KD and W2S as the bases rotate", fontsize=9)
    bias = v.take("alignment_bias", at, m, keep) if v.has("alignment_bias") else None
    if bias is None or not np.isfinite(bias).any():
        bx.text(0.5, 0.5, "alignment_bias not in the cube", ha="center", transform=bx.transAxes)
    else:
        closed = v.take("alignment_bias_closed", at, m, keep)
        bx.plot(x, closed[:, 0], color="0.3", label="closed form (pair rotation)")
        bx.plot(x, bias[:, 0], "o", mfc="none", color="C3", label="from the projectors")
        bx.set_xlabel("student basis rotation angle (degrees)")
        bx.set_ylabel("½ E‖Π_S Π_T^⊥ w*‖²  (excess risk, ½ convention)")
        bx.legend(fontsize=7)
    bx.set_title("Lemma 2: static alignment bias", fontsize=9)
    return _finish(fig, "Misaligned feature bases: where KD and W2S survive",
                   v.caption(at, m))


@dataclass(frozen=True)
class FigureSpec:
    """One figure: its file name (``<name>.png``), when the grid supports it (from the layout
    alone), how it is drawn, and its caption (rendered for the report by
    :mod:`ktsweep.analysis.report`)."""

    name: str
    needs: Callable[[Layout], bool]
    draw: Callable[[_View], Figure]
    caption: str


CROSSOVER_MIN_N = 6
"""Values of N the crossover figure needs: local slopes over at least five octave steps."""


def _crossover_planned(layout: Layout) -> bool:
    """A lowdim sweep with an N axis of CROSSOVER_MIN_N values and three finite n."""
    targets = layout.axes.get("target", [layout.fixed.get("target")])
    finite_n = [x for x in layout.axes.get("n", []) if math.isfinite(float(x))]
    return (_estimated(layout, "N", "n") and "lowdim" in targets
            and len(layout.axes["N"]) >= CROSSOVER_MIN_N and len(finite_n) >= 3)


SPLINE_REACH = 3
"""Grid points either side of the minimum through which :func:`smooth_minimum` passes its
spline."""


def smooth_minimum(x: np.ndarray, y: np.ndarray, j: int) -> float:
    """The minimum of y near its grid minimum j: a cubic spline of log y in log x through up to
    SPLINE_REACH points either side, minimised between j's neighbours. On one side of the T2S
    optimum the risk rises exponentially (the unlearned signal), on the other as a power, so a
    parabola through three points misplaces the minimum by up to 2 % on a half-octave grid
    and the local slopes of neighbouring N jitter by ±0.05; the spline on a quarter-octave grid
    is within 0.002 of a fine search (docs/science/theorem5.md)."""
    lo, hi = max(0, j - SPLINE_REACH), min(len(x), j + SPLINE_REACH + 1)
    lx, ly = np.log(x[lo:hi]), np.log(y[lo:hi])
    if hi - lo < 4 or not np.all(np.isfinite(ly)):
        return float(refine_optimum(x, y, j)[1])
    spline = CubicSpline(lx, ly)
    grid = np.linspace(np.log(x[j - 1]), np.log(x[j + 1]), 401)
    return float(np.exp(spline(grid).min()))


def w2s_min_risk_slopes(v: _View, at: dict[str, int], method: str | None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(N at the geometric midpoints, local slopes of min_n risk_t2s against N/log2 N) on the
    slice ``at`` (every axis but N and n): the grid minimum over the finite n refined by
    :func:`smooth_minimum`, optima on the edge of the n range left out (NaN)."""
    n = v.coord("n").astype(float)
    finite = np.isfinite(n)
    N = v.coord("N").astype(float)
    risk = v.take("risk_t2s", at, method, ["N", "n"])[:, finite]
    best = np.full(len(N), np.nan)
    for i, row in enumerate(risk):
        j, edge = optimum(row)
        if j >= 0 and not edge:
            best[i] = smooth_minimum(n[finite], row, j)
    p = v.point_at(at)
    x = effective_horizon(N / (p.batch_t if p else 1), p.schedule_t if p else "geometric")
    with np.errstate(divide="ignore", invalid="ignore"):
        slopes = np.diff(np.log(best)) / np.diff(np.log(x))
    return np.sqrt(N[1:] * N[:-1]), slopes


def fig_w2s_crossover(v: _View) -> Figure:
    keep = ["N", "n"] + (["k_dagger"] if "k_dagger" in v.axes else [])
    m = v.method
    at = v.representative(keep, "risk_t2s", m)
    if "target" in v.axes:
        at["target"] = list(v.layout.axes["target"]).index("lowdim")
    values = v.coord("k_dagger") if "k_dagger" in keep else [None]
    fig, (ax,) = _figure()
    drawn, p0 = False, None
    for i, kd in enumerate(values):
        sub = dict(at, k_dagger=i) if kd is not None else at
        mid, slopes = w2s_min_risk_slopes(v, sub, m)
        if not np.isfinite(slopes).any():
            continue
        p = v.point_at(sub)
        p0 = p0 or p
        color = f"C{i % 10}"
        label = f"k† = {_fmt(float(kd))}" if kd is not None else "T2S student"
        ax.plot(mid, slopes, "-o", ms=3, color=color, label=label)
        n_x = theory.w2s_crossover(p) if p is not None else math.nan
        if np.isfinite(n_x) and mid[0] / 2 <= n_x <= mid[-1] * 2:
            ax.axvline(n_x, color=color, ls=":", lw=1)
        drawn = True
    if not drawn or p0 is None:
        raise NoDataError("no interior optimum over n at two neighbouring N on this slice")
    paper = theory.w2s_min_risk_exponent(p0.alpha_t, p0.alpha_s)
    ax.axhline(paper, color="0.4", ls="--", lw=1.2,
               label=f"Theorem 5: 1/(α_T(2α_S+1)) − 1 = {paper:.3f}")
    if not theory.w2s_late_scope(p0):
        late = theory.w2s_late_min_risk_exponent(p0.alpha_t, p0.alpha_s)
        ax.axhline(late, color="k", ls="-", lw=1.2,
                   label=f"late law: −1 + 1/(2α_S) = {late:.3f}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("teacher samples N (midpoint of each step)")
    ax.set_ylabel("local slope of min_n risk_t2s vs N / log2 N")
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="k", ls=":", lw=1,
                          label="derived crossover N_× (colour of its k†)"))
    ax.legend(handles=handles, fontsize=7)
    return _finish(fig, _title(v, "w2s_crossover", "Theorem 5: local slope of the minimal "
                               "T2S risk"), v.caption(at, m))


_W2S_SLICE = (
    "The slice (footer) is chosen, never N = n by default: n among its finite values (n = inf "
    "has no W2S), and every held axis where the map shows most cells on both sides of "
    "w2s_ratio = 1 (the larger of the two counts breaking ties), then the largest N and n.")
_SAMPLES_SLICE = (
    "The held axes (footer) are chosen where the map shows most cells on both sides of "
    "{what}.")

REGISTRY: tuple[FigureSpec, ...] = (
    _phase_spec(
        "pgr_phase_alpha", _ALPHA, "pgr",
        caption=(
            "Performance gap recovered (PGR) over the teacher and student spectral decays "
            "(alpha_T, alpha_S), on a diverging scale centred at 0 (T2S as good as its teacher) "
            "over PGR's full range; hatched cells have no gap to recover (ceiling not better "
            "than the teacher, or 0/0), where PGR means nothing. The black line runs along the "
            "cell edges between W2S cells (w2s_ratio < 1: the taught student beats its "
            "teacher, Theorem 5) and the others. " + _W2S_SLICE
        )),
    _phase_spec(
        "pgr_phase_samples", _SAMPLES, "pgr",
        caption=(
            "PGR over the teacher samples N and student samples n (finite n only: at n = inf "
            "the T2S student equals its teacher and PGR is undefined), hatched where there is "
            "no gap to recover, with the W2S boundary (w2s_ratio = 1) on the cell edges. Tests "
            "how the W2S region moves with the sample budgets, e.g. a finite optimal n "
            "(Theorem 5). " + _SAMPLES_SLICE.format(what="w2s_ratio = 1")
        )),
    _phase_spec(
        "w2s_phase_alpha", _ALPHA, "w2s_ratio",
        caption=(
            "Weak-to-strong ratio w2s_ratio = risk_t2s / risk_teacher over (alpha_T, alpha_S), "
            "on a diverging colour scale centred at 1 in log space (blue < 1: the student taught "
            "by the teacher beats it, W2S; red > 1), values in the cells, the W2S boundary "
            "w2s_ratio = 1 along the cell edges that separate the two sides, and the diagonal "
            "alpha_S = alpha_T (student and teacher share one model; at finite n its cells are "
            "ordinary values). W2S needs a teacher whose error the student can filter: "
            "in this aligned model it lives at finite n (early stopping) with a noisy teacher "
            "and a target the student's head captures (lowdim, Theorem 5), and vanishes as "
            "n -> inf, where the T2S student converges to its teacher. " + _W2S_SLICE
        )),
    _phase_spec(
        "w2s_phase_samples", _SAMPLES, "w2s_ratio",
        caption=(
            "w2s_ratio over the sample budgets (N, n), log colour scale centred at 1, finite n "
            "only (w2s_ratio is undefined at n = inf), with the W2S boundary along the cell "
            "edges. Theorem 5: W2S at n of the order of N or below, a finite optimal n. "
            + _SAMPLES_SLICE.format(what="w2s_ratio = 1")
        )),
    _phase_spec(
        "der_phase_alpha", _ALPHA, "der",
        caption=(
            "Data-efficiency ratio der = risk_direct / risk_t2s over (alpha_T, alpha_S), on a "
            "diverging colour scale centred at 1 in log space (red > 1: distillation beats "
            "training the student on the N labels, KD; blue < 1), the KD boundary der = 1 along "
            "the cell edges. Theorem 3 predicts KD for alpha_S > alpha_T (> 1 + beta) in the "
            "limit n -> inf, so the map is drawn at the largest n of the grid (n = inf where "
            "swept: the closed-form limit, docs/science/limits.md; at finite n the student may "
            "not have reached it, n >> N^(alpha_S/alpha_T) is needed). On the diagonal "
            "alpha_S = alpha_T at n = inf the direct student is the teacher and the T2S "
            "student converges to it, so der = 1 exactly: those cells are cross-hatched, "
            "neither side. The other held axes are chosen where both sides of der = 1 show "
            "most (the footer names the slice)."
        )),
    _phase_spec(
        "der_phase_samples", _SAMPLES, "der",
        caption=(
            "der over the sample budgets (N, n), log colour scale centred at 1, n = inf drawn "
            "as the last row (tick '∞') where swept, the KD boundary der = 1 along the cell "
            "edges. Theorem 3: KD needs n >> N (n >> N^(alpha_S/alpha_T) for the limit), and "
            "der grows like N^kappa at n = inf. " + _SAMPLES_SLICE.format(what="der = 1")
        )),
    FigureSpec(
        "risk_vs_N", lambda lay: _estimated(lay, "N"), fig_risk_vs_n,
        caption=(
            "Excess risks of the teacher, the directly trained student and the teacher-to-student "
            "(T2S) student against the teacher sample size N (log-log; lines exact, points Monte "
            "Carlo mean ± standard error, at the N values the config's Monte Carlo sub-grid "
            "holds). Dashed lines have the slopes of docs/science/rates.md, drawn at half the "
            "value of the curve they belong to at its largest N (parallel to it when the "
            "prediction holds, not hidden under it): Lemma 1 rates for teacher and direct student, "
            "Theorem 3's limit rate for T2S (shown only where alpha_S > alpha_T > 1 + beta)."
        )),
    FigureSpec(
        "w2s_crossover", _crossover_planned, fig_w2s_crossover,
        caption=(
            "Local slope of the minimal T2S risk, min over n of risk_t2s, against the "
            "teacher's horizon N / log2 N, between neighbouring N, one line per k_dagger "
            "where it is a grid axis (lowdim target). The optimum over n is the grid minimum "
            "refined by a cubic spline in log-log through it and up to three neighbours on "
            "each side (optima at the edge of the n range are left out); a grid of a quarter "
            "octave in n resolves the slopes to about 0.002. Dashed: Theorem 5's exponent "
            "1/(alpha_T(2 alpha_S + 1)) - 1; solid: the "
            "late law -1 + 1/(2 alpha_S) derived in docs/science/theorem5.md (drawn where its "
            "scope holds); dotted verticals: the derived crossover N_x of each k_dagger, past "
            "which the late law holds. Over an intermediate range the slope passes near "
            "Theorem 5's value while the optimal student stops just after learning the k_dagger "
            "signal modes; past N_x it settles at the late value."
        )),
    FigureSpec(
        "der_vs_dalpha", lambda lay: _estimated(lay, "alpha_s"), fig_der_vs_dalpha,
        caption=(
            "Data-efficiency ratio der = risk_direct / risk_t2s against the spectral gap alpha_S "
            "- alpha_T, one line per alpha_T, at the slice the footer names (the largest N and n "
            "where Monte Carlo also ran, else the largest; paper Fig. 2b is the kd_fig2b "
            "config). Theorem 3 "
            "predicts a distillation advantage der > 1 growing with the gap when alpha_S > "
            "alpha_T > 1 + beta."
        )),
    FigureSpec(
        "t2s_curves", lambda lay: _estimated(lay) and lay.config.outputs.curves, fig_t2s_curves,
        caption=(
            "Learning curves of the T2S student: excess risk after each number of SGD steps, one "
            "line per k_dagger when it is a grid axis (paper Fig. 3a with the w2s_fig3a config), "
            "the minimum "
            "(early-stopping point) marked, the teacher's final risk dotted. A minimum below the "
            "teacher's risk is weak-to-strong generalisation with a finite optimal n (Theorem 5)."
        )),
    FigureSpec(
        "spectral_horizon", lambda lay: _estimated(lay) and lay.config.outputs.modes,
        fig_spectral_horizon,
        caption=(
            "Per-mode excess risk of teacher, direct student and T2S student against the mode "
            "index (log-log) at one representative point, with the untrained error of each mode. "
            "A large marker on each curve is its measured horizon: the last mode whose risk is "
            "below half its untrained risk. Vertical lines are Lemma 1's cutoff k* (the "
            "upper bound's threshold 2 ln M log2 M / (gamma0 M), one line per distinct value, "
            "naming the runs that share it): its log factors put it well below the visible "
            "knee, so it is the bound's conservative scale, not where learning stops. The "
            "'spectral horizon expansion' of Theorem 3 is the student's marker to the right "
            "of the teacher's."
        )),
    FigureSpec(
        "spectral_denoising", lambda lay: _estimated(lay) and lay.config.outputs.modes,
        fig_spectral_denoising,
        caption=(
            "The T2S student's per-mode error divided by its teacher's, against the mode index, "
            "with the direct student's ratio for comparison. Shaded modes lie below 1: there "
            "the student is more accurate than the teacher that labelled its data ('spectral "
            "denoising', the mechanism behind W2S, Theorem 5); the footer says how many. A "
            "ratio at or above 1 everywhere (the usual case outside the W2S regime) means the "
            "student inherits its teacher's errors mode by mode."
        )),
    FigureSpec(
        "mc_parity", lambda lay: "mc" in lay.methods and "exact" in lay.methods,
        fig_mc_parity,
        caption=(
            "Monte Carlo against the exact engine at every grid point where both ran: left, "
            "each quantity's Monte Carlo mean with its standard error against the exact "
            "expectation (on the dashed diagonal when they agree); right, the z-score "
            "(MC - exact) / se of each point. The two engines are independent (the exact one "
            "iterates the moment recursion of docs/science/exact.md, Monte Carlo runs the SGD "
            "itself), so about 95 % of z-scores within +-2 is the check that both are right; "
            "a shifted cloud is a bias (float32 round-off at small risks, too few replicates "
            "for the ratios der and w2s_ratio, whose se is a delta-method estimate)."
        )),
    FigureSpec(
        "bound_sandwich", lambda lay: "bound" in lay.methods and "N" in lay.axes,
        fig_bound_sandwich,
        caption=(
            "Analytic bounds against N: the lower bound (paper App. A), the exact expected risk "
            "and the upper bound (Lemma 1) for teacher and direct student, and the Theorem 1 "
            "transfer upper bound beside the exact T2S risk; the dotted line is the untrained "
            "risk. Lemma 1's upper bound lies above the untrained risk at these sizes (vacuous: "
            "its log factors leave k* near 0, docs/science/corrections.md). Red crosses mark N "
            "where the exact T2S risk exceeds the transfer bound (bound_t2s_holds = 0), which "
            "the theorem does not promise outside its step condition and batch-1 scope. "
            "Shaded N values satisfy the proofs' step-size condition; the footer says when "
            "none does. 'lower <= exact <= upper' is a measured outcome, not an assumption."
        )),
    FigureSpec(
        "misalignment", lambda lay: _estimated(lay, "angle", "alpha_s"), fig_misalignment,
        caption=(
            "Left: the data-efficiency ratio der on a log2 scale over the rotation angle of the "
            "student's eigenbasis against the teacher's (mode pairs (1,2), (3,4), ...) and the "
            "student decay alpha_S, with the KD boundary der = 1 (dashed) and the W2S boundary "
            "w2s_ratio = 1 (green; circles: the T2S student beats its teacher). Right: Lemma 2's "
            "static alignment bias (1/2) E||Pi_S Pi_T^perp w*||^2 computed from the projectors "
            "(circles) against its closed form in the angle (line); it is the part of the "
            "target outside the teacher's span that the student can represent but never learns "
            "from the teacher (docs/science/geometry.md)."
        )),
)
"""Every figure ktsweep knows, in the order they are planned (the one registry)."""

FIGURES: tuple[str, ...] = tuple(spec.name for spec in REGISTRY)
CAPTIONS: dict[str, str] = {spec.name: spec.caption for spec in REGISTRY}
_BY_NAME: dict[str, FigureSpec] = {spec.name: spec for spec in REGISTRY}


def draw_figure(ds: xr.Dataset | _View, name: str) -> Figure:
    """One planned figure of the cube as a matplotlib Figure (a 'no data' panel saying why
    when its data are all missing); tests read the plotted data back from it."""
    view = ds if isinstance(ds, _View) else _View(ds)
    try:
        return _BY_NAME[name].draw(view)
    except NoDataError as why:
        return _no_data(name, str(why))


def make_figures(ds: xr.Dataset, outdir: str | os.PathLike) -> list[Path]:
    """Write every planned figure of the cube's layout as ``outdir/<name>.png``.

    A figure whose data are all missing is still written, as a 'no data' panel saying why.
    """
    view = _View(ds)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in planned_figures(view.layout):
        path = out / f"{name}.png"
        draw_figure(view, name).savefig(path, dpi=DPI)
        paths.append(path)
    return paths
