"""Theorem 5's minimal T2S risk: its local slope against the teacher's horizon N / log2 N,
with Theorem 5's exponent, the late law's and the derived crossover N_× between them
(docs/science/theorem5.md)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy.interpolate import CubicSpline

from ktsweep.analysis.figures.common import (
    FigureCube,
    FigureSpec,
    NoDataError,
    choose_slice,
    estimated,
    finish,
    fmt,
    footer,
    new_figure,
    sel,
    title,
)
from ktsweep.analysis.figures.params import crossover, late_scope, params_at
from ktsweep.analysis.fits import effective_horizon, optimum, refine_optimum
from ktsweep.model import theory
from ktsweep.sweep.layout import Layout

CROSSOVER_MIN_N = 6
"""Values of N the crossover figure needs: local slopes over at least five octave steps."""


def crossover_planned(layout: Layout) -> bool:
    """A lowdim sweep with an N axis of CROSSOVER_MIN_N values and three finite n."""
    targets = layout.axes.get("target", [layout.fixed.get("target")])
    finite_n = [x for x in layout.axes.get("n", []) if math.isfinite(float(x))]
    return (estimated(layout, "N", "n") and "lowdim" in targets
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


def w2s_min_risk_slopes(cube: FigureCube, at: dict[str, Any], estimator: str | None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(N at the geometric midpoints, local slopes of min_n risk_t2s against N/log2 N) on the
    slice ``at`` (every axis but N and n): the grid minimum over the finite n refined by
    :func:`smooth_minimum`, optima on the edge of the n range left out (NaN)."""
    risk = sel(cube.var("risk_t2s", estimator), at).transpose("N", "n")
    risk = risk.sel(n=np.isfinite(risk["n"].values))
    n = np.asarray(risk["n"].values, float)
    N = np.asarray(risk["N"].values, float)
    best = np.full(len(N), np.nan)
    for i, row in enumerate(np.asarray(risk.values, float)):
        j, edge = optimum(row)
        if j >= 0 and not edge:
            best[i] = smooth_minimum(n, row, j)
    p = params_at(cube.ds, at)
    x = effective_horizon(N / (p.batch_t or 1), p.schedule_t or "geometric")
    with np.errstate(divide="ignore", invalid="ignore"):
        slopes = np.diff(np.log(best)) / np.diff(np.log(x))
    return np.sqrt(N[1:] * N[:-1]), slopes


CROSSOVER_RULE = ("the lowdim target, where the most local slopes exist (interior optima "
                  "over n at neighbouring N), then the middle of other axes")


def crossover_slice(cube: FigureCube, keep: list[str]) -> dict[str, Any]:
    """The held labels: lowdim, then the slice with the most finite slopes."""
    held = cube.held(keep)
    allow = {"target": ["lowdim"]} if "target" in held else None
    lines = cube.labels("k_dagger") if "k_dagger" in keep else [None]
    free = [a for a in held if a != "target"]
    labels = [cube.labels(a) for a in free]
    counts = np.zeros([len(v) for v in labels], dtype=int)
    for index in itertools.product(*(range(len(v)) for v in labels)):
        at = {a: v[i] for a, v, i in zip(free, labels, index, strict=True)}
        if allow:
            at["target"] = "lowdim"
        for kd in lines:
            sub = at if kd is None else dict(at, k_dagger=kd)
            counts[index] += int(np.isfinite(w2s_min_risk_slopes(cube, sub,
                                                                 cube.estimator)[1]).sum())
    score = xr.DataArray(counts, coords={a: cube.labels(a) for a in free}, dims=free)
    return choose_slice(cube, keep, [score], allow)


def fig_w2s_crossover(cube: FigureCube) -> Figure:
    keep = ["N", "n"] + (["k_dagger"] if "k_dagger" in cube.axes else [])
    est = cube.estimator
    at = crossover_slice(cube, keep)
    values = cube.labels("k_dagger") if "k_dagger" in keep else [None]
    fig, (ax,) = new_figure()
    drawn, p0 = False, None
    for i, kd in enumerate(values):
        sub = dict(at, k_dagger=kd) if kd is not None else at
        mid, slopes = w2s_min_risk_slopes(cube, sub, est)
        if not np.isfinite(slopes).any():
            continue
        p = params_at(cube.ds, sub)
        p0 = p0 or p
        color = f"C{i % 10}"
        label = f"k† = {fmt(kd)}" if kd is not None else "T2S student"
        ax.plot(mid, slopes, "-o", ms=3, color=color, label=label)
        n_x = crossover(p)
        if np.isfinite(n_x) and mid[0] / 2 <= n_x <= mid[-1] * 2:
            ax.axvline(n_x, color=color, ls=":", lw=1)
        drawn = True
    if not drawn or p0 is None:
        raise NoDataError("no interior optimum over n at two neighbouring N on this slice")
    paper = theory.w2s_min_risk_exponent(p0.alpha_t, p0.alpha_s)
    ax.axhline(paper, color="0.4", ls="--", lw=1.2,
               label=f"Theorem 5: 1/(α_T(2α_S+1)) − 1 = {paper:.3f}")
    scope = late_scope(p0)
    if not scope:
        late = theory.w2s_late_min_risk_exponent(p0.alpha_t, p0.alpha_s)
        ax.axhline(late, color="k", ls="-", lw=1.2,
                   label=f"late law: −1 + 1/(2α_S) = {late:.3f}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("teacher samples N (midpoint of each step of the grid)")
    ax.set_ylabel("local slope of min_n risk_t2s against N / log2 N", fontsize=9)
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="k", ls=":", lw=1,
                          label="derived crossover N_× (colour of its k†)"))
    ax.legend(handles=handles, fontsize=7, loc="lower right")  # the slopes rise to the right
    extra = f"late law not drawn: {scope}" if scope else ""
    return finish(fig, title(cube, "w2s_crossover", "Theorem 5: local slope of the minimal "
                             "T2S risk", at),
                  footer(cube, at, CROSSOVER_RULE, est, extra))


SPECS: tuple[FigureSpec, ...] = (
    FigureSpec(
        "w2s_crossover", crossover_planned, fig_w2s_crossover,
        caption=(
            "Local slope of the minimal T2S risk, min over n of risk_t2s, against the "
            "teacher's horizon N / log2 N, between neighbouring N, one line per k_dagger "
            "where it is a grid axis (lowdim target; the slice in the title has the most "
            "slopes). The optimum over n is the grid minimum refined by a cubic spline in "
            "log-log through it and up to three neighbours on each side (optima at the edge "
            "of the n range are left out); a grid of a quarter octave in n resolves the "
            "slopes to about 0.002, a doubling one leaves them jittering by a few "
            "hundredths. Dashed: Theorem 5's exponent 1/(alpha_T(2 alpha_S + 1)) - 1; solid: "
            "the late law -1 + 1/(2 alpha_S) derived in docs/science/theorem5.md (drawn where "
            "its scope holds); dotted verticals: the derived crossover N_x of each k_dagger, "
            "past which the late law holds. Over an intermediate range the slope passes near "
            "Theorem 5's value while the optimal student stops just after learning the "
            "k_dagger signal modes; past N_x it settles at the late value.")),
)
