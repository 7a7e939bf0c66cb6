"""The ``bound`` estimator: the paper's analytic risk bounds (docs/science/bounds.md).

ψ is the fourth moment of the point's input law (:func:`~ktsweep.model.inputs.fourth_moment`,
3 for Gaussian inputs); it enters Lemma 1's variance term and the step condition.

Direct bounds (Lemma 1 and its lower counterpart) are closed forms of the spectrum and the
target energies; the transfer bound (Theorem 1) is semi-analytic and uses the exact moments.
Whether ``lower ≤ exact ≤ upper`` holds is reported per point as a finding, not assumed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ktsweep.engines.exact import Detail, evaluate_detail, group_by_d
from ktsweep.model.geometry import alignment_bias
from ktsweep.model.inputs import fourth_moment
from ktsweep.model.params import Point
from ktsweep.model.spectra import cutoff_threshold, kstar

DELTAS = np.round(np.arange(1, 50) / 100.0, 2)


def _period(steps: int) -> float:
    """K = T / log2 T (1 for a single step)."""
    return steps / math.log2(steps) if steps > 1 else 1.0


def direct_bounds(
    lam: np.ndarray, energy: np.ndarray, sigma2: float, rank: int, samples: int, steps: int,
    gamma0: float, psi: float = 3.0,
) -> dict[str, float]:
    """Upper (Lemma 1) and lower (App. A) bounds on the excess risk of one direct run."""
    N, K = samples, _period(steps)
    total = energy.sum()
    sigma_eff = sigma2 + energy[rank:].sum()
    k_up = kstar(lam, cutoff_threshold(N, gamma0, "upper"))
    k_lo = kstar(lam, cutoff_threshold(N, gamma0, "lower"))
    upper = (0.5 * energy[:k_up].sum() / N**2 + 0.5 * energy[k_up:].sum()
             + 16.0 * (psi * total + sigma_eff)
             * (k_up / K + K * gamma0**2 * np.square(lam[k_up:]).sum()))
    lower = (energy[k_lo:].sum() / 200.0
             + sigma_eff / 8.0 * (k_lo / K + K * gamma0**2 * np.square(lam[k_lo:]).sum()))
    return {"upper": float(upper), "lower": float(lower), "kstar_upper": k_up, "kstar_lower": k_lo}


class TransferBound(NamedTuple):
    """Theorem 1's bound at its minimising δ, with the terms it adds up."""

    bound: float  # (I) + (II) + (III)
    delta: float
    kstar: int  # the student's cutoff k*_S(δ)
    term1: float  # (I)
    term2: float  # (II)


def transfer_bound(
    lam_s: np.ndarray, energy: np.ndarray, a_t: np.ndarray, a_s: np.ndarray, p_s: np.ndarray,
    u_t_sq: np.ndarray, n: int, gamma0_s: float, bias: float = 0.0,
) -> TransferBound:
    """min over δ of the Theorem 1 bound B(δ) = (I) + (II) + (III) at the minimising δ.
    (III) = ``bias``, the static alignment bias, does not depend on δ (0 in the aligned
    model)."""
    log2n = math.log2(n) if n > 1 else 0.0
    tail_student = a_s - p_s**2 * u_t_sq
    best = TransferBound(math.inf, math.nan, 0, math.nan, math.nan)
    for delta in DELTAS:
        k = kstar(lam_s, delta * log2n / (4.0 * gamma0_s * n))
        term1 = 0.5 * a_t[:k].sum() + 2 * delta**2 * a_t[k:].sum()
        term2 = (0.5 * a_s[:k].sum() + tail_student[k:].sum()
                 + (1 + 2 * delta**2) * energy[k:].sum())
        value = term1 + term2
        if value < best.bound:
            best = TransferBound(float(value), float(delta), k, float(term1), float(term2))
    return best._replace(bound=best.bound + bias)


def student_variance(a_s: np.ndarray, p_s: np.ndarray, u_t_sq: np.ndarray, k: int) -> float:
    """The student's own SGD variance inside B(δ) with cutoff k: ½ Σ_head v + Σ_tail v,
    v_i = a^S_i − (P^S_i)² E[u_T,i²] (what its error against the teacher holds beyond the part
    of the teacher it has not learned). Its labels carry no noise, but its residual drives SGD
    noise all the same; the proof of Theorem 5 drops it (docs/science/theorem5.md)."""
    v = a_s - p_s**2 * u_t_sq
    return float(0.5 * v[:k].sum() + v[k:].sum())


def reduced_transfer_bound(lam_s: np.ndarray, energy: np.ndarray, a_t: np.ndarray,
                           p_s: np.ndarray, u_t_sq: np.ndarray, n: int, gamma0_s: float,
                           bias: float = 0.0) -> float:
    """min over δ of B(δ) without :func:`student_variance`: ½ Σ_head a^T + 2δ² Σ_tail a^T +
    ½ Σ_head (P^S)² E[u_T²] + (1 + 2δ²) Σ_tail e (+ the alignment bias). It keeps everything
    Theorem 5's proof keeps (which also drops the student's unlearned head, assuming n large)
    and the student's bias besides, so where it lies below the exact T2S risk, so does the
    expression the proof minimises."""
    log2n = math.log2(n) if n > 1 else 0.0
    bias_s = p_s**2 * u_t_sq
    best = math.inf
    for delta in DELTAS:
        k = kstar(lam_s, delta * log2n / (4.0 * gamma0_s * n))
        value = (0.5 * a_t[:k].sum() + 2 * delta**2 * a_t[k:].sum() + 0.5 * bias_s[:k].sum()
                 + (1 + 2 * delta**2) * energy[k:].sum())
        best = min(best, float(value))
    return best + bias


def step_condition(p: Point, lam_t: np.ndarray, lam_s: np.ndarray, gammas: Sequence[float]) -> bool:
    """γ0 < min{1/(2ψ tr Σ_T), 1/(2ψ tr Σ_S), 1/(100 λ_max)} for every run's γ0."""
    lam_max = max(lam_t.max(), lam_s.max())
    psi = fourth_moment(p.inputs, p.inputs_nu)
    cap = min(1 / (2 * psi * lam_t.sum()), 1 / (2 * psi * lam_s.sum()), 1 / (100 * lam_max))
    return bool(all(g < cap for g in gammas))


class _DirectRun(NamedTuple):
    """What Lemma 1's bounds read of one run of a point."""

    lam: np.ndarray
    energy: np.ndarray  # the target's energies in the run's eigenbasis
    rank: int
    samples: int | float  # math.inf: the limit, which has no finite-sample bound
    steps: int | float
    gamma0: float


def from_detail(points: Sequence[Point], ex: dict[str, np.ndarray], det: Detail
                ) -> dict[str, np.ndarray]:
    """Bounds from exact results and moments already computed for ``points`` (same d)."""
    rows: list[dict[str, float]] = []
    for i, p in enumerate(points):
        row: dict[str, float] = {}
        scope = {  # where the proofs apply: batch 1, geometric decay planned for the run
            "teacher": p.batch_t == 1 and p.schedule_t == "geometric" and p.plan_t == p.steps_t,
            "direct": p.batch_s == 1 and p.schedule_s == "geometric",
            "ceiling": p.batch_s == 1 and p.schedule_s == "geometric" and p.plan_s == p.steps_s,
        }
        runs = {  # student runs see the target in their own eigenbasis
            "teacher": _DirectRun(det.lam_t[i], det.energy[i], p.rank_t, p.N, p.steps_t,
                                  det.gamma0["gamma0_t"][i]),
            "direct": _DirectRun(det.lam_s[i], det.energy_s[i], p.rank_s, p.N, p.steps_direct,
                                 det.gamma0["gamma0_direct"][i]),
            "ceiling": _DirectRun(det.lam_s[i], det.energy_s[i], p.rank_s, p.n, p.steps_s,
                                  det.gamma0["gamma0_ceiling"][i]),
        }
        for name, run in runs.items():
            if math.isinf(run.samples):  # the limit N or n = ∞: no finite-sample bound
                for key in ("bound_upper", "bound_lower", "kstar_upper", "kstar_lower",
                            "sandwich", "scope"):
                    row[f"{key}_{name}"] = math.nan
                continue
            b = direct_bounds(run.lam, run.energy, p.sigma2, run.rank, int(run.samples),
                              int(run.steps), run.gamma0, fourth_moment(p.inputs, p.inputs_nu))
            row[f"bound_upper_{name}"] = b["upper"]
            row[f"bound_lower_{name}"] = b["lower"]
            row[f"kstar_upper_{name}"] = b["kstar_upper"]
            row[f"kstar_lower_{name}"] = b["kstar_lower"]
            risk = ex[f"risk_{name}"][i]
            # no verdict where the exact run diverged (its risk is NaN): NaN, not "no"
            row[f"sandwich_{name}"] = (float(b["lower"] <= risk <= b["upper"])
                                       if math.isfinite(risk) else math.nan)
            row[f"scope_{name}"] = float(scope[name])
        bias = alignment_bias(p)
        if math.isinf(p.n) or math.isinf(p.N) or not math.isfinite(ex["risk_t2s"][i]):
            # no finite sample, or the moments it reads belong to a diverged run: no bound
            value, delta, k, term1, term2, student, reduced = (math.nan,) * 7
        else:
            value, delta, k, term1, term2 = transfer_bound(
                det.lam_s[i], det.energy_s[i], det.a_teacher_s[i], det.a_t2s[i], det.p_t2s[i],
                det.u_teacher_sq_s[i], int(p.n), det.gamma0["gamma0_s"][i], bias)
            student = student_variance(det.a_t2s[i], det.p_t2s[i], det.u_teacher_sq_s[i], k)
            reduced = reduced_transfer_bound(det.lam_s[i], det.energy_s[i], det.a_teacher_s[i],
                                             det.p_t2s[i], det.u_teacher_sq_s[i], int(p.n),
                                             det.gamma0["gamma0_s"][i], bias)
        row["bound_t2s"], row["bound_t2s_delta"], row["kstar_t2s"] = value, delta, k
        row["bound_t2s_term1"], row["bound_t2s_term2"], row["bound_t2s_term3"] = (
            term1, term2, bias)
        row["bound_t2s_student_var"], row["bound_t2s_reduced"] = student, reduced
        t2s = ex["risk_t2s"][i]
        # a verdict needs both numbers: NaN ("undetermined") where the bound does not exist
        # (n or N infinite) or the exact run diverged, never "no"
        row["bound_t2s_holds"] = (float(t2s <= value) if math.isfinite(t2s)
                                  and math.isfinite(value) else math.nan)
        row["step_condition"] = float(step_condition(
            p, det.lam_t[i], det.lam_s[i], [det.gamma0[k][i] for k in det.gamma0]))
        rows.append(row)
    out = {k: np.array([r[k] for r in rows], dtype=np.float64) for k in rows[0]}
    out.update({k: v.copy() for k, v in det.gamma0.items()})
    return out


def evaluate(points: Sequence[Point]) -> dict[str, np.ndarray]:
    """Bounds, k* values, sandwich checks and the step condition for each point.

    Flags (``sandwich_*``, ``scope_*``, ``bound_t2s_holds``, ``step_condition``) are 1.0 / 0.0
    (NaN for a verdict on an exact risk that diverged; the cube stores them as int8 codes)
    floats so that they stack into the cube beside the other numbers. ``scope_*`` says whether
    the run is one the proofs cover (batch 1, geometric schedule planned for the run): outside
    it the lower bound is known to fail even when the step condition holds.
    """
    return group_by_d(points, lambda pts: from_detail(pts, *evaluate_detail(pts)))
