"""Monte Carlo against the exact engine at every grid point where both ran."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from ktsweep.analysis.figures.common import FigureCube, FigureSpec, NoDataError, finish, new_figure

PARITY = ("risk_teacher", "risk_direct", "risk_t2s", "risk_ceiling", "der", "w2s_ratio")
"""Quantities compared in the parity figure (each has ``_se``)."""
_MARKERS = "osD^vP"


def parity_table(cube: FigureCube) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per quantity: (exact, Monte Carlo mean, Monte Carlo se) at every grid point where both
    estimators are ok and the standard error is positive (flattened in the cube's order)."""
    out = {}
    for name in PARITY:
        if not (cube.has(name) and cube.has(f"{name}_se")):
            continue
        ex, mc, se = cube.var(name, "exact"), cube.var(name, "mc"), cube.var(f"{name}_se")
        ok = (xr.ufuncs.isfinite(ex) & xr.ufuncs.isfinite(mc) & xr.ufuncs.isfinite(se)
              & (se > 0)).values
        if ok.any():
            out[name] = (ex.values[ok], mc.values[ok], se.values[ok])
    return out


def fig_mc_parity(cube: FigureCube) -> Figure:
    table = parity_table(cube)
    if not table:
        raise NoDataError("no grid point has both an exact and a Monte Carlo value")
    fig, (ax, az) = new_figure(ncols=2, width=5.0, height=4.6)
    zs = []
    lo, hi = np.inf, -np.inf
    for k, (name, (ex, mc, se)) in enumerate(table.items()):
        style = {"color": f"C{k}", "marker": _MARKERS[k % len(_MARKERS)]}
        ax.errorbar(ex, mc, yerr=se, ls="", ms=4, mfc="none", capsize=2, label=name, **style)
        z = (mc - ex) / se
        zs.append(z)
        jitter = (np.arange(z.size) % 7 - 3) * 0.04
        az.plot(z, np.full(z.size, k) + jitter, ls="", ms=4, mfc="none", **style)
        lo, hi = min(lo, ex.min(), mc.min()), max(hi, ex.max(), mc.max())
    log = lo > 0  # risks and ratios are positive: a log scale shows every decade
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
        span = [lo / 1.5, hi * 1.5]
    else:
        pad = 0.05 * (hi - lo if hi > lo else 1.0)
        span = [lo - pad, hi + pad]
    ax.plot(span, span, color="0.3", lw=1, ls="--", label="MC = exact")
    ax.set_xlabel("exact (expectation over data and noise)")
    ax.set_ylabel("Monte Carlo mean ± se")
    ax.set_title("values" + (" (log-log)" if log else ""), fontsize=9)
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
    reps = cube.layout.config.mc.replicates
    return finish(fig, f"Monte Carlo vs exact, every point where both exist\nsweep "
                  f"'{cube.name}'",
                  f"sweep '{cube.name}'; {reps} replicates; every grid point of the Monte "
                  "Carlo sub-grid (no slice)")


SPECS: tuple[FigureSpec, ...] = (
    FigureSpec(
        "mc_parity", lambda lay: "mc" in lay.methods and "exact" in lay.methods,
        fig_mc_parity,
        caption=(
            "Monte Carlo against the exact engine at every grid point where both ran (no "
            "slice): left, each quantity's Monte Carlo mean with its standard error against "
            "the exact expectation (log-log; on the dashed diagonal when they agree); right, "
            "the z-score (MC - exact) / se of each point. The two engines are independent "
            "(the exact one iterates the moment recursion of docs/science/exact.md, Monte "
            "Carlo runs the SGD itself), so about 95 % of z-scores within +-2 is the check "
            "that both are right; a shifted cloud is a bias (float32 round-off at small "
            "risks, too few replicates for the ratios der and w2s_ratio, whose se is a "
            "delta-method estimate).")),
)
