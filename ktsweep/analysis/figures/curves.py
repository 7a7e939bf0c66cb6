"""Learning curves of the T2S student: its excess risk after each number of SGD steps."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ktsweep.analysis.figures.common import (
    RISK_AXIS,
    FigureCube,
    FigureSpec,
    NoDataError,
    choose_slice,
    estimated,
    finish,
    fmt,
    footer,
    new_figure,
    positive,
    sel,
    title,
)

CURVE_RULE = ("a finite n (a curve has its checkpoints up to n), where the curve has an "
              "early-stopping minimum below the teacher's final risk (W2S with a finite "
              "optimal n), then where its minimum lies furthest below the teacher's risk, "
              "then where the curves are longest, then the largest n, the middle of other "
              "axes")
EARLY = 0.01
"""A minimum counts as an early-stopping point when it lies this fraction below the final
risk."""
MC_EVERY = 3
"""Monte Carlo points are drawn at every third checkpoint, so the exact line stays readable."""


def fig_t2s_curves(cube: FigureCube) -> Figure:
    lines = ["k_dagger"] if "k_dagger" in cube.axes else []
    est = cube.estimator
    raw = cube.var("curve_t2s", est)
    curve = positive(raw.where(raw["step"] > 0))
    teacher = cube.var("risk_teacher", est)
    low = curve.min("step")
    with np.errstate(divide="ignore", invalid="ignore"):
        dip = xr.ufuncs.log(teacher / low)
    early = (low < (1 - EARLY) * cube.var("risk_t2s", est)) & (low < teacher)
    length = xr.ufuncs.isfinite(curve).sum("step")
    allow = None
    if "n" in cube.held(lines):
        allow = {"n": [v for v in cube.labels("n") if np.isfinite(v)] or cube.labels("n")}
    at = choose_slice(cube, lines, [(length >= 2).sum(lines), early.sum(lines),
                                    dip.max(lines), length.sum(lines)], allow)
    steps = np.asarray(cube.ds["step"].values, float)
    fig, (ax,) = new_figure()
    values = cube.labels("k_dagger") if lines else [None]
    drawn = drew_mc = False
    notes = []
    for i, kd in enumerate(values):
        sub = dict(at, k_dagger=kd) if lines else at
        y = sel(curve, sub).values
        if np.isfinite(y).sum() < 2:
            continue
        color = f"C{i % 10}"
        label = f"k† = {fmt(kd)}" if kd is not None else "T2S student (exact)" \
            if est == "exact" else f"T2S student ({est})"
        ax.plot(steps, y, "-", color=color, lw=1.6, label=label)
        se_all = cube.maybe("curve_t2s_se")
        if est == "mc" and se_all is not None:
            se = sel(se_all, sub).values
            ax.fill_between(steps, y - se, y + se, color=color, alpha=0.2)
        if est != "mc" and "mc" in cube.estimators:
            y_mc = sel(positive(cube.var("curve_t2s", "mc")), sub).values
            pick = np.isfinite(y_mc) & (steps > 0) & (np.arange(steps.size) % MC_EVERY == 0)
            if pick.any():
                err = None if se_all is None else sel(se_all, sub).values[pick]
                ax.errorbar(steps[pick], y_mc[pick], yerr=err, fmt="o", ms=3.5, color=color,
                            mec="k", mew=0.5, capsize=2, lw=0.8)
                drew_mc = True
        j = int(np.nanargmin(y))
        ax.plot(steps[j], y[j], "v", color=color, ms=9, mec="k", zorder=5)
        rt = float(sel(teacher, sub).values)
        stopped = bool(sel(early, sub).values)
        if np.isfinite(rt):
            ax.axhline(rt, color=color, ls=":", lw=1.2)
            ratio = y[j] / rt
            where = "an early stop" if stopped else "the last step"
            notes.append(("" if kd is None else f"k† = {fmt(kd)}: ")
                         + f"minimum {ratio:.3g} × the teacher's risk, at {where} "
                         f"({fmt(steps[j])})" + (" (W2S with a finite optimal n)"
                                                 if stopped else ""))
        drawn = True
    if not drawn:
        raise NoDataError("curve_t2s is missing on this slice (curves switched off or not "
                          "computed)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("student SGD steps")
    ax.set_ylabel(f"T2S {RISK_AXIS}")
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="k", ls="", marker="v", mec="k",
                       label="minimum (early stop)"),
                Line2D([], [], color="k", ls=":", label="teacher's final risk")]
    if drew_mc:
        handles.append(Line2D([], [], color="k", ls="", marker="o", ms=3.5,
                              label="Monte Carlo mean ± se"))
    ax.legend(handles=handles, fontsize=7)
    return finish(fig, title(cube, "t2s_curves", "T2S learning curves", at),
                  footer(cube, at, CURVE_RULE, est, "; ".join(notes)))


SPECS: tuple[FigureSpec, ...] = (
    FigureSpec(
        "t2s_curves", lambda lay: estimated(lay) and lay.config.outputs.curves, fig_t2s_curves,
        caption=(
            "Learning curves of the T2S student: excess risk after each number of SGD steps, "
            "one line per k_dagger when it is a grid axis (paper Fig. 3a with the w2s_fig3a "
            "config), the minimum (early-stopping point) marked, the teacher's final risk "
            "dotted. A minimum below the teacher's risk is weak-to-strong generalisation with "
            "a finite optimal n (Theorem 5). The slice (title) is a finite n, where the "
            "minimum lies furthest below the teacher's risk; the footer gives the ratio.")),
)
