"""Analytic bounds against the exact risk: Lemma 1's lower and upper bounds for teacher and
direct student, Theorem 1's transfer bound for the T2S student."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from ktsweep.analysis.figures.common import (
    RISK_AXIS,
    RUN_STYLE,
    FigureCube,
    FigureSpec,
    NoDataError,
    choose_slice,
    finish,
    footer,
    new_figure,
    positive,
    sel,
    title,
)
from ktsweep.analysis.figures.params import params_at, untrained_modes
from ktsweep.model.cubespec import Flag

PANELS = (("teacher", "bound_lower_teacher", "bound_upper_teacher", "sandwich_teacher",
           "Lemma 1"),
          ("direct", "bound_lower_direct", "bound_upper_direct", "sandwich_direct", "Lemma 1"),
          ("t2s", None, "bound_t2s", "bound_t2s_holds", "Theorem 1 transfer"))
"""Per panel: the run, its lower and upper bound variables, the flag comparing the exact risk
with them, and the theorem."""
BOUND_RULE = ("where the proofs' step condition holds at the most N, then where the transfer "
              "bound exists at the most N (finite n), then where Lemma 1's bounds exist at the "
              "most N, then the largest n, the middle of other axes")
VIOLATION = {"t2s": "exact above the bound", "teacher": "exact outside [lower, upper]",
             "direct": "exact outside [lower, upper]"}


def bound_slice(cube: FigureCube) -> dict:
    keep = ["N"]
    scores = []
    for name in ("step_condition",):
        if cube.has(name):
            scores.append((cube.var(name) == Flag.YES).sum(keep))
    for name in ("bound_t2s", "bound_upper_teacher"):
        if cube.has(name):
            scores.append(xr.ufuncs.isfinite(cube.var(name)).sum(keep))
    return choose_slice(cube, keep, scores)


def fig_bound_sandwich(cube: FigureCube) -> Figure:
    at = bound_slice(cube)
    N = np.asarray(cube.labels("N"), float)
    fig, axs = new_figure(ncols=3, width=4.5, height=5.0)
    cond = sel(cube.var("step_condition"), at).values if cube.has("step_condition") \
        else np.full(len(N), Flag.UNDETERMINED)
    edges = np.sqrt(N[1:] * N[:-1]) if len(N) > 1 else np.array([])
    lo_edge = np.concatenate([[N[0] / 1.3], edges])
    hi_edge = np.concatenate([edges, [N[-1] * 1.3]])
    untrained = float(np.sum(untrained_modes(params_at(cube.ds, at))))
    exact = "exact" in cube.estimators
    drawn = False
    notes: list[str] = []
    for ax, (run, lower, upper, flag, which) in zip(axs, PANELS, strict=True):
        color, label, marker, _, _ = RUN_STYLE[run]
        holds = np.flatnonzero(cond == Flag.YES)
        for i in holds:
            ax.axvspan(lo_edge[i], hi_edge[i], color="0.9", lw=0,
                       label="step condition holds" if i == holds[0] else None)
        ax.axhline(untrained, color="0.55", lw=1, ls=":", label="untrained risk ½ Σ e_i")
        lo = positive(sel(cube.var(lower), at)).values if lower and cube.has(lower) else None
        up = positive(sel(cube.var(upper), at)).values if cube.has(upper) else None
        if lo is not None and np.isfinite(lo).any():
            ax.plot(N, lo, "v-", color="0.4", ms=4, label="lower bound (App. A)")
            drawn = True
        if up is not None and np.isfinite(up).any():
            ax.plot(N, up, "^-", color="k", ms=4, label=f"upper bound ({which})")
            drawn = True
            if run != "t2s" and np.nanmin(up) > untrained:
                ax.text(0.03, 0.97, "upper bound above the untrained risk:\nvacuous at "
                        "these sizes (corrections.md)", transform=ax.transAxes,
                        fontsize=6, va="top")
        else:
            ax.text(0.5, 0.5, f"no {which} bound at this slice", transform=ax.transAxes,
                    ha="center", fontsize=7, color="0.4")
        if exact and cube.has(f"risk_{run}"):
            y = positive(sel(cube.var(f"risk_{run}", "exact"), at)).values
            if np.isfinite(y).any():
                ax.plot(N, y, "-", marker=marker, color=color, ms=4, label="exact")
                compared = np.isfinite(y)
                for bound in (lo, up):
                    if bound is not None:
                        compared &= np.isfinite(bound)
                if up is None:
                    compared[:] = False
                if cube.has(flag):
                    bad = compared & (sel(cube.var(flag), at).values == Flag.NO)
                    if bad.any():
                        ax.plot(N[bad], y[bad], "x", color="red", ms=9, mew=1.6,
                                label=VIOLATION[run])
                        notes.append(f"{label}: {VIOLATION[run]} at {int(bad.sum())} of "
                                     f"{int(compared.sum())} N with a bound")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("teacher samples N")
        ax.set_ylabel(RISK_AXIS)
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=6, loc="lower left")
    if not drawn:
        raise NoDataError("bound variables are missing on this slice")
    n_cond = int((cond == Flag.YES).sum())
    notes.insert(0, f"the step condition holds at {n_cond} of {len(N)} N" if n_cond else
                 "the step condition holds at no N shown: no bound is guaranteed here")
    return finish(fig, title(cube, "bound_sandwich", "Bounds vs exact risk "
                             "(lower ≤ exact ≤ upper?)", at),
                  footer(cube, at, BOUND_RULE, "bound" + (" + exact" if exact else ""),
                         "; ".join(notes)))


SPECS: tuple[FigureSpec, ...] = (
    FigureSpec(
        "bound_sandwich", lambda lay: "bound" in lay.methods and "N" in lay.axes,
        fig_bound_sandwich,
        caption=(
            "Analytic bounds against N at a slice where the proofs' step condition holds "
            "(title; shaded N satisfy it) and the transfer bound exists (finite n): the "
            "lower bound (paper App. A), the exact expected risk and the upper bound "
            "(Lemma 1) for teacher and direct student, and the Theorem 1 transfer upper bound "
            "beside the exact T2S risk; the dotted line is the untrained risk. A Lemma 1 "
            "upper bound above the untrained risk is vacuous at these sizes (its log factors "
            "leave k* near 0, docs/science/corrections.md). Red crosses mark N where the "
            "exact risk falls outside its bounds (sandwich_* or bound_t2s_holds = no), only "
            "where the bound exists; the theorems promise nothing outside their step "
            "condition and batch-1 scope. 'lower <= exact <= upper' is a measured outcome, "
            "not an assumption.")),
)
