"""Exponent fits of the result cube against the power laws of docs/science/rates.md.

A *family* is one quantity against one sample-size axis (``N``, or ``n`` for the ceiling
student) with every other grid axis held at one of its values, for one method. Each family
gets a least-squares slope of log(quantity) against log(axis) on its asymptotic range, an
uncertainty, the exponent §5 predicts there and a verdict. Families fitted:

- ``teacher``, ``direct`` — ``risk_teacher``, ``risk_direct`` vs ``N`` (Lemma 1 rates).
- ``ceiling`` — ``risk_ceiling`` vs ``n`` (the student's direct rate, in its own samples).
- ``kd_limit``, ``kd_der`` — ``risk_t2s`` and ``der`` vs ``N`` in the limit n → ∞ (Theorem 3,
  predicted only where α_S > α_T > 1+β): the grid's ``n = inf`` points, or for ``exact`` the
  closed-form limit of the exact engine where the grid's ``n`` is finite (:func:`_kd_limit`);
  Monte Carlo rows use the largest ``n`` and the notes say when n < N_max^{α_S/α_T}.
- ``w2s_*`` (lowdim target, Theorem 5) — the optimum over the ``n`` axis, or, without an ``n``
  axis, over the T2S learning-curve checkpoints (``n = step · batch_s``; the notes say which):
  ``risk_t2s`` at the optimum (``w2s_min_risk``), ``w2s_ratio`` there (``w2s_gap``: Theorem
  5's 1 − PGR, whose proof takes the ceiling's risk as zero; ``n`` axis only), ``n_opt``
  against the paper's exponent (``w2s_nopt_paper``) and the audited one
  (``w2s_nopt_audited``), and the student cutoff implied by ``n_opt`` (``w2s_kstar_opt``,
  :func:`student_cutoff`). An optimum on the first or last available ``n`` is an *edge*:
  that ``N`` is left out of the fit, and a family with fewer than three interior optima is
  reported with verdict ``edge`` and no slope. Interior optima are refined between grid
  points (:func:`refine_optimum`).

Rules (also written on top of the Markdown table, :data:`RULES`): each family is fitted
against the effective horizon of its run's schedule (:func:`effective_horizon`), the raw-axis
slope kept as a column; a family is judged only where its cutoff k* fits well inside d
(:data:`FINITE_D_SHARE`) and its local slopes have stopped drifting over the last
:data:`DRIFT_OCTAVES` octaves (:func:`drift`); the tolerance is relative to the prediction plus
twice the fit's own error (:func:`tolerance`). The order of the verdicts is :func:`verdict`'s.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Sequence
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

RTOL = 0.1
"""Relative tolerance on an exponent: the slope may miss the prediction by this fraction of it
(the constants and γ0 factors §5 omits move a finite-range slope by a few per cent)."""
ATOL = 0.01
"""Floor of the tolerance, for exponents near zero (e.g. a small KD exponent κ)."""
DRIFT_OCTAVES = 3
"""The convergence window: local slopes over the last this many octaves of the axis."""
DRIFT_SHARE = 0.5
"""Converged iff the local slopes over the window spread by at most this share of the
tolerance: a slope still moving faster would leave the tolerance within a few more octaves."""
FINITE_D_SHARE = 0.05
"""Axis values where the truncation at d (or the rank) removes this share of the
rate-setting tail are left out of a rate fit, and a fit with fewer than MIN_POINTS values
below it is refused (`finite d`). The share at a value is (k*/d)^(α_T − 1 − β) of the
target energy beyond k* (the bias tail), with that value's k*. Past it the truncated
spectrum, not the power law, shapes the risk (at d = 200, α = 2, N = 2^14 it is 0.094 and the
slope is 0.07 steeper than at d = 2000). For the lowdim target the rate is the variance's,
which counts the modes up to k* and a tail beyond it that falls the faster the larger the
run's α: the share is (k*/d)^max(α − 1, 1) with the run's own α. Measured against d = 6000 (teacher,
k† = 3, σ² = 1, N = 2^8…2^28): at α = 2 the slope is 0.009 off where k*/d = 0.13 and 0.05
off at 0.25, so k*/d itself must stay below 0.05; at α = 3 it is 0.003 off at k*/d = 0.32.
(k*/d alone, the rule before, cut α = 3 runs at N = 2^21 for d = 1000, hiding the late
range where Theorem 5's exponents move: docs/science/corrections.md.)"""
MIN_POINTS = 3
BOOTSTRAP_DRAWS = 200
BOOTSTRAP_SEED = 0

COLUMNS = ("family", "quantity", "axis", "estimator", "fixed", "n_points", "range", "horizon",
           "slope", "slope_err", "slope_raw", "drift", "truncation", "predicted", "tolerance",
           "difference", "verdict", "notes")

VERDICTS = ("consistent", "inconsistent", "not asymptotic", "finite d", "edge",
            "no prediction")

FAMILY_ORDER = ("teacher", "direct", "ceiling", "kd_limit", "kd_der", "w2s_min_risk",
                "w2s_gap", "w2s_nopt_paper", "w2s_nopt_audited", "w2s_kstar_opt",
                "w2s_min_risk_late", "w2s_gap_late", "w2s_nopt_late", "w2s_kstar_late")

FAMILY_TITLES = {
    "teacher": "Teacher risk vs N (Lemma 1 direct rate, alpha_T)",
    "direct": "Direct student risk vs N (Lemma 1 direct rate, alpha_S)",
    "ceiling": "Ceiling student risk vs n (Lemma 1 direct rate, alpha_S)",
    "kd_limit": "KD: T2S risk vs N at the largest n (Theorem 3 limit rate)",
    "kd_der": "KD: data-efficiency ratio der vs N (Theorem 3, kappa)",
    "w2s_min_risk": "W2S: min over n of the T2S risk vs N (Theorem 5)",
    "w2s_gap": "W2S: w2s_ratio at the optimal n vs N (Theorem 5's 1 - PGR)",
    "w2s_nopt_paper": "W2S: optimal n vs N, paper's exponent (Theorem 5 as stated)",
    "w2s_nopt_audited": "W2S: optimal n vs N, audited exponent n_opt ~ (k*_opt)^alpha_S",
    "w2s_kstar_opt": "W2S: student cutoff k* implied by n_opt vs N (Theorem 5)",
    "w2s_min_risk_late": "W2S late law: min over n of the T2S risk vs N, N >= N_x",
    "w2s_gap_late": "W2S late law: w2s_ratio at the optimal n vs N, N >= N_x",
    "w2s_nopt_late": "W2S late law: the optimal student's horizon n_opt/log2 n_opt vs N, N >= N_x",
    "w2s_kstar_late": "W2S late law: student cutoff k* implied by n_opt vs N, N >= N_x",
}

RULES = (
    "Each row fits log(quantity) = slope * log(horizon) + c by least squares on the upper half "
    "of the usable axis values (at least 3 points; the range column gives them in samples), "
    "with every other grid axis held at the values in the fixed column. The horizon is the "
    "effective one of the run's step-size schedule (T = samples / batch): T / log2 T for "
    "`geometric` (the step halves every T / log2 T steps), (T/2) / log2(T/2) for "
    "`tail_geometric` (its halving tail), T for `constant`; slope_raw is the slope against the "
    "samples themselves. slope_err is the regression standard error for `exact` and the "
    f"standard deviation over {BOOTSTRAP_DRAWS} parametric-bootstrap draws for `mc` (each point "
    "redrawn from N(mean, se), seeded per family). Tolerance = "
    f"max({RTOL} |predicted|, {ATOL}), plus 2 slope_err for `mc` (exact data has no "
    "statistical error: its regression error measures curvature, which the drift judges). "
    "Axis values where the truncation of the spectrum at d (or the rank) cuts at least "
    f"{FINITE_D_SHARE} of the rate-setting tail ((k*/d)^(alpha_T - 1 - beta), "
    "(k*/d)^max(alpha - 1, 1) with the run's alpha for the lowdim target, at that value's k*) "
    "are left out of the fit while at least 3 values stay "
    "below them (the notes say from where); the truncation column gives the share at the "
    "largest value fitted. "
    "Verdicts, first that applies: "
    "`no prediction` where docs/science/rates.md predicts nothing there; `finite d` where "
    f"fewer than 3 axis values lie below that share; "
    "`not asymptotic` where the local slopes (between neighbouring points) over the last "
    f"{DRIFT_OCTAVES} octaves still drift by more than {DRIFT_SHARE} of the tolerance (drift = "
    "their max - min, for `mc` allowed two bootstrap standard deviations more); `edge` where "
    "fewer than 3 W2S "
    "optima lie inside the swept n range; `consistent` iff |slope - predicted| <= tolerance, "
    "else `inconsistent`, except that a noisy teacher, direct or ceiling run whose slope lies "
    "between its bias and variance exponents (a sum of two power laws before their crossover) "
    "is `not asymptotic`. Where the theory predicts a sign (der > 1 under KD) a violated sign "
    "is `inconsistent` whatever the slope. W2S optima: the grid minimum of risk_t2s over the "
    "n axis (or, without one of at least 3 values, over the T2S learning-curve checkpoints), "
    "refined by the vertex of a parabola in log-log through it and its two neighbours; "
    "w2s_ratio (Theorem 5's 1 - PGR: its proof takes the ceiling's risk as zero; "
    "docs/science/corrections.md) is read at the grid minimum. KD rows are lim_n: the "
    "n = inf points of the grid, "
    "or, for `exact` where the grid's n is finite, the exact engine's closed-form n = inf "
    "limit computed here (docs/science/limits.md); `mc` rows use the largest n. Points with "
    "status other than ok, and non-positive values, are not used."
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
    if not math.isfinite(v):
        return str(v)
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
    """Fit a noiseless series; error = the regression standard error.

    Curvature over the range is judged separately (:func:`drift`), not folded into the error:
    a widened error bar would make an unconverged family look consistent. ``x`` must be
    increasing. Returns None with fewer than ``min_points`` usable points.
    """
    prep = _fit_range(x, y, min_points)
    if prep is None:
        return None
    xv, yv, _, main = prep
    slope, intercept, se = loglog_slope(xv[main], yv[main])
    return Fit(slope, se, intercept, xv[main])


def local_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Slopes of log y vs log x between neighbouring points (along the last axis of y)."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    return np.diff(ly, axis=-1) / np.diff(lx)


def drift_window(x_samples: np.ndarray, octaves: int = DRIFT_OCTAVES) -> np.ndarray:
    """Mask of the points in the last ``octaves`` octaves of the (sorted, usable) sample axis,
    at least three points."""
    x = np.asarray(x_samples, float)
    keep = x >= x[-1] / 2.0**octaves
    if keep.sum() < 3:
        keep[-3:] = True
    return keep


def drift(x: np.ndarray, y: np.ndarray, x_samples: np.ndarray | None = None,
          octaves: int = DRIFT_OCTAVES) -> float:
    """How much the local slope still moves: max − min of the local slopes of log y vs log x
    over the last ``octaves`` octaves of ``x_samples`` (default ``x``). NaN with fewer than
    three points. ``y`` may carry leading (bootstrap) dimensions."""
    x = np.asarray(x, float)
    xs = x if x_samples is None else np.asarray(x_samples, float)
    if len(x) < 3:
        return math.nan
    keep = drift_window(xs, octaves)
    s = local_slopes(x[keep], np.asarray(y, float)[..., keep])
    return s.max(axis=-1) - s.min(axis=-1)


def effective_horizon(steps: np.ndarray, schedule: str) -> np.ndarray:
    """The horizon a power law in the samples is measured against, per step-size schedule.

    ``geometric`` halves the step every T / log2 T steps: the final variance and the cutoff
    k* are set by that period, so the law is one in T / log2 T (Lemma 1's log factor).
    ``tail_geometric`` runs T/2 steps at γ0 then halves over the other half: (T/2) / log2(T/2).
    ``constant`` has no decay: T itself. NaN where the log would be ≤ 1 (T ≤ 2).
    """
    t = np.asarray(steps, float)
    if schedule == "constant":
        return t
    if schedule == "tail_geometric":
        t = t / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(t > 2.0, t / np.log2(np.where(t > 2.0, t, 4.0)), np.nan)


def tolerance(predicted: float | None, slope_err: float) -> float:
    """The allowed |slope − predicted|: max(RTOL·|predicted|, ATOL) + 2·slope_err (an unknown
    error counts as zero: it never widens the tolerance)."""
    if predicted is None or not np.isfinite(predicted):
        return math.nan
    err = slope_err if np.isfinite(slope_err) else 0.0
    return max(RTOL * abs(float(predicted)), ATOL) + 2.0 * err


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


def converged(drift_value: float, tol: float, drift_err: float = 0.0) -> bool:
    """The drift rule of :func:`verdict`: local slopes spread by at most DRIFT_SHARE of the
    tolerance (plus two statistical errors of the drift, Monte Carlo only); NaN: not."""
    derr = drift_err if np.isfinite(drift_err) else 0.0
    return bool(drift_value <= DRIFT_SHARE * tol + 2.0 * derr)


def verdict(slope: float, slope_err: float, predicted: float | None, drift_value: float = 0.0,
            truncation: float = 0.0, drift_err: float = 0.0,
            terms: tuple[float, float] | None = None) -> str:
    """The verdict of one fit; the order of the checks is that of :data:`RULES`.

    ``drift_value`` is the spread of the local slopes over the last octaves (NaN: undecidable,
    counted as not converged), ``truncation`` the tail share d cuts (:func:`truncated_share`),
    ``drift_err`` the statistical error of the drift (Monte Carlo only). ``terms``: the two
    exponents of a risk that is a sum of two power laws (bias, variance), the prediction being
    the larger: a slope between them (outside the tolerance) is a crossover still under way,
    `not asymptotic`, never `inconsistent`.
    """
    if predicted is None or not np.isfinite(predicted) or not np.isfinite(slope):
        return "no prediction"
    if np.isfinite(truncation) and truncation >= FINITE_D_SHARE:
        return "finite d"
    tol = tolerance(predicted, slope_err)
    if not converged(drift_value, tol, drift_err):
        return "not asymptotic"
    if abs(slope - predicted) <= tol:
        return "consistent"
    if terms is not None and min(terms) - tol <= slope <= max(terms):
        return "not asymptotic"
    return "inconsistent"


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
    x_eff: np.ndarray | None = None  # the effective horizon at x (None: x itself)
    horizon: str = ""  # what x_eff is, for the table
    truncation: float = math.nan  # share of the tail cut by d at the largest usable x
    truncation_x: np.ndarray | None = None  # that share at every x (None: not known)


class _Cube(CubeView):
    """A cube for the fits: theory predictions and parameters at labelled grid values."""

    def computed(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per ``key`` for this cube (engine calls several families share)."""
        memo = self.__dict__.setdefault("_computed", {})
        if key not in memo:
            memo[key] = compute()
        return memo[key]

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
         predicted: float | None, above_one: bool = False,
         terms: tuple[float, float] | None = None) -> dict[str, Any] | None:
    """Fit one series against its effective horizon and make its table row (None if too few
    usable points). ``above_one``: the theory also predicts the quantity > 1 (der under KD);
    ``terms``: the (bias, variance) exponents behind ``predicted`` (:func:`verdict`)."""
    x, y = series.x, series.y.copy()
    xe = x if series.x_eff is None else series.x_eff
    notes = list(series.notes)
    pred = math.nan if predicted is None else float(predicted)
    base = {"family": family, "quantity": quantity, "axis": axis, "estimator": method,
            "fixed": fixed, "horizon": series.horizon or axis, "predicted": pred,
            "truncation": series.truncation}
    nan_fit = {"range": "", "slope": math.nan, "slope_err": math.nan, "slope_raw": math.nan,
               "drift": math.nan, "tolerance": math.nan, "difference": math.nan}
    if series.edge is not None and series.edge.any():
        notes.append(f"optimum at the edge of the searched n range for {axis}="
                     + ",".join(_num(v) for v in x[series.edge]) + " (not fitted)")
        y[series.edge] = np.nan
        n_interior = int(usable(x, y).sum())
        if n_interior < MIN_POINTS:
            return {**base, **nan_fit, "n_points": n_interior, "verdict": "edge",
                    "notes": "; ".join(notes)}
    ok = usable(xe, y) & usable(x, y)
    truncation = series.truncation
    if series.truncation_x is not None:  # fit only where d does not shape the curve yet
        cut = ok & (series.truncation_x >= FINITE_D_SHARE)
        if cut.any() and (ok & ~cut).sum() >= MIN_POINTS:
            notes.append(f"{axis} >= {_num(x[cut].min())} left out: truncation at d cuts >= "
                         f"{FINITE_D_SHARE} of the rate-setting tail there")
            ok &= ~cut
            truncation = float(np.nanmax(series.truncation_x[ok]))
    y = np.where(ok, y, np.nan)
    fit = fit_exact(xe, y) if series.draws is None else fit_bootstrap(xe, y, series.draws)
    if fit is None:
        return None
    notes = fit.notes + notes
    main = upper_range(int(ok.sum()))
    raw = loglog_slope(x[ok][main], y[ok][main])[0]
    drift_value = drift(xe[ok], y[ok], x[ok])
    drift_err = 0.0
    if series.draws is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            dd = drift(xe[ok], np.asarray(series.draws, float)[:, ok], x[ok])
        dd = dd[np.isfinite(dd)]
        drift_err = float(np.std(dd, ddof=1)) if len(dd) >= 2 else 0.0
    stat_err = fit.slope_err if series.draws is not None else 0.0
    tol = tolerance(predicted, stat_err)
    v = verdict(fit.slope, stat_err, predicted, drift_value, truncation, drift_err, terms)
    if v == "not asymptotic" and terms is not None and converged(drift_value, tol, drift_err):
        bias = ("an exponentially decaying bias (lowdim target)" if math.isinf(terms[0])
                else f"the bias ({terms[0]:.3f})")
        notes.append(f"slope between the exponents of {bias} and the "
                     f"variance ({terms[1]:.3f}) term: the "
                     f"{'variance' if predicted == terms[1] else 'bias'} term has not taken "
                     "over yet (a larger horizon)")
    elif v == "not asymptotic":
        notes.append(f"local slopes over the last {DRIFT_OCTAVES} octaves drift by "
                     f"{drift_value:.3f} > {DRIFT_SHARE} x tolerance {tol:.3f}")
    if v == "finite d":
        notes.append(f"truncation at d cuts {truncation:.2f} of the rate-setting tail at "
                     f"the largest {axis} (>= {FINITE_D_SHARE}) and fewer than {MIN_POINTS} "
                     f"values lie below it: raise d")
    if above_one and np.isfinite(pred) and pred > 0:
        last = y[ok][-1]
        if not last > 1.0:
            notes.append(f"predicted > 1 (KD gain) but {quantity} = {last:.3g} at the largest "
                         f"{axis}")
            v = "inconsistent"
    return {**base, "truncation": truncation, "n_points": fit.n_points,
            "range": f"{_num(x[ok][main][0])}.."
            f"{_num(x[ok][main][-1])}", "slope": fit.slope, "slope_err": fit.slope_err,
            "slope_raw": raw, "drift": drift_value, "tolerance": tol,
            "difference": fit.slope - pred if np.isfinite(pred) else math.nan,
            "verdict": v, "notes": "; ".join(notes)}


def judge(x: Sequence[float], y: Sequence[float], predicted: float | None,
          schedule: str = "geometric", batch: int = 1,
          truncation: float | Sequence[float] = 0.0, draws: np.ndarray | None = None,
          terms: tuple[float, float] | None = None) -> dict[str, Any]:
    """One series through the full rule (horizon, drift, truncation, tolerance) outside a
    cube: the row :func:`fit_cube` would write for it (empty fit columns when too short).
    ``truncation``: the tail share d cuts, one number for the series or one per x value."""
    x = np.asarray(x, float)
    per_x = np.ndim(truncation) > 0
    s = Series(x, np.asarray(y, float), draws, x_eff=effective_horizon(x / batch, schedule),
               horizon=schedule,
               truncation=float(np.max(truncation)) if per_x else float(truncation),
               truncation_x=np.asarray(truncation, float) if per_x else None)
    row = _row("series", "y", "x", "exact" if draws is None else "mc", "", s, predicted,
               terms=terms)
    if row is None:
        raise ValueError(f"judge needs at least {MIN_POINTS} usable points, got "
                         f"{int(usable(x, y).sum())}")
    return row


_STUDENT_ONLY = ("alpha_s", "r_s", "batch_s", "schedule_s", "gamma0_s")
_TEACHER_ONLY = ("alpha_t", "r_t", "batch_t", "schedule_t", "horizon_t", "gamma0_t")
IRRELEVANT: dict[str, tuple[str, ...]] = {
    "teacher": ("n", "horizon_s", *_STUDENT_ONLY),
    "direct": ("n", "horizon_s", *_TEACHER_ONLY[1:]),  # alpha_t stays: it shapes the target
    "ceiling": ("N", *_TEACHER_ONLY[1:]),
}
"""Held axes a run does not depend on (one row, not one per value). The direct and ceiling
students do depend on alpha_t: the target's coefficients are given in teacher coordinates."""

SIMPLE_FAMILIES: tuple[tuple[str, str, str, str, str], ...] = (
    # family, variable, axis, theory.predictions key, run whose schedule and cutoff set the
    # horizon (t: the teacher's, on N samples; s: the student's, on the axis' samples)
    ("teacher", "risk_teacher", "N", "risk_teacher", "t"),
    ("direct", "risk_direct", "N", "risk_direct", "s"),
    ("ceiling", "risk_ceiling", "n", "risk_direct", "s"),
    ("kd_limit", "risk_t2s", "N", "risk_t2s_limit", "t"),
    ("kd_der", "der", "N", "der", "t"),
)


def _simple_families(cube: _Cube, rows: list[dict[str, Any]], skipped: list[int]) -> None:
    """teacher, direct (vs N), ceiling (vs n), kd_limit and kd_der (vs N at the largest n)."""
    for family, name, axis, key, role in SIMPLE_FAMILIES:
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
                if family.startswith("kd") and _target(cube, vals) == "lowdim":
                    continue  # Theorem 3 is about power-law sources (see _unfitted)
                found = _first_usable(cube, sub, free, axis, x)
                if found is None:
                    skipped.append(1)
                    continue
                free_vals, y, se = found
                at = {**vals, **free_vals}
                preds = cube.predictions(at)
                pred = preds.get(key)
                # lim_n from the closed form, not the finite largest n; only where Theorem 3
                # predicts something (the reference rows keep the grid's n: no recompute)
                limit = (_kd_limit(cube, at, name) if family.startswith("kd")
                         and method == "exact" and pred is not None else None)
                if limit is not None:
                    y, se = limit[0], None
                seed = family_seed(family, method, _fixed_text(vals))
                draws = None if se is None else normal_draws(y, se, seed=seed)
                series = Series(x, y, draws)
                _set_horizon(cube, at, role, series)
                if limit is not None:
                    series.notes.append(limit[1])
                elif family.startswith("kd"):
                    series.notes += _kd_notes(cube, vals, x)
                if family in ("direct", "ceiling"):
                    series.notes += _target_note(cube, vals)
                row = _row(family, name, axis, method, _fixed_text(vals), series, pred,
                           above_one=family == "kd_der", terms=preds.get(f"{key}_terms"))
                if row is not None:
                    rows.append(row)


def _target(cube: _Cube, vals: dict[str, Any]) -> str | None:
    try:
        return cube.param(vals, "target")
    except ParameterError:
        return None


def truncated_share(kstar_over_d: float, p: Any, alpha: float) -> float:
    """The share of the rate-setting tail that truncating the spectrum at d removes, for a
    cutoff at ``kstar_over_d`` of d in a run of decay ``alpha`` (see
    :data:`FINITE_D_SHARE`); 1 once k* passes d."""
    f = min(float(kstar_over_d), 1.0)
    if p.target == "lowdim":
        return f ** max(alpha - 1.0, 1.0)
    return f ** max(p.alpha_t - 1.0 - p.beta, 1e-9)


def _set_horizon(cube: _Cube, vals: dict[str, Any], role: str, series: Series) -> None:
    """Give ``series`` the effective horizon of run ``role`` (t or s) at its x values and the
    fraction of d (or the rank) its cutoff k* reaches at the largest usable x."""
    try:
        p = cube.point(vals)
    except ParameterError:
        return
    batch, schedule, fixed_h = ((p.batch_t, p.schedule_t, p.horizon_t) if role == "t"
                                else (p.batch_s, p.schedule_s, p.horizon_s))
    alpha, rank = (p.alpha_t, p.r_t) if role == "t" else (p.alpha_s, p.r_s)
    steps = series.x / batch
    if fixed_h is not None:
        series.horizon = "samples (fixed schedule horizon)"
        series.notes.append(f"horizon_{role} fixed at {fixed_h}: fitted against the samples")
    else:
        series.x_eff = effective_horizon(steps, schedule)
        series.horizon = {"geometric": "T/log2 T", "tail_geometric": "(T/2)/log2(T/2)"}.get(
            schedule, "T") + (f", T = samples/{batch}" if batch != 1 else "")
    gamma0 = _gamma0(cube, vals, role)
    width = min(p.d, rank or p.d)
    series.truncation_x = np.array([
        truncated_share(kstar_power(alpha, cutoff_threshold(float(t), gamma0, "lower")) / width,
                        p, alpha) if np.isfinite(t) else math.nan for t in steps])
    ok = usable(series.x, series.y)
    if ok.any():
        series.truncation = float(np.nanmax(series.truncation_x[ok]))


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


def _kd_limit(cube: _Cube, at: dict[str, Any], name: str) -> tuple[np.ndarray, str] | None:
    """``name`` (risk_t2s or der) at n = inf for each N of the grid, from the exact engine's
    closed-form limit (docs/science/limits.md), where the cube's n at ``at`` is finite: Theorem
    3 is a statement about lim_n, and a finite n is reached only for n >> N^(alpha_S/alpha_T).
    None where n is already inf, tied to another axis, or the points are invalid. Computed
    once per ``at`` (both KD families read it)."""
    from ktsweep.engines import exact

    if "n" in cube.layout.tie:
        return None
    try:
        n = cube.param(at, "n")
        if math.isinf(n):
            return None
        points = [cube.point({**at, "N": N, "n": math.inf}) for N in cube.layout.axes["N"]]
    except ParameterError:
        return None
    out = cube.computed(tuple(sorted((k, str(v)) for k, v in at.items())),
                        lambda: exact.evaluate(points))
    y = np.where(out["status"] == "ok", np.asarray(out[name], float), np.nan)
    return y, (f"lim_n from the exact n = inf closed form (the grid's n = {_num(n)} is finite; "
               "docs/science/limits.md)")


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
    finite_n = _finite_n(cube)
    use_axis = len(finite_n) >= MIN_POINTS
    use_curve = not use_axis and cube.has("curve_t2s")
    if not (use_axis or use_curve):
        return
    inner = ["N", "n"] if use_axis else ["N", "step"]
    others = [a for a in cube.axes if a not in inner]  # an n axis too short to search is held
    xN = np.asarray(cube.layout.axes["N"], float)
    for method in cube.methods:
        if use_axis:
            data = _with_se(cube, "risk_t2s", method)
            if cube.has("w2s_ratio"):  # Theorem 5's 1 - PGR (ceiling risk zero in its proof)
                ratio = _with_se(cube, "w2s_ratio", method)
                data["ratio"] = ratio["y"]
                if "se" in ratio:
                    data["ratio_se"] = ratio["se"]
            data = data.isel(n=finite_n)  # n = inf is the limit (T2S = teacher), not a run
            grid_n = np.asarray(cube.layout.axes["n"], float)[finite_n]
            where = ("optimum over the n axis (its finite values; n_opt and the minimum "
                     "interpolated: parabola in log-log through the grid minimum and its "
                     "neighbours)")
        else:
            data = _with_se(cube, "curve_t2s", method)
            data["y"] = data["y"].where(data["step"] > 0)  # step 0 is the untrained student
            grid_n = None
            where = ("optimum over learning-curve checkpoints (curve_t2s, n = step * batch_s, "
                     "interpolated as on the n axis): early stopping of the run planned for "
                     "horizon_s, not a run of n_opt samples")
        for vals, sub in cube.slices(data, others):
            if _target(cube, vals) != "lowdim":
                continue
            tables = [_table(sub, k, inner) for k in ("y", "se", "ratio", "ratio_se")]
            _w2s_one(cube, rows, skipped, method, vals, xN, *tables, grid_n, where)


def _finite_n(cube: _Cube) -> np.ndarray:
    """Indices of the finite values of the n axis (empty without one)."""
    if "n" not in cube.axes:
        return np.array([], dtype=int)
    return np.flatnonzero(np.isfinite(np.asarray(cube.layout.axes["n"], float)))


def _table(sub: xr.Dataset, name: str, dims: Sequence[str]) -> np.ndarray | None:
    """``sub[name]`` as a float array with dims in this order (None when absent)."""
    return sub[name].transpose(*dims).values.astype(float) if name in sub else None


def _w2s_one(cube: _Cube, rows, skipped, method, vals, xN, risk, risk_se, ratio, ratio_se,
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
    gap = np.where(have, ratio[rows_idx, jj], np.nan) if ratio is not None else None
    alpha_s = cube.param(vals, "alpha_s")
    gamma0 = _gamma0(cube, vals, "s")
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
        if ratio is not None:
            rd_ = normal_draws(ratio, ratio_se if ratio_se is not None else np.zeros_like(ratio),
                               seed=family_seed("w2s", method, _fixed_text(vals), "ratio"))
            draws["gap"] = np.take_along_axis(rd_, jd[..., None], axis=2)[..., 0]
    pred = cube.predictions(vals)
    fixed = _fixed_text(vals)
    notes = [where]
    if cube.param(vals, "sigma2") == 0:
        notes.append("sigma2=0: no label noise for the student to filter out")
    specs = [
        ("w2s_min_risk", "min risk_t2s", min_risk, draws.get("min"), "risk_t2s_min"),
        ("w2s_gap", "w2s_ratio at grid n_opt", gap, draws.get("gap"), "one_minus_pgr"),
        ("w2s_nopt_paper", "n_opt", n_opt, draws.get("n"), "n_opt_paper"),
        ("w2s_nopt_audited", "n_opt", n_opt, draws.get("n"), "n_opt_audited"),
        ("w2s_kstar_opt", "k*_opt (from n_opt)", kstar, draws.get("k"), "kstar_opt"),
    ]
    horizon = Series(xN, min_risk)
    _set_horizon(cube, vals, "t", horizon)
    if np.isfinite(kstar).any():  # the student's optimal cutoff must fit in d as well
        p = cube.point(vals)
        student = np.array([truncated_share(k / min(p.d, p.r_s or p.d), p, p.alpha_s)
                            if np.isfinite(k) else math.nan for k in kstar])
        horizon.truncation = np.nanmax([horizon.truncation, np.nanmax(student)])
        if horizon.truncation_x is not None:
            horizon.truncation_x = np.fmax(horizon.truncation_x, student)
    new = []
    for family, quantity, y, d, key in specs:
        if y is None:
            continue
        extra = []
        if family == "w2s_kstar_opt":
            extra.append(f"k* = (gamma0_s T / log2 T)^(1/alpha_S), T = n_opt / batch_s, "
                         f"gamma0_s={gamma0:.4g}")
        if method == "mc" and d is None:
            extra.append("no standard errors in the cube: exact-style error")
        s = Series(xN, y, d if method == "mc" else None, edge & have,
                   notes + horizon.notes + extra, horizon.x_eff, horizon.horizon,
                   horizon.truncation, horizon.truncation_x)
        if usable(xN, y).sum() < MIN_POINTS and not (edge & have).any():
            skipped.append(1)
            continue
        row = _row(family, quantity, "N", method, fixed, s, pred.get(key))
        if row is not None:
            new.append(row)
    new += _w2s_late(cube, method, vals, xN, specs, edge & have, horizon, notes)
    paper = next((r for r in new if r["family"] == "w2s_nopt_paper"), None)
    audit = next((r for r in new if r["family"] == "w2s_nopt_audited"), None)
    if paper and audit and np.isfinite(paper["slope"]):
        closer = ("paper" if abs(paper["difference"]) < abs(audit["difference"]) else "audited")
        text = (f"data closer to the {closer} exponent (paper {paper['predicted']:.3f}, "
                f"audited {audit['predicted']:.3f})")
        for r in (paper, audit):
            r["notes"] = "; ".join(filter(None, [r["notes"], text]))
    rows.extend(new)


LATE_FAMILIES: tuple[tuple[str, str, str, str], ...] = (
    # late family, the Theorem 5 family whose series it refits, quantity, predictions key
    ("w2s_min_risk_late", "w2s_min_risk", "min risk_t2s", "risk_t2s_min_late"),
    ("w2s_gap_late", "w2s_gap", "w2s_ratio at grid n_opt", "one_minus_pgr_late"),
    ("w2s_nopt_late", "w2s_nopt_paper", "n_opt / log2 n_opt (the student's horizon)",
     "n_opt_late"),
    ("w2s_kstar_late", "w2s_kstar_opt", "k*_opt (from n_opt)", "kstar_opt_late"),
)
"""The late law of Theorem 5 in the exact model (docs/science/theorem5.md): the same optima
as the Theorem 5 families, judged against theory's late exponents on N >= N_x only."""


def _w2s_late(cube: _Cube, method: str, vals: dict[str, Any], xN: np.ndarray,
              specs: Sequence[tuple[str, str, np.ndarray | None, np.ndarray | None, str]],
              edge: np.ndarray, horizon: Series, notes: list[str]) -> list[dict[str, Any]]:
    """Rows of :data:`LATE_FAMILIES` from the optima ``specs`` of :func:`_w2s_one`.

    The late law holds past the crossover N_x (:func:`theory.w2s_crossover`); smaller N are
    left out of the fit, and a family with fewer than three N at or above N_x is `not
    asymptotic`. n_opt enters as the student's effective horizon (n_opt / log2 n_opt for the
    geometric schedule), the quantity whose exponent the late law states.
    """
    by_family = {family: (y, d) for family, _, y, d, _ in specs}
    try:
        p = cube.point(vals)
    except ParameterError:
        return []
    pred = cube.predictions(vals)
    n_x = theory.w2s_crossover(p)
    out = []
    for family, source, quantity, key in LATE_FAMILIES:
        y, draws = by_family.get(source, (None, None))
        if y is None:
            continue
        if family == "w2s_nopt_late":
            y = effective_horizon(y / p.batch_s, p.schedule_s)
            draws = (None if draws is None else
                     effective_horizon(np.asarray(draws, float) / p.batch_s, p.schedule_s))
        extra = list(notes) + horizon.notes
        predicted = pred.get(key)
        if predicted is None:
            extra.append(f"late law not predicted here: {theory.w2s_late_scope(p)}")
        elif np.isfinite(n_x):
            early = xN < n_x
            extra.append(f"late law from N_x = {_num(round(n_x))} (theory.w2s_crossover)"
                         + (f"; N < N_x left out ({int(early.sum())} values)"
                            if early.any() else ""))
            y = np.where(early, np.nan, y)
            if usable(xN, y).sum() < MIN_POINTS:
                out.append({"family": family, "quantity": quantity, "axis": "N",
                            "estimator": method, "fixed": _fixed_text(vals),
                            "n_points": int(usable(xN, y).sum()), "range": "",
                            "horizon": horizon.horizon or "N", "slope": math.nan,
                            "slope_err": math.nan, "slope_raw": math.nan, "drift": math.nan,
                            "truncation": horizon.truncation, "predicted": float(predicted),
                            "tolerance": math.nan, "difference": math.nan,
                            "verdict": "not asymptotic",
                            "notes": "; ".join([*extra, f"fewer than {MIN_POINTS} N at or "
                                                "above N_x: larger N needed"])})
                continue
        s = Series(xN, y, draws if method == "mc" else None, edge, extra, horizon.x_eff,
                   horizon.horizon, horizon.truncation, horizon.truncation_x)
        row = _row(family, quantity, "N", method, _fixed_text(vals), s, predicted)
        if row is not None:
            out.append(row)
    return out


def _gamma0(cube: _Cube, vals: dict[str, Any], role: str) -> float:
    """The initial step run ``role`` (t: teacher, s: students) actually used (cube variable),
    else the first candidate from its spectrum."""
    used = step_size_variable(f"gamma0_{role}", cube.axes)
    if cube.has(used):
        at = {a: cube.layout.axes[a].index(v) for a, v in vals.items() if a in cube.axes}
        g = np.asarray(cube.ds[used].isel(at).values, float).reshape(-1)
        g = g[np.isfinite(g)]
        if len(g):
            return float(np.median(g))
    from ktsweep.model.spectra import resolve_gamma0, student_spectrum, teacher_spectrum

    p = cube.point(vals)
    if role == "t":
        return resolve_gamma0(p.gamma0_t, teacher_spectrum(p))[0]
    return resolve_gamma0(p.gamma0_s, student_spectrum(p))[0]


def _unfitted(cube: _Cube) -> list[str]:
    """Why each family this grid cannot fit at all is absent (written into fits.md)."""
    out = []
    if not cube.methods:
        return ["all: no estimator with risks in the cube (bound only)"]
    for family, name, axis, _, _ in SIMPLE_FAMILIES:
        m = len(cube.layout.axes.get(axis, ())) if axis in cube.axes else 0
        if m < MIN_POINTS:
            out.append(f"{family} ({name} vs {axis}): {axis} is "
                       + (f"an axis of {m} value(s)" if m else "not a grid axis")
                       + f", a rate needs at least {MIN_POINTS}")
    targets = cube.layout.axes.get("target", [cube.layout.fixed.get("target")])
    if "lowdim" in targets and any(f.startswith("kd") for f, *_ in SIMPLE_FAMILIES):
        out.append("kd_limit, kd_der for the lowdim target: Theorem 3 is stated for a "
                   "power-law source and predicts nothing there (its der is in the cube and "
                   "the der maps)")
    nN = len(cube.layout.axes["N"]) if "N" in cube.axes else 0
    if nN < MIN_POINTS:
        out.append(f"w2s_* (optimum over n vs N): N has {nN} value(s), needs {MIN_POINTS}")
    elif len(_finite_n(cube)) < MIN_POINTS:
        if cube.has("curve_t2s"):
            out.append("w2s_gap: the n axis has fewer than 3 finite values, so the W2S optimum "
                       "is searched over learning-curve checkpoints, which carry no ceiling")
        else:
            out.append("w2s_* : no n axis of 3 finite values and no learning curves to search "
                       "for the optimal n")
    return out


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
    unfitted = _unfitted(cube)
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    if len(df):
        order = {f: i for i, f in enumerate(FAMILY_ORDER)}
        df = (df.assign(_o=df["family"].map(order))
              .sort_values(["_o", "estimator", "fixed"], kind="stable")
              .drop(columns="_o").reset_index(drop=True))
    df["n_points"] = df["n_points"].astype(int)
    df.attrs["skipped"] = len(skipped)
    df.attrs["unfitted"] = unfitted
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


VERDICT_MEANING = {
    "consistent": "the slope matches the prediction within tolerance",
    "inconsistent": "converged, but the slope (or a predicted sign) misses the prediction",
    "not asymptotic": "the local slope still drifts over the last octaves: larger N or n "
                      "needed before the rate can be judged",
    "finite d": "the spectrum's truncation at d, not the power law, shapes the curve; "
                "raise d",
    "edge": "the W2S optimum lies on the edge of the swept n range: widen the n axis",
    "no prediction": "the theory predicts no power law at these parameters",
}


def summary(df: pd.DataFrame) -> str:
    """One paragraph a newcomer can read: of the rows the theory predicts, how many were
    decided and why the others were not; rows without a prediction are counted apart."""
    if df.empty:
        return "No family could be fitted on this grid."
    counts = df["verdict"].value_counts()
    free = int(counts.get("no prediction", 0))
    predicted = len(df) - free
    judged = int(counts.get("consistent", 0) + counts.get("inconsistent", 0))
    parts = [f"{int(counts[v])} {v} ({VERDICT_MEANING[v]})" for v in VERDICTS
             if v in counts and v != "no prediction"]
    text = (f"Of {predicted} fitted rows with a prediction, {judged} "
            f"({judged / predicted:.0%}) were decided: " if predicted else "")
    text += "; ".join(parts) + "." if parts else ""
    if free:
        text += (f" {free} more rows fit curves where the theory predicts no power law (e.g. "
                 "der outside the KD regime): listed for reference, not judged.")
    return text.strip()


def to_markdown(df: pd.DataFrame) -> str:
    """A readable Markdown report: a summary, the rules, then one table per family."""
    lines = [f"# Exponent fits: {df.attrs.get('name', '')}", "", summary(df), "",
             f"Fixed parameters: {df.attrs.get('fixed', '') or '(none)'}.", "", RULES, ""]
    if "skipped" in df.attrs:
        lines += [f"Families skipped for fewer than {MIN_POINTS} usable points: "
                  f"{df.attrs['skipped']}.", ""]
    if df.attrs.get("unfitted"):
        lines += ["Families this grid cannot fit: " + "; ".join(df.attrs["unfitted"]) + ".", ""]
    if df.empty:
        lines.append("No family could be fitted: the grid needs an N (or n) axis with at least "
                     f"{MIN_POINTS} values and computed risks.")
        return "\n".join(lines) + "\n"
    head = ["quantity", "estimator", "fixed", "n", "range", "horizon", "slope ± err",
            "slope_raw", "drift", "cut", "predicted", "tol", "difference", "verdict", "notes"]
    for family in dict.fromkeys(df["family"]):
        sub = df[df["family"] == family]
        lines += [f"## {FAMILY_TITLES.get(family, family)}", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in sub.itertuples(index=False):
            slope = ("" if not np.isfinite(r.slope)
                     else f"{r.slope:.3f} ± {r.slope_err:.3f}")
            lines.append("| " + " | ".join([
                _cell(r.quantity), r.estimator, _cell(r.fixed), str(r.n_points), r.range,
                _cell(r.horizon), slope, _cell(r.slope_raw), _cell(r.drift),
                _cell(r.truncation, 2), _cell(r.predicted), _cell(r.tolerance),
                _cell(r.difference), r.verdict, _cell(r.notes),
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

