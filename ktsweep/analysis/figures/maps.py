"""Phase maps: PGR, w2s_ratio and der over the spectral decays (α_T, α_S) and over the sample
budgets (N, n).

The three maps of one plane are drawn at one slice, so that they read side by side
(:func:`plane_slice`): the held labels where all three show both sides of their boundary most.
Each region's boundary runs along the cell edges that separate its two sides (on a coarse
grid an interpolated contour would invent a position between cells).
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr
from matplotlib.artist import Artist
from matplotlib.collections import LineCollection
from matplotlib.colors import ListedColormap, Normalize, SymLogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ktsweep.analysis.figures.common import (
    FigureCube,
    FigureSpec,
    choose_slice,
    contrast_text,
    estimated,
    finish,
    fmt,
    footer,
    need,
    new_figure,
    sel,
    title,
    two_sided,
)

NO_GAP_LABEL = "no gap to recover (ceiling >= teacher, or 0/0): PGR not shown"
EXACT_ONE_LABEL = ("der = 1 exactly: α_S = α_T at n = ∞ (the T2S student converges to its "
                   "teacher, which is the direct student)")
EXACT_ONE_RTOL = 1e-9
"""A ratio within this relative distance of 1 is 'exactly 1' (hatched, not coloured as a side)."""
ANNOTATE_MAX = 100
"""Maps of at most this many cells print each cell's value."""


@dataclass(frozen=True)
class Region:
    """A region of a phase map: where ``name`` is above (or below) 1."""

    name: str
    above: bool
    label: str

    def sides(self, field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Masks of the finite cells inside the region and outside it (cells exactly 1 are
        outside: neither W2S nor KD)."""
        f = np.asarray(field, float)
        finite = np.isfinite(f)
        with np.errstate(invalid="ignore"):
            one = finite & np.isclose(f, 1.0, rtol=EXACT_ONE_RTOL, atol=0.0)
            inside = finite & ~one & ((f > 1.0) if self.above else (f < 1.0))
        return inside, finite & ~inside


W2S = Region("w2s_ratio", False, "W2S")
KD = Region("der", True, "KD")


def region_score(field: np.ndarray, region: Region) -> tuple[int, int]:
    """How well a plane shows ``region``: (cells on the smaller side of 1, cells inside)."""
    inside, outside = region.sides(field)
    return int(min(inside.sum(), outside.sum())), int(inside.sum())


# ---------------------------------------------------------------------------------------
# The slice
# ---------------------------------------------------------------------------------------
PLANES: dict[str, tuple[str, str]] = {"alpha": ("alpha_t", "alpha_s"), "samples": ("N", "n")}

PLANE_RULE = ("one slice for the PGR, W2S and KD maps of this plane: where the three maps "
              "show both sides of their boundary most (the largest of the smallest two-sided "
              "counts of w2s_ratio = 1, der = 1 and, among cells with a gap, PGR = 0; ties: "
              "their sum, then the largest N and n, the middle of other axes)")


def _isone(da: xr.DataArray) -> xr.DataArray:
    return xr.apply_ufunc(np.isclose, da, 1.0, kwargs={"rtol": EXACT_ONE_RTOL, "atol": 0.0})


def plane_slice(cube: FigureCube, keep: Sequence[str]) -> dict[str, Any]:
    """The held labels of the maps over ``keep`` (:data:`PLANE_RULE`)."""
    est = cube.estimator
    w2s, der = cube.maybe("w2s_ratio", est), cube.maybe("der", est)
    teacher, ceiling = cube.maybe("risk_teacher", est), cube.maybe("risk_ceiling", est)
    parts, finite = [], []
    if w2s is not None:
        parts.append(two_sided(w2s < 1, w2s > 1, keep))
        finite.append(xr.ufuncs.isfinite(w2s).sum(list(keep)))
    if der is not None:
        one = _isone(der)
        parts.append(two_sided((der > 1) & ~one, (der < 1) & ~one, keep))
        finite.append(xr.ufuncs.isfinite(der).sum(list(keep)))
    if w2s is not None and teacher is not None and ceiling is not None:
        gap = teacher - ceiling > 0
        parts.append(two_sided(gap & (w2s < 1), gap & (w2s > 1), keep))
    scores = []
    if parts:
        scores += [functools.reduce(xr.ufuncs.minimum, parts),
                   functools.reduce(operator.add, parts)]
    if finite:
        scores.append(functools.reduce(operator.add, finite))
    return choose_slice(cube, keep, scores)


# ---------------------------------------------------------------------------------------
# Cells and what is drawn on them
# ---------------------------------------------------------------------------------------
@dataclass
class Cells:
    """One axis of a phase map, its labels in ascending order: cell centres (∞ one grid
    step beyond the largest finite value), cell edges and tick labels."""

    values: np.ndarray
    centres: np.ndarray
    edges: np.ndarray
    labels: list[str]
    log: bool

    @classmethod
    def of(cls, values: npt.ArrayLike, log: bool) -> Cells:
        v = np.sort(np.asarray(values, float), kind="stable")
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
        labels = [fmt(float(x)) for x in v]
        return cls(v, pos, np.exp(edges) if log else edges, labels, log)

    def apply(self, ax: Any, which: str, label: str) -> None:
        set_scale, set_lim, set_ticks, set_label = (
            (ax.set_xscale, ax.set_xlim, ax.set_xticks, ax.set_xlabel) if which == "x" else
            (ax.set_yscale, ax.set_ylim, ax.set_yticks, ax.set_ylabel))
        if self.log:
            set_scale("log")
        set_lim(self.edges[0], self.edges[-1])
        set_ticks(self.centres, self.labels)
        set_ticks([], minor=True)
        set_label(label)


def boundary(ax: Any, xc: Cells, yc: Cells, inside: np.ndarray, outside: np.ndarray,
             color: str, label: str) -> Line2D | None:
    """The region's boundary along the cell edges that separate an inside cell from an
    outside one; returns a legend handle, or None if there is none."""
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


def cell_text(v: float, digits: int = 2) -> str:
    """A cell's value in few characters: ``digits`` significant digits, in positional
    notation between 0.001 and 10⁴, else as 2.2e-5. A value that would read '1' but is not
    exactly 1 gets the digits that tell its side of 1 (0.997, 1.002), '≈1' past five."""
    if v == 0:
        return "0"
    if not 1e-3 <= abs(v) < 1e4:
        mant, exp = f"{v:.{digits - 1}e}".split("e")
        return f"{mant}e{int(exp)}"
    if math.isclose(v, 1.0, rel_tol=EXACT_ONE_RTOL, abs_tol=0.0):
        return "1"
    for d in range(digits, digits + 4):
        text = np.format_float_positional(v, precision=d, unique=False, fractional=False,
                                          trim="-")
        if text != "1":
            return text
    return "≈1"


def annotate(ax: Any, mesh: Any, xc: Cells, yc: Cells, shown: np.ndarray,
             values: np.ndarray | None = None) -> None:
    """Each coloured cell's value (``values``, default the coloured ``shown``), in black or
    white by the cell's luminance; nothing on maps of more than :data:`ANNOTATE_MAX` cells."""
    values = shown if values is None else values
    if values.size > ANNOTATE_MAX:
        return
    for i, j in itertools.product(range(values.shape[0]), range(values.shape[1])):
        if np.isfinite(values[i, j]):
            colour = mesh.cmap(mesh.norm(shown[i, j])) if np.isfinite(shown[i, j]) \
                else (0.85, 0.85, 0.85, 1.0)
            ax.text(xc.centres[i], yc.centres[j], cell_text(float(values[i, j])),
                    ha="center", va="center", fontsize=7, color=contrast_text(colour))


def hatch(ax: Any, xc: Cells, yc: Cells, mask: np.ndarray, pattern: str, label: str) -> Patch:
    ax.pcolor(xc.edges, yc.edges, np.ma.masked_where(~mask, np.ones(mask.shape)).T,
              cmap=ListedColormap(["0.85"]), hatch=pattern, edgecolor="0.55", linewidth=0.0)
    return Patch(facecolor="0.85", edgecolor="0.55", hatch=pattern, label=label)


def diagonal(ax: Any, xc: Cells, yc: Cells) -> Line2D:
    lo = max(xc.edges[0], yc.edges[0])
    hi = min(xc.edges[-1], yc.edges[-1])
    ax.plot([lo, hi], [lo, hi], color="0.4", lw=0.9, ls=":")
    return Line2D([], [], color="0.4", lw=0.9, ls=":",
                  label="α_S = α_T (student's model = teacher's)")


def note_if_one_sided(ax: Any, cube: FigureCube, region: Region, inside: np.ndarray,
                      outside: np.ndarray) -> None:
    """Say on the map why no boundary is drawn, and whether the region exists elsewhere in
    the grid."""
    rel = ">" if region.above else "<"
    if not inside.any():
        whole = cube.var(region.name)
        elsewhere = bool(((whole > 1) if region.above else (whole < 1)).any())
        text = (f"no cell with {region.name} {rel} 1 at this slice: "
                + ("the region lies at other slices" if elsewhere else
                   f"no {region.label} region anywhere in this grid"))
    elif not outside.any():
        text = f"every cell has {region.name} {rel} 1: the boundary lies outside the grid"
    else:
        return
    ax.text(0.5, 1.01, text, transform=ax.transAxes, ha="center", va="bottom", fontsize=7)


def legend_below(ax: Any, handles: Sequence[Artist | None]) -> None:
    """The legend below the map, so that no cell is hidden."""
    shown = [h for h in handles if h is not None]
    if shown:
        ax.legend(handles=shown, loc="upper center", bbox_to_anchor=(0.5, -0.12),
                  fontsize=6.5, facecolor="0.95", ncols=1)


RATIO_STEPS = (1.02, 1.05, 1.1, 1.25, 1.5, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3,
               1e4, 1e5, 1e6)
"""Colour-bar ticks above 1 of a ratio map; those below 1 are their reciprocals."""
RATIO_TICKS_PER_SIDE = 4
"""At most this many ticks each side of 1: neighbours at least lim / 4 apart in log10."""


def ratio_ticks(lim: float) -> list[float]:
    """Ticks of a log colour bar over [10^-lim, 10^lim]: 1, values above 1 at least
    lim / :data:`RATIO_TICKS_PER_SIDE` apart in log10, and their reciprocals."""
    gap = lim / RATIO_TICKS_PER_SIDE
    up, last = [], 0.0
    for t in RATIO_STEPS:
        lt = math.log10(t)
        if lt > lim + 1e-12:
            break
        if lt - last >= gap - 1e-12:
            up.append(t)
            last = lt
    return [1.0 / t for t in reversed(up)] + [1.0] + up


def ratio_map(ax: Any, fig: Figure, cube: FigureCube, xc: Cells, yc: Cells,
              field: np.ndarray, region: Region) -> list[Artist | None]:
    """``field`` on a diverging colour scale centred at 1 in log space (equal colour for equal
    factors above and below 1), the region's boundary on the cell edges, cells exactly 1
    hatched; returns the legend handles."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(np.isfinite(field) & (field > 0), np.log10(field), np.nan)
    lim = max(float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 0.0, 0.05)
    mesh = ax.pcolormesh(xc.edges, yc.edges, np.ma.masked_invalid(z).T, cmap="RdBu_r",
                         norm=Normalize(vmin=-lim, vmax=lim))
    ticks = ratio_ticks(lim)
    cb = fig.colorbar(mesh, ax=ax)
    cb.set_ticks([math.log10(t) for t in ticks], labels=[cell_text(t, 3 if t > 1 else 2)
                                                         for t in ticks])
    cb.ax.minorticks_off()
    inside_word = "> 1: " if region.above else "< 1: "
    cb.set_label(f"{region.name} (log scale, centred at 1; {inside_word}{region.label})")
    annotate(ax, mesh, xc, yc, z, field)
    inside, outside = region.sides(field)
    handles: list[Artist | None] = [
        boundary(ax, xc, yc, inside, outside, "black",
                 f"{region.name} = 1 ({region.label} boundary, between cells)")]
    one = np.isfinite(field) & ~inside & np.isclose(field, 1.0, rtol=EXACT_ONE_RTOL, atol=0.0)
    if one.any():
        handles.append(hatch(ax, xc, yc, one, "xx", EXACT_ONE_LABEL if region is KD
                             else f"{region.name} = 1 exactly"))
    note_if_one_sided(ax, cube, region, inside, outside)
    return handles


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


PGR_LINEAR = 0.1
"""PGR's colour scale is linear within ±PGR_LINEAR of 0 and logarithmic beyond, symmetric
about 0: a PGR of −5 and one of 0.7 both show, and equal magnitudes get equal shades."""


def pgr_ticks(lim: float) -> list[float]:
    """Colour-bar ticks of a PGR map over [−lim, lim]: 0 and ±0.1, ±1, ±10, … (±0.5 too on a
    scale of a few units), and the end of the scale rounded down to one digit when it lies
    far beyond the last of them."""
    steps = [PGR_LINEAR, 0.5, 1.0] if lim < 3 else [PGR_LINEAR, 1.0]
    steps += [10.0**k for k in range(1, 7)]
    up = [t for t in steps if t <= lim * (1 + 1e-9)]
    unit = 10.0 ** math.floor(math.log10(lim))
    top = unit * math.floor(lim / unit * (1 + 1e-9))
    if top >= 2 * up[-1]:  # label the far end too (5 on a scale to 5.5)
        up.append(top)
    return [-t for t in reversed(up)] + [0.0] + up


def pgr_map(ax: Any, fig: Figure, xc: Cells, yc: Cells, pgr: np.ndarray, no_gap: np.ndarray,
            w2s: np.ndarray) -> list[Artist | None]:
    """PGR on a diverging scale centred at 0 (T2S = teacher) over its full range, symmetric
    and logarithmic past ±:data:`PGR_LINEAR`, no-gap cells hatched, the W2S boundary on the
    cell edges; returns the legend handles."""
    finite = pgr[np.isfinite(pgr)]
    lim = max(float(np.abs(finite).max()) if finite.size else 1.0, PGR_LINEAR)
    mesh = ax.pcolormesh(xc.edges, yc.edges, np.ma.masked_invalid(pgr).T, cmap="PuOr_r",
                         norm=SymLogNorm(linthresh=PGR_LINEAR, vmin=-lim, vmax=lim, base=10))
    cb = fig.colorbar(mesh, ax=ax,
                      label="PGR (0: T2S = teacher; > 0 recovers the gap; 1: ceiling)")
    ticks = pgr_ticks(lim)
    cb.set_ticks(ticks, labels=[cell_text(t) for t in ticks])
    cb.ax.minorticks_off()
    annotate(ax, mesh, xc, yc, pgr)
    inside, outside = W2S.sides(w2s)
    handles: list[Artist | None] = [
        boundary(ax, xc, yc, inside, outside, "black",
                 "w2s_ratio = 1 (W2S boundary, between cells)")]
    if no_gap.any():
        handles.append(hatch(ax, xc, yc, no_gap, "//", NO_GAP_LABEL))
    if not np.isfinite(pgr).any():
        ax.text(0.5, 1.01, "no cell with a gap to recover at this slice", fontsize=7,
                transform=ax.transAxes, ha="center", va="bottom")
    return handles


# ---------------------------------------------------------------------------------------
# The figures
# ---------------------------------------------------------------------------------------
AXIS_LABEL = {"alpha_t": "teacher decay α_T", "alpha_s": "student decay α_S",
              "N": "teacher samples N", "n": "student samples n"}
HEADS = {"pgr": "PGR: performance gap recovered", "w2s_ratio": "W2S: w2s_ratio = T2S / teacher",
         "der": "KD: der = direct / T2S"}


def plane_of(cube: FigureCube, name: str, at: dict[str, Any], keep: Sequence[str],
             finite_n: bool = False) -> xr.DataArray | None:
    """The plane of ``name`` over ``keep`` at ``at``, both axes ascending (n = ∞ dropped
    where ``finite_n``); None where the cube lacks the variable."""
    da = cube.maybe(name)
    if da is None:
        return None
    da = sel(da, at).transpose(*keep).sortby(list(keep))
    if finite_n and "n" in keep:
        da = da.sel(n=np.isfinite(da["n"].values))
    return da


def draw_map(cube: FigureCube, name: str, plane: str, what: str) -> Figure:
    """The figure ``name``: the map of ``what`` (pgr, w2s_ratio or der) over ``plane`` at the
    plane's slice."""
    keep = PLANES[plane]
    at = plane_slice(cube, keep)
    finite_n = what != "der"  # PGR and w2s_ratio are undefined at n = ∞
    field = plane_of(cube, what, at, keep, finite_n)
    field = need(cube.var(what) if field is None else field, what)
    xc, yc = Cells.of(field[keep[0]].values, plane == "samples"), \
        Cells.of(field[keep[1]].values, plane == "samples")
    fig, (ax,) = new_figure(height=6.4)
    if what == "pgr":
        planes = [plane_of(cube, n, at, keep, finite_n)
                  for n in ("w2s_ratio", "risk_teacher", "risk_ceiling")]
        w2s, teacher, ceiling = (np.full(field.shape, np.nan) if p is None else p.values
                                 for p in planes)
        pgr, no_gap = pgr_shown(field.values, teacher, ceiling)
        handles = pgr_map(ax, fig, xc, yc, pgr, no_gap, w2s)
    else:
        handles = ratio_map(ax, fig, cube, xc, yc, field.values, KD if what == "der" else W2S)
    xc.apply(ax, "x", AXIS_LABEL[keep[0]])
    yc.apply(ax, "y", AXIS_LABEL[keep[1]])
    if plane == "alpha":
        handles.append(diagonal(ax, xc, yc))
    legend_below(ax, handles)
    over = "(α_T, α_S)" if plane == "alpha" else "the sample budgets (N, n)"
    extra = "n = ∞ left out: the map's ratio is undefined there" if (
        finite_n and "n" in keep and not np.isfinite(cube.labels("n")).all()) else ""
    return finish(fig, title(cube, name, f"{HEADS[what]} over {over}", at),
                  footer(cube, at, PLANE_RULE, cube.estimator, extra))


def _spec(name: str, plane: str, what: str, caption: str) -> FigureSpec:
    keep = PLANES[plane]
    return FigureSpec(name, lambda lay: estimated(lay, *keep),
                      lambda cube: draw_map(cube, name, plane, what), caption)


_SAME_SLICE = (
    "The three maps of this plane (pgr, w2s_ratio and der) are drawn at one slice, named in "
    "the title: where all three show both sides of their boundary most (the largest of the "
    "smallest two-sided counts), so they read side by side.")

SPECS: tuple[FigureSpec, ...] = (
    _spec("pgr_phase_alpha", "alpha", "pgr", caption=(
        "Performance gap recovered, PGR = (teacher - T2S) / (teacher - ceiling), over the "
        "teacher and student spectral decays (alpha_T, alpha_S), on a diverging scale centred "
        "at 0 (T2S as good as its teacher), symmetric over PGR's full range and logarithmic "
        "beyond +-0.1 (a PGR of -5 and one of 0.7 both show), each cell's value printed. "
        "Hatched cells have no gap to recover (the ceiling student, trained on n true labels, "
        "is not better than the teacher, or 0/0): PGR means nothing there. The black line "
        "runs along the cell edges between W2S cells (w2s_ratio < 1: the taught student beats "
        "its teacher, Theorem 5) and the others. " + _SAME_SLICE)),
    _spec("pgr_phase_samples", "samples", "pgr", caption=(
        "PGR over the teacher and student sample budgets (N, n), finite n only (at n = inf "
        "the T2S student equals its teacher and PGR is undefined), hatched where there is no "
        "gap to recover (the ceiling needs n of the order of N or more to beat the teacher), "
        "with the W2S boundary (w2s_ratio = 1) on the cell edges. " + _SAME_SLICE)),
    _spec("w2s_phase_alpha", "alpha", "w2s_ratio", caption=(
        "Weak-to-strong ratio w2s_ratio = risk_t2s / risk_teacher over (alpha_T, alpha_S), on "
        "a diverging colour scale centred at 1 in log space (blue < 1: the student taught by "
        "the teacher beats it, W2S; red > 1), values in the cells, the W2S boundary "
        "w2s_ratio = 1 along the cell edges and the diagonal alpha_S = alpha_T. W2S needs a "
        "teacher whose error the student can filter: in this aligned model it lives at finite "
        "n (early stopping) with a noisy teacher and a target the student's head captures "
        "(lowdim, Theorem 5). " + _SAME_SLICE)),
    _spec("w2s_phase_samples", "samples", "w2s_ratio", caption=(
        "w2s_ratio over the sample budgets (N, n), log colour scale centred at 1, finite n "
        "only (w2s_ratio is undefined at n = inf), with the W2S boundary along the cell "
        "edges. Theorem 5: W2S at a finite optimal n, which grows with N. " + _SAME_SLICE)),
    _spec("der_phase_alpha", "alpha", "der", caption=(
        "Data-efficiency ratio der = risk_direct / risk_t2s over (alpha_T, alpha_S), on a "
        "diverging colour scale centred at 1 in log space (red > 1: distillation beats "
        "training the student on the N labels, KD; blue < 1), the KD boundary der = 1 along "
        "the cell edges. Drawn at the slice of the PGR and W2S maps, usually a finite n: "
        "Theorem 3 predicts KD for alpha_S > alpha_T (> 1 + beta) in the limit n -> inf "
        "(gaussian or power target), which der_phase_samples shows in its n = inf row and "
        "der_vs_dalpha at n = inf; at finite n the student may not have reached that limit. "
        "Cells where der = 1 exactly (alpha_S = alpha_T at n = inf: the direct student is the "
        "teacher and the T2S student converges to it) are cross-hatched, neither side. "
        + _SAME_SLICE)),
    _spec("der_phase_samples", "samples", "der", caption=(
        "der over the sample budgets (N, n), log colour scale centred at 1, n = inf drawn "
        "as the last row (tick '∞') where swept, the KD boundary der = 1 along the cell "
        "edges. Theorem 3: KD needs n >> N (n >> N^(alpha_S/alpha_T) for the limit), and "
        "der grows like N^kappa at n = inf. " + _SAME_SLICE)),
)
