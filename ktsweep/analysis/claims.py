"""The paper's claims a sweep can test, each with what was measured and a verdict.

A claim is a statement of arXiv 2606.01292 (a lemma's rate, a theorem's sign, ordering,
limit or crossing, a bound) in words, checked on one result cube and its fit table
(:func:`ktsweep.analysis.fits.fit_cube`). Rate claims gather the fitted rows of their
families; sign, ordering, limit, crossing and bound claims read the cube's numbers directly
(never a flag an engine wrote about them), so that a wrong cube cannot get a right verdict.
Each gets one verdict of :data:`CLAIM_VERDICTS` and, for any verdict but ``holds``, the
reason; :func:`to_markdown` writes the table ``results/NAME/claims.md`` (workflow rule
``claims``, ``ktsweep claims``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ktsweep.analysis import fits as fitting
from ktsweep.analysis.cubeview import CubeView
from ktsweep.model import theory
from ktsweep.model.cubespec import Flag

CLAIM_VERDICTS = ("holds", "fails", "not asymptotic", "finite d", "not in this sweep")
"""holds: every judged measurement agrees; fails: a converged measurement contradicts the
claim; not asymptotic / finite d: nothing could be judged for that reason (fits.md's rules);
not in this sweep: the grid has no point where the claim says something."""

VERDICT_MEANING = {
    "holds": "every measurement that could be judged agrees",
    "fails": "a converged measurement contradicts the claim (the reason names it)",
    "not asymptotic": "nothing could be judged yet: larger N or n needed",
    "finite d": "nothing could be judged: the truncation at d shapes the curves (raise d)",
    "not in this sweep": "the grid has no point where the claim says something (the reason "
                         "says what to add)",
}

COLUMNS = ("claim", "source", "statement", "measured", "verdict", "reason")

ADD_N_INF = "not in this sweep: add n: inf to the grid"
"""The reason's opening for a claim about lim_n on a grid without n = inf."""


@dataclass
class Outcome:
    verdict: str
    measured: str
    reason: str = ""


@dataclass(frozen=True)
class Claim:
    """One testable claim: an id, where the paper makes it, the statement, and its check."""

    key: str
    source: str
    statement: str
    check: Callable[[Evidence], Outcome]


class Evidence(CubeView):
    """A cube with its fit table: the preferred estimator's values and the parameters as
    grid arrays."""

    def __init__(self, ds: xr.Dataset, fits: xr.Dataset):
        super().__init__(ds)
        self.fits = fits
        self.method = self.preferred
        self.unfitted: dict[str, str] = dict(fits.attrs.get("unfitted") or fitting.unfitted(ds))

    def value(self, name: str, method: str | None = None) -> xr.DataArray | None:
        """``name`` of the preferred estimator (or ``method``), NaN where its status is not
        ok; None where the cube does not have it."""
        method = method or self.method
        if method is None or not self.has(name) or method not in self.methods:
            return None
        return self.masked(name, method)

    def grid(self, da: xr.DataArray | Any, order: Sequence[str]) -> np.ndarray:
        """``da`` (a value or a parameter coordinate, or a scalar) as a NumPy array over the
        grid axes ``order``, broadcast along the axes it does not vary with."""
        if not isinstance(da, xr.DataArray):
            return np.broadcast_to(np.asarray(da), [len(self.ds[a]) for a in order])
        own = [d for d in order if d in da.dims]
        arr = np.asarray(da.transpose(*own).values)
        arr = arr.reshape([len(self.ds[a]) if a in own else 1 for a in order])
        return np.broadcast_to(arr, [len(self.ds[a]) for a in order])

    def point_text(self, pos: Mapping[str, int]) -> str:
        """A grid point named by its axis labels (``alpha_t=2, N=1.02e+03``)."""
        return ", ".join(f"{a}={_label(self.ds[a].values[pos[a]])}" for a in self.axes
                         if a in pos)


def _label(v: Any) -> str:
    """An axis label as the table prints it (numbers to 3 digits, words as they are)."""
    return _num(float(v)) if isinstance(v, int | float | np.number) else str(v)


def _num(v: float) -> str:
    if not np.isfinite(v):
        return "inf" if v > 0 else str(v)
    return f"{v:.3g}"


def _first(mask: np.ndarray) -> tuple[int, ...]:
    """The first True position of a grid mask (C order)."""
    return tuple(int(i) for i in np.argwhere(mask)[0])


# ---------------------------------------------------------------------------------------
# Rate claims: the fit rows of their families
# ---------------------------------------------------------------------------------------
def _by_count(verdicts: pd.Series) -> pd.Series:
    """Rows per verdict, most frequent first, ties in the order the rows come (the fit
    table's: family, estimator, then the held axes in the cube's order)."""
    return verdicts.value_counts(sort=False).sort_values(ascending=False, kind="stable")


def _from_families(*families: str, known: str = "") -> Callable[[Evidence], Outcome]:
    """A rate claim judged by the fit rows of ``families``; ``known`` (where the project's docs
    explain a failure already measured) is added to the reason when the claim fails."""
    def check(ev: Evidence) -> Outcome:
        rows = fitting.rows(ev.fits, families)
        if rows.empty:
            why: dict[str, list[str]] = {}
            for f in families:
                if f in ev.unfitted:
                    why.setdefault(ev.unfitted[f], []).append(f)
            return Outcome("not in this sweep", "no fit row",
                           "; ".join(f"{', '.join(fs)}: {text}" for text, fs in why.items())
                           or "the grid has no series for " + ", ".join(families))
        counts = _by_count(rows["verdict"])
        measured = ", ".join(f"{int(c)} {v}" for v, c in counts.items())
        judged = rows[rows["verdict"].isin(["consistent", "inconsistent"])]
        if len(judged):
            diff = (judged["slope"] - judged["predicted"]).abs()
            worst = judged.loc[diff.idxmax()]
            measured += (f"; worst judged row ({worst['family']}, {worst['held']}): slope "
                         f"{worst['slope']:.3f} vs predicted {worst['predicted']:.3f}")
        bad = rows[rows["verdict"] == "inconsistent"]
        if len(bad):
            r = bad.iloc[0]
            miss, tol = fitting.distinct(abs(r["difference"]), r["tolerance"])
            return Outcome("fails", measured,
                           f"{len(bad)} of {len(judged)} converged rows miss the prediction, "
                           f"e.g. {r['family']} at {r['held']}: {r['slope']:.3f} vs "
                           f"{r['predicted']:.3f} (|difference| {miss} > tolerance {tol})"
                           + (f"; {r['notes']}" if r["notes"] else "")
                           + (f" ({known})" if known else ""))
        if len(judged):
            return Outcome("holds", measured)
        if set(counts.index) == {"no prediction"}:
            return Outcome("not in this sweep", measured,
                           "every row lies outside the claim's regime (no prediction)")
        undecided = rows[rows["verdict"] != "no prediction"]
        top = _by_count(undecided["verdict"]).index[0]
        r = undecided[undecided["verdict"] == top].iloc[0]
        verdict = {"edge": "not in this sweep"}.get(top, top)
        note = r["notes"] or top
        return Outcome(verdict, measured, f"{top} at every judged row, e.g. {r['family']} at "
                                          f"{r['held']}: {note}")
    return check


# ---------------------------------------------------------------------------------------
# Point-wise claims
# ---------------------------------------------------------------------------------------
def check_kd_sign(ev: Evidence) -> Outcome:
    """der > 1 at n = inf wherever alpha_S > alpha_T > 1 + beta (Theorem 3)."""
    der = ev.value("der")
    if der is None:
        return Outcome("not in this sweep", "no der values", "the cube has no der")
    axes = ev.axes
    n = ev.grid(ev.coord("n"), axes)
    values = ev.grid(der, axes).astype(float)
    regime = ev.grid(theory.kd_regime({k: ev.coord(k) for k in
                                       ("target", "alpha_t", "alpha_s", "beta")}), axes)
    top = n == np.nanmax(n)
    sel = top & regime & np.isfinite(values)
    if not sel.any():
        return Outcome("not in this sweep", "no point in the regime",
                       "no grid point with alpha_S > alpha_T > 1 + beta (gaussian or power "
                       "target)")
    n_top = float(np.nanmax(n))
    above = int((sel & (values > 1.0)).sum())
    measured = (f"der > 1 at {above} of {int(sel.sum())} points in the regime at "
                f"n = {_num(n_top)} (min der {np.min(values[sel]):.3g})")
    if not math.isinf(n_top):
        return Outcome("not in this sweep", measured,
                       f"{ADD_N_INF} (the claim is about lim_n; the largest n here is "
                       f"{_num(n_top)})")
    if above == int(sel.sum()):
        return Outcome("holds", measured)
    worst = _first(sel & (values == np.min(values[sel])))
    p = ev.params_at(dict(zip(axes, worst, strict=True)))
    where = f"alpha_T={p['alpha_t']:g}, alpha_S={p['alpha_s']:g}, N={_num(p['N'])}"
    return Outcome("fails", measured, f"der = {np.min(values[sel]):.3g} <= 1 at n = inf "
                                      f"({where})")


def check_kd_order(ev: Evidence) -> Outcome:
    """Fitted der exponents increase with alpha_S at fixed alpha_T (kappa's ordering).

    The grid tests it only with two or more alpha_S inside the KD regime at one alpha_T (and
    every other held value); it is decided where two of those rows converged."""
    fits = ev.fits
    if "kd_der" not in fits["family"].values:
        return Outcome("not in this sweep", "0 kd_der rows in the KD regime",
                       ev.unfitted.get("kd_der", "needs two or more alpha_S inside the KD "
                                       "regime (alpha_S > alpha_T > 1 + beta, power-law or "
                                       "gaussian target) at one alpha_T"))
    kd = fits.sel(family="kd_der")
    regime = (kd["verdict"] != "") & (kd["verdict"] != "no prediction")
    judged = kd["verdict"].isin(["consistent", "inconsistent"])
    n_regime = int(regime.sum())
    if "alpha_s" not in kd.dims or not bool((regime.sum("alpha_s") >= 2).any()):
        return Outcome("not in this sweep", f"{n_regime} kd_der rows in the KD regime",
                       "needs two or more alpha_S inside the KD regime (alpha_S > alpha_T > "
                       "1 + beta, power-law or gaussian target) at one alpha_T")
    lines = judged.sum("alpha_s") >= 2
    if not bool(lines.any()):
        return Outcome("not asymptotic", f"{int(judged.sum())} converged kd_der rows, fewer "
                       "than two per alpha_T", "the der exponents have not converged at two "
                       "alpha_S of one alpha_T: larger N")
    slope = kd["slope"].where(judged).sortby("alpha_s")
    others = [str(d) for d in slope.dims if d != "alpha_s"]
    stacked = slope.transpose(*others, "alpha_s").values.reshape(-1, len(kd["alpha_s"]))
    keep = lines.transpose(*others).values.reshape(-1)
    labels = list(np.ndindex(*[len(kd[d]) for d in others]))
    broken = []
    for k in np.flatnonzero(keep):
        s = stacked[k][np.isfinite(stacked[k])]
        if np.any(np.diff(s) <= 0):
            at = dict(zip(others, labels[k], strict=True))
            broken.append(fitting.held_text({d: _plain(kd[d].values[i]) for d, i in at.items()
                                             if d != "estimator"}))
    total = int(keep.sum())
    measured = f"{total - len(broken)} of {total} lines increasing in alpha_S"
    if broken:
        return Outcome("fails", measured, "der exponent not increasing in alpha_S at "
                       + "; ".join(broken[:3]))
    return Outcome("holds", measured)


def _plain(v: Any) -> Any:
    return float(v) if isinstance(v, np.number) else str(v)


def _n_lines(ev: Evidence, arrays: Mapping[str, Any]) -> tuple[dict[str, np.ndarray],
                                                                list[str]]:
    """``arrays`` (values or coordinates) as (line, n) NumPy arrays: one line per combination
    of the grid axes other than ``n``, sorted by n (the cube's n axis must exist)."""
    others = [a for a in ev.axes if a != "n"]
    order = [*others, "n"]
    sort = np.argsort(np.asarray(ev.ds["n"].values, float), kind="stable")
    m = len(sort)
    out = {k: np.asarray(ev.grid(v, order)).reshape(-1, m)[:, sort] for k, v in arrays.items()}
    return out, others


def check_der_limit(ev: Evidence) -> Outcome:
    """der at finite n approaches its n = inf value (lim_n DER, the closed-form limit)."""
    der = ev.value("der")
    if der is None or "n" not in ev.axes:
        return Outcome("not in this sweep", "no n axis", "needs an n axis with n = inf and "
                       "at least two finite values")
    n_axis = np.asarray(ev.ds["n"].values, float)
    if not np.isinf(n_axis).any() or np.isfinite(n_axis).sum() == 0:
        return Outcome("not in this sweep", "no n = inf on the grid",
                       f"{ADD_N_INF}: lim_n DER is computed in closed form there")
    a, _ = _n_lines(ev, {"der": der, "n": ev.coord("n")})
    d, n = a["der"].astype(float), a["n"].astype(float)
    lim = np.where(np.isinf(n), d, np.nan)
    lim = lim[np.arange(len(d)), np.argmax(np.isinf(n), axis=1)]
    fin = np.where(np.isfinite(n), d, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        g = np.abs(fin / lim[:, None] - 1.0)
    valid = np.isfinite(fin)
    idx = np.arange(d.shape[1])
    last = np.where(valid, idx, -1).max(axis=1)
    prev = np.where(valid & (idx < last[:, None]), idx, -1).max(axis=1)
    use = np.isfinite(lim) & (valid.sum(axis=1) >= 2)
    if not use.any():
        return Outcome("not in this sweep", "no line with two finite n and n = inf", "")
    rows = np.flatnonzero(use)
    g_last, g_prev = g[rows, last[rows]], g[rows, prev[rows]]
    closing, total = int((g_last <= g_prev + 1e-12).sum()), len(rows)
    measured = (f"|der(n_max)/der(inf) - 1| at the largest finite n: median "
                f"{np.median(g_last):.3g}, max {np.max(g_last):.3g}; gap shrinking over the "
                f"last two finite n on {closing} of {total} lines")
    if closing == total:
        return Outcome("holds", measured)
    return Outcome("not asymptotic", measured,
                   f"on {total - closing} lines der still moves away from its limit at the "
                   "largest finite n (n below N^(alpha_S/alpha_T))")


def _lowdim(ev: Evidence) -> xr.DataArray:
    return ev.coord("target") == "lowdim"


def check_w2s_exists(ev: Evidence) -> Outcome:
    """Some finite n gives W2S (w2s_ratio < 1) for the lowdim target with label noise, and the
    first such n (the crossing) is reported per line over n."""
    w = ev.value("w2s_ratio")
    if w is None:
        return Outcome("not in this sweep", "no w2s_ratio", "the cube has no w2s_ratio")
    n_c, N_c = ev.coord("n"), ev.coord("N")
    low = _lowdim(ev) & (ev.coord("sigma2") > 0) & np.isfinite(n_c)
    arrays = {"w": w, "low": low, "n": n_c, "N": N_c}
    if "n" in ev.axes:
        a, _ = _n_lines(ev, arrays)
    else:  # every point is its own line over n
        a = {k: ev.grid(v, ev.axes).reshape(-1, 1) for k, v in arrays.items()}
    lowm = a["low"].astype(bool)
    if not lowm.any():
        return Outcome("not in this sweep", "no lowdim point with noise at finite n",
                       "Theorem 5 assumes the lowdim target and label noise")
    lines = lowm.any(axis=1)
    wv = np.where(lowm, a["w"].astype(float), np.nan)
    with np.errstate(invalid="ignore"):
        hit = wv < 1.0
    found = lines & hit.any(axis=1)
    first = np.argmax(hit, axis=1)
    rows = np.flatnonzero(found)
    cross = (a["n"][rows, first[rows]].astype(float) / a["N"][rows, first[rows]].astype(float))
    finite_n = int(np.unique(a["n"][lowm].astype(float)).size)
    measured = f"W2S at some finite n on {len(rows)} of {int(lines.sum())} lines"
    if len(rows):
        measured += (f"; first n with W2S (crossing) at n/N from {cross.min():.3g} to "
                     f"{cross.max():.3g}; best w2s_ratio {np.nanmin(wv[rows]):.3g}")
        return Outcome("holds", measured)
    if finite_n < 3:
        return Outcome("not in this sweep", measured,
                       f"only {finite_n} finite n value(s): too few to find the W2S window")
    return Outcome("fails", measured, "no finite n on the grid gives risk_t2s < risk_teacher")


def check_w2s_vanishes(ev: Evidence) -> Outcome:
    """W2S disappears as n -> inf: risk_t2s returns to risk_teacher (w2s_ratio -> 1)."""
    t2s, teacher, w = (ev.value(k) for k in ("risk_t2s", "risk_teacher", "w2s_ratio"))
    if t2s is None or teacher is None or w is None or "n" not in ev.axes:
        return Outcome("not in this sweep", "no n axis", "needs an n axis")
    r_s, d = ev.coord("r_s"), ev.coord("d")
    low = _lowdim(ev) & (np.isnan(r_s) | (r_s >= d))
    a, _ = _n_lines(ev, {"t2s": t2s, "teacher": teacher, "w": w, "low": low,
                         "n": ev.coord("n")})
    lowm, n = a["low"].astype(bool), a["n"].astype(float)
    if not (lowm & np.isinf(n)).any():
        return Outcome("not in this sweep", "no n = inf with the lowdim target",
                       f"{ADD_N_INF}")
    at_inf = lowm & np.isinf(n)
    fin = lowm & np.isfinite(n)
    use = at_inf.any(axis=1) & (fin.sum(axis=1) >= 2)
    if not use.any():
        return Outcome("not in this sweep", "no line with finite n and n = inf", "")
    rows = np.flatnonzero(use)
    j = np.argmax(at_inf, axis=1)[rows]
    with np.errstate(invalid="ignore", divide="ignore"):
        dev = np.abs(a["t2s"][rows, j].astype(float) / a["teacher"][rows, j].astype(float) - 1)
        far = np.where(fin[rows], np.abs(np.log(a["w"][rows].astype(float))), np.nan)
    counted = np.isfinite(far).any(axis=1)
    toward = 0
    for k in np.flatnonzero(counted):  # farthest from 1 before the largest finite n
        line = far[k][fin[rows[k]]]
        toward += bool(np.nanargmax(line) < len(line) - 1)
    total = int(counted.sum())
    if not total:
        return Outcome("not in this sweep", "no line with finite n and n = inf", "")
    worst = float(np.nanmax(dev)) if np.isfinite(dev).any() else math.nan
    measured = (f"|risk_t2s/risk_teacher - 1| at n = inf: max {worst:.2g}; "
                f"w2s_ratio back towards 1 at the largest finite n on {toward} of {total} "
                "lines")
    if worst > 1e-9:
        return Outcome("fails", measured, "at n = inf the T2S student is not its teacher")
    if toward < total:
        return Outcome("not asymptotic", measured,
                       f"on {total - toward} lines w2s_ratio is farthest from 1 at the largest "
                       "finite n: the grid's n stops before the return")
    return Outcome("holds", measured)


def bound_verdicts(ev: Evidence, kind: str) -> list[tuple[str, xr.DataArray, xr.DataArray]]:
    """The bound comparisons of ``kind`` ('sandwich': Lemma 1's lower <= exact <= upper per
    run; 'transfer': exact risk_t2s <= Theorem 1's bound) computed from the cube's numbers:
    (run, holds, determined) per run, ``determined`` where the exact risk (status ok) and its
    bounds are all present."""
    def exact(name: str) -> xr.DataArray:
        risk = ev.value(name, "exact")
        if risk is None:
            raise ValueError(f"the bounds are compared with the exact {name}: the cube has "
                             "no exact estimator")
        return risk

    out = []
    if kind == "sandwich":
        for r in ("teacher", "direct", "ceiling"):
            risk = exact(f"risk_{r}")
            lower, upper = ev.ds[f"bound_lower_{r}"], ev.ds[f"bound_upper_{r}"]
            known = xr.ufuncs.isfinite(risk) & lower.notnull() & upper.notnull()
            out.append((r, (lower <= risk) & (risk <= upper), known))
    else:
        risk, bound = exact("risk_t2s"), ev.ds["bound_t2s"]
        out.append(("t2s", risk <= bound,
                    xr.ufuncs.isfinite(risk) & xr.ufuncs.isfinite(bound)))
    return out


def check_bounds(kind: str) -> Callable[[Evidence], Outcome]:
    """Lemma 1 sandwich (``kind`` = 'sandwich') or Theorem 1 transfer bound ('transfer') at
    the points where the proofs' step condition holds (and, for the sandwich, in scope),
    compared from the cube's exact risks and bounds (:func:`bound_verdicts`)."""
    def check(ev: Evidence) -> Outcome:
        if not ev.has("step_condition"):
            return Outcome("not in this sweep", "no bound estimator",
                           "add bound to methods")
        if "exact" not in ev.methods:
            return Outcome("not in this sweep", "no exact risks",
                           "add exact to methods: the bounds are compared with the exact risk")
        order = ev.axes
        cond = ev.grid(ev.ds["step_condition"] == Flag.YES, order)
        yes = no = outside = 0
        where = ""  # the first violating point, named by its axis labels
        for run, holds, known in bound_verdicts(ev, kind):
            scope = (ev.grid(ev.ds[f"scope_{run}"] == Flag.YES, order) if kind == "sandwich"
                     else np.ones(cond.shape, bool))
            h, k = ev.grid(holds, order), ev.grid(known, order)
            sel = cond & scope & k
            yes += int((h & sel).sum())
            bad = ~h & sel
            no += int(bad.sum())
            outside += int((k & ~(cond & scope)).sum())
            if not where and bad.any():
                at = ev.point_text(dict(zip(order, _first(bad), strict=True)))
                where = f", first at {at}" + (f" ({run})" if kind == "sandwich" else "")
        measured = f"holds at {yes} of {yes + no} runs where the step condition holds" + (
            f" ({outside} runs outside the step condition or scope not counted)" if outside
            else "")
        if yes + no == 0:
            return Outcome("not in this sweep", measured,
                           "the proofs' step condition holds at no point (gamma0 too large): "
                           "the bounds are not guaranteed anywhere on this grid")
        if no:
            return Outcome("fails", measured, f"{no} runs violate the bound inside its "
                           f"conditions{where}" + (" (the transfer bound adds head errors in "
                                           "quadrature; docs/science/bounds.md)"
                                           if kind == "transfer" else ""))
        return Outcome("holds", measured)
    return check


def check_reduced_bound(ev: Evidence) -> Outcome:
    """What Theorem 5's proof minimises, read as a bound: the transfer bound without the
    student's own SGD variance (``bound_t2s_reduced``) must not fall below the exact T2S risk
    at any lowdim point with label noise where the step condition holds and the full transfer
    bound does (where that fails, the claim transfer_bound says so)."""
    need = ("bound_t2s", "bound_t2s_reduced", "step_condition")
    if not all(ev.has(k) for k in need):
        return Outcome("not in this sweep", "no bound_t2s_reduced",
                       "add bound to methods (cubes of schema 7 or later)")
    risk = ev.value("risk_t2s")
    if risk is None:
        return Outcome("not in this sweep", "no exact risk_t2s", "add exact to methods")
    order = ev.axes
    g = {k: ev.grid(v, order) for k, v in {
        "risk": risk, "bound": ev.ds["bound_t2s"], "reduced": ev.ds["bound_t2s_reduced"],
        "cond": ev.ds["step_condition"] == Flag.YES, "low": _lowdim(ev),
        "sigma2": ev.coord("sigma2"), "n": ev.coord("n"), "N": ev.coord("N")}.items()}
    r = g["risk"].astype(float)
    with np.errstate(invalid="ignore"):
        sel = (g["low"].astype(bool) & (g["sigma2"] > 0) & np.isfinite(g["n"])
               & np.isfinite(g["N"]) & g["cond"].astype(bool) & np.isfinite(r))
        full = g["bound"] >= r
        inside = sel & full
        short = g["reduced"] / r
        bad = inside & (short < 1.0)
    if not inside.any():
        return Outcome("not in this sweep", "no lowdim point with noise where the step "
                       "condition and the transfer bound hold",
                       "the proof's bounds need gamma0 inside the step condition")
    measured = (f"reduced >= exact at {int(inside.sum() - bad.sum())} of {int(inside.sum())} "
                f"points where the step condition and the full transfer bound hold "
                f"({int((sel & ~full).sum())} where it fails not counted)")
    if not bad.any():
        return Outcome("holds", measured)
    lowest = np.min(short[bad])
    worst = _first(bad & (short == lowest))
    where = ev.point_text(dict(zip(order, worst, strict=True)))
    return Outcome("fails", measured + f"; below half the exact risk at "
                   f"{int((inside & (short < 0.5)).sum())}, smallest reduced/exact "
                   f"{np.min(short[inside]):.3g}",
                   f"at {int(bad.sum())} points the terms the proof keeps lie below the exact "
                   f"risk while the full bound holds, e.g. {where}: "
                   f"{g['reduced'][worst]:.3g} < {r[worst]:.3g} < {g['bound'][worst]:.3g}; "
                   "the student's own SGD variance is missing (docs/science/theorem5.md)")


NOISE_RTOL = 1e-9
"""The risk at the largest σ² must exceed that at the smallest by more than this share: the
label noise reaches the risk (beyond rounding)."""


def check_noise(ev: Evidence) -> Outcome:
    """Lemma 1's variance term: the risk grows with the label noise at every fixed N (teacher
    and direct student), and its σ² coefficient decays at the variance exponent (the families
    teacher_noise, direct_noise)."""
    if "sigma2" not in ev.axes or len(ev.ds["sigma2"]) < 2:
        return Outcome("not in this sweep", "no sigma2 axis",
                       "needs a sigma2 axis of two or more values")
    s2 = np.asarray(ev.ds["sigma2"].values, float)
    lo, hi = int(np.argmin(s2)), int(np.argmax(s2))
    grows = total = 0
    where = ""
    for run in ("teacher", "direct"):
        risk = ev.value(f"risk_{run}", "exact")
        if risk is None:
            continue
        a, b = risk.isel(sigma2=lo), risk.isel(sigma2=hi)
        order = [x for x in ev.axes if x != "sigma2"]
        ra, rb = ev.grid(a, order).astype(float), ev.grid(b, order).astype(float)
        both = np.isfinite(ra) & np.isfinite(rb)
        with np.errstate(invalid="ignore"):
            up = both & (rb > ra * (1.0 + NOISE_RTOL))
        grows += int(up.sum())
        total += int(both.sum())
        flat = both & ~up
        if not where and flat.any():
            where = (f"{run} at {ev.point_text(dict(zip(order, _first(flat), strict=True)))}")
    if not total:
        return Outcome("not in this sweep", "no exact teacher or direct risks",
                       "add exact to methods")
    measured = (f"risk higher at sigma2 = {s2[hi]:g} than at {s2[lo]:g} at {grows} of {total} "
                "points")
    if grows < total:
        return Outcome("fails", measured, f"the risk does not grow with the label noise at "
                       f"{total - grows} points, e.g. {where}: no variance term")
    rate = _from_families("teacher_noise", "direct_noise")(ev)
    return Outcome(rate.verdict, f"{measured}; {rate.measured}", rate.reason)


# ---------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------
_W2S_LATE = ("in the exact model Theorem 5's exponents hold at most over an intermediate "
             "range; past the crossover N_x the late law of docs/science/theorem5.md holds "
             "(claims w2s_*_late)")
"""Added to a failing Theorem 5 rate claim's reason: what the long runs measured instead."""

CLAIMS: tuple[Claim, ...] = (
    Claim("teacher_rate", "Lemma 1",
          "The teacher's excess risk decays as N^((1+beta-alpha_T)/alpha_T) (bias) plus "
          "N^((1-alpha_T)/alpha_T) (variance), up to log factors.", _from_families("teacher")),
    Claim("student_rate", "Lemma 1",
          "A student trained on true labels decays at the same law with its own alpha_S "
          "(source exponent shifted by alpha_S - alpha_T), in N (direct) and n (ceiling).",
          _from_families("direct", "ceiling")),
    Claim("noise_rate", "Lemma 1",
          "The label noise adds a variance term to the risk: the risk grows with sigma2 at "
          "fixed N, and its sigma2 coefficient decays as N^((1-alpha)/alpha) (teacher: "
          "alpha_T, direct student: alpha_S).", check_noise),
    Claim("bound_sandwich", "Lemma 1, App. A",
          "lower bound <= exact risk <= upper bound for teacher, direct and ceiling runs, "
          "where the step condition holds and the run is in the proofs' scope.",
          check_bounds("sandwich")),
    Claim("transfer_bound", "Theorem 1",
          "The T2S risk is at most the transfer bound (aligned, full-rank teacher).",
          check_bounds("transfer")),
    Claim("kd_limit_rate", "Theorem 3",
          "For alpha_S > alpha_T > 1 + beta, lim_n E_T2S decays as "
          "N^(-(alpha_T-1-beta)/alpha_T).", _from_families("kd_limit")),
    Claim("kd_kappa", "Theorem 3",
          "lim_n DER grows as N^kappa, kappa = (alpha_T-1-beta)(1/alpha_T - 1/alpha_S).",
          _from_families("kd_der")),
    Claim("kd_sign", "Theorem 3",
          "Distillation beats direct training in the limit: der > 1 wherever "
          "alpha_S > alpha_T > 1 + beta (n -> inf).", check_kd_sign),
    Claim("kd_order", "Theorem 3",
          "The KD exponent kappa grows with alpha_S at fixed alpha_T (a larger spectral gap "
          "gains more).", check_kd_order),
    Claim("kd_limit_value", "Theorem 3 (lim_n), docs/science/limits.md",
          "der at finite n converges to lim_n DER, computed in closed form at n = inf.",
          check_der_limit),
    Claim("w2s_exists", "Theorem 5",
          "With a low-dimensional target and label noise, a student taught by the teacher "
          "beats it at some finite n (W2S: w2s_ratio < 1); the crossing is the first such n.",
          check_w2s_exists),
    Claim("w2s_vanishes", "Theorem 5 / docs/science/limits.md",
          "W2S is an early-stopping effect: as n -> inf the full-rank T2S student returns to "
          "its teacher (w2s_ratio -> 1).", check_w2s_vanishes),
    Claim("w2s_min_risk", "Theorem 5",
          "min_n E_T2S decays as N^(1/(alpha_T(2 alpha_S+1)) - 1).",
          _from_families("w2s_min_risk", known=_W2S_LATE)),
    Claim("w2s_gap", "Theorem 5",
          "1 - PGR at the optimal n decays as N^(-2 alpha_S/(alpha_T(2 alpha_S+1))).",
          _from_families("w2s_gap", known=_W2S_LATE)),
    Claim("w2s_nopt", "Theorem 5 (as stated; audited)",
          "The optimal n grows with N at the stated exponent (an audit finds the optimal "
          "cutoff k*, not n, scales so; both are fitted).",
          _from_families("w2s_nopt_paper", "w2s_nopt_audited", "w2s_kstar_opt",
                         known=_W2S_LATE)),
    Claim("w2s_min_risk_late", "Theorem 5 in the exact model (docs/science/theorem5.md)",
          "Past the crossover N_x, min_n E_T2S decays as (N/log2 N)^(-1 + 1/(2 alpha_S)) "
          "whatever alpha_T (2 <= alpha_T < 2 alpha_S).", _from_families("w2s_min_risk_late")),
    Claim("w2s_gap_late", "Theorem 5 in the exact model (docs/science/theorem5.md)",
          "Past N_x, w2s_ratio at the optimal n decays as N^(1/(2 alpha_S) - 1/alpha_T).",
          _from_families("w2s_gap_late")),
    Claim("w2s_nopt_late", "Theorem 5 in the exact model (docs/science/theorem5.md)",
          "Past N_x, the optimal student's horizon n_opt/log2 n_opt grows as (N/log2 N)^(1/2) "
          "and its cutoff k* as N^(1/(2 alpha_S)).",
          _from_families("w2s_nopt_late", "w2s_kstar_late")),
    Claim("w2s_proof_bound", "Theorem 5, proof (App. D.2), with Theorem 1",
          "The transfer bound without the student's own SGD variance, which the proof drops "
          "(its labels carry no noise), still bounds the T2S risk where the step condition "
          "holds.", check_reduced_bound),
)
"""Every claim ktsweep tests, in the order of the table."""


def evaluate_claims(ds: xr.Dataset, fits: xr.Dataset) -> pd.DataFrame:
    """The claim table of a cube and its fit table (:func:`ktsweep.analysis.fits.fit_cube`
    or :func:`ktsweep.analysis.fits.read_fits` of the fits.csv it wrote)."""
    ev = Evidence(ds, fits)
    rows = []
    for c in CLAIMS:
        out = c.check(ev)
        rows.append({"claim": c.key, "source": c.source, "statement": c.statement,
                     "measured": out.measured, "verdict": out.verdict,
                     "reason": out.reason if out.verdict != "holds" else ""})
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df.attrs["name"] = ev.layout.name
    return df


def _counts(df: pd.DataFrame) -> str:
    """'6 holds, 2 fails, ...' in the order of CLAIM_VERDICTS."""
    counts = df["verdict"].value_counts()
    return ", ".join(f"{int(counts[v])} {v}" for v in CLAIM_VERDICTS if v in counts)


HOW_TO_READ = (
    "One row per claim of the paper that a sweep can test: the claim in words, where the "
    "paper makes it, what this cube measured and the verdict. Rate claims gather the rows of "
    "fits.md (its rules decide each row); the others read the cube's numbers (the exact "
    "estimator where present). The reason column says why for every verdict but `holds`.")


def to_markdown(df: pd.DataFrame) -> str:
    """claims.md: how to read it, a summary of the verdicts, the table, then the rules."""
    summary = pd.DataFrame(
        [{"verdict": v, "claims": ", ".join(df.loc[df["verdict"] == v, "claim"]),
          "meaning": VERDICT_MEANING[v]} for v in CLAIM_VERDICTS if (df["verdict"] == v).any()])
    lines = [f"# Claims of arXiv 2606.01292 tested by sweep '{df.attrs.get('name', '')}'", "",
             "## How to read this", "", HOW_TO_READ, "", f"{len(df)} claims: {_counts(df)}.",
             ""]
    if len(summary):
        lines += [fitting.markdown_table(summary), ""]
    lines += ["## The claims", "", fitting.markdown_table(df[list(COLUMNS)]), "", "## Rules", "",
              "A rate claim holds when at least one of its fit rows is `consistent` and none "
              "is `inconsistent`; one `inconsistent` row makes it fail; with no judged row the "
              "most frequent undecided verdict is the claim's (a W2S optimum on the edge of "
              "the n range reads `not in this sweep`). A claim about lim_n (Theorem 3) is read "
              "at n = inf only: without it the grid does not test it. Bounds are compared with "
              "the exact risks in the cube, only where the proofs' step condition holds. "
              "docs/science/claims.md gives every claim's rule.", ""]
    return "\n".join(lines)


def write_claims(df: pd.DataFrame, md_path: str | os.PathLike,
                 csv_path: str | os.PathLike | None = None) -> None:
    Path(md_path).parent.mkdir(parents=True, exist_ok=True)
    Path(md_path).write_text(to_markdown(df))
    if csv_path is not None:
        Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(csv_path, index=False)


# ---------------------------------------------------------------------------------------
# The project's claim table: one verdict per claim over several sweeps
# ---------------------------------------------------------------------------------------
UNDECIDED_ORDER = ("not asymptotic", "finite d", "not in this sweep")
"""Which undecided verdict a claim keeps when no sweep decides it: the one that says what
to raise first (a larger horizon before a larger d before a new grid)."""


def combine(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per claim over several sweeps' claim tables (``name → claims.csv`` frame).

    A claim fails when any sweep's measurement contradicts it (the table names which), holds
    when at least one sweep shows it and none contradicts it, and otherwise keeps the first
    undecided verdict of :data:`UNDECIDED_ORDER` that some sweep gave, with that sweep's
    reason. ``evidence`` lists every sweep's verdict and measurement, in the order given.
    """
    known = {c.key: c for c in CLAIMS}
    rows = []
    for key, claim in known.items():
        seen = []
        for name, df in tables.items():
            hit = df[df["claim"] == key]
            if len(hit):
                r = hit.iloc[0]
                seen.append((name, str(r["verdict"]), str(r["measured"]),
                             "" if pd.isna(r["reason"]) else str(r["reason"])))
        by = {v: [s for s in seen if s[1] == v] for v in CLAIM_VERDICTS}
        if by["fails"]:
            verdict, why = "fails", by["fails"]
        elif by["holds"]:
            verdict, why = "holds", by["holds"]
        else:
            verdict = next((v for v in UNDECIDED_ORDER if by[v]), "not in this sweep")
            why = by[verdict]
        grouped: dict[str, list[str]] = {}  # one reason, the sweeps that give it
        for s in why:
            if s[3]:
                grouped.setdefault(s[3], []).append(s[0])
        reason = "; ".join(f"{', '.join(names)}: {text}" for text, names in grouped.items()
                           ) if verdict != "holds" else ""
        if not seen:
            reason = "no sweep tested it"
        rows.append({"claim": key, "source": claim.source, "statement": claim.statement,
                     "verdict": verdict, "decided_by": ", ".join(s[0] for s in why),
                     "reason": reason,
                     "evidence": [{"sweep": s[0], "verdict": s[1], "measured": s[2],
                                   "reason": s[3]} for s in seen]})
    return pd.DataFrame(rows)


def combined_markdown(df: pd.DataFrame, provenance: str = "") -> str:
    """The project's claim table: a summary row per claim, then each sweep's evidence."""
    summary = _counts(df)
    lines = ["# The claim table of the project", "",
             "Every claim of arXiv 2606.01292 that ktsweep tests, judged over the theory sweeps "
             "of `config/theory/` together. Regenerate it with `make claim-table` (it runs each "
             "theory sweep, about 20 minutes on 2 cores, then combines their `claims.csv`). "
             "A claim **fails** if any sweep contradicts it, **holds** if at least one sweep "
             "shows it and none contradicts it, and otherwise keeps the undecided verdict that "
             "says what to raise first. How each sweep judges a claim: [claims](claims.md).", "",
             f"{len(df)} claims: {summary}." + (f" {provenance}" if provenance else ""), "",
             fitting.markdown_table(pd.DataFrame({"claim": df["claim"], "source": df["source"],
                                     "verdict": df["verdict"],
                                     "decided by": df["decided_by"].replace("", "–"),
                                     "reason": df["reason"]})),
             "", "## Evidence per claim", ""]
    for r in df.itertuples(index=False):
        lines += [f"### {r.claim}", "", f"{r.statement} ({r.source}) — **{r.verdict}**", ""]
        if not r.evidence:
            lines += ["No sweep of `config/theory/` tests it.", ""]
            continue
        lines += [fitting.markdown_table(pd.DataFrame(r.evidence)), ""]
    return "\n".join(lines)


def read_claims(path: str | os.PathLike) -> pd.DataFrame:
    """A claims.csv as written by :func:`write_claims`."""
    df = pd.read_csv(path, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in df]
    if missing:
        raise ValueError(f"{path}: not a claims.csv (columns {missing} missing)")
    return df
