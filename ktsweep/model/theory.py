"""Predicted power-law exponents of docs/science/rates.md, for the fits (up to logs and γ0).

Each function returns the exponent p of a law ``quantity ∝ N^p`` (or of the stated variable).
:func:`predictions` collects those that apply to one point's parameters.
"""

from __future__ import annotations

import math

from ktsweep.model.params import Point


def direct_bias_exponent(alpha: float, beta: float = 0.0) -> float:
    """Bias term of the direct/teacher risk: N^{(1+β−α)/α}."""
    return (1.0 + beta - alpha) / alpha


def direct_variance_exponent(alpha: float) -> float:
    """Variance term of the direct/teacher risk: N^{(1−α)/α}."""
    return (1.0 - alpha) / alpha


def direct_risk_exponent(alpha: float, beta: float = 0.0, noisy: bool = True) -> float:
    """The dominant (slowest-decaying) term: bias, or the larger of bias and variance if noisy."""
    bias = direct_bias_exponent(alpha, beta)
    return max(bias, direct_variance_exponent(alpha)) if noisy else bias


def kstar_exponent(alpha: float) -> float:
    """Effective dimension learned by SGD: k* ∝ (γ0 N)^{1/α}."""
    return 1.0 / alpha


def kd_t2s_limit_exponent(alpha_t: float, beta: float = 0.0) -> float:
    """Theorem 3: lim_n E_T2S ∝ N^{−(α_T−1−β)/α_T} (α_S > α_T > 1+β)."""
    return -(alpha_t - 1.0 - beta) / alpha_t


def kd_der_exponent(alpha_t: float, alpha_s: float, beta: float = 0.0) -> float:
    """Theorem 3: der ∝ N^κ, κ = (α_T − 1 − β)(1/α_T − 1/α_S)."""
    return (alpha_t - 1.0 - beta) * (1.0 / alpha_t - 1.0 / alpha_s)


def w2s_min_risk_exponent(alpha_t: float, alpha_s: float) -> float:
    """Theorem 5: min_n E_T2S ∝ N^{1/(α_T(2α_S+1)) − 1}."""
    return 1.0 / (alpha_t * (2.0 * alpha_s + 1.0)) - 1.0


def w2s_gap_exponent(alpha_t: float, alpha_s: float) -> float:
    """Theorem 5: 1 − pgr ∝ N^{−2α_S/(α_T(2α_S+1))}."""
    return -2.0 * alpha_s / (alpha_t * (2.0 * alpha_s + 1.0))


def w2s_kstar_opt_exponent(alpha_t: float, alpha_s: float) -> float:
    """Theorem 5's optimal student cutoff: (k*_opt)^{2α_S+1} ∝ N^{1/α_T}."""
    return 1.0 / (alpha_t * (2.0 * alpha_s + 1.0))


def w2s_nopt_exponent_paper(alpha_t: float, alpha_s: float) -> float:
    """The paper's statement: the optimal n scales like its stated cutoff, N^{1/(α_T(2α_S+1))}."""
    return w2s_kstar_opt_exponent(alpha_t, alpha_s)


def w2s_nopt_exponent_audited(alpha_t: float, alpha_s: float) -> float:
    """The audit: n_opt ∝ (k*_opt)^{α_S}, i.e. N^{α_S/(α_T(2α_S+1))}."""
    return alpha_s * w2s_kstar_opt_exponent(alpha_t, alpha_s)


def student_source_exponent(p: Point) -> float:
    """β seen by a student: the target is set in teacher coordinates, e_i = i^{β−α_T}, so in
    the student's own coordinates c_S,i² = e_i / λ_S,i = i^{β + α_S − α_T}."""
    return p.beta + p.alpha_s - p.alpha_t


def predictions(p: Point) -> dict[str, float | tuple[float, float]]:
    """Exponents (in N) that §5 predicts at this point, keyed by family name; ``*_terms``:
    the (bias, variance) exponents whose larger one is the rate of a noisy direct run.

    KD entries appear only where Theorem 3's regime α_S > α_T > 1+β holds (power-law or
    gaussian source); W2S entries only for the lowdim target (Theorem 5's assumption).
    """
    noisy = p.sigma2 > 0
    out: dict[str, float | tuple[float, float]] = {}
    # Lemma 1 needs a trace-class spectrum (alpha > 1) and a target of finite energy
    # (sum_i e_i < inf, i.e. alpha_t - beta > 1 for the power/gaussian targets); outside
    # that it predicts nothing.
    finite_energy = p.target == "lowdim" or p.alpha_t - p.beta > 1.0
    for run, alpha, beta in (("teacher", p.alpha_t, p.beta),
                             ("direct", p.alpha_s, student_source_exponent(p))):
        if alpha <= 1.0 or not finite_energy:
            continue
        out[f"kstar_{run}"] = kstar_exponent(alpha)
        if p.target != "lowdim":
            out[f"risk_{run}"] = direct_risk_exponent(alpha, beta, noisy)
            if noisy:  # both terms: before their crossover the slope lies between them
                out[f"risk_{run}_terms"] = (direct_bias_exponent(alpha, beta),
                                            direct_variance_exponent(alpha))
        elif noisy:  # the bias vanishes once k* > k†: variance-dominated
            out[f"risk_{run}"] = direct_variance_exponent(alpha)
            # until then the bias falls faster than any power: its "exponent" is -inf
            out[f"risk_{run}_terms"] = (-math.inf, direct_variance_exponent(alpha))
        # lowdim without noise: no power law, the risk falls exponentially once k* > k†
    if p.target != "lowdim" and p.alpha_s > p.alpha_t > 1.0 + p.beta:
        out["risk_t2s_limit"] = kd_t2s_limit_exponent(p.alpha_t, p.beta)
        out["der"] = kd_der_exponent(p.alpha_t, p.alpha_s, p.beta)
        if noisy:  # der = risk_direct / lim risk_t2s inherits the direct run's two terms
            out["der_terms"] = (out["der"], direct_variance_exponent(p.alpha_s)
                                - out["risk_t2s_limit"])
    if p.target == "lowdim":
        out["risk_t2s_min"] = w2s_min_risk_exponent(p.alpha_t, p.alpha_s)
        out["one_minus_pgr"] = w2s_gap_exponent(p.alpha_t, p.alpha_s)
        out["kstar_opt"] = w2s_kstar_opt_exponent(p.alpha_t, p.alpha_s)
        out["n_opt_paper"] = w2s_nopt_exponent_paper(p.alpha_t, p.alpha_s)
        out["n_opt_audited"] = w2s_nopt_exponent_audited(p.alpha_t, p.alpha_s)
    return out
