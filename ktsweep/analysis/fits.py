"""Exponent fits of the result cube against the power laws of model.md §5.

A *family* is one quantity against one sample-size axis (``N``, or ``n`` for the ceiling
student) with every other grid axis held at one of its values, for one method. Each family
gets a least-squares slope of log(quantity) against log(axis) on its asymptotic range, an
uncertainty, the exponent §5 predicts there and a verdict. Families fitted:

- ``teacher``, ``direct`` — ``risk_teacher``, ``risk_direct`` vs ``N`` (Lemma 1 rates).
- ``ceiling`` — ``risk_ceiling`` vs ``n`` (the student's direct rate, in its own samples).
- ``kd_limit``, ``kd_der`` — ``risk_t2s`` and ``der`` vs ``N`` at the largest ``n`` present
  (finite-``n`` stand-in for lim_n; Theorem 3, predicted only where α_S > α_T > 1+β; the notes
  say when n < N_max^{α_S/α_T}, i.e. the student cannot have reached its limit).
- ``w2s_*`` (lowdim target, Theorem 5) — the optimum over the ``n`` axis, or, without an ``n``
  axis, over the T2S learning-curve checkpoints (``n = step · batch_s``; the notes say which):
  ``risk_t2s`` at the optimum (``w2s_min_risk``), ``1 − pgr`` there (``w2s_gap``, ``n`` axis
  only: the curves carry no ceiling), ``n_opt`` against the paper's exponent
  (``w2s_nopt_paper``) and the audited one (``w2s_nopt_audited``), and the student cutoff
  implied by ``n_opt`` (``w2s_kstar_opt``, :func:`student_cutoff`). An optimum on the first or
  last available ``n`` is an *edge*: that ``N`` is left out of the fit, and a family with
  fewer than three interior optima is reported with verdict ``edge`` and no slope. Interior
  optima are refined between grid points (:func:`refine_optimum`).

Rules (also written on top of the Markdown table, :data:`RULES`): the fit range is the upper
half of the usable axis values (at least :data:`MIN_POINTS`). ``exact`` has no sampling
noise, so its error is the range sensitivity (largest slope change over: dropping the first
point, dropping the last point, using the upper two-thirds) plus the regression standard
error. ``mc`` error is a parametric bootstrap: each point is redrawn from N(mean, se)
(:data:`BOOTSTRAP_DRAWS` draws, seeded per family by :func:`family_seed`), refitted, and the
standard deviation of the slopes is reported. Verdict: ``consistent`` iff
``|slope − predicted| ≤ max(2 · slope_err, ATOL)`` with ``ATOL = 0.05`` covering the logs and
γ0 factors that §5 leaves out; otherwise ``inconsistent``; ``no prediction`` where §5 makes none.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ktsweep.analysis.cubeview import CubeView
from ktsweep.model import theory
from ktsweep.model.params import ParameterError, derive_seed
from ktsweep.model.quantities import step_size_variable
from ktsweep.model.spectra import cutoff_threshold, kstar_power

ATOL = 0.05
"""Absolute tolerance on an exponent for the log and γ0 factors §5 omits."""
MIN_POINTS = 3
BOOTSTRAP_DRAWS = 200
BOOTSTRAP_SEED = 0

COLUMNS = ("family", "quantity", "axis", "estimator", "fixed", "n_points", "range", "slope",
           "slope_err", "predicted", "difference", "verdict", "notes")

FAMILY_ORDER = ("teacher", "direct", "ceiling", "kd_limit", "kd_der", "w2s_min_risk",
                "w2s_gap", "w2s_nopt_paper", "w2s_nopt_audited", "w2s_kstar_opt")

FAMILY_TITLES = {
    "teacher": "Teacher risk vs N (Lemma 1 direct rate, alpha_T)",
    "direct": "Direct student risk vs N (Lemma 1 direct rate, alpha_S)",
    "ceiling": "Ceiling student risk vs n (Lemma 1 direct rate, alpha_S)",
    "kd_limit": "KD: T2S risk vs N at the largest n (Theorem 3 limit rate)",
    "kd_der": "KD: data-efficiency ratio der vs N (Theorem 3, kappa)",
    "w2s_min_risk": "W2S: min over n of the T2S risk vs N (Theorem 5)",
    "w2s_gap": "W2S: 1 - pgr at the optimal n vs N (Theorem 5)",
    "w2s_nopt_paper": "W2S: optimal n vs N, paper's exponent (Theorem 5 as stated)",
    "w2s_nopt_audited": "W2S: optimal n vs N, audited exponent n_opt ~ (k*_opt)^alpha_S",
    "w2s_kstar_opt": "W2S: student cutoff k* implied by n_opt vs N (Theorem 5)",
}

RULES = (
    "Each row fits log(quantity) = slope * log(axis) + c by least squares on the asymptotic "
    "range: the upper half of the usable axis values (at least 3 points; the range column "
    "gives it), with every other grid axis held at the values in the fixed column. "
    "Uncertainty for `exact` (no sampling noise) is the range sensitivity (largest change of "
    "the slope when dropping the first point, dropping the last point, or fitting the upper "
    "two-thirds) plus the regression standard error; for `mc` it is the standard deviation of "
    f"the slope over {BOOTSTRAP_DRAWS} parametric-bootstrap draws (each point redrawn from "
    "N(mean, se), seeded per family from a hash of its key). Verdict: `consistent` iff "
    "|slope - predicted| <= "
    f"max(2 slope_err, {ATOL}), the absolute {ATOL} covering the log and gamma0 factors "
    "model.md section 5 leaves out; `inconsistent` otherwise; `no prediction` where section 5 "
    "predicts nothing at that point (e.g. KD outside alpha_S > alpha_T > 1 + beta); `edge` where "
    "fewer than 3 W2S optima lie inside the swept n range (an optimum at the first or last n "
    "is never fitted). W2S optima: the grid minimum of risk_t2s over the n axis (or, without "
    "one, over the T2S learning-curve checkpoints), refined by the vertex of a parabola in "
    "log-log through it and its two neighbours; 1 - pgr is read at the grid minimum. KD rows "
    "use the largest n as a stand-in for n -> infinity. Points with status other than ok, "
    "and non-positive values, are not used. The notes give, for risk families, the slope "
    "against N / log2 N (the geometric schedule's effective horizon K = T / log2 T), which "
    "removes the leading log factor."
)


# ---------------------------------------------------------------------------------------
# Pure fitting on arrays
# ---------------------------------------------------------------------------------------
@dataclass
class Fit:
    """One power-law fit: slope of log y vs log x on ``x[used]``."""

    slope: float
    slope_err: float
    intercept: float
    x_used: np.ndarray
    notes: list[str] = field(default_factory=list)

    @property
    def n_points(self) -> int:
        return len(self.x_used)

    @property
    def range(self) -> str:
        return f"{_num(self.x_used[0])}..{_num(self.x_used[-1])}" if self.n_points else ""


def _num(v: float) -> str:
    v = float(v)
    return str(int(v)) if v == int(v) and abs(v) < 1e15 else f"{v:.4g}"


def loglog_slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares slope, intercept and slope standard error of log y vs log x."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    m = len(lx)
    if m < 2:
        return math.nan, math.nan, math.nan
    xc = lx - lx.mean()
    sxx = float(xc @ xc)
    slope = float(xc @ (ly - ly.mean()) / sxx)
    intercept = float(ly.mean() - slope * lx.mean())
    if m < 3:
        return slope, intercept, 0.0
    resid = ly - (intercept + slope * lx)
    se = math.sqrt(float(resid @ resid) / (m - 2) / sxx)
    return slope, intercept, se


def upper_range(m: int, fraction: float = 0.5, min_points: int = MIN_POINTS) -> slice:
    """The last ``max(min_points, ceil(fraction · m))`` of ``m`` sorted points."""
    k = min(m, max(min_points, math.ceil(fraction * m - 1e-9)))
    return slice(m - k, m)


def usable(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mask of points that can enter a log-log fit (finite, positive)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    with np.errstate(invalid="ignore"):
        return np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)


def _fit_range(x: Sequence[float], y: Sequence[float], min_points: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, slice] | None:
    """Usable points (x, y, mask into the input) and the asymptotic slice fitted on them."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = usable(x, y)
    xv, yv = x[ok], y[ok]
    if len(xv) < min_points:
        return None
    return xv, yv, ok, upper_range(len(xv), 0.5, min_points)


def fit_exact(x: Sequence[float], y: Sequence[float], min_points: int = MIN_POINTS) -> Fit | None:
    """Fit a noiseless series; error = range sensitivity + regression standard error.

    ``x`` must be increasing. Returns None with fewer than ``min_points`` usable points.
    """
    prep = _fit_range(x, y, min_points)
    if prep is None:
        return None
    xv, yv, _, main = prep
    m = len(xv)
    slope, intercept, se = loglog_slope(xv[main], yv[main])
    variants = [slice(main.start + 1, m), slice(main.start, m - 1),
                upper_range(m, 2.0 / 3.0, min_points)]
    spread = 0.0
    for v in variants:
        if v.stop - v.start >= 2 and (v.start, v.stop) != (main.start, main.stop):
            spread = max(spread, abs(loglog_slope(xv[v], yv[v])[0] - slope))
    return Fit(slope, spread + se, intercept, xv[main])


def fit_bootstrap(x: Sequence[float], y: Sequence[float], draws: np.ndarray,
                  min_points: int = MIN_POINTS) -> Fit | None:
    """Fit a noisy series (means ``y``); error = std of the slope over ``draws`` (draws × points).

    Draws with a non-positive or non-finite value in the fit range are dropped (counted in
    the notes).
    """
    prep = _fit_range(x, y, min_points)
    if prep is None:
        return None
    xv, yv, ok, main = prep
    slope, intercept, _ = loglog_slope(xv[main], yv[main])
    dv = np.asarray(draws, float)[:, ok][:, main]
    with np.errstate(invalid="ignore"):
        good = np.all(np.isfinite(dv) & (dv > 0), axis=1)
    lx = np.log(xv[main])
    xc = lx - lx.mean()
    slopes = (np.log(dv[good]) - np.log(dv[good]).mean(axis=1, keepdims=True)) @ xc / (xc @ xc)
    notes = []
    if (~good).sum():
        notes.append(f"{int((~good).sum())}/{len(good)} bootstrap draws non-positive, dropped")
    err = float(np.std(slopes, ddof=1)) if len(slopes) >= 2 else math.nan
    return Fit(slope, err, intercept, xv[main], notes)


def family_seed(*key: Any) -> int:
    """The bootstrap seed of one family row: a hash of its key (family, estimator, held
    values, stream) under :data:`BOOTSTRAP_SEED`, so a row's error bar does not depend on which
    rows were fitted before it."""
    return derive_seed(BOOTSTRAP_SEED, *key)


def normal_draws(mean: np.ndarray, se: np.ndarray, draws: int = BOOTSTRAP_DRAWS,
                 seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """Parametric bootstrap sample, shape (draws, *mean.shape): N(mean, se) per point."""
    rng = np.random.default_rng(seed)
    mean = np.asarray(mean, float)
    se = np.nan_to_num(np.asarray(se, float), nan=0.0)
    return mean + se * rng.standard_normal((draws, *mean.shape))


def verdict(slope: float, slope_err: float, predicted: float | None, atol: float = ATOL) -> str:
    """``consistent`` iff |slope − predicted| ≤ max(2·slope_err, atol); see :data:`RULES`."""
    if predicted is None or not np.isfinite(predicted):
        return "no prediction"
    if not np.isfinite(slope):
        return "no prediction"
    err = slope_err if np.isfinite(slope_err) else 0.0
    return "consistent" if abs(slope - predicted) <= max(2.0 * err, atol) else "inconsistent"


def optimum(values: np.ndarray) -> tuple[int, bool]:
    """Index of the minimum over the finite entries and whether it sits on their edge.

    Returns (-1, False) when no entry is finite.
    """
    v = np.asarray(values, float)
    finite = np.flatnonzero(np.isfinite(v))
    if len(finite) == 0:
        return -1, False
    j = int(finite[np.argmin(v[finite])])
    return j, j in (int(finite[0]), int(finite[-1]))


def refine_optimum(x: np.ndarray, y: np.ndarray, j: int) -> tuple[float, float]:
    """Interpolated minimum: vertex of the parabola through log y vs log x at j−1, j, j+1.

    A grid of sample sizes doubling per step resolves ``n_opt`` only to a factor 2; the vertex
    (kept within the two neighbours) gives a continuous ``n_opt`` and minimum. Returns the grid
    point itself at an edge, with a non-finite neighbour, or when the three points are not
    convex.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if j <= 0 or j >= len(x) - 1:
        return float(x[j]), float(y[j])
    with np.errstate(divide="ignore", invalid="ignore"):
        lx, ly = np.log(x[j - 1:j + 2]), np.log(y[j - 1:j + 2])
    if not (np.all(np.isfinite(lx)) and np.all(np.isfinite(ly))):
        return float(x[j]), float(y[j])
    a, b, c = np.polyfit(lx, ly, 2)
    if not a > 0:
        return float(x[j]), float(y[j])
    v = float(np.clip(-b / (2 * a), lx[0], lx[2]))
    return math.exp(v), math.exp(a * v * v + b * v + c)


def student_cutoff(n: float, alpha_s: float, gamma0: float, batch: int = 1) -> float:
    """k*_S implied by n samples: the continuous solution of λ_k = log2 T / (γ0 T).

    ``T = n / batch`` steps (at least 2), kept continuous because ``n`` is a refined optimum
    between grid points (rounding it up made a k* 1e-12 above 256 count 257 steps); this is
    Lemma 1's lower-bound cutoff ``max{k: λ_k > log2 T / (γ0 T)}`` without the rounding down to
    an integer, so that k* = (γ0 T / log2 T)^{1/α_S} ≍ (γ0 n / log n)^{1/α_S}. Steps rather
    than samples, because one step with batch B moves the mean as one single-sample step does.
    """
    T = max(n / batch, 2.0)
    return kstar_power(alpha_s, cutoff_threshold(T, gamma0, "lower"))


# ---------------------------------------------------------------------------------------
# Families from a cube
# ---------------------------------------------------------------------------------------
@dataclass
class Series:
    """One family's data: x, y (NaN where unusable), optional bootstrap draws, notes."""

    x: np.ndarray
    y: np.ndarray
    draws: np.ndarray | None = None
    edge: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


class _Cube(CubeView):
    """A cube for the fits: theory predictions and parameters at labelled grid values."""

    def predictions(self, values: dict[str, Any]) -> dict[str, float]:
        """theory.predictions there (exponents do not depend on the fitted axis' value)."""
        try:
            return theory.predictions(self.point(values))
        except ParameterError:
            return {}

    def param(self, values: dict[str, Any], name: str) -> Any:
        return getattr(self.point(values), name)


def _fixed_text(values: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return _num(v) if isinstance(v, int | float) and not isinstance(v, bool) else str(v)

    return ", ".join(f"{k}={fmt(v)}" for k, v in values.items()) or "(none)"


def _row(family: str, quantity: str, axis: str, method: str, fixed: str, series: Series,
         predicted: float | None, logcorr: bool = False) -> dict[str, Any] | None:
    """Fit one series and make its table row (None if too few usable points)."""
    x, y = series.x, series.y.copy()
    notes = list(series.notes)
    if series.edge is not None and series.edge.any():
        notes.append(f"optimum at the edge of the searched n range for {axis}="
                     + ",".join(_num(v) for v in x[series.edge]) + " (not fitted)")
        y[series.edge] = np.nan
        n_interior = int(usable(x, y).sum())
        if n_interior < MIN_POINTS:
            return {"family": family, "quantity": quantity, "axis": axis, "estimator": method,
                    "fixed": fixed, "n_points": n_interior, "range": "", "slope": math.nan,
                    "slope_err": math.nan,
                    "predicted": math.nan if predicted is None else predicted,
                    "difference": math.nan, "verdict": "edge", "notes": "; ".join(notes)}
    fit = fit_exact(x, y) if series.draws is None else fit_bootstrap(x, y, series.draws)
    if fit is None:
        return None
    notes = fit.notes + notes
    if logcorr:
        ok = usable(x, y)
        sel = ok & np.isin(x, fit.x_used)
        if sel.sum() >= 2 and np.all(x[sel] > 2):
            s = loglog_slope(x[sel] / np.log2(x[sel]), y[sel])[0]
            notes.append(f"slope vs {axis}/log2({axis}): {s:.3f}")
    pred = math.nan if predicted is None else float(predicted)
    return {"family": family, "quantity": quantity, "axis": axis, "estimator": method,
            "fixed": fixed, "n_points": fit.n_points, "range": fit.range, "slope": fit.slope,
            "slope_err": fit.slope_err, "predicted": pred,
            "difference": fit.slope - pred if np.isfinite(pred) else math.nan,
            "verdict": verdict(fit.slope, fit.slope_err, predicted), "notes": "; ".join(notes)}


_STUDENT_ONLY = ("alpha_s", "r_s", "batch_s", "schedule_s", "gamma0_s")
_TEACHER_ONLY = ("alpha_t", "r_t", "batch_t", "schedule_t", "horizon_t", "gamma0_t")
IRRELEVANT: dict[str, tuple[str, ...]] = {
    "teacher": ("n", "horizon_s", *_STUDENT_ONLY),
    "direct": ("n", "horizon_s", *_TEACHER_ONLY[1:]),  # alpha_t stays: it shapes the target
    "ceiling": ("N", *_TEACHER_ONLY[1:]),
}
"""Held axes a run does not depend on (one row, not one per value). The direct and ceiling
students do depend on alpha_t: the target's coefficients are given in teacher coordinates."""

SIMPLE_FAMILIES: tuple[tuple[str, str, str, str, bool], ...] = (
    # family, variable, axis, theory.predictions key, add the N/log2 N slope to the notes
    ("teacher", "risk_teacher", "N", "risk_teacher", True),
    ("direct", "risk_direct", "N", "risk_direct", True),
    ("ceiling", "risk_ceiling", "n", "risk_direct", True),
    ("kd_limit", "risk_t2s", "N", "risk_t2s_limit", True),
    ("kd_der", "der", "N", "der", False),
)


def _simple_families(cube: _Cube, rows: list[dict[str, Any]], skipped: list[int]) -> None:
    """teacher, direct (vs N), ceiling (vs n), kd_limit and kd_der (vs N at the largest n)."""
    for family, name, axis, key, logcorr in SIMPLE_FAMILIES:
        if axis not in cube.axes or len(cube.layout.axes[axis]) < MIN_POINTS or not cube.has(name):
            continue
        others = [a for a in cube.axes if a != axis]
        held = [a for a in others if a not in IRRELEVANT.get(family, ())]
        free = [a for a in others if a in IRRELEVANT.get(family, ())]
        x = np.asarray(cube.layout.axes[axis], float)
        last_n = cube.layout.axes["n"][-1] if "n" in cube.axes else None
        for method in cube.methods:
            data = _with_se(cube, name, method)
            for vals, sub in cube.slices(data, held):
                if family.startswith("kd") and "n" in held and vals["n"] != last_n:
                    continue  # KD limits: at the largest n only
                found = _first_usable(cube, sub, free, axis, x)
                if found is None:
                    skipped.append(1)
                    continue
                free_vals, y, se = found
                seed = family_seed(family, method, _fixed_text(vals))
                draws = None if se is None else normal_draws(y, se, seed=seed)
                series = Series(x, y, draws)
                pred = cube.predictions({**vals, **free_vals}).get(key)
                if family.startswith("kd"):
                    series.notes += _kd_notes(cube, vals, x)
                if family in ("direct", "ceiling"):
                    series.notes += _target_note(cube, vals)
                row = _row(family, name, axis, method, _fixed_text(vals), series, pred, logcorr)
                if row is not None:
                    rows.append(row)


def _first_usable(cube: _Cube, sub: xr.Dataset, free: Sequence[str], axis: str, x: np.ndarray
                  ) -> tuple[dict[str, Any], np.ndarray, np.ndarray | None] | None:
    """Along the axes a run ignores, the first of their values (config order) whose series
    along ``axis`` has enough usable points: (those values, y, se or None)."""
    for free_vals, line in cube.slices(sub, free):
        y = line["y"].transpose(axis).values.astype(float)
        if usable(x, y).sum() >= MIN_POINTS:
            se = line["se"].transpose(axis).values if "se" in line else None
            return free_vals, y, se
    return None


def _with_se(cube: _Cube, name: str, method: str) -> xr.Dataset:
    """``y``: the status-masked values of ``name`` for ``method``; ``se``: their Monte Carlo
    standard errors where the cube has them (mc only)."""
    data = {"y": cube.masked(name, method)}
    if method == "mc" and cube.has(f"{name}_se"):
        data["se"] = cube.ds[f"{name}_se"]
    return xr.Dataset(data)


def _target_note(cube: _Cube, vals: dict[str, Any]) -> list[str]:
    """The student's bias exponent when the target is defined in teacher coordinates."""
    try:
        p = cube.point(vals)
    except ParameterError:
        return []
    if p.alpha_s == p.alpha_t or p.target == "lowdim":
        return []
    bias = (1.0 + p.beta - p.alpha_t) / p.alpha_s
    return [f"target in teacher coordinates: student source exponent beta+alpha_S-alpha_T, "
            f"bias exponent (1+beta-alpha_T)/alpha_S = {bias:.3f}"]


def _kd_notes(cube: _Cube, vals: dict[str, Any], x: np.ndarray) -> list[str]:
    """Is the largest n large enough for the T2S student to be at its n → ∞ limit?"""
    try:
        at, as_, n = (cube.param(vals, k) for k in ("alpha_t", "alpha_s", "n"))
    except ParameterError:
        return []
    need = float(np.nanmax(x)) ** (as_ / at)
    if n < need:
        return [f"finite n={_num(n)} < N_max^(alpha_S/alpha_T)={need:.3g}: the student has "
                "not reached its n->inf limit at the largest N"]
    return []


def _w2s_families(cube: _Cube, rows: list[dict[str, Any]], skipped: list[int]) -> None:
    """Theorem 5 families from the optimum over n (axis) or over learning-curve steps."""
    if "N" not in cube.axes or len(cube.layout.axes["N"]) < MIN_POINTS or \
            not cube.has("risk_t2s"):
        return
    use_axis = "n" in cube.axes and len(cube.layout.axes["n"]) >= 3
    use_curve = not use_axis and cube.has("curve_t2s")
    if not (use_axis or use_curve):
        return
    others = [a for a in cube.axes if a not in ("N", "n")]
    xN = np.asarray(cube.layout.axes["N"], float)
    for method in cube.methods:
        if use_axis:
            inner = ["N", "n"]
            data = _with_se(cube, "risk_t2s", method)
            if cube.has("pgr"):
                pgr = _with_se(cube, "pgr", method)
                data["pgr"] = pgr["y"]
                if "se" in pgr:
                    data["pgr_se"] = pgr["se"]
            grid_n = np.asarray(cube.layout.axes["n"], float)
            where = ("optimum over the n axis (n_opt and the minimum interpolated: parabola in "
                     "log-log through the grid minimum and its neighbours)")
        else:
            inner = ["N", "step"]
            data = _with_se(cube, "curve_t2s", method)
            data["y"] = data["y"].where(data["step"] > 0)  # step 0 is the untrained student
            grid_n = None
            where = ("optimum over learning-curve checkpoints (curve_t2s, n = step * batch_s, "
                     "interpolated as on the n axis): early stopping of the run planned for "
                     "horizon_s, not a run of n_opt samples")
        for vals, sub in cube.slices(data, others):
            try:
                target = cube.param(vals, "target")
            except ParameterError:
                continue
            if target != "lowdim":
                continue
            tables = [_table(sub, k, inner) for k in ("y", "se", "pgr", "pgr_se")]
            _w2s_one(cube, rows, skipped, method, vals, xN, *tables, grid_n, where)


def _table(sub: xr.Dataset, name: str, dims: Sequence[str]) -> np.ndarray | None:
    """``sub[name]`` as a float array with dims in this order (None when absent)."""
    return sub[name].transpose(*dims).values.astype(float) if name in sub else None


def _w2s_one(cube: _Cube, rows, skipped, method, vals, xN, risk, risk_se, pgr, pgr_se,
             grid_n, where) -> None:
    """One W2S family group: ``risk`` is (N, n-or-step)."""
    nN = len(xN)
    batch_s = cube.param(vals, "batch_s")
    if grid_n is None:
        grid_n = np.asarray(cube.ds["step"].values, float) * batch_s
    j = np.full(nN, -1)
    edge = np.zeros(nN, bool)
    for i in range(nN):
        j[i], edge[i] = optimum(risk[i])
    have = j >= 0
    if have.sum() < MIN_POINTS:
        skipped.append(1)
        return
    rows_idx = np.arange(nN)
    jj = np.where(have, j, 0)
    n_opt, min_risk = np.full(nN, np.nan), np.full(nN, np.nan)
    for i in np.flatnonzero(have):
        n_opt[i], min_risk[i] = refine_optimum(grid_n, risk[i], j[i])
    gap = np.where(have, 1.0 - pgr[rows_idx, jj], np.nan) if pgr is not None else None
    alpha_s = cube.param(vals, "alpha_s")
    gamma0 = _gamma0_s(cube, vals)
    kstar = np.array([student_cutoff(n, alpha_s, gamma0, batch_s) if np.isfinite(n) else np.nan
                      for n in n_opt])
    # bootstrap: redraw the whole (N, n) table and redo the optimum
    draws = {}
    if risk_se is not None:
        rd = normal_draws(risk, risk_se, seed=family_seed("w2s", method, _fixed_text(vals),
                                                          "risk_t2s"))
        rd = np.where(np.isfinite(risk), rd, np.nan)
        jd = np.argmin(np.where(np.isfinite(rd), rd, np.inf), axis=2)
        draws["n"], draws["min"] = np.full(jd.shape, np.nan), np.full(jd.shape, np.nan)
        for b, i in itertools.product(range(jd.shape[0]), np.flatnonzero(have)):
            draws["n"][b, i], draws["min"][b, i] = refine_optimum(grid_n, rd[b, i], jd[b, i])
        draws["k"] = np.vectorize(lambda n: student_cutoff(n, alpha_s, gamma0, batch_s))(
            draws["n"])
        if pgr is not None:
            pd_ = normal_draws(pgr, pgr_se if pgr_se is not None else np.zeros_like(pgr),
                               seed=family_seed("w2s", method, _fixed_text(vals), "pgr"))
            draws["gap"] = 1.0 - np.take_along_axis(pd_, jd[..., None], axis=2)[..., 0]
    pred = cube.predictions(vals)
    fixed = _fixed_text(vals)
    notes = [where]
    if cube.param(vals, "sigma2") == 0:
        notes.append("sigma2=0: no label noise for the student to filter out")
    specs = [
        ("w2s_min_risk", "min risk_t2s", min_risk, draws.get("min"), "risk_t2s_min"),
        ("w2s_gap", "1 - pgr at grid n_opt", gap, draws.get("gap"), "one_minus_pgr"),
        ("w2s_nopt_paper", "n_opt", n_opt, draws.get("n"), "n_opt_paper"),
        ("w2s_nopt_audited", "n_opt", n_opt, draws.get("n"), "n_opt_audited"),
        ("w2s_kstar_opt", "k*_opt (from n_opt)", kstar, draws.get("k"), "kstar_opt"),
    ]
    new = []
    for family, quantity, y, d, key in specs:
        if y is None:
            continue
        extra = []
        if family == "w2s_gap" and np.any(np.isfinite(y) & (y <= 0)):
            extra.append("1 - pgr <= 0 at N=" + ",".join(_num(v) for v in xN[np.isfinite(y)
                                                                             & (y <= 0)])
                         + " (not usable in a log fit)")
        if family == "w2s_kstar_opt":
            extra.append(f"k* = (gamma0_s T / log2 T)^(1/alpha_S), T = n_opt / batch_s, "
                         f"gamma0_s={gamma0:.4g}")
        if method == "mc" and d is None:
            extra.append("no standard errors in the cube: exact-style error")
        s = Series(xN, y, d if method == "mc" else None, edge & have, notes + extra)
        if usable(xN, y).sum() < MIN_POINTS and not (edge & have).any():
            skipped.append(1)
            continue
        row = _row(family, quantity, "N", method, fixed, s, pred.get(key))
        if row is not None:
            new.append(row)
    paper = next((r for r in new if r["family"] == "w2s_nopt_paper"), None)
    audit = next((r for r in new if r["family"] == "w2s_nopt_audited"), None)
    if paper and audit and np.isfinite(paper["slope"]):
        closer = ("paper" if abs(paper["difference"]) < abs(audit["difference"]) else "audited")
        text = (f"data closer to the {closer} exponent (paper {paper['predicted']:.3f}, "
                f"audited {audit['predicted']:.3f})")
        for r in (paper, audit):
            r["notes"] = "; ".join(filter(None, [r["notes"], text]))
    rows.extend(new)


def _gamma0_s(cube: _Cube, vals: dict[str, Any]) -> float:
    """The T2S student's initial step actually used (cube variable), else from the spectrum."""
    used = step_size_variable("gamma0_s", cube.axes)
    if cube.has(used):
        at = {a: cube.layout.axes[a].index(v) for a, v in vals.items()}
        g = np.asarray(cube.ds[used].isel(at).values, float).reshape(-1)
        g = g[np.isfinite(g)]
        if len(g):
            return float(np.median(g))
    from ktsweep.model.spectra import resolve_gamma0, student_spectrum

    p = cube.point(vals)
    return resolve_gamma0(p.gamma0_s, student_spectrum(p))[0]


def fit_cube(ds: xr.Dataset) -> pd.DataFrame:
    """Every §5 family the cube's grid spans, one row per (family, method, held values).

    Families with fewer than :data:`MIN_POINTS` usable points are skipped; their number is
    in ``df.attrs['skipped']``.
    """
    cube = _Cube(ds)
    rows: list[dict[str, Any]] = []
    skipped: list[int] = []
    if cube.methods:
        _simple_families(cube, rows, skipped)
        _w2s_families(cube, rows, skipped)
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    if len(df):
        order = {f: i for i, f in enumerate(FAMILY_ORDER)}
        df = (df.assign(_o=df["family"].map(order))
              .sort_values(["_o", "estimator", "fixed"], kind="stable")
              .drop(columns="_o").reset_index(drop=True))
    df["n_points"] = df["n_points"].astype(int)
    df.attrs["skipped"] = len(skipped)
    df.attrs["name"] = cube.layout.name
    df.attrs["fixed"] = _fixed_text(cube.layout.fixed)
    tie = cube.layout.tie
    if tie:
        df.attrs["fixed"] += "; tied: " + ", ".join(f"{k} = {a}" for k, a in tie.items())
    return df


# ---------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------
def _cell(v: Any, digits: int = 3) -> str:
    if isinstance(v, float | np.floating):
        return "" if not np.isfinite(v) else f"{v:.{digits}f}"
    return str(v).replace("|", "\\|")


def to_markdown(df: pd.DataFrame) -> str:
    """A readable Markdown report: the rules, then one table per family."""
    lines = [f"# Exponent fits: {df.attrs.get('name', '')}", "",
             f"Fixed parameters: {df.attrs.get('fixed', '') or '(none)'}.", "", RULES, ""]
    if "skipped" in df.attrs:
        lines += [f"Families skipped for fewer than {MIN_POINTS} usable points: "
                  f"{df.attrs['skipped']}.", ""]
    if df.empty:
        lines.append("No family could be fitted: the grid needs an N (or n) axis with at least "
                     f"{MIN_POINTS} values and computed risks.")
        return "\n".join(lines) + "\n"
    counts = df.groupby("verdict").size()
    lines += ["Verdicts: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + ".", ""]
    head = ["quantity", "axis", "estimator", "fixed", "n", "range", "slope ± err", "predicted",
            "difference", "verdict", "notes"]
    for family in dict.fromkeys(df["family"]):
        sub = df[df["family"] == family]
        lines += [f"## {FAMILY_TITLES.get(family, family)}", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in sub.itertuples(index=False):
            slope = ("" if not np.isfinite(r.slope)
                     else f"{r.slope:.3f} ± {r.slope_err:.3f}")
            lines.append("| " + " | ".join([
                _cell(r.quantity), r.axis, r.estimator, _cell(r.fixed), str(r.n_points), r.range,
                slope, _cell(r.predicted), _cell(r.difference), r.verdict, _cell(r.notes),
            ]) + " |")
        lines.append("")
    return "\n".join(lines)


def write_fits(df: pd.DataFrame, csv_path: str | os.PathLike,
               md_path: str | os.PathLike) -> None:
    """Write the table as CSV and as Markdown (parents created)."""
    for p in (csv_path, md_path):
        Path(p).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(csv_path, index=False, float_format="%.6g")
    Path(md_path).write_text(to_markdown(df))

