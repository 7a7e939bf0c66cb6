"""Predicted power-law exponents of docs/science/rates.md, for the fits (up to logs and γ0).

Each function returns the exponent p of a law ``quantity ∝ N^p`` (or of the stated variable).
:func:`predictions` collects those that apply to one point's parameters.

A point's parameters are a mapping of the names of docs/science/quantities.md to values: a
:class:`~ktsweep.model.params.Point` (its :meth:`~ktsweep.model.params.Point.as_dict`) or the
values a result cube carries as coordinates at one grid point, where an unset optional number is
NaN and unset text is empty. ``gamma0_s`` is the student's initial step: a γ0 specification
(a number or ``{scale: c}``), or the step the run used as a cube records it (None where the
runs of one series used different steps, as a tuned γ0 does).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ktsweep.model.params import Point
from ktsweep.model.spectra import resolve_gamma0, spectrum

Params = Mapping[str, Any]
"""One point's parameters by name (see the module docstring)."""


def params_of(p: Params | Point) -> Params:
    """The parameter mapping of ``p`` (a Point's fields, or the mapping itself)."""
    return p.as_dict() if isinstance(p, Point) else p


def unset(value: Any) -> bool:
    """Whether a parameter value means "not set": None, NaN (a cube's numbers) or ""."""
    if value is None or (isinstance(value, str) and value == ""):
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)


def _get(p: Params, name: str, default: Any = None) -> Any:
    value = p.get(name, default)
    return default if unset(value) else value


def kd_regime(p: Params) -> Any:
    """Theorem 3's regime: α_S > α_T > 1 + β with a power-law or gaussian source (not the
    lowdim target). Elementwise: the values may be numbers or arrays (a cube's coordinates,
    broadcast against each other), and so is the answer."""
    return ((p["target"] != "lowdim") & (p["alpha_s"] > p["alpha_t"])
            & (p["alpha_t"] > 1.0 + p["beta"]))


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


# ---------------------------------------------------------------------------------------
# Theorem 5 in the exact model: the late law (docs/science/theorem5.md)
# ---------------------------------------------------------------------------------------
def w2s_late_horizon_exponent(alpha_t: float) -> float:
    """The optimal T2S student's effective horizon n_opt / log2 n_opt grows as
    (N / log2 N)^b, b = max(1/2, 1/α_T): the inherited teacher noise (∝ Γ^{1/α_S}/N) balances
    the variance the student deposits in its tail while it learns the signal (∝ Γ^{1/α_S−2}),
    which gives b = 1/2; below α_T = 2 the student's variance driven by the teacher's whole
    residual (∝ R_T Γ^{1/α_S−1}) would take over, b = 1/α_T (derived, not checked)."""
    return max(0.5, 1.0 / alpha_t)


def w2s_late_min_risk_exponent(alpha_t: float, alpha_s: float) -> float:
    """min_n E_T2S ∝ (N / log2 N)^{−1 + b/α_S} past the crossover (b of
    :func:`w2s_late_horizon_exponent`; −1 + 1/(2α_S) for α_T ≥ 2, whatever α_T)."""
    return -1.0 + w2s_late_horizon_exponent(alpha_t) / alpha_s


def w2s_late_gap_exponent(alpha_t: float, alpha_s: float) -> float:
    """w2s_ratio at the optimal n: the late minimum over the teacher's N^{1/α_T − 1}."""
    return w2s_late_min_risk_exponent(alpha_t, alpha_s) - direct_variance_exponent(alpha_t)


def w2s_late_kstar_exponent(alpha_t: float, alpha_s: float) -> float:
    """The student's cutoff at the optimum, k* ∝ (n_opt / log2 n_opt)^{1/α_S}."""
    return w2s_late_horizon_exponent(alpha_t) / alpha_s


def w2s_late_scope(p: Params | Point) -> str:
    """'' where the late law is derived and checked for this point, else why not.

    The derivation takes the lowdim target with label noise, aligned full-rank models, batch 1
    and geometric schedules planned for each run (the proofs' scope); it assumes the student's
    optimal cutoff stays below the teacher's (α_T < 2α_S) and is checked for α_T ≥ 2 only.
    Its constants are those of the power-law spectra λ_i = i^{−α}, so measured spectra (files)
    are outside it.
    """
    p = params_of(p)
    d = p["d"]
    if p["target"] != "lowdim" or not _get(p, "k_dagger") or _get(p, "amplitude", 1.0) == 0:
        return "not the lowdim target"
    if p["sigma2"] <= 0:
        return "no label noise: nothing for the student to filter"
    if (_get(p, "angle", 0.0) != 0.0 or _get(p, "mixing_seed") is not None
            or _get(p, "r_t", d) != d or _get(p, "r_s", d) != d
            or _get(p, "alpha_target") is not None):
        return "misaligned or reduced-rank models"
    if _get(p, "spectrum_t") is not None or _get(p, "spectrum_s") is not None:
        return "measured spectra: the constants assume lambda_i = i^-alpha"
    if (_get(p, "batch_t", 1) != 1 or _get(p, "batch_s", 1) != 1
            or _get(p, "schedule_t", "geometric") != "geometric"
            or _get(p, "schedule_s", "geometric") != "geometric"
            or _get(p, "horizon_t") is not None or _get(p, "horizon_s") is not None):
        return "outside batch 1 and geometric schedules planned for the run"
    if not p["alpha_s"] > 1.0:
        return "alpha_S <= 1"
    if p["alpha_t"] < 2.0:
        return "alpha_T < 2: the branch b = 1/alpha_T is derived but not checked"
    if p["alpha_t"] >= 2.0 * p["alpha_s"]:
        return "alpha_T >= 2 alpha_S: the student's optimal cutoff overtakes the teacher's"
    return ""


TEACHER_NOISE = 1.0 / (4.0 * math.log(2.0))
"""F̄: a mode the geometric schedule has learned ends with variance F̄ s²/(2K) per unit noise
s² (K = T/log2 T), averaged over the log-periodic position of its eigenvalue among the halvings
(∫ (e^{−2y} − e^{−4y}) dy / ln 2)."""


def inherited_constant(alpha_s: float) -> float:
    """c_I = Σ_i (1 − e^{−Γ μ_i})² / Γ^{1/α_S} for μ_i = i^{−α_S}, Γ → ∞:
    (1/α) Γ(−1/α) (2^{1/α} − 2)."""
    s = 1.0 / alpha_s
    return s * math.gamma(-s) * (2.0**s - 2.0)


def deposit_constant(alpha_s: float) -> float:
    """c_V = Σ_i μ_i² e^{−2Γ μ_i} / Γ^{1/α_S − 2}, Γ → ∞: (1/α) Γ(2 − 1/α) 2^{1/α − 2}."""
    s = 1.0 / alpha_s
    return s * math.gamma(2.0 - s) * 2.0 ** (s - 2.0)


def _late_spectra(p: Params) -> tuple[np.ndarray, np.ndarray]:
    """(μ, e_{1..k†}) inside :func:`w2s_late_scope`: the student's power-law spectrum and the
    energies of the target's k† signal modes, a² λ_T,i (the lowdim target in the aligned,
    full-rank teacher's coordinates)."""
    d = int(p["d"])
    k = int(p["k_dagger"])
    a = float(_get(p, "amplitude", 1.0))
    return spectrum(float(p["alpha_s"]), d), a**2 * spectrum(float(p["alpha_t"]), d)[:k]


def w2s_late_constants(p: Params | Point) -> tuple[float, float, float] | None:
    """(A, C, γ0_S) of the late T2S risk R(Γ) = A Γ^{1/α_S} / K_T + C Γ^{1/α_S − 2}, in the
    student's learning time Γ = 2 γ0_S n/log2 n and the teacher's horizon K_T = N/log2 N
    (docs/science/theorem5.md). None outside :func:`w2s_late_scope`, for a tuned γ0_S or
    non-Gaussian inputs (the constants use the Gaussian fourth moment).

    A = σ² F̄ c_I / 4: the teacher's flat noise F̄ σ²/(2K_T) on the modes the student learned.
    C = ½ c_V D, D = γ0 Σ_{j≤k†} e_j / (2(1 − κ) μ_j (1 − γ0 μ_j)), κ = Σ_i γ0 μ_i /
    (2(1 − γ0 μ_i)): the SGD noise the student's residual (its unlearned signal) drives into
    every mode while it learns the k† signal modes, amplified by the noise it feeds back.
    """
    p = params_of(p)
    if w2s_late_scope(p) or _get(p, "inputs", "gaussian") != "gaussian":
        return None
    gamma0 = _get(p, "gamma0_s")
    if gamma0 is None or (isinstance(gamma0, dict) and "tune" in gamma0):
        return None
    mu, e = _late_spectra(p)
    g = resolve_gamma0(gamma0, mu)[0]
    kappa = float(np.sum(g * mu / (2.0 * (1.0 - g * mu))))
    if not (0.0 < kappa < 1.0 and g * mu[0] < 1.0):
        return None
    m = mu[: int(p["k_dagger"])]
    deposit = g / (2.0 * (1.0 - kappa)) * float(np.sum(e / (m * (1.0 - g * m))))
    a = p["sigma2"] * TEACHER_NOISE * inherited_constant(p["alpha_s"]) / 4.0
    return a, 0.5 * deposit_constant(p["alpha_s"]) * deposit, g


def _horizon_samples(k: float) -> float:
    """The sample count T with T / log2 T = k (k > 2): the fixed point T = k log2 T."""
    t = k * math.log2(k)
    for _ in range(100):
        t_new = k * math.log2(t)
        if abs(t_new - t) < 1e-12 * t:
            return t_new
        t = t_new
    return t


def w2s_late_optimum(p: Params | Point) -> tuple[float, float]:
    """(n_opt, min_n E_T2S) of the late law at the point's N, constants included: the
    minimum of A Γ^{1/α_S}/K_T + C Γ^{1/α_S − 2} lies at Γ = ((2α_S − 1) C K_T / A)^{1/2},
    where it equals (2α_S/(2α_S − 1)) A Γ^{1/α_S}/K_T, and n_opt / log2 n_opt = Γ/(2γ0_S).
    Valid for N well past :func:`w2s_crossover`; (NaN, NaN) outside the late law's scope."""
    p = params_of(p)
    consts = w2s_late_constants(p)
    N = float(p["N"])
    if consts is None or not (2.0 < N < math.inf):
        return math.nan, math.nan
    a, c, g = consts
    alpha = p["alpha_s"]
    k_t = N / math.log2(N)
    gamma = math.sqrt((2.0 * alpha - 1.0) * c * k_t / a)
    risk = 2.0 * alpha / (2.0 * alpha - 1.0) * a * gamma ** (1.0 / alpha) / k_t
    k_s = gamma / (2.0 * g)
    return (_horizon_samples(k_s) if k_s > 2.0 else math.nan), risk


def w2s_crossover(p: Params | Point) -> float:
    """N_×: the teacher sample size past which the late law holds (NaN where
    :func:`w2s_late_constants` is None).

    Below N_× the optimal student stops soon after it has learned the last signal mode, at the
    learning time Γ_sig where the inherited noise's growth balances the decay of the signal it
    has not learned, ½ e_k† e^{−2 μ_k† Γ}; past it the late balance time
    Γ_late = ((2α_S − 1) C K_T / A)^{1/2} is the longer one. At N_× the two agree:
    Γ_× solves 2 μ_k† Γ = ln(α_S μ_k† e_k† Γ^{3 − 1/α_S} / ((2α_S − 1) C)) (independent of σ²
    and of the amplitude), K_× = A Γ_×² / ((2α_S − 1) C) and N_× / log2 N_× = K_×.
    """
    p = params_of(p)
    consts = w2s_late_constants(p)
    if consts is None:
        return math.nan
    a, c, _ = consts
    alpha = p["alpha_s"]
    mu, e = _late_spectra(p)
    mu_k, e_k = float(mu[int(p["k_dagger"]) - 1]), float(e[-1])
    scale = alpha * mu_k * e_k / ((2.0 * alpha - 1.0) * c)
    # the fixed point 2μΓ = ln(scale Γ^{3−1/α}) in t = 2μΓ: t = ln(scale (t/2μ)^{3−1/α}),
    # a contraction from above once t exceeds 3 − 1/α
    t = max(1.0, math.log(max(scale, 1e-300)) + 10.0)
    for _ in range(200):
        arg = scale * (t / (2.0 * mu_k)) ** (3.0 - 1.0 / alpha)
        if not arg > 1.0:
            return math.nan
        t_new = math.log(arg)
        if abs(t_new - t) < 1e-12 * t:
            t = t_new
            break
        t = t_new
    gamma_x = t / (2.0 * mu_k)
    k_x = a * gamma_x**2 / ((2.0 * alpha - 1.0) * c)
    return _horizon_samples(k_x) if k_x > 2.0 else 2.0


def student_source_exponent(p: Params | Point) -> float:
    """β seen by a student: the target is set in teacher coordinates, e_i = i^{β−α_T}, so in
    the student's own coordinates c_S,i² = e_i / λ_S,i = i^{β + α_S − α_T}."""
    p = params_of(p)
    return p["beta"] + p["alpha_s"] - p["alpha_t"]


Prediction = float | tuple[float, float]
"""A value of :func:`predictions`: one exponent, or a ``*_terms`` (bias, variance) pair."""


def predictions(p: Params | Point) -> dict[str, Prediction]:
    """Exponents (in N) that §5 predicts at this point, keyed by family name; ``*_terms``:
    the (bias, variance) exponents whose larger one is the rate of a noisy direct run.

    KD entries appear only where Theorem 3's regime α_S > α_T > 1+β holds (power-law or
    gaussian source); W2S entries only for the lowdim target (Theorem 5's assumption).
    """
    p = params_of(p)
    target, alpha_t, alpha_s, beta = p["target"], p["alpha_t"], p["alpha_s"], p["beta"]
    noisy = p["sigma2"] > 0
    out: dict[str, float | tuple[float, float]] = {}
    # Lemma 1 needs a trace-class spectrum (alpha > 1) and a target of finite energy
    # (sum_i e_i < inf, i.e. alpha_t - beta > 1 for the power/gaussian targets); outside
    # that it predicts nothing.
    finite_energy = target == "lowdim" or alpha_t - beta > 1.0
    for run, alpha, source in (("teacher", alpha_t, beta),
                               ("direct", alpha_s, student_source_exponent(p))):
        if noisy and alpha > 1.0:  # the part of the risk proportional to sigma2 (any target)
            out[f"noise_{run}"] = direct_variance_exponent(alpha)
        if alpha <= 1.0 or not finite_energy:
            continue
        out[f"kstar_{run}"] = kstar_exponent(alpha)
        if target != "lowdim":
            out[f"risk_{run}"] = direct_risk_exponent(alpha, source, noisy)
            if noisy:  # both terms: before their crossover the slope lies between them
                out[f"risk_{run}_terms"] = (direct_bias_exponent(alpha, source),
                                            direct_variance_exponent(alpha))
        elif noisy:  # the bias vanishes once k* > k†: variance-dominated
            out[f"risk_{run}"] = direct_variance_exponent(alpha)
            # until then the bias falls faster than any power: its "exponent" is -inf
            out[f"risk_{run}_terms"] = (-math.inf, direct_variance_exponent(alpha))
        # lowdim without noise: no power law, the risk falls exponentially once k* > k†
    if kd_regime(p):
        limit = kd_t2s_limit_exponent(alpha_t, beta)
        der = kd_der_exponent(alpha_t, alpha_s, beta)
        out["risk_t2s_limit"], out["der"] = limit, der
        if noisy:  # der = risk_direct / lim risk_t2s inherits the direct run's two terms
            out["der_terms"] = (der, direct_variance_exponent(alpha_s) - limit)
    if target == "lowdim":
        out["risk_t2s_min"] = w2s_min_risk_exponent(alpha_t, alpha_s)
        out["one_minus_pgr"] = w2s_gap_exponent(alpha_t, alpha_s)
        out["kstar_opt"] = w2s_kstar_opt_exponent(alpha_t, alpha_s)
        out["n_opt_paper"] = w2s_nopt_exponent_paper(alpha_t, alpha_s)
        out["n_opt_audited"] = w2s_nopt_exponent_audited(alpha_t, alpha_s)
        if not w2s_late_scope(p):
            out["risk_t2s_min_late"] = w2s_late_min_risk_exponent(alpha_t, alpha_s)
            out["one_minus_pgr_late"] = w2s_late_gap_exponent(alpha_t, alpha_s)
            out["n_opt_late"] = w2s_late_horizon_exponent(alpha_t)
            out["kstar_opt_late"] = w2s_late_kstar_exponent(alpha_t, alpha_s)
    return out


def exponent(pred: Mapping[str, Prediction], key: str) -> float | None:
    """The single exponent ``pred[key]`` of :func:`predictions` (None where it predicts none
    there); a ``*_terms`` key, which holds a pair, is a caller's error."""
    value = pred.get(key)
    if isinstance(value, tuple):
        raise TypeError(f"prediction {key!r} is a (bias, variance) pair, not one exponent")
    return value


def exponent_terms(pred: Mapping[str, Prediction], key: str) -> tuple[float, float] | None:
    """The (bias, variance) pair ``pred[key]`` of :func:`predictions` (None where it predicts
    none there); a key holding one exponent is a caller's error."""
    value = pred.get(key)
    if value is None or isinstance(value, tuple):
        return value
    raise TypeError(f"prediction {key!r} is one exponent, not a (bias, variance) pair")
