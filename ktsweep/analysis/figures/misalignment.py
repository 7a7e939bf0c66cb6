"""Misaligned feature bases: KD and W2S as the student's eigenbasis rotates away from the
teacher's, and Lemma 2's static alignment bias (docs/science/geometry.md)."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ktsweep.analysis.figures.common import (
    FigureCube,
    FigureSpec,
    choose_slice,
    estimated,
    finish,
    footer,
    need,
    new_figure,
    positive,
    sel,
    title,
)
from ktsweep.analysis.figures.maps import Cells, boundary

KEEP = ["angle", "alpha_s"]
MISALIGNMENT_RULE = "where der exists at the most cells, then the largest N and n, the middle"


def fig_misalignment(cube: FigureCube) -> Figure:
    """KD and W2S boundaries over (angle, α_S), and Lemma 2's bias against its closed form."""
    est = cube.estimator
    der_all = cube.var("der", est)
    at = choose_slice(cube, KEEP, [xr.ufuncs.isfinite(der_all).sum(KEEP)])
    der = need(sel(der_all, at).transpose(*KEEP).sortby(KEEP), "der")
    w2s_all = cube.maybe("w2s_ratio", est)
    w2s = (np.full(der.shape, np.nan) if w2s_all is None
           else sel(w2s_all, at).transpose(*KEEP).sortby(KEEP).values)
    x, y = np.asarray(der["angle"].values, float), np.asarray(der["alpha_s"].values, float)
    fig, (ax, bx) = new_figure(2, width=5.4)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.log2(positive(der).values)
    span = max(float(np.nanmax(np.abs(gain))) if np.isfinite(gain).any() else 1.0, 1e-3)
    mesh = ax.pcolormesh(x, y, np.ma.masked_invalid(gain).T, shading="nearest", cmap="RdBu_r",
                         norm=TwoSlopeNorm(vcenter=0.0, vmin=-span, vmax=span))
    fig.colorbar(mesh, ax=ax, label="log2 der (> 0: distillation beats direct training)")
    xc, yc = Cells.of(x, log=False), Cells.of(y, log=False)
    d = der.values
    handles = [h for h in (
        boundary(ax, xc, yc, d > 1.0, d < 1.0, "black", "der = 1 (KD boundary)"),
        boundary(ax, xc, yc, w2s < 1.0, w2s > 1.0, "darkgreen", "w2s_ratio = 1 (W2S boundary)"),
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
    bias = cube.maybe("alignment_bias")
    closed = cube.maybe("alignment_bias_closed")
    if bias is None or closed is None or not np.isfinite(sel(bias, at)).any():
        bx.text(0.5, 0.5, "alignment_bias not in the cube", ha="center", transform=bx.transAxes)
    else:
        first = {"alpha_s": der["alpha_s"].values[0]}
        b = sel(sel(bias, at), first).sortby("angle").values
        c = sel(sel(closed, at), first).sortby("angle").values
        bx.plot(x, c, color="0.3", label="closed form (pair rotation)")
        bx.plot(x, b, "o", mfc="none", color="C3", label="from the projectors")
        bx.set_xlabel("student basis rotation angle (degrees)")
        bx.set_ylabel("½ E‖Π_S Π_T^⊥ w*‖²  (excess risk, ½ convention)")
        bx.legend(fontsize=7)
    bx.set_title("Lemma 2: static alignment bias", fontsize=9)
    return finish(fig, title(cube, "misalignment", "Misaligned feature bases: where KD and "
                             "W2S survive", at),
                  footer(cube, at, MISALIGNMENT_RULE, est))


SPECS: tuple[FigureSpec, ...] = (
    FigureSpec(
        "misalignment", lambda lay: estimated(lay, *KEEP), fig_misalignment,
        caption=(
            "Left: the data-efficiency ratio der on a log2 scale over the rotation angle of the "
            "student's eigenbasis against the teacher's (mode pairs (1,2), (3,4), ...) and the "
            "student decay alpha_S, with the KD boundary der = 1 (black) and the W2S boundary "
            "w2s_ratio = 1 (green; circles: the T2S student beats its teacher). Right: Lemma "
            "2's static alignment bias (1/2) E||Pi_S Pi_T^perp w*||^2 computed from the "
            "projectors (circles) against its closed form in the angle (line); it is the part "
            "of the target outside the teacher's span that the student can represent but "
            "never learns from the teacher (docs/science/geometry.md).")),
)
