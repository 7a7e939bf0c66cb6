"""Property tests of the exact engine across the stability edge (hypothesis).

Each example draws a small problem (d ≤ 10, a few hundred steps at most), an input law
(Gaussian, Rademacher, uniform, Student-t), batch sizes, schedules, an aligned or rotated
student, and a step γ0 between 0.02 and 3 times the largest stable step of its first
stretch. The closed form (``moments.evolve``, ``exact.evaluate``) and the reference solver
(``moments.evolve_steps``) are held to the independent step-by-step references of
``tests/reference.py`` wherever those stay finite, and every result to the status rule:

- ``ok`` ⇒ every number of the point is finite and the risks are ≥ 0 (the ratios are finite
  too, save pgr where the teacher–ceiling gap vanishes);
- ``diverged`` ⇒ every number of a diverged run (and of the T2S run of a diverged teacher)
  is NaN, and so is every ratio that reads one.

A run's verdict is compared only where it is clear: the reference's peak of Σa + s² is below
a third of the limit, or passes three times it. Between the two a verdict turns on where in
a stretch the closed form reads Σa (it bounds the peak and probes 64 steps), and the verdicts
may then differ; the numbers are compared wherever both solvers keep the run.

The profile is fixed (``derandomize``, bounded ``max_examples``, no deadline, no example
database), so every machine runs the same examples; nothing depends on the BLAS kernel
beyond rounding, which the tolerances absorb.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from reference import diagonal_run, full_point

from ktsweep.engines import exact
from ktsweep.engines.moments import Runs, evolve, evolve_steps
from ktsweep.engines.onestep import one_step
from ktsweep.model.inputs import fourth_moment
from ktsweep.model.params import Point, make_point
from ktsweep.model.quantities import RISKS
from ktsweep.model.spectra import (
    checkpoint_steps,
    schedule_phases,
    spectrum,
    step_sizes,
    student_spectrum,
    teacher_spectrum,
)

PROFILE = {"derandomize": True, "deadline": None, "database": None,
           "suppress_health_check": [HealthCheck.too_slow]}
LAWS = {"gaussian": None, "rademacher": None, "uniform": None, "student_t": 6.0}
CLEAR = 3.0
"""A verdict is clear when the reference peak is below 1/CLEAR of the limit or above CLEAR×."""
RTOL = 1e-7
"""Closed form against a literal float64 loop (whose own rounding grows with |q| > 1)."""


STEP_FACTORS = st.one_of(st.floats(0.02, 3.0),
                         st.sampled_from([0.5, 0.8, 0.9, 0.97, 0.999, 1.0, 1.001, 1.03, 1.1]))
"""γ0 / (largest stable step): anywhere up to 3, and half the time at or next to the edge."""
LAW_NAMES = st.sampled_from(["gaussian", "rademacher", "rademacher", "uniform", "student_t"])
"""Rademacher twice as often: at batch 1 only it has factors q_i < −1 in a stable map."""
BATCHES = st.sampled_from([1, 1, 1, 2, 3, 5])


def largest_stable_step(lam: np.ndarray, batch: int, psi: float) -> float:
    """The largest γ whose one-step map is strictly stable (bisection; stability is monotone
    in γ)."""
    lo, hi = 0.0, 1.0 / float(lam.max())
    while one_step(lam, hi, 1.0 / batch, psi).stable:
        lo, hi = hi, 2.0 * hi
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if one_step(lam, mid, 1.0 / batch, psi).stable else (lo, mid)
    return lo


def clear(peak: float) -> bool:
    return not 1.0 / CLEAR <= peak <= CLEAR


def verdict(peak: float) -> str:
    """The reference's verdict on a run, for hypothesis's statistics."""
    return "borderline" if not clear(peak) else "diverged" if peak > 1.0 else "finite"


# -- the stability condition ---------------------------------------------------------------

@settings(max_examples=500, **PROFILE)
@given(d=st.integers(1, 8), alpha=st.floats(0.0, 3.0), batch=BATCHES, law=LAW_NAMES,
       scale=st.one_of(st.floats(0.05, 4.0), STEP_FACTORS), dead=st.integers(0, 3))
def test_stability_verdict_is_the_eigenvalues(d: int, alpha: float, batch: int, law: str,
                                              scale: float, dead: int) -> None:
    """``strictly_stable`` says exactly whether every eigenvalue of the one-step map
    diag(q) + g 1ᵀ (live modes) lies in (−1, 1), computed here with a dense eigensolver, at
    steps up to 4× the largest stable one; this also holds the claim that the lower edge
    μ > −1 needs no test of its own (the Rademacher examples have eigenvalues below 0).
    Planted bugs caught: f0 > 0 dropped or read as f0 ≥ −1e-3, d_i > 0 dropped (steps
    beyond 2/(cλ) read stable)."""
    lam = spectrum(alpha, d) if alpha > 0 else np.ones(d)
    lam[d - min(dead, d - 1):] = 0.0
    psi = fourth_moment(law, LAWS[law])
    gamma = scale * largest_stable_step(lam, batch, psi)
    step = one_step(lam, gamma, 1.0 / batch, psi)
    root = np.sqrt(step.g)
    mu = np.linalg.eigvalsh(np.diag(1.0 - step.d) + np.outer(root, root))
    margin = min(abs(mu.max() - 1.0), abs(mu.min() + 1.0))
    if margin > 1e-9:  # at an edge the verdict is rounding's
        assert step.stable == bool(mu.max() < 1.0 and mu.min() > -1.0), (mu.min(), mu.max())


# -- moments.evolve and evolve_steps against the literal loop --------------------------------

@st.composite
def diagonal_problems(draw):
    d = draw(st.integers(1, 10))
    lam = spectrum(draw(st.floats(0.3, 3.0)), d)
    lam[d - draw(st.integers(0, d - 1)):] = 0.0  # dead modes: their energy acts as noise
    law = draw(LAW_NAMES)
    psi = fourth_moment(law, LAWS[law])
    batch = draw(BATCHES)
    kind = draw(st.sampled_from(["constant", "geometric", "tail_geometric"]))
    gamma0 = draw(STEP_FACTORS) * largest_stable_step(lam, batch, psi)
    steps = [draw(st.integers(1, 300)) for _ in range(2)]
    energies = [np.arange(1, d + 1, dtype=np.float64) ** -draw(st.floats(0.0, 2.0))
                for _ in range(2)]
    noise = draw(st.sampled_from([0.0, 0.1]))
    grid = draw(st.sampled_from(["every", "log", "ends"]))  # checkpoints
    return lam, psi, batch, kind, gamma0, steps, energies, noise, grid


@settings(max_examples=300, **PROFILE)
@given(problem=diagonal_problems())
def test_closed_form_and_step_recursion_follow_the_literal_loop(problem) -> None:
    """Two runs sharing every stretch map (same λ, B, ψ, γ0; different starts and lengths)
    through ``evolve`` and ``evolve_steps``: where the literal loop's verdict is clear, both
    solvers give it, and where the loop keeps the run, both give its final moments and its
    learning curve to 1e-7 of the run's scale; a diverged row holds NaN only.
    Checkpoints at every step, on the log grid or only at the ends (then a stretch asks for
    no time before its end and the closed form drops the roots that have decayed by then).
    Planted bugs caught: μ^t of a negative eigenvalue without its sign, or as
    exp(t·log1p(−δ)) (NaN: converging Rademacher runs read diverged), the renewal
    sequence's recursion off by one lag, blocks of 64 steps whatever D_i < −1
    (cancellation), the closed form taken where the fixed point lies beyond the limit
    (cancellation against a_∞ ∝ 1/f0 at the edge)."""
    lam, psi, batch, kind, gamma0, steps, energies, noise, grid = problem
    phases = [schedule_phases(kind, gamma0, s, s) for s in steps]
    runs = Runs(lam=np.stack([lam, lam]), a0=np.stack([e * (lam > 0) + e * (lam == 0)
                                                       for e in energies]),
                noise=np.array([noise, noise]), batch=np.array([batch, batch]),
                phases=phases, steps=np.array(steps), psi=np.array([psi, psi]))
    top = max(steps)
    ck = {"every": np.arange(top + 1), "log": checkpoint_steps(top),
          "ends": np.array([0, top])}[grid]
    fast, slow = evolve(runs, ck), evolve_steps(runs, ck)
    negative = one_step(lam, gamma0, 1 / batch, psi).d.max() > 1
    event(f"first map: {'some q_i < 0' if negative else 'every q_i >= 0'}")
    for r in range(2):
        ref = diagonal_run(lam, runs.a0[r], noise, batch, psi, step_sizes(phases[r], steps[r]))
        event(f"reference: {verdict(ref.peak)}")
        for m in (fast, slow):
            if m.diverged[r]:
                assert np.isnan(m.a[r]).all() and np.isnan(m.contraction[r]).all()
            else:
                assert np.isfinite(m.a[r]).all() and np.isfinite(m.contraction[r]).all()
                assert m.a[r].sum() >= 0.0
            if clear(ref.peak):
                assert m.diverged[r] == ref.diverged, (r, ref.peak)
            if m.diverged[r] or ref.final is None:
                continue
            scale = 2.0 * np.nanmax(ref.half_sums) + noise
            np.testing.assert_allclose(m.a[r], ref.final, rtol=RTOL, atol=RTOL * scale)
            inside = ck <= steps[r]
            np.testing.assert_allclose(m.curve[r, inside], ref.half_sums[ck[inside]],
                                       rtol=RTOL, atol=RTOL * scale)
            assert np.isnan(m.curve[r, ~inside]).all()


# -- exact.evaluate against the full-matrix reference -----------------------------------------

@st.composite
def points(draw) -> tuple[Point, float, float]:
    d = draw(st.integers(2, 8))
    law = draw(LAW_NAMES)
    values = {
        "alpha_t": draw(st.floats(0.5, 2.5)), "alpha_s": draw(st.floats(0.5, 2.5)),
        "N": draw(st.integers(2, 80)), "n": draw(st.integers(2, 80)),
        "sigma2": draw(st.sampled_from([0.0, 0.1])), "d": d,
        "batch_t": draw(BATCHES), "batch_s": draw(BATCHES),
        "schedule_t": draw(st.sampled_from(["constant", "geometric", "tail_geometric"])),
        "schedule_s": draw(st.sampled_from(["constant", "geometric", "tail_geometric"])),
        "target": draw(st.sampled_from(["gaussian", "power"])),
        "angle": draw(st.sampled_from([0.0, 0.0, 30.0])),
        "inputs": law,
    }
    if LAWS[law] is not None:
        values["inputs_nu"] = LAWS[law]
    psi = fourth_moment(law, LAWS[law])
    base = make_point({**values, "gamma0_t": 0.1, "gamma0_s": 0.1})
    f_t, f_s = draw(STEP_FACTORS), draw(STEP_FACTORS)
    values["gamma0_t"] = f_t * largest_stable_step(teacher_spectrum(base), base.batch_t, psi)
    values["gamma0_s"] = f_s * largest_stable_step(student_spectrum(base), base.batch_s, psi)
    return make_point(values), f_t, f_s


def assert_status_rule(out: dict[str, np.ndarray], points_: list[Point]) -> None:
    """The status rule on exact's output (see the module docstring)."""
    ck_max = {"teacher": "steps_t", "t2s": "steps_s"}
    for i, p in enumerate(points_):
        assert out["status"][i] in ("ok", "diverged")
        dead = {k[5:] for k in RISKS if np.isnan(out[k][i])}
        assert (out["status"][i] == "diverged") == bool(dead), (out["status"][i], dead)
        if "teacher" in dead:
            assert "t2s" in dead  # the T2S student learns from the teacher
        for run in ("teacher", "direct", "t2s", "ceiling"):
            risk, modes = out[f"risk_{run}"][i], out[f"mode_{run}"][i]
            curve = out.get(f"curve_{run}")
            if run in dead:
                assert np.isnan(modes).all() and (curve is None or np.isnan(curve[i]).all())
                continue
            assert np.isfinite(risk) and risk >= 0.0 and np.isfinite(modes).all()
            if curve is not None:
                ck = out["checkpoints"]
                inside = ck <= getattr(p, ck_max[run])
                assert np.isfinite(curve[i, inside]).all() and (curve[i, inside] >= 0).all()
        reads = {"der": {"direct", "t2s"}, "w2s_ratio": {"t2s", "teacher"},
                 "pgr": {"teacher", "t2s", "ceiling"}}
        for ratio, runs_read in reads.items():
            value = out[ratio][i]
            if dead & runs_read:
                assert np.isnan(value), ratio
            elif ratio != "pgr":
                assert np.isfinite(value) and value >= 0.0, ratio
            else:
                gap = abs(out["risk_teacher"][i] - out["risk_ceiling"][i])
                assert np.isfinite(value) or gap <= 1e-12 * out["risk_teacher"][i], ratio


@settings(max_examples=200, **PROFILE)
@given(drawn=points())
def test_exact_follows_the_full_matrix_recursion(drawn) -> None:
    """One point of any law, batch sizes, schedules and geometry, γ0 of each model up to 3×
    its largest stable step: exact's status obeys the rule, its per-run verdict is the full
    recursion's where that is clear, and every risk and learning curve it keeps equals the
    full recursion's (both solvers, ``evolve`` and ``evolve_steps``).
    Planted bugs caught: a negative eigenvalue's power without its sign, or as
    exp(t·log1p(−δ)), the renewal sequence off by one lag, the closed form taken where the
    fixed point lies beyond the limit."""
    p, _, _ = drawn
    ref = full_point(p)
    ck = checkpoint_steps(max(p.steps_t, p.steps_s))
    for solver in (evolve, evolve_steps):
        out = exact.evaluate([p], ck, solver=solver)
        out["checkpoints"] = ck
        assert_status_rule(out, [p])
        for run, r in ref.items():
            got = out[f"risk_{run}"][0]
            if solver is evolve:
                event(f"{run}: {verdict(r.peak)}")
            if clear(r.peak):
                assert np.isnan(got) == r.diverged, (run, r.peak, got)
            if np.isnan(got) or r.diverged:
                continue
            scale = 2.0 * np.nanmax(r.half_sums) + p.sigma2
            assert abs(got - r.half_sums[-1]) <= RTOL * max(abs(r.half_sums[-1]), scale), run
            if run in ("teacher", "t2s"):
                steps = int(p.steps_t if run == "teacher" else p.steps_s)
                inside = ck <= steps
                np.testing.assert_allclose(out[f"curve_{run}"][0, inside],
                                           r.half_sums[ck[inside]], rtol=RTOL,
                                           atol=RTOL * scale, err_msg=run)


@settings(max_examples=60, **PROFILE)
@given(drawn=points(), factors=st.lists(st.floats(0.05, 2.5), min_size=2, max_size=4,
                                        unique=True))
def test_tune_list_takes_the_best_finite_candidate(drawn, factors: list[float]) -> None:
    """A student ``{tune: [...]}`` list whose candidates straddle the stability edge: each
    student run takes the candidate whose own point (γ0_s fixed at it) gives the lowest
    finite risk, and is diverged only when every candidate is.
    Planted bug caught: the T2S student scored by the direct student's risk."""
    p, _, _ = drawn
    gmax = largest_stable_step(student_spectrum(p), p.batch_s,
                               fourth_moment(p.inputs, p.inputs_nu))
    grid = [f * gmax for f in factors]
    values = {k: getattr(p, k) for k in ("alpha_t", "alpha_s", "N", "n", "sigma2", "d",
                                         "batch_t", "batch_s", "schedule_t", "schedule_s",
                                         "target", "angle", "inputs", "inputs_nu",
                                         "gamma0_t")}
    values = {k: v for k, v in values.items() if v is not None}
    tuned = exact.evaluate([make_point({**values, "gamma0_s": {"tune": grid}})])
    each = exact.evaluate([make_point({**values, "gamma0_s": g}) for g in grid])
    for run, key in (("direct", "gamma0_direct"), ("ceiling", "gamma0_ceiling"),
                     ("t2s", "gamma0_s")):
        risks = each[f"risk_{run}"]
        event(f"{run}: {np.isnan(risks).sum()} of {risks.size} candidates diverged")
        if np.isnan(risks).all():
            assert np.isnan(tuned[f"risk_{run}"][0]), run
            continue
        best = float(np.nanmin(risks))
        assert abs(tuned[f"risk_{run}"][0] - best) <= 1e-12 * best, (run, risks, tuned[key][0])
        assert math.isfinite(tuned[key][0])
