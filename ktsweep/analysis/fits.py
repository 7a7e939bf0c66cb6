"""Exponent fits of the result cube against the power laws of docs/science/rates.md.

A *family* is one quantity against one sample-size axis (``N``, or ``n`` for the ceiling
student) with every other grid axis held at one of its values, for one estimator. Each family
gets a least-squares slope of log(quantity) against log(axis) on its asymptotic range, an
uncertainty, the exponent §5 predicts there and a verdict. The families are :data:`FAMILIES`:

- ``teacher``, ``direct`` — ``risk_teacher``, ``risk_direct`` vs ``N`` (Lemma 1 rates).
- ``ceiling`` — ``risk_ceiling`` vs ``n`` (the student's direct rate, in its own samples).
- ``teacher_noise``, ``direct_noise`` — the part of ``risk_teacher``, ``risk_direct`` that
  grows with the label noise (its σ² coefficient, fitted over a ``sigma2`` axis) vs ``N``: Lemma
  1's variance term alone, whatever the bias does (exact only).
- ``kd_limit``, ``kd_der`` — ``risk_t2s`` and ``der`` vs ``N`` at n = ∞ (Theorem 3, predicted
  only where α_S > α_T > 1+β): the cube's n = ∞ points; a grid without them fits neither.
- ``w2s_*`` (lowdim target, Theorem 5) — the optimum over the ``n`` axis, or, without an ``n``
  axis, over the T2S learning-curve checkpoints (``n = step · batch_s``; the notes say which):
  ``risk_t2s`` at the optimum (``w2s_min_risk``), ``w2s_ratio`` there (``w2s_gap``: Theorem
  5's 1 − PGR, whose proof takes the ceiling's risk as zero; ``n`` axis only), ``n_opt``
  against the paper's exponent (``w2s_nopt_paper``) and the audited one
  (``w2s_nopt_audited``), the student cutoff implied by ``n_opt`` (``w2s_kstar_opt``,
  :func:`student_cutoff`), and the same optima against the late law past the crossover N_x
  (``w2s_*_late``). An optimum on the first or last available ``n`` is an *edge*: that ``N``
  is left out of the fit, and a family with fewer than three interior optima is reported with
  verdict ``edge`` and no slope. Interior optima are refined between grid points
  (:func:`refine_optimum`).

:func:`fit_cube` returns an ``xarray.Dataset`` (:data:`SCHEMA`): dimensions ``family``,
``estimator`` and the held grid axes, one cell per fitted series (``verdict`` empty where none
was fitted). A family that does not depend on a held axis (the teacher on ``alpha_s``) has the
same values all along it. :func:`frame` turns it into the table of ``fits.csv`` and
``fits.md``, :func:`read_fits` turns ``fits.csv`` back into it.

Everything is read from the cube: the parameters from its coordinates, the steps the runs used
from its ``gamma0_*`` variables; no engine runs here.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import xarray as xr
from scipy import stats

from ktsweep.analysis.cubeview import CubeView
from ktsweep.model import theory
from ktsweep.model.params import derive_seed
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
run's α: the share is (k*/d)^max(α − 1, 1) with the run's own α. Measured against d = 6000
(teacher, k† = 3, σ² = 1, N = 2^8…2^28): at α = 2 the slope is 0.009 off where k*/d = 0.13
and 0.05 off at 0.25, so k*/d itself must stay below 0.05; at α = 3 it is 0.003 off at
k*/d = 0.32 (docs/science/fits.md)."""
MIN_POINTS = 3
BOOTSTRAP_DRAWS = 200
BOOTSTRAP_SEED = 0

VERDICTS = ("consistent", "inconsistent", "not asymptotic", "finite d", "edge",
            "no prediction")

NUMBERS = ("range_min", "range_max", "slope", "slope_err", "slope_raw", "drift", "truncation",
           "predicted", "tolerance", "difference")
TEXTS = ("horizon", "verdict", "notes")
SCHEMA = {
    "n_points": "axis values fitted (0 where no series was fitted)",
    "range_min": "first axis value fitted (samples)",
    "range_max": "last axis value fitted (samples)",
    "horizon": "what the slope is measured against (the schedule's effective horizon)",
    "slope": "least-squares slope of log(quantity) against log(horizon)",
    "slope_err": "regression standard error (exact) or bootstrap standard deviation (mc)",
    "slope_raw": "the slope against the samples themselves",
    "drift": "max - min of the local slopes over the last DRIFT_OCTAVES octaves",
    "truncation": "share of the rate-setting tail the truncation at d cuts at range_max",
    "predicted": "the exponent docs/science/rates.md predicts (NaN: none)",
    "tolerance": "the allowed |slope - predicted|",
    "difference": "slope - predicted",
    "verdict": "one of VERDICTS; empty where no series was fitted",
    "notes": "why, where the rules say more than the verdict",
}
"""The data variables of :func:`fit_cube`'s Dataset (dims: family, estimator, held axes)."""


@dataclass(frozen=True)
class Family:
    """One fitted law: its quantity, the sample axis, the prediction key of
    :func:`ktsweep.model.theory.predictions`, the run whose schedule and cutoff set the horizon
    (``t``: the teacher's, on N samples; ``s``: the student's, on the axis' samples) and the
    held axes the quantity does not depend on (one fit, the same all along them)."""

    name: str
    title: str
    quantity: str
    axis: str = "N"
    key: str = ""
    role: str = "t"
    irrelevant: tuple[str, ...] = ()


_STUDENT_ONLY = ("alpha_s", "r_s", "batch_s", "schedule_s", "gamma0_s")
_TEACHER_ONLY = ("alpha_t", "r_t", "batch_t", "schedule_t", "horizon_t", "gamma0_t")
_TEACHER_IGNORES = ("n", "horizon_s", *_STUDENT_ONLY)
_DIRECT_IGNORES = ("n", "horizon_s", *_TEACHER_ONLY[1:])  # alpha_t shapes the target

FAMILIES: tuple[Family, ...] = (
    Family("teacher", "Teacher risk vs N (Lemma 1 direct rate, alpha_T)", "risk_teacher",
           key="risk_teacher", irrelevant=_TEACHER_IGNORES),
    Family("direct", "Direct student risk vs N (Lemma 1 direct rate, alpha_S)", "risk_direct",
           key="risk_direct", role="s", irrelevant=_DIRECT_IGNORES),
    Family("ceiling", "Ceiling student risk vs n (Lemma 1 direct rate, alpha_S)",
           "risk_ceiling", axis="n", key="risk_direct", role="s",
           irrelevant=("N", *_TEACHER_ONLY[1:])),
    Family("teacher_noise", "Teacher: the risk's sigma2 coefficient vs N (Lemma 1 variance "
           "term, alpha_T)", "d risk_teacher / d sigma2", key="noise_teacher",
           irrelevant=(*_TEACHER_IGNORES, "sigma2")),
    Family("direct_noise", "Direct student: the risk's sigma2 coefficient vs N (Lemma 1 "
           "variance term, alpha_S)", "d risk_direct / d sigma2", key="noise_direct", role="s",
           irrelevant=(*_DIRECT_IGNORES, "sigma2")),
    Family("kd_limit", "KD: T2S risk vs N at n = inf (Theorem 3 limit rate)", "risk_t2s",
           key="risk_t2s_limit"),
    Family("kd_der", "KD: data-efficiency ratio der vs N at n = inf (Theorem 3, kappa)", "der",
           key="der"),
    Family("w2s_min_risk", "W2S: min over n of the T2S risk vs N (Theorem 5)", "min risk_t2s",
           key="risk_t2s_min"),
    Family("w2s_gap", "W2S: w2s_ratio at the optimal n vs N (Theorem 5's 1 - PGR)",
           "w2s_ratio at grid n_opt", key="one_minus_pgr"),
    Family("w2s_nopt_paper", "W2S: optimal n vs N, paper's exponent (Theorem 5 as stated)",
           "n_opt", key="n_opt_paper"),
    Family("w2s_nopt_audited", "W2S: optimal n vs N, audited exponent n_opt ~ "
           "(k*_opt)^alpha_S", "n_opt", key="n_opt_audited"),
    Family("w2s_kstar_opt", "W2S: student cutoff k* implied by n_opt vs N (Theorem 5)",
           "k*_opt (from n_opt)", key="kstar_opt"),
    Family("w2s_min_risk_late", "W2S late law: min over n of the T2S risk vs N, N >= N_x",
           "min risk_t2s", key="risk_t2s_min_late"),
    Family("w2s_gap_late", "W2S late law: w2s_ratio at the optimal n vs N, N >= N_x",
           "w2s_ratio at grid n_opt", key="one_minus_pgr_late"),
    Family("w2s_nopt_late", "W2S late law: the optimal student's horizon n_opt/log2 n_opt vs "
           "N, N >= N_x", "n_opt / log2 n_opt (the student's horizon)", key="n_opt_late"),
    Family("w2s_kstar_late", "W2S late law: student cutoff k* implied by n_opt vs N, N >= N_x",
           "k*_opt (from n_opt)", key="kstar_opt_late"),
)
BY_NAME = {f.name: f for f in FAMILIES}
FAMILY_ORDER = tuple(f.name for f in FAMILIES)
SIMPLE = ("teacher", "direct", "ceiling", "teacher_noise", "direct_noise", "kd_limit", "kd_der")
"""Families fitted on one cube variable (or its σ² coefficient) along one axis."""
LATE_OF = {"w2s_min_risk_late": "w2s_min_risk", "w2s_gap_late": "w2s_gap",
           "w2s_nopt_late": "w2s_nopt_paper", "w2s_kstar_late": "w2s_kstar_opt"}
"""The late law of Theorem 5 in the exact model (docs/science/theorem5.md): each late family
refits the optima of a Theorem 5 family against theory's late exponents on N >= N_x only."""

HOW_TO_READ = (
    "Each row is one power law of docs/science/rates.md fitted on this cube: a quantity "
    "against a sample size (N, or n for the ceiling student) with the other grid axes held at "
    "the values in its columns (an empty cell: the quantity does not depend on that axis). "
    "`slope` is the measured exponent, `predicted` the theory's, `verdict` the comparison: "
    "`consistent` (within `tol`), `inconsistent` (converged and outside it), `not asymptotic` "
    "(the local slope still moves: a longer horizon is needed), `finite d` (the truncation of "
    "the spectrum shapes the curve: a larger d is needed), `edge` (the W2S optimum is on the "
    "edge of the swept n), `no prediction` (the theory predicts no power law there; listed "
    "for reference). The table below counts the verdicts per family; the rules that decide "
    "them are at the end.")

RULES = (
    "Each row fits log(quantity) = slope * log(horizon) + c by least squares on the upper half "
    "of the usable axis values (at least 3 points; the range column gives them in samples), "
    "with every other grid axis held at the values in the row's axis columns. The horizon is "
    "the effective one of the run's step-size schedule (T = samples / batch): T / log2 T for "
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
    "are left out of the fit while at least 3 values stay below them (the notes say from "
    "where); the cut column gives the share at the largest value fitted. "
    "Verdicts, first that applies: "
    "`no prediction` where docs/science/rates.md predicts nothing there; `finite d` where "
    "fewer than 3 axis values lie below that share; "
    "`not asymptotic` where the local slopes (between neighbouring points) over the last "
    f"{DRIFT_OCTAVES} octaves still drift by more than {DRIFT_SHARE} of the tolerance (drift = "
    "their max - min, for `mc` allowed two bootstrap standard deviations more); `edge` where "
    "fewer than 3 W2S optima lie inside the swept n range; `consistent` iff "
    "|slope - predicted| <= tolerance, else `inconsistent`, except that a noisy teacher, "
    "direct or ceiling run whose slope lies between its bias and variance exponents (a sum of "
    "two power laws before their crossover) is `not asymptotic`. Where the theory predicts a "
    "sign (der > 1 under KD) a violated sign is `inconsistent` whatever the slope. The noise "
    "families fit the sigma2 coefficient of the risk (a straight line through the risks over "
    "the sigma2 axis at each other point: the exact risk is affine in sigma2), which is Lemma "
    "1's variance term alone. W2S optima: the grid minimum of risk_t2s over the n axis (or, "
    "without one of at least 3 finite values, over the T2S learning-curve checkpoints), "
    "refined by the vertex of a parabola in log-log through it and its two neighbours; "
    "w2s_ratio (Theorem 5's 1 - PGR: its proof takes the ceiling's risk as zero; "
    "docs/science/corrections.md) is read at the grid minimum. KD rows are lim_n: the "
    "n = inf points of the grid; a grid without n = inf fits no KD row. Points with status "
    "other than ok, and non-positive values, are not used."
)

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
    """Least-squares slope, intercept and slope standard error of log y vs log x
    (``scipy.stats.linregress``; the error is 0 for two points, NaN for fewer)."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    if len(lx) < 2:
        return math.nan, math.nan, math.nan
    fit = stats.linregress(lx, ly)
    # a perfect line (two points, or a constant y) leaves no residual: error 0, not NaN
    se = float(fit.stderr) if np.isfinite(fit.stderr) else 0.0
    return float(fit.slope), float(fit.intercept), se


def upper_range(m: int, fraction: float = 0.5, min_points: int = MIN_POINTS) -> slice:
    """The last ``max(min_points, ceil(fraction · m))`` of ``m`` sorted points."""
    k = min(m, max(min_points, math.ceil(fraction * m - 1e-9)))
    return slice(m - k, m)


def usable(x: npt.ArrayLike, y: npt.ArrayLike) -> np.ndarray:
    """Mask of points that can enter a log-log fit (finite, positive)."""
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    with np.errstate(invalid="ignore"):
        return np.isfinite(xa) & np.isfinite(ya) & (xa > 0) & (ya > 0)


def _fit_range(x: npt.ArrayLike, y: npt.ArrayLike, min_points: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, slice] | None:
    """Usable points (x, y, mask into the input) and the asymptotic slice fitted on them."""
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    ok = usable(xa, ya)
    xv, yv = xa[ok], ya[ok]
    if len(xv) < min_points:
        return None
    return xv, yv, ok, upper_range(len(xv), 0.5, min_points)


def fit_exact(x: npt.ArrayLike, y: npt.ArrayLike, min_points: int = MIN_POINTS) -> Fit | None:
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


def fit_bootstrap(x: npt.ArrayLike, y: npt.ArrayLike, draws: np.ndarray,
                  min_points: int = MIN_POINTS) -> Fit | None:
    """Fit a noisy series (means ``y``); error = std of the slope over ``draws`` (draws × points).

    Each draw's slope is a straight line in log-log (``DataArray.polyfit`` along the points);
    draws with a non-positive or non-finite value in the fit range are dropped (counted in
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
    notes = []
    if (~good).sum():
        notes.append(f"{int((~good).sum())}/{len(good)} bootstrap draws non-positive, dropped")
    if good.sum() >= 2:
        logs = xr.DataArray(np.log(dv[good]), dims=("draw", "x"),
                            coords={"x": np.log(xv[main])})
        slopes = logs.polyfit("x", 1).polyfit_coefficients.sel(degree=1).values
        err = float(np.std(slopes, ddof=1))
    else:
        err = math.nan
    return Fit(slope, err, intercept, xv[main], notes)


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


def drift_draws(x: np.ndarray, y: np.ndarray, x_samples: np.ndarray | None = None,
                octaves: int = DRIFT_OCTAVES) -> np.ndarray:
    """How much the local slope still moves, along the last axis of ``y`` (its leading axes
    are bootstrap draws): max − min of the local slopes of log y vs log x over the last
    ``octaves`` octaves of ``x_samples`` (default ``x``). NaN with fewer than three points."""
    xa = np.asarray(x, float)
    ya = np.asarray(y, float)
    if len(xa) < 3:
        return np.full(ya.shape[:-1], math.nan)
    keep = drift_window(xa if x_samples is None else np.asarray(x_samples, float), octaves)
    s = local_slopes(xa[keep], ya[..., keep])
    return s.max(axis=-1) - s.min(axis=-1)


def drift(x: np.ndarray, y: np.ndarray, x_samples: np.ndarray | None = None,
          octaves: int = DRIFT_OCTAVES) -> float:
    """:func:`drift_draws` of one series ``y`` (one dimension)."""
    return float(drift_draws(x, y, x_samples, octaves))


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


def family_seed(*key: Any) -> int:
    """The bootstrap seed of one family row: a hash of its key (family, estimator, held
    values as :func:`held_text` writes them, stream) under :data:`BOOTSTRAP_SEED`, so a row's
    error bar does not depend on which rows were fitted before it."""
    return derive_seed(BOOTSTRAP_SEED, *key)


def normal_draws(mean: np.ndarray, se: np.ndarray, draws: int = BOOTSTRAP_DRAWS,
                 seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """Parametric bootstrap sample, shape (draws, *mean.shape): N(mean, se) per point."""
    rng = np.random.default_rng(seed)
    mean = np.asarray(mean, float)
    se = np.nan_to_num(np.asarray(se, float), nan=0.0)
    return mean + se * rng.standard_normal((draws, *mean.shape))


def drift_limit(tol: float, drift_err: float = 0.0) -> float:
    """The largest drift still converged: DRIFT_SHARE of the tolerance plus two statistical
    errors of the drift (Monte Carlo only; an unknown error counts as zero)."""
    derr = drift_err if np.isfinite(drift_err) else 0.0
    return DRIFT_SHARE * tol + 2.0 * derr


def converged(drift_value: float, tol: float, drift_err: float = 0.0) -> bool:
    """The drift rule of :func:`verdict`: the drift is at most :func:`drift_limit`; NaN:
    not converged."""
    return bool(drift_value <= drift_limit(tol, drift_err))


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


def truncated_share(kstar_over_d: float, p: Mapping[str, Any], alpha: float) -> float:
    """The share of the rate-setting tail that truncating the spectrum at d removes, for a
    cutoff at ``kstar_over_d`` of d in a run of decay ``alpha``, at parameters ``p`` (target,
    alpha_t, beta; see :data:`FINITE_D_SHARE`); 1 once k* passes d."""
    f = min(float(kstar_over_d), 1.0)
    if p["target"] == "lowdim":
        return f ** max(alpha - 1.0, 1.0)
    return f ** max(p["alpha_t"] - 1.0 - p["beta"], 1e-9)


# ---------------------------------------------------------------------------------------
# One series → one row
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


def distinct(a: float, b: float, digits: int = 3) -> tuple[str, str]:
    """``a`` and ``b`` to ``digits`` significant digits, more where that would print them
    alike (0.02501 and 0.025 as 0.02501 and 0.025, never both as 0.025)."""
    for k in range(digits, 17):
        x, y = f"{a:.{k}g}", f"{b:.{k}g}"
        if x != y or a == b:
            return x, y
    return repr(a), repr(b)


def _drift_note(drift_value: float, tol: float, drift_err: float) -> str:
    """The drift rule's comparison, with its numbers as the verdict made it."""
    limit = drift_limit(tol, drift_err)
    shown, bound = distinct(drift_value, limit)
    text = (f"local slopes over the last {DRIFT_OCTAVES} octaves drift by "
            f"{shown} > {bound}")
    if drift_err > 0:
        return text + (f" ({DRIFT_SHARE} x tolerance {tol:.3g} + 2 x its bootstrap error "
                       f"{drift_err:.3g})")
    return text + f" ({DRIFT_SHARE} x tolerance {tol:.3g})"


def fit_row(series: Series, predicted: float | None, axis: str = "N", quantity: str = "",
            above_one: bool = False, terms: tuple[float, float] | None = None
            ) -> dict[str, Any] | None:
    """Fit one series against its effective horizon and judge it: the values of one cell of
    the fit table (:data:`SCHEMA`), None with too few usable points. ``above_one``: the theory
    also predicts the quantity > 1 (der under KD); ``terms``: the (bias, variance) exponents
    behind ``predicted`` (:func:`verdict`)."""
    x, y = series.x, series.y.copy()
    xe = x if series.x_eff is None else series.x_eff
    notes = list(series.notes)
    pred = math.nan if predicted is None else float(predicted)
    base = {"horizon": series.horizon or axis, "predicted": pred,
            "truncation": series.truncation}
    nan_fit = {k: math.nan for k in ("range_min", "range_max", "slope", "slope_err",
                                     "slope_raw", "drift", "tolerance", "difference")}
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
            dd = drift_draws(xe[ok], np.asarray(series.draws, float)[:, ok], x[ok])
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
        notes.append(_drift_note(drift_value, tol, drift_err))
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
    used = x[ok][main]
    return {**base, "truncation": truncation, "n_points": fit.n_points,
            "range_min": float(used[0]), "range_max": float(used[-1]), "slope": fit.slope,
            "slope_err": fit.slope_err, "slope_raw": raw, "drift": drift_value,
            "tolerance": tol, "difference": fit.slope - pred if np.isfinite(pred) else math.nan,
            "verdict": v, "notes": "; ".join(notes)}


def judge(x: npt.ArrayLike, y: npt.ArrayLike, predicted: float | None,
          schedule: str = "geometric", batch: int = 1,
          truncation: float | npt.ArrayLike = 0.0, draws: np.ndarray | None = None,
          terms: tuple[float, float] | None = None) -> dict[str, Any]:
    """One series through the full rule (horizon, drift, truncation, tolerance) outside a
    cube: the cell :func:`fit_cube` would write for it (:func:`fit_row`).
    ``truncation``: the tail share d cuts, one number for the series or one per x value."""
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    share = np.asarray(truncation, float)
    per_x = share.ndim > 0
    s = Series(xa, ya, draws, x_eff=effective_horizon(xa / batch, schedule),
               horizon=schedule, truncation=float(np.max(share)),
               truncation_x=share if per_x else None)
    row = fit_row(s, predicted, "x", "y", terms=terms)
    if row is None:
        raise ValueError(f"judge needs at least {MIN_POINTS} usable points, got "
                         f"{int(usable(xa, ya).sum())}")
    return row


def held_text(values: Mapping[str, Any]) -> str:
    """Held axis values as ``k=v, k=v`` for reading (numbers to four digits), "(none)"."""
    def fmt(v: Any) -> str:
        return _num(v) if isinstance(v, int | float) and not isinstance(v, bool) else str(v)

    return ", ".join(f"{k}={fmt(v)}" for k, v in values.items()) or "(none)"


# ---------------------------------------------------------------------------------------
# The cube's families
# ---------------------------------------------------------------------------------------
class _Cube(CubeView):
    """A cube for the fits: which axes the fit table holds, and the table being filled."""

    def __init__(self, ds: xr.Dataset):
        super().__init__(ds)
        n = np.asarray(ds["n"].values, float) if "n" in self.axes else np.array([])
        self.finite_n = np.flatnonzero(np.isfinite(n))
        self.search_n = len(self.finite_n) >= MIN_POINTS
        self.held = [a for a in self.axes if a != "N" and not (a == "n" and self.search_n)]
        self.table = _Table([f.name for f in FAMILIES], self.methods,
                            {a: ds[a].values for a in self.held})

    def axis_values(self, axis: str) -> np.ndarray:
        return np.asarray(self.ds[axis].values, float)

    def params_with_steps(self, pos: Mapping[str, int]) -> dict[str, Any]:
        """:meth:`params_at` with the initial steps the runs used at ``pos``: the one step of
        each run over the positions not given, None where they differ (a tuned γ0)."""
        out = self.params_at(pos)
        for role in ("t", "s"):
            g = self.step_used(role, pos)
            out[f"gamma0_{role}"] = float(g[0]) if len(g) and np.all(g == g[0]) else None
        return out

    def median_step(self, role: str, pos: Mapping[str, int]) -> float:
        """The initial step run ``role`` used at ``pos`` (the median over the positions not
        given: one value unless γ0 is tuned); NaN where no run there has one."""
        g = self.step_used(role, pos)
        return float(np.median(g)) if len(g) else math.nan


class _Table:
    """The fit table's arrays over (family, estimator, held axes), filled cell by cell."""

    def __init__(self, families: Sequence[str], estimators: Sequence[str],
                 coords: Mapping[str, np.ndarray]):
        self.families, self.estimators = list(families), list(estimators)
        self.coords = dict(coords)
        shape = (len(families), len(estimators), *(len(v) for v in coords.values()))
        self.numbers = {k: np.full(shape, np.nan) for k in NUMBERS}
        self.n_points = np.zeros(shape, dtype=np.int64)
        self.texts = {k: np.full(shape, "", dtype=object) for k in TEXTS}

    def put(self, family: str, estimator: str, pos: Mapping[str, int], row: Mapping[str, Any]
            ) -> None:
        """One fitted row at held positions ``pos``; the held axes not in ``pos`` (those the
        family does not depend on) get the same row all along them."""
        idx = (self.families.index(family), self.estimators.index(estimator),
               *(pos.get(a, slice(None)) for a in self.coords))
        for k in NUMBERS:
            self.numbers[k][idx] = row[k]
        self.n_points[idx] = row["n_points"]
        for k in TEXTS:
            self.texts[k][idx] = row[k]

    def dataset(self, attrs: Mapping[str, Any]) -> xr.Dataset:
        dims = ("family", "estimator", *self.coords)
        data = {k: (dims, v) for k, v in self.numbers.items()}
        data["n_points"] = (dims, self.n_points)
        data.update({k: (dims, v) for k, v in self.texts.items()})
        ds = xr.Dataset(data, coords={"family": self.families, "estimator": self.estimators,
                                      **self.coords})
        fitted = (ds["verdict"] != "").any([d for d in dims if d != "family"])
        ds = ds.sel(family=[f for f in self.families if bool(fitted.sel(family=f))])
        ds = ds.assign_coords(
            quantity=("family", [BY_NAME[f].quantity for f in ds["family"].values]),
            axis=("family", [BY_NAME[f].axis for f in ds["family"].values]),
            title=("family", [BY_NAME[f].title for f in ds["family"].values]))
        for k, text in SCHEMA.items():
            ds[k].attrs["long_name"] = text
        ds.attrs.update(attrs)
        return ds



def _held_positions(cube: _Cube, held: Sequence[str]) -> Iterator[dict[str, int]]:
    """Every combination of positions along ``held`` (the cube's order)."""
    sizes = [len(cube.ds[a]) for a in held]
    for idx in itertools.product(*(range(k) for k in sizes)):
        yield dict(zip(held, idx, strict=True))


def _labels(cube: CubeView, pos: Mapping[str, int]) -> dict[str, Any]:
    """Axis positions → the cube's labels (numbers as floats)."""
    out = {}
    for a, i in pos.items():
        v = cube.ds[a].values[i]
        out[a] = float(v) if isinstance(v, np.number) else str(v)
    return out


def _horizon(series: Series, p: Mapping[str, Any], role: str, gamma0: float) -> None:
    """Give ``series`` the effective horizon of run ``role`` (t or s) at its x values and the
    share of the rate-setting tail the truncation at d (or the rank) cuts there."""
    batch = int(p[f"batch_{role}"])
    schedule = p[f"schedule_{role}"]
    fixed_h = None if theory.unset(p[f"horizon_{role}"]) else int(p[f"horizon_{role}"])
    alpha = p["alpha_t"] if role == "t" else p["alpha_s"]
    rank = p[f"r_{role}"]
    d = int(p["d"])
    steps = series.x / batch
    if fixed_h is not None:
        series.horizon = "samples (fixed schedule horizon)"
        series.notes.append(f"horizon_{role} fixed at {fixed_h}: fitted against the samples")
    else:
        series.x_eff = effective_horizon(steps, schedule)
        series.horizon = {"geometric": "T/log2 T", "tail_geometric": "(T/2)/log2(T/2)"}.get(
            schedule, "T") + (f", T = samples/{batch}" if batch != 1 else "")
    width = d if theory.unset(rank) else min(d, int(rank))
    series.truncation_x = np.array([
        truncated_share(kstar_power(alpha, cutoff_threshold(float(t), gamma0, "lower")) / width,
                        p, alpha) if np.isfinite(t) else math.nan for t in steps])
    ok = usable(series.x, series.y)
    if ok.any():
        series.truncation = float(np.nanmax(series.truncation_x[ok]))


def _target_note(p: Mapping[str, Any]) -> list[str]:
    """The student's bias exponent when the target is defined in teacher coordinates."""
    if p["alpha_s"] == p["alpha_t"] or p["target"] == "lowdim":
        return []
    bias = (1.0 + p["beta"] - p["alpha_t"]) / p["alpha_s"]
    return [f"target in teacher coordinates: student source exponent beta+alpha_S-alpha_T, "
            f"bias exponent (1+beta-alpha_T)/alpha_S = {bias:.3f}"]


def _noise_coefficient(risk: xr.DataArray) -> xr.DataArray:
    """The σ² coefficient of ``risk`` at every other point: the slope of a straight line
    through it over the ``sigma2`` axis (``DataArray.polyfit``; the exact risk is affine in σ²,
    so this is its variance term per unit noise)."""
    fit = risk.polyfit("sigma2", 1, skipna=True)
    return fit.polyfit_coefficients.sel(degree=1, drop=True)


def _simple_source(cube: _Cube, fam: Family, method: str, cut: Mapping[str, int]
                   ) -> tuple[xr.DataArray, xr.DataArray | None] | None:
    """The values a simple family fits for ``method`` at grid positions ``cut`` (and their
    Monte Carlo standard errors); None where the cube or the grid cannot give them."""
    def at(da: xr.DataArray) -> xr.DataArray:
        return da.isel({a: i for a, i in cut.items() if a in da.dims})

    if fam.name.endswith("_noise"):
        var = fam.name.replace("_noise", "")
        if method != "exact" or "sigma2" not in cube.axes or len(cube.ds["sigma2"]) < 2 \
                or not cube.has(f"risk_{var}"):
            return None
        return _noise_coefficient(at(cube.masked(f"risk_{var}", method)).load()), None
    if not cube.has(fam.quantity):
        return None
    se = None
    if method == "mc" and cube.has(f"{fam.quantity}_se"):
        se = at(cube.ds[f"{fam.quantity}_se"])
    return at(cube.masked(fam.quantity, method)), se


def _kd_at_limit(cube: CubeView) -> bool:
    """Whether the cube reads KD families at n = inf: its largest n (the n axis' last value, or
    the fixed n) is infinite. A tied n follows another axis and is never infinite."""
    n = cube.coord("n")
    if "n" in cube.axes:
        return bool(np.isinf(float(n.values[-1])))
    return bool(n.ndim == 0 and np.isinf(float(n.values)))


def _simple_families(cube: _Cube, skipped: list[int]) -> None:
    """teacher, direct, ceiling, the noise families (vs N or n) and the KD families (vs N at
    n = inf)."""
    for name in SIMPLE:
        fam = BY_NAME[name]
        kd = name.startswith("kd")
        if fam.axis not in cube.axes or len(cube.ds[fam.axis]) < MIN_POINTS:
            continue
        if kd and not _kd_at_limit(cube):
            continue
        pin = {"n": len(cube.ds["n"]) - 1} if kd and "n" in cube.axes else {}
        consumed = {fam.axis, *pin, *(("sigma2",) if name.endswith("_noise") else ())}
        others = [a for a in cube.axes if a not in consumed]
        held = [a for a in others if a not in fam.irrelevant]
        free = [a for a in others if a in fam.irrelevant]
        x = cube.axis_values(fam.axis)
        # one slab of the first held axis at a time: a variable is read a slab at a time
        inner = held[1:]
        tops = [{held[0]: i} for i in range(len(cube.ds[held[0]]))] if held else [{}]
        for method, top in itertools.product(cube.methods, tops):
            source = _simple_source(cube, fam, method, {**pin, **top})
            if source is None:
                continue
            order = [*inner, *free, fam.axis]
            values, errors = source
            ys = np.asarray(values.transpose(*order).values, float)
            ses = (None if errors is None
                   else np.asarray(errors.transpose(*order).values, float))
            with np.errstate(invalid="ignore"):
                good = (np.isfinite(ys) & (ys > 0) & np.isfinite(x) & (x > 0)).sum(-1)
            n_inner = int(np.prod([len(cube.ds[a]) for a in inner]))
            enough = (good >= MIN_POINTS).reshape(n_inner, -1)
            first = np.argmax(enough, axis=1)
            free_sizes = [len(cube.ds[a]) for a in free]
            for k, ipos in enumerate(_held_positions(cube, inner)):
                hpos = {**top, **ipos}  # in the order of `held`
                if kd and cube.params_at({**hpos, **pin})["target"] == "lowdim":
                    continue  # Theorem 3 is about power-law sources (see unfitted)
                if not enough[k, first[k]]:
                    skipped.append(1)
                    continue
                fpos = {a: int(i) for a, i in zip(
                    free, np.unravel_index(first[k], free_sizes) if free else (), strict=True)}
                at = tuple(ipos[a] for a in inner) + tuple(fpos[a] for a in free)
                y = ys[at]
                p = cube.params_at({**hpos, **fpos, **pin})
                preds = theory.predictions(p)
                pred = theory.exponent(preds, fam.key)
                text = held_text(_labels(cube, hpos))
                draws = (None if ses is None
                         else normal_draws(y, ses[at], seed=family_seed(name, method, text)))
                series = Series(x, y, draws)
                _horizon(series, p, fam.role, cube.median_step(fam.role, {**hpos, **fpos, **pin}))
                if name in ("direct", "ceiling"):
                    series.notes += _target_note(p)
                row = fit_row(series, pred, fam.axis, fam.quantity, above_one=name == "kd_der",
                              terms=theory.exponent_terms(preds, f"{fam.key}_terms"))
                if row is not None:
                    cube.table.put(name, method, {**hpos, **{a: i for a, i in pin.items()
                                                             if a in cube.held}}, row)


def _w2s_families(cube: _Cube, skipped: list[int]) -> None:
    """Theorem 5 families from the optimum over n (axis) or over learning-curve steps."""
    if "N" not in cube.axes or len(cube.ds["N"]) < MIN_POINTS or not cube.has("risk_t2s"):
        return
    use_axis = cube.search_n
    use_curve = not use_axis and cube.has("curve_t2s")
    if not (use_axis or use_curve):
        return
    inner = ["N", "n"] if use_axis else ["N", "step"]
    others = [a for a in cube.axes if a not in inner]  # an n axis too short to search is held
    xN = cube.axis_values("N")
    for method in cube.methods:
        if use_axis:
            risk = cube.masked("risk_t2s", method).isel(n=cube.finite_n)
            ratio = (cube.masked("w2s_ratio", method).isel(n=cube.finite_n)
                     if cube.has("w2s_ratio") else None)
            grids = {"risk": risk, "ratio": ratio}
            if method == "mc":
                for k, name in (("risk_se", "risk_t2s_se"), ("ratio_se", "w2s_ratio_se")):
                    grids[k] = (cube.ds[name].isel(n=cube.finite_n) if cube.has(name)
                                else None)
            grid_n = cube.axis_values("n")[cube.finite_n]
            where = ("optimum over the n axis (its finite values; n_opt and the minimum "
                     "interpolated: parabola in log-log through the grid minimum and its "
                     "neighbours)")
        else:
            curve = cube.masked("curve_t2s", method)
            grids = {"risk": curve.where(curve["step"] > 0)}  # step 0: the untrained student
            if method == "mc" and cube.has("curve_t2s_se"):
                grids["risk_se"] = cube.ds["curve_t2s_se"]
            grid_n = None
            where = ("optimum over learning-curve checkpoints (curve_t2s, n = step * batch_s, "
                     "interpolated as on the n axis): early stopping of the run planned for "
                     "horizon_s, not a run of n_opt samples")
        arrays = {k: (None if v is None else np.asarray(v.transpose(*others, *inner).values,
                                                        float))
                  for k, v in grids.items()}
        for pos in _held_positions(cube, others):
            p = cube.params_with_steps(pos)
            if p["target"] != "lowdim":
                continue
            at = tuple(pos[a] for a in others)
            tables = {k: (None if v is None else v[at]) for k, v in arrays.items()}
            _w2s_one(cube, skipped, method, pos, p, xN, tables, grid_n, where)


def _w2s_one(cube: _Cube, skipped: list[int], method: str, pos: dict[str, int],
             p: Mapping[str, Any], xN: np.ndarray, tables: Mapping[str, np.ndarray | None],
             grid_n: np.ndarray | None, where: str) -> None:
    """One W2S family group at held positions ``pos``: ``tables['risk']`` is (N, n-or-step)."""
    risk, risk_se = tables["risk"], tables.get("risk_se")
    if risk is None:
        raise ValueError("a W2S family group needs tables['risk'] (the risk_t2s optima)")
    ratio, ratio_se = tables.get("ratio"), tables.get("ratio_se")
    nN = len(xN)
    batch_s = int(p["batch_s"])
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
    for h in np.flatnonzero(have):
        n_opt[h], min_risk[h] = refine_optimum(grid_n, risk[h], j[h])
    gap = np.where(have, ratio[rows_idx, jj], np.nan) if ratio is not None else None
    alpha_s = p["alpha_s"]
    gamma0 = cube.median_step("s", pos)
    kstar = np.array([student_cutoff(n, alpha_s, gamma0, batch_s) if np.isfinite(n) else np.nan
                      for n in n_opt])
    text = held_text(_labels(cube, pos))
    # bootstrap: redraw the whole (N, n) table and redo the optimum
    draws: dict[str, np.ndarray] = {}
    if risk_se is not None:
        rd = normal_draws(risk, risk_se, seed=family_seed("w2s", method, text, "risk_t2s"))
        rd = np.where(np.isfinite(risk), rd, np.nan)
        jd = np.argmin(np.where(np.isfinite(rd), rd, np.inf), axis=2)
        draws["n"], draws["min"] = np.full(jd.shape, np.nan), np.full(jd.shape, np.nan)
        for b, h in itertools.product(range(jd.shape[0]), np.flatnonzero(have)):
            draws["n"][b, h], draws["min"][b, h] = refine_optimum(grid_n, rd[b, h], jd[b, h])
        draws["k"] = np.vectorize(lambda n: student_cutoff(n, alpha_s, gamma0, batch_s))(
            draws["n"])
        if ratio is not None:
            rd_ = normal_draws(ratio, ratio_se if ratio_se is not None else np.zeros_like(ratio),
                               seed=family_seed("w2s", method, text, "ratio"))
            draws["gap"] = np.take_along_axis(rd_, jd[..., None], axis=2)[..., 0]
    pred = theory.predictions(p)
    notes = [where]
    if p["sigma2"] == 0:
        notes.append("sigma2=0: no label noise for the student to filter out")
    specs = {"w2s_min_risk": (min_risk, draws.get("min")), "w2s_gap": (gap, draws.get("gap")),
             "w2s_nopt_paper": (n_opt, draws.get("n")),
             "w2s_nopt_audited": (n_opt, draws.get("n")),
             "w2s_kstar_opt": (kstar, draws.get("k"))}
    horizon = Series(xN, min_risk)
    _horizon(horizon, p, "t", cube.median_step("t", pos))
    if np.isfinite(kstar).any():  # the student's optimal cutoff must fit in d as well
        d = int(p["d"])
        width = d if theory.unset(p["r_s"]) else min(d, int(p["r_s"]))
        student = np.array([truncated_share(k / width, p, alpha_s)
                            if np.isfinite(k) else math.nan for k in kstar])
        horizon.truncation = np.nanmax([horizon.truncation, np.nanmax(student)])
        if horizon.truncation_x is not None:
            horizon.truncation_x = np.fmax(horizon.truncation_x, student)
    rows: dict[str, dict[str, Any]] = {}
    for family, (y, d_) in specs.items():
        if y is None:
            continue
        fam = BY_NAME[family]
        extra = []
        if family == "w2s_kstar_opt":
            extra.append(f"k* = (gamma0_s T / log2 T)^(1/alpha_S), T = n_opt / batch_s, "
                         f"gamma0_s={gamma0:.4g}")
        if method == "mc" and d_ is None:
            extra.append("no standard errors in the cube: exact-style error")
        s = Series(xN, y, d_ if method == "mc" else None, edge & have,
                   notes + horizon.notes + extra, horizon.x_eff, horizon.horizon,
                   horizon.truncation, horizon.truncation_x)
        if usable(xN, y).sum() < MIN_POINTS and not (edge & have).any():
            skipped.append(1)
            continue
        row = fit_row(s, theory.exponent(pred, fam.key), "N", fam.quantity)
        if row is not None:
            rows[family] = row
    rows.update(_w2s_late(p, method, xN, specs, edge & have, horizon, notes))
    paper, audit = rows.get("w2s_nopt_paper"), rows.get("w2s_nopt_audited")
    if paper and audit and np.isfinite(paper["slope"]):
        closer = ("paper" if abs(paper["difference"]) < abs(audit["difference"]) else "audited")
        text = (f"data closer to the {closer} exponent (paper {paper['predicted']:.3f}, "
                f"audited {audit['predicted']:.3f})")
        for r in (paper, audit):
            r["notes"] = "; ".join(filter(None, [r["notes"], text]))
    for family, row in rows.items():
        cube.table.put(family, method, pos, row)


def _w2s_late(p: Mapping[str, Any], method: str, xN: np.ndarray,
              specs: Mapping[str, tuple[np.ndarray | None, np.ndarray | None]],
              edge: np.ndarray, horizon: Series, notes: list[str]) -> dict[str, dict[str, Any]]:
    """Rows of the late families (:data:`LATE_OF`) from the optima ``specs`` of
    :func:`_w2s_one`.

    The late law holds past the crossover N_x (:func:`theory.w2s_crossover`); smaller N are
    left out of the fit, and a family with fewer than three N at or above N_x is `not
    asymptotic`. n_opt enters as the student's effective horizon (n_opt / log2 n_opt for the
    geometric schedule), the quantity whose exponent the late law states.
    """
    pred = theory.predictions(p)
    n_x = theory.w2s_crossover(p)
    out = {}
    for family, source in LATE_OF.items():
        fam = BY_NAME[family]
        y, draws = specs.get(source, (None, None))
        if y is None:
            continue
        if family == "w2s_nopt_late":
            y = effective_horizon(y / p["batch_s"], p["schedule_s"])
            draws = (None if draws is None else
                     effective_horizon(np.asarray(draws, float) / p["batch_s"],
                                       p["schedule_s"]))
        extra = list(notes) + horizon.notes
        predicted = theory.exponent(pred, fam.key)
        if predicted is None:
            extra.append(f"late law not predicted here: {theory.w2s_late_scope(p)}")
        elif np.isfinite(n_x):
            early = xN < n_x
            extra.append(f"late law from N_x = {_num(round(n_x))} (theory.w2s_crossover)"
                         + (f"; N < N_x left out ({int(early.sum())} values)"
                            if early.any() else ""))
            y = np.where(early, np.nan, y)
            if usable(xN, y).sum() < MIN_POINTS:
                out[family] = {
                    "n_points": int(usable(xN, y).sum()), "range_min": math.nan,
                    "range_max": math.nan, "horizon": horizon.horizon or "N",
                    "slope": math.nan, "slope_err": math.nan, "slope_raw": math.nan,
                    "drift": math.nan, "truncation": horizon.truncation,
                    "predicted": float(predicted), "tolerance": math.nan,
                    "difference": math.nan, "verdict": "not asymptotic",
                    "notes": "; ".join([*extra, f"fewer than {MIN_POINTS} N at or above N_x: "
                                        "larger N needed"])}
                continue
        s = Series(xN, y, draws if method == "mc" else None, edge, extra, horizon.x_eff,
                   horizon.horizon, horizon.truncation, horizon.truncation_x)
        row = fit_row(s, predicted, "N", fam.quantity)
        if row is not None:
            out[family] = row
    return out


def unfitted(ds: xr.Dataset) -> dict[str, str]:
    """Why each family this grid cannot fit at all is absent (family → reason; written into
    fits.md, and the reason a rate claim gives when it finds no row)."""
    cube = ds if isinstance(ds, CubeView) else CubeView(ds)
    if not cube.methods:
        return dict.fromkeys(FAMILY_ORDER, "no estimator with risks in the cube (bound only)")
    out = {}
    for name in SIMPLE:
        fam = BY_NAME[name]
        m = len(cube.ds[fam.axis]) if fam.axis in cube.axes else 0
        if m < MIN_POINTS:
            out[name] = (f"{fam.axis} is " + (f"an axis of {m} value(s)" if m
                                               else "not a grid axis")
                         + f", a rate needs at least {MIN_POINTS}")
    for name in ("teacher_noise", "direct_noise"):
        if name not in out and ("sigma2" not in cube.axes or len(cube.ds["sigma2"]) < 2):
            out[name] = "sigma2 is not a grid axis of two or more values"
        elif name not in out and "exact" not in cube.methods:
            out[name] = "the exact estimator is not in the cube"
    targets = {str(t) for t in np.atleast_1d(cube.coord("target").values).tolist()}
    for name in ("kd_limit", "kd_der"):
        if name in out:
            continue
        if targets == {"lowdim"}:
            out[name] = ("Theorem 3 is stated for a power-law source and predicts nothing for "
                         "the lowdim target (its der is in the cube and the der maps)")
        elif not _kd_at_limit(cube):
            out[name] = ("no n = inf in the grid: Theorem 3 is about lim_n, which the cube "
                         "holds only at n = inf (not in this sweep: add n: inf)")
    nN = len(cube.ds["N"]) if "N" in cube.axes else 0
    w2s = [f.name for f in FAMILIES if f.name.startswith("w2s")]
    finite = (np.isfinite(np.asarray(cube.ds["n"].values, float)).sum()
              if "n" in cube.axes else 0)
    if "lowdim" not in targets:
        out.update(dict.fromkeys(w2s, "Theorem 5 assumes the lowdim target, which the grid "
                                      "lacks"))
    elif nN < MIN_POINTS:
        out.update(dict.fromkeys(w2s, f"N has {nN} value(s), the optimum over n vs N needs "
                                      f"{MIN_POINTS}"))
    elif finite < MIN_POINTS:
        if cube.has("curve_t2s"):
            out.update(dict.fromkeys(
                ("w2s_gap", "w2s_gap_late"),
                "the n axis has fewer than 3 finite values, so the W2S optimum is searched "
                "over learning-curve checkpoints, which carry no ceiling"))
        else:
            out.update(dict.fromkeys(w2s, "no n axis of 3 finite values and no learning "
                                          "curves to search for the optimal n"))
    return {f: out[f] for f in FAMILY_ORDER if f in out}


def fit_cube(ds: xr.Dataset) -> xr.Dataset:
    """Every §5 family the cube's grid spans: a Dataset over (family, estimator, held axes)
    with the variables of :data:`SCHEMA` (``verdict`` empty where nothing was fitted).

    Attributes: ``name`` (the sweep), ``held`` (the held axes), ``fixed`` (the fixed and tied
    parameters, for reading), ``unfitted`` (:func:`unfitted`), ``skipped`` (series with fewer
    than :data:`MIN_POINTS` usable points).
    """
    cube = _Cube(ds)
    skipped: list[int] = []
    if cube.methods:
        _simple_families(cube, skipped)
        _w2s_families(cube, skipped)
    return cube.table.dataset(_attrs(cube, len(skipped)))


def _attrs(cube: CubeView, skipped: int) -> dict[str, Any]:
    fixed = held_text(cube.layout.fixed)
    if cube.layout.tie:
        fixed += "; tied: " + ", ".join(f"{k} = {a}" for k, a in cube.layout.tie.items())
    return {"name": cube.layout.name, "fixed": fixed, "unfitted": unfitted(cube.ds),
            "skipped": skipped}


# ---------------------------------------------------------------------------------------
# The table: Dataset <-> DataFrame (fits.csv), Markdown (fits.md)
# ---------------------------------------------------------------------------------------
COLUMNS = ("family", "estimator", "quantity", "axis", *NUMBERS, "n_points", *TEXTS)
"""The columns of ``fits.csv`` besides the held axes (which come after ``estimator``)."""


def held_axes(fits: xr.Dataset) -> list[str]:
    """The held grid axes of a fit table, in the cube's order."""
    return [str(d) for d in fits["verdict"].dims if d not in ("family", "estimator")]


def depends_on(family: str, held: Sequence[str]) -> list[str]:
    """The held axes a family's quantity depends on (it is the same along the others)."""
    return [a for a in held if a not in BY_NAME[family].irrelevant]


def frame(fits: xr.Dataset) -> pd.DataFrame:
    """The fit table as rows: one per fitted (family, estimator, held values), the held axes a
    family does not depend on left empty (NaN), families in :data:`FAMILY_ORDER`."""
    held = held_axes(fits)
    parts = []
    for family in fits["family"].values:
        sub = fits.sel(family=family)
        loose = [a for a in held if a not in depends_on(str(family), held)]
        sub = sub.isel(dict.fromkeys(loose, 0))
        df = sub[[*SCHEMA]].to_dataframe().reset_index()
        df = df[df["verdict"] != ""].copy()
        for a in loose:
            df[a] = np.nan
        df["family"] = str(family)
        df["quantity"] = BY_NAME[str(family)].quantity
        df["axis"] = BY_NAME[str(family)].axis
        parts.append(df)
    cols = ["family", "estimator", *held, "quantity", "axis", *NUMBERS, "n_points", *TEXTS]
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat(parts, ignore_index=True)
    out["n_points"] = out["n_points"].astype(int)
    return out[cols].reset_index(drop=True)


def read_fits(path: str | os.PathLike, ds: xr.Dataset) -> xr.Dataset:
    """A fits.csv (:func:`write_fits`) as :func:`fit_cube`'s Dataset, on the held axes of the
    cube ``ds`` it was fitted on (an empty axis cell: the same row all along that axis)."""
    df = pd.read_csv(path, keep_default_na=True, dtype=dict.fromkeys(TEXTS, str))
    missing = [c for c in COLUMNS if c not in df]
    if missing:
        raise ValueError(f"{path}: not a fits.csv (columns {missing} missing)")
    cube = _Cube(ds)
    held = cube.held
    if any(a not in df for a in held):
        raise ValueError(f"{path}: no column for the held axes "
                         f"{[a for a in held if a not in df]} of this cube: fitted on another "
                         "cube?")
    extra = [c for c in df.columns if c not in COLUMNS and c not in held]
    if extra:
        raise ValueError(f"{path}: columns {extra} are not held axes of this cube "
                         f"({', '.join(held) or 'none'}): fitted on another cube?")
    for c in TEXTS:
        df[c] = df[c].fillna("")
    lookup = {a: {_key(v): i for i, v in enumerate(ds[a].values)} for a in held}
    for r in df.itertuples(index=False):
        row = r._asdict()
        pos = {}
        for a in held:
            v = row[a]
            if isinstance(v, float) and math.isnan(v):
                continue
            if _key(v) not in lookup[a]:
                raise ValueError(f"{path}: {a} = {v!r} is not on the cube's {a} axis")
            pos[a] = lookup[a][_key(v)]
        if row["family"] not in BY_NAME or row["estimator"] not in cube.methods:
            raise ValueError(f"{path}: unknown family or estimator "
                             f"({row['family']}, {row['estimator']})")
        cube.table.put(row["family"], row["estimator"], pos, row)
    return cube.table.dataset(_attrs(cube, 0))


def _key(v: Any) -> Any:
    """A label as a lookup key: a number (or text that reads as one) as a float, other text as
    it is, so that a CSV cell finds its cube label whichever of the two each holds."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def summary(fits: xr.Dataset) -> str:
    """One paragraph a newcomer can read: of the rows the theory predicts, how many were
    decided and why the others were not; rows without a prediction are counted apart."""
    df = frame(fits)
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


def verdict_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Rows per family (in :data:`FAMILY_ORDER`) and verdict, with totals."""
    table = pd.crosstab(df["family"], df["verdict"], margins=True, margins_name="all")
    cols = [v for v in VERDICTS if v in table.columns] + ["all"]
    rows = [f for f in FAMILY_ORDER if f in table.index] + ["all"]
    return table.loc[rows, cols]


def _cell(v: Any, digits: int = 3) -> str:
    if isinstance(v, float | np.floating):
        return "" if not np.isfinite(v) else f"{v:.{digits}f}"
    return str(v)


def markdown_table(df: pd.DataFrame) -> str:
    """A frame as a Markdown pipe table (tabulate): cells printed as given (no number parsing,
    no padding), '|' and newlines inside a cell escaped."""
    cells = df.map(lambda v: str(v).replace("|", "\\|").replace("\n", " "))
    return cells.to_markdown(index=False, disable_numparse=True, stralign=None,
                             numalign=None)


def family_table(rows: pd.DataFrame, held: Sequence[str]) -> pd.DataFrame:
    """The readable columns of one family's rows (fits.md)."""
    axes = [a for a in held if rows[a].notna().any()]
    out = pd.DataFrame({"estimator": rows["estimator"]})
    for a in axes:
        out[a] = [_cell_label(v) for v in rows[a]]
    out["points"] = rows["n_points"].astype(str)
    out["range"] = [f"{_num(a)}..{_num(b)}" if np.isfinite(a) else ""
                    for a, b in zip(rows["range_min"], rows["range_max"], strict=True)]
    out["horizon"] = rows["horizon"]
    out["slope ± err"] = ["" if not np.isfinite(s) else f"{s:.3f} ± {e:.3f}"
                          for s, e in zip(rows["slope"], rows["slope_err"], strict=True)]
    for col, name, digits in (("slope_raw", "slope_raw", 3), ("drift", "drift", 3),
                              ("truncation", "cut", 2), ("predicted", "predicted", 3),
                              ("tolerance", "tol", 3), ("difference", "difference", 3)):
        out[name] = [_cell(v, digits) for v in rows[col]]
    out["verdict"] = rows["verdict"]
    out["notes"] = rows["notes"]
    return out


def _cell_label(v: Any) -> str:
    return _num(v) if isinstance(v, float | int) and not isinstance(v, bool) else str(v)


def to_markdown(fits: xr.Dataset) -> str:
    """fits.md: how to read it and a summary table of the verdicts, one table per family,
    then the rules."""
    df = frame(fits)
    lines = [f"# Exponent fits: {fits.attrs.get('name', '')}", "", "## How to read this", "",
             HOW_TO_READ, "", summary(fits), ""]
    if not df.empty:
        counts = verdict_counts(df).reset_index().rename(columns={"family": "family"})
        lines += [markdown_table(counts.astype(str)), ""]
    lines += [f"Fixed parameters: {fits.attrs.get('fixed', '') or '(none)'}.", ""]
    if fits.attrs.get("skipped"):
        lines += [f"Series skipped for fewer than {MIN_POINTS} usable points: "
                  f"{fits.attrs['skipped']}.", ""]
    unfit = fits.attrs.get("unfitted") or {}
    if unfit:
        lines += ["Families this grid cannot fit: "
                  + "; ".join(f"{k}: {v}" for k, v in unfit.items()) + ".", ""]
    if df.empty:
        lines += ["No family could be fitted: the grid needs an N (or n) axis with at least "
                  f"{MIN_POINTS} values and computed risks.", ""]
    held = held_axes(fits)
    for family in dict.fromkeys(df["family"]):
        fam = BY_NAME[family]
        rows = df[df["family"] == family]
        lines += [f"## {fam.title}", "", f"Quantity: {fam.quantity} against {fam.axis}.", "",
                  markdown_table(family_table(rows, held)), ""]
    lines += ["## Rules", "", RULES, ""]
    return "\n".join(lines)


def write_fits(fits: xr.Dataset, csv_path: str | os.PathLike,
               md_path: str | os.PathLike) -> None:
    """Write the table as CSV (held axis labels at full precision, numbers to 6 digits) and
    as Markdown (parents created)."""
    for p in (csv_path, md_path):
        Path(p).parent.mkdir(parents=True, exist_ok=True)
    df = frame(fits)
    for a in held_axes(fits):
        df[a] = [("" if isinstance(v, float) and math.isnan(v) else
                  repr(float(v)) if isinstance(v, float | int) else str(v)) for v in df[a]]
    df.to_csv(csv_path, index=False, float_format="%.6g")
    Path(md_path).write_text(to_markdown(fits))


def rows(fits: xr.Dataset, families: Sequence[str]) -> pd.DataFrame:
    """The fitted rows of ``families`` (:func:`frame`), with a ``held`` column naming each
    row's held values for reading."""
    present = [f for f in families if f in fits["family"].values]
    df = frame(fits.sel(family=present))
    held = held_axes(fits)
    df["held"] = [held_text({a: r[a] for a in held if not _missing(r[a])})
                  for r in df.to_dict("records")]
    return df


def _missing(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)
