"""Per-mode pictures: which modes each run learns (spectral horizon) and where the T2S student
is more accurate than its teacher (spectral denoising)."""

from __future__ import annotations

from typing import Any

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
    estimated,
    finish,
    footer,
    new_figure,
    positive,
    sel,
    title,
)
from ktsweep.analysis.figures.params import untrained_over

RUNS = ("teacher", "direct", "t2s")
LEARNED = 0.5
"""A mode counts as learned when its risk is below this fraction of its untrained risk."""


def learned_horizon(mode_risk: np.ndarray, untrained: np.ndarray) -> int:
    """The measured horizon: the largest mode index i (1-based) whose risk is below
    :data:`LEARNED` × its untrained risk ½ e_i (0 when none is)."""
    with np.errstate(invalid="ignore"):
        ok = np.flatnonzero(np.asarray(mode_risk) < LEARNED * np.asarray(untrained))
    return int(ok[-1]) + 1 if ok.size else 0


def horizons(mode_risk: xr.DataArray, untrained: xr.DataArray) -> xr.DataArray:
    """:func:`learned_horizon` at every grid point (0 where no mode is learned)."""
    learned = mode_risk < LEARNED * untrained
    return (learned * learned["mode"]).max("mode")


def unequal_decays(cube: FigureCube) -> xr.DataArray:
    """1 where α_T ≠ α_S (teacher and direct student are different runs), else 0."""
    return (cube.ds["alpha_t"] != cube.ds["alpha_s"]).astype(int)


HORIZON_RULE = ("α_T ≠ α_S (at α_T = α_S teacher and direct student are one run), then "
                "where the runs' measured horizons are most distinct inside the spectrum "
                "(0 < horizon < d), then where the T2S horizon lies furthest right of the "
                "teacher's (Theorem 3's expansion), then the largest N and n, the middle of "
                "other axes")


def horizon_slice(cube: FigureCube, untrained: xr.DataArray) -> dict[str, Any]:
    est = cube.estimator
    hs = {r: horizons(cube.var(f"mode_{r}", est), untrained) for r in RUNS
          if cube.has(f"mode_{r}")}
    if not hs:
        return choose_slice(cube, [])
    d = xr.ufuncs.isfinite(untrained).sum("mode")
    inside = {r: (h > 0) & (h < d) for r, h in hs.items()}
    names = list(hs)
    distinct = sum((inside[a] & inside[b] & (hs[a] != hs[b])).astype(int)
                   for i, a in enumerate(names) for b in names[i + 1:])
    scores = [unequal_decays(cube), sum(v.astype(int) for v in inside.values())]
    if len(names) >= 2:
        scores.insert(1, distinct)
    if "t2s" in hs and "teacher" in hs:
        scores.append(hs["t2s"] - hs["teacher"])
    return choose_slice(cube, [], scores)


def _kstars(cube: FigureCube, at: dict[str, Any]) -> dict[str, int]:
    """Lemma 1's upper-bound cutoff of each drawn run, as the bound estimator stored it (the
    T2S student's is the n-sample student's, the ceiling run's, where both use one step)."""
    out: dict[str, int] = {}
    runs = {"teacher": "teacher", "direct": "direct", "t2s": "ceiling"}
    for run, stored in runs.items():
        da = cube.maybe(f"kstar_upper_{stored}")
        if da is None:
            continue
        if run == "t2s":
            g_s, g_c = cube.maybe("gamma0_s"), cube.maybe("gamma0_ceiling")
            if g_s is None or g_c is None or float(sel(g_s, at)) != float(sel(g_c, at)):
                continue
        k = float(sel(da, at))
        if np.isfinite(k):
            out[run] = int(k)
    return out


_KSTAR_STYLES = ("--", "-.", ":")


def fig_spectral_horizon(cube: FigureCube) -> Figure:
    untrained = untrained_over(cube.ds, cube.axes)
    at = horizon_slice(cube, untrained)
    est = cube.estimator
    mode = np.asarray(cube.ds["mode"].values, float)
    u = sel(untrained, at).values
    fig, (ax,) = new_figure()
    ax.plot(mode, positive(xr.DataArray(u)).values, color="0.6", lw=1, label="untrained ½ e_i")
    found: dict[str, int] = {}
    for run in RUNS:
        da = cube.maybe(f"mode_{run}", est)
        if da is None:
            continue
        y = positive(sel(da, at)).values
        if not np.isfinite(y).any():
            continue
        color, label, marker, style, width = RUN_STYLE[run]
        ax.plot(mode, y, style, color=color, lw=width, label=label)
        h = learned_horizon(y, u)
        found[run] = h
        if h:
            ax.plot(mode[h - 1], y[h - 1], marker, color=color, ms=9, mec="k", zorder=5,
                    label=f"{label}: learned up to i = {h}")
    if not found:
        raise NoDataError("per-mode risks are missing on this slice")
    kstars = {r: k for r, k in _kstars(cube, at).items() if r in found}
    by_value: dict[int, list[str]] = {}
    for run, k in kstars.items():
        if k:
            by_value.setdefault(k, []).append(RUN_STYLE[run][1])
    for i, (k, who) in enumerate(sorted(by_value.items())):
        ax.axvline(k, color="k", ls=_KSTAR_STYLES[i % 3], lw=1,
                   label=f"Lemma 1 k* = {k}: {', '.join(who)}")
    notes = [f"marker: last mode with risk < {LEARNED:g} × untrained"]
    zero = [RUN_STYLE[r][1] for r, k in kstars.items() if not k]
    if kstars:
        notes.append("k*: Lemma 1's upper-bound cutoff, log factors included "
                     "(docs/science/bounds.md), so it sits left of the visible knee")
    else:
        notes.append("no Lemma 1 k* drawn (the bound estimator did not run here)")
    if zero:
        notes.append(f"Lemma 1 k* = 0 (not drawn): {', '.join(zero)}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("mode index i (λ_i = i^−α)")
    ax.set_ylabel(f"per-mode {RISK_AXIS}")
    ax.legend(fontsize=6.5, loc="best")
    return finish(fig, title(cube, "spectral_horizon", "Spectral horizon: per-mode risk and "
                             "learned modes", at),
                  footer(cube, at, HORIZON_RULE, est, "; ".join(notes)))


DENOISED = 0.99
"""A mode counts as denoised where the T2S student's risk is below this fraction of its
teacher's (at least 1 % more accurate: a visible gap, not round-off)."""
DENOISING_RULE = ("α_T ≠ α_S, then where the most modes are denoised (T2S at least 1 % below "
                  "its teacher), then the largest N and n, the middle of other axes")


def fig_spectral_denoising(cube: FigureCube) -> Figure:
    est = cube.estimator
    teacher = positive(cube.var("mode_teacher", est))
    t2s = positive(cube.var("mode_t2s", est))
    ratio = t2s / teacher
    at = choose_slice(cube, [], [unequal_decays(cube), (ratio < DENOISED).sum("mode"),
                                 xr.ufuncs.isfinite(ratio).sum("mode")])
    r = sel(ratio, at).values
    ok = np.isfinite(r)
    if not ok.any():
        raise NoDataError("per-mode risks of teacher and T2S student are missing on this slice")
    mode = np.asarray(cube.ds["mode"].values, float)
    fig, (ax,) = new_figure()
    color, _, _, style, _ = RUN_STYLE["t2s"]
    ax.plot(mode, r, style, color=color, lw=1.6, label="T2S / teacher, per mode")
    direct = cube.maybe("mode_direct", est)
    if direct is not None:
        d = sel(positive(direct) / teacher, at).values
        d_color, _, _, d_style, _ = RUN_STYLE["direct"]
        ax.plot(mode, d, d_style, color=d_color, lw=1.2,
                label="direct / teacher, per mode (no teacher labels)")
    below = ok & (r < DENOISED)
    ax.fill_between(mode, r, 1.0, where=below, color=color, alpha=0.25,
                    label=f"denoised: T2S ≥ 1 % below its teacher ({int(below.sum())} of "
                          f"{int(ok.sum())} modes)")
    ax.axhline(1.0, color="0.3", lw=1, ls=":", label="T2S = teacher")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("mode index i")
    ax.set_ylabel("per-mode risk relative to the teacher")
    ax.legend(fontsize=7)
    verdict = ("no mode is denoised at this slice: the student inherits the teacher's "
               "errors mode by mode" if not below.any() else
               f"{int(below.sum())} of {int(ok.sum())} modes denoised")
    return finish(fig, title(cube, "spectral_denoising", "Spectral denoising: T2S error "
                             "relative to its teacher, per mode", at),
                  footer(cube, at, DENOISING_RULE, est, verdict))


SPECS: tuple[FigureSpec, ...] = (
    FigureSpec(
        "spectral_horizon", lambda lay: estimated(lay) and lay.config.outputs.modes,
        fig_spectral_horizon,
        caption=(
            "Per-mode excess risk of teacher, direct student and T2S student against the mode "
            "index (log-log), with the untrained error ½ e_i of each mode; each run has its "
            "own line style, so curves that coincide stay visible. A large marker on each "
            "curve is its measured horizon: the last mode whose risk is below half its "
            "untrained risk. Vertical lines are Lemma 1's cutoff k* as the bound estimator "
            "stored it (the upper bound's threshold 2 ln M log2 M / (gamma0 M), one line per "
            "distinct value, naming the runs that share it): its log factors put it well left "
            "of the visible knee, so it is the bound's conservative scale, not where learning "
            "stops. The slice (title) has alpha_T != alpha_S and the most distinct horizons "
            "inside the spectrum; the 'spectral horizon expansion' of Theorem 3 is the "
            "student's marker to the right of the teacher's.")),
    FigureSpec(
        "spectral_denoising", lambda lay: estimated(lay) and lay.config.outputs.modes,
        fig_spectral_denoising,
        caption=(
            "The T2S student's per-mode error divided by its teacher's, against the mode "
            "index, with the direct student's ratio for comparison. Shaded modes lie below 1: "
            "there the student is more accurate than the teacher that labelled its data "
            "('spectral denoising', the mechanism behind W2S, Theorem 5); the legend counts "
            "them. The slice (title) has alpha_T != alpha_S (at alpha_T = alpha_S and n = inf "
            "the ratio is 1 at every mode) and the most denoised modes.")),
)
