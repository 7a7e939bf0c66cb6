"""Rates against the sample budget: the three runs' excess risks against N with the slopes of
docs/science/rates.md, and the distillation advantage der against the spectral gap."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ktsweep.analysis.figures.common import (
    RISK_AXIS,
    RUN_STYLE,
    FigureCube,
    FigureSpec,
    NoDataError,
    choose_slice,
    coincide,
    distinct_pairs,
    estimated,
    finish,
    fmt,
    footer,
    new_figure,
    plain_log_axis,
    positive,
    sel,
    title,
)
from ktsweep.analysis.figures.params import SAMPLE_AXES, over_parameters, params_at, predictions
from ktsweep.model.theory import exponent

RUNS = ("teacher", "direct", "t2s")
PREDICTION = {"teacher": "risk_teacher", "direct": "risk_direct", "t2s": "risk_t2s_limit"}
"""The theory.predictions key of each run's rate in N (T2S: Theorem 3's limit n → ∞)."""
SLOPE_SHIFT = 0.5
"""Predicted-slope lines are drawn at this factor below the curve they are anchored to, so a
correct prediction runs parallel to its curve instead of hiding under it."""

RISK_RULE = ("where the three curves are distinct (no two within 10 % at every N), then "
             "where theory says most (the teacher's and direct student's rates, Theorem 3's "
             "KD regime α_S > α_T, the T2S limit rate at n = ∞), then "
             "where the T2S student beats the direct one (der > 1) at the most N, then where "
             "Monte Carlo has the most points along N, then the largest n, the middle of "
             "other axes")


def theory_count(cube: FigureCube, keep: list[str]) -> xr.DataArray:
    """Per held slice: what theory says there: a point for each of the teacher's and the
    direct student's predicted rates, one for Theorem 3's KD regime (α_S > α_T > 1 + β),
    and one for the T2S limit rate where it can be drawn (n = ∞)."""
    axes = [a for a in cube.held(keep) if a not in SAMPLE_AXES]
    rows = over_parameters(cube.ds, axes, predictions)
    shape = [len(cube.labels(a)) for a in axes]
    runs = np.array([sum(PREDICTION[r] in pred for r in ("teacher", "direct"))
                     for _, pred in rows]).reshape(shape)
    kd = np.array([int(PREDICTION["t2s"] in pred) for _, pred in rows]).reshape(shape)
    coords = {a: cube.labels(a) for a in axes}
    count = xr.DataArray(runs + kd, coords=coords, dims=axes)
    regime = xr.DataArray(kd, coords=coords, dims=axes)
    if "n" in cube.held(keep):
        return count + regime * np.isinf(cube.ds["n"]).astype(int)
    return count + regime * int(at_limit(cube, {}))


def at_limit(cube: FigureCube, at: dict[str, Any]) -> bool:
    """Whether the slice ``at`` lies at n = ∞ (a label of the n axis, or the fixed n)."""
    n = params_at(cube.ds, at).n
    return n is not None and bool(np.isinf(n))


def risk_slice(cube: FigureCube, keep: list[str]) -> dict[str, Any]:
    """The held labels of risk_vs_N (:data:`RISK_RULE`)."""
    est = cube.estimator
    curves = [cube.var(f"risk_{r}", est) for r in RUNS if cube.has(f"risk_{r}")]
    scores = []
    if len(curves) >= 2:
        scores.append(distinct_pairs(curves, keep))
    scores.append(theory_count(cube, keep))
    if cube.has("der"):
        scores.append((cube.var("der", est) > 1).sum(keep))
    if "mc" in cube.estimators and cube.has("risk_teacher"):
        scores.append(xr.ufuncs.isfinite(cube.var("risk_teacher", "mc")).sum(keep))
    return choose_slice(cube, keep, scores)


def fig_risk_vs_n(cube: FigureCube) -> Figure:
    keep = ["N"]
    at = risk_slice(cube, keep)
    N = np.asarray(cube.labels("N"), float)
    pred = predictions(params_at(cube.ds, at))
    limit = at_limit(cube, at)
    fig, (ax,) = new_figure()
    drawn: dict[str, np.ndarray] = {}
    mc_at: set[float] = set()
    for run in RUNS:
        name = f"risk_{run}"
        if not cube.has(name):
            continue
        color, label, marker, _, width = RUN_STYLE[run]
        if "exact" in cube.estimators:
            y = positive(sel(cube.var(name, "exact"), at)).values
            if np.isfinite(y).any():
                ax.plot(N, y, "-", marker=marker, ms=4 + width, mfc="none", lw=width,
                        color=color, label=f"{label} (exact)")
                drawn[run] = y
        if "mc" in cube.estimators:
            y = positive(sel(cube.var(name, "mc"), at)).values
            se = cube.maybe(f"{name}_se")
            if np.isfinite(y).any():
                ax.errorbar(N, y, yerr=None if se is None else sel(se, at).values, fmt=marker,
                            ms=5, color=color, mec="k", mew=0.6, capsize=2,
                            label=f"{label} (MC mean ± se)", zorder=5)
                mc_at |= set(N[np.isfinite(y)].tolist())
                drawn.setdefault(run, y)
        ref = drawn.get(run)
        slope = exponent(pred, PREDICTION[run])
        if run == "t2s" and not limit:
            slope = None  # Theorem 3's rate is the limit n → ∞
        if ref is None or slope is None:
            continue
        ok = np.flatnonzero(np.isfinite(ref))
        if len(ok) >= 2:
            k = ok[-1]
            ax.plot(N[ok], SLOPE_SHIFT * ref[k] * (N[ok] / N[k]) ** slope, ":", color=color,
                    lw=1.3, label=f"{label}: predicted slope {slope:.3f}")
    if not drawn:
        raise NoDataError("risk_teacher / risk_direct / risk_t2s are all missing on this slice")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("teacher samples N")
    ax.set_ylabel(RISK_AXIS)
    notes = [f"dotted: docs/science/rates.md slopes, drawn ×{SLOPE_SHIFT:g} below the curve "
             "they are anchored to (its largest N)"]
    same = [f"{RUN_STYLE[a][1]} and {RUN_STYLE[b][1]}" for a, b in itertools.combinations(
        drawn, 2) if coincide(drawn[a], drawn[b])]
    handles, _ = ax.get_legend_handles_labels()
    if same:
        text = "coincide here: " + "; ".join(same) + " (markers show each)"
        handles.append(Line2D([], [], ls="", label=text))
        notes.append(text)
    ax.legend(handles=handles, fontsize=7)
    if "mc" in cube.estimators:
        where = (f"Monte Carlo at N = {', '.join(fmt(x) for x in sorted(mc_at))}" if mc_at
                 else "no Monte Carlo point on this slice")
        notes.append(f"{where} (mc.subgrid / mc.stride of the config; mc_parity compares "
                     "every point)")
    return finish(fig, title(cube, "risk_vs_N", "Excess risk vs N", at),
                  footer(cube, at, RISK_RULE, None, "; ".join(notes)))


DER_RULE = ("the largest n (n = ∞ where swept: Theorem 3's limit), then where der > 1 at the "
            "most points (where KD shows), then where der exists at the most points, then "
            "the largest N, the middle of other axes")


def fig_der_vs_dalpha(cube: FigureCube) -> Figure:
    keep = ["alpha_t", "alpha_s"] if "alpha_t" in cube.axes else ["alpha_s"]
    der = cube.var("der")
    allow = {"n": [max(cube.labels("n"))]} if "n" in cube.held(keep) else None
    at = choose_slice(cube, keep, [(der > 1).sum(keep), xr.ufuncs.isfinite(der).sum(keep)],
                      allow)
    a_s = np.asarray(cube.labels("alpha_s"), float)
    a_ts = (cube.labels("alpha_t") if "alpha_t" in keep
            else [params_at(cube.ds, at).alpha_t])
    fig, (ax,) = new_figure()
    drawn = False
    for i, a_t in enumerate(a_ts):
        sub = dict(at, alpha_t=a_t) if "alpha_t" in keep else at
        color = f"C{i % 10}"
        for est in ("exact", "mc"):
            if est not in cube.estimators:
                continue
            y = sel(cube.var("der", est), sub).values
            if not np.isfinite(y).any():
                continue
            label = f"α_T = {fmt(a_t)} ({est})"
            if est == "mc":
                se = cube.maybe("der_se")
                ax.errorbar(a_s - a_t, y, yerr=None if se is None else sel(se, sub).values,
                            fmt="s", color=color, ms=5, capsize=2, mfc="none", label=label)
            else:
                ax.plot(a_s - a_t, y, "-o", color=color, ms=3.5, label=label)
            drawn = True
    if not drawn:
        raise NoDataError("der is missing on this slice")
    ax.axhline(1.0, color="0.4", lw=0.8, ls=":")
    ax.axvline(0.0, color="0.8", lw=0.8)
    ax.set_yscale("log")
    plain_log_axis(ax.yaxis)
    ax.set_xlabel("spectral gap α_S − α_T")
    ax.set_ylabel("data-efficiency ratio der = R_direct / R_T2S")
    ax.legend(fontsize=7, ncols=2)
    return finish(fig, title(cube, "der_vs_dalpha", "Distillation advantage vs spectral gap",
                             at),
                  footer(cube, at, DER_RULE, None, "der > 1: KD beats direct training"))


RISK_VS_N = FigureSpec(
    "risk_vs_N", lambda lay: estimated(lay, "N"), fig_risk_vs_n,
    caption=(
        "Excess risks of the teacher, the directly trained student and the "
        "teacher-to-student (T2S) student against the teacher sample size N (log-log; "
        "lines exact, each run with its own marker and width so that curves that "
        "coincide stay visible, filled points Monte Carlo mean ± standard error where "
        "the config's Monte Carlo sub-grid meets the slice). Dotted lines have the slopes "
        "of docs/science/rates.md, drawn at half the value of the curve they belong to at "
        "its largest N (parallel to it when the prediction holds): Lemma 1 rates for "
        "teacher and direct student, Theorem 3's limit rate for T2S (at n = inf, where "
        "alpha_S > alpha_T > 1 + beta). The slice (title) is one where the three curves "
        "are distinct and theory predicts the most slopes: at alpha_S = alpha_T the "
        "teacher and the direct student are the same run."))
DER_VS_DALPHA = FigureSpec(
    "der_vs_dalpha", lambda lay: estimated(lay, "alpha_s"), fig_der_vs_dalpha,
    caption=(
        "Data-efficiency ratio der = risk_direct / risk_t2s (log scale) against the "
        "spectral gap alpha_S - alpha_T, one line per alpha_T, at the largest n (n = inf "
        "where swept: Theorem 3 is a statement about the limit n -> inf) and, among the "
        "other held axes, where der > 1 at the most points (title; paper Fig. 2b is the "
        "kd_fig2b config). Theorem 3 predicts a distillation advantage der > 1 growing "
        "with the gap when alpha_S > alpha_T > 1 + beta."))
