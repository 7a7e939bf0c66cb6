"""Verdicts that wrong engines cannot pass: the claim table of deliberately wrong engines.

Each planted engine wraps the engines the sweep runs (``ktsweep.sweep.runner.run``): it either
transforms the exact engine's outputs or runs the exact engine at altered points, while the
bound estimator keeps the correct points. Two small sweeps (a gaussian-target sweep for the
rates, the KD limit, the bounds and the noise, a lowdim sweep for W2S) are written as cubes
through the normal store path, fitted and judged; :func:`claims.combine` gives one verdict per
claim and engine. The committed table is docs/science/planted-engines.md; regenerate it with

    .venv/bin/python tests/test_planted_engines.py docs/science/planted-engines.md
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from e2e import build_in_process

from ktsweep.analysis import claims, fits
from ktsweep.engines import dispatch
from ktsweep.model.params import Point
from ktsweep.model.quantities import RISKS, with_ratios
from ktsweep.sweep import runner

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "science" / "planted-engines.md"
REGENERATE = ".venv/bin/python tests/test_planted_engines.py docs/science/planted-engines.md"

SWEEPS: dict[str, dict] = {
    "rates": {
        "name": "planted_rates",
        "grid": {"alpha_s": [2.0, 3.0, 4.0], "sigma2": [0.25, 1.0],
                 "N": [2**k for k in range(8, 24, 2)],
                 "n": [2**12, 2**16, 2**20, float("inf")]},
        "fixed": {"alpha_t": 2.0, "d": 500, "target": "gaussian", "gamma0_t": 0.005,
                  "gamma0_s": 0.005},
        "methods": ["exact", "bound"], "outputs": {"modes": False, "curves": False},
    },
    "w2s": {
        "name": "planted_w2s",
        "grid": {"N": [2**k for k in range(12, 37, 4)],
                 "n": [2**k for k in range(5, 25)] + [float("inf")]},
        "fixed": {"alpha_t": 4.0, "alpha_s": 2.5, "sigma2": 1.0, "d": 1000,
                  "target": "lowdim", "k_dagger": 1, "amplitude": 1.0},
        "methods": ["exact"], "outputs": {"modes": False, "curves": False},
    },
}
"""The two test sweeps (a few hundred points each)."""

Outputs = dict[str, dict[str, np.ndarray]]
Run = Callable[..., Outputs]


def _scaled(factor: Callable[[Sequence[Point]], np.ndarray]) -> Callable[[Run], Run]:
    """An engine whose exact risks are the correct ones times ``factor(points)`` (its ratios
    recomputed from them, as the engine computes them)."""
    def wrap(real: Run) -> Run:
        def run(points, methods=("exact",), checkpoints=None, mc_settings=None):
            out = real(points, methods, checkpoints, mc_settings)
            if "exact" in out and len(points):
                f = factor(points)
                for name in RISKS:
                    out["exact"][name] = np.asarray(out["exact"][name], float) * f
                with_ratios(out["exact"])
            return out
        return run
    return wrap


def _copies_teacher(real: Run) -> Run:
    """An engine whose T2S student has its teacher's risk at every n (ratios recomputed)."""
    def run(points, methods=("exact",), checkpoints=None, mc_settings=None):
        out = real(points, methods, checkpoints, mc_settings)
        if "exact" in out and len(points):
            out["exact"]["risk_t2s"] = np.asarray(out["exact"]["risk_teacher"], float).copy()
            with_ratios(out["exact"])
        return out
    return run


def _limit_off(real: Run) -> Run:
    """An engine whose T2S risk at n = inf is 10 % above the correct limit."""
    def run(points, methods=("exact",), checkpoints=None, mc_settings=None):
        out = real(points, methods, checkpoints, mc_settings)
        if "exact" in out and len(points):
            at_inf = np.array([np.isinf(float(p.n)) for p in points])
            out["exact"]["risk_t2s"] = np.where(at_inf, 1.1, 1.0) * np.asarray(
                out["exact"]["risk_t2s"], float)
            with_ratios(out["exact"])
        return out
    return run


def _memo(real: Run) -> Run:
    """``real`` computed once per (points, methods, checkpoints) in this process: the engines
    that transform the correct outputs reuse them (each call gets its own dicts)."""
    done: dict[tuple, Outputs] = {}

    def run(points, methods=("exact",), checkpoints=None, mc_settings=None):
        key = (tuple(p.key for p in points), tuple(methods),
               None if checkpoints is None else np.asarray(checkpoints).tobytes())
        if key not in done:
            done[key] = real(points, methods, checkpoints, mc_settings)
        return {m: dict(v) for m, v in done[key].items()}
    return run


CORRECT = _memo(dispatch.run)
"""The engines as the sweep runs them, each result kept for the next engine."""


def _altered(change: Callable[[Point], dict]) -> Callable[[Run], Run]:
    """An engine that computes the exact outputs at altered points (``change(point)``: the
    parameters it gets wrong); the bounds stay those of the correct points."""
    def wrap(real: Run) -> Run:
        def run(points, methods=("exact",), checkpoints=None, mc_settings=None):
            out = real(points, methods, checkpoints, mc_settings)
            if "exact" in out and len(points):
                wrong = [p.replace(**change(p)) for p in points]
                out["exact"] = real(wrong, ["exact"], checkpoints, mc_settings)["exact"]
            return out
        return run
    return wrap


ENGINES: dict[str, tuple[str, Callable[[Run], Run] | None]] = {
    "correct": ("the exact engine as it is", lambda real: real),
    "risks x N^0.1": ("every exact risk times N^0.1 (a wrong rate)",
                      _scaled(lambda pts: np.array([float(p.N) ** 0.1 for p in pts]))),
    "constant step": ("the exact engine run with constant step sizes (no decay)",
                      _altered(lambda p: {"schedule_t": "constant",
                                          "schedule_s": "constant"})),
    "spectra swapped": ("the exact engine run with the teacher's and the student's decays "
                        "swapped", _altered(lambda p: {"alpha_t": p.alpha_s,
                                                       "alpha_s": p.alpha_t})),
    "noise dropped": ("the exact engine run without label noise (sigma2 = 0)",
                      _altered(lambda p: {"sigma2": 0.0})),
    "factor 2": ("every exact risk times 2 (the 1/2 of the risk convention dropped)",
                 _scaled(lambda pts: np.full(len(pts), 2.0))),
    "T2S = teacher": ("the T2S student's risk reported as its teacher's (a student that "
                      "copies the teacher's predictions exactly)", None),
    "limit off": ("the T2S student's n = inf limit 10 % too high (a wrong closed form), "
                  "finite n as they are", None),
}
"""The planted engines: name → (what it gets wrong, wrapper of the correct engines)."""
ENGINES["T2S = teacher"] = (ENGINES["T2S = teacher"][0], _copies_teacher)
ENGINES["limit off"] = (ENGINES["limit off"][0], _limit_off)


def _build(cfg: dict, path: Path, engine: Callable[[Run], Run]):
    """Run every chunk of ``cfg`` through the store with ``engine`` in place of the engines
    (``runner.run``), in this process; the opened cube."""
    planted = engine(CORRECT)
    saved = runner.run
    runner.run = planted
    try:
        return build_in_process(cfg, path)
    finally:
        runner.run = saved


def verdict_table(workdir: Path) -> pd.DataFrame:
    """Rows: claims; columns: engines; cells: the claim's verdict over both sweeps."""
    columns = {}
    for engine, (_, wrap) in ENGINES.items():
        tables = {}
        for sweep, cfg in SWEEPS.items():
            # one folder per engine: the store fills a new cube from a sibling with the same
            # result key, which would hand one engine's numbers to the next
            path = workdir / engine.replace(" ", "_").replace("^", "") / f"{sweep}.zarr"
            ds = _build(cfg, path, wrap).load()
            tables[sweep] = claims.evaluate_claims(ds, fits.fit_cube(ds))
        columns[engine] = claims.combine(tables).set_index("claim")["verdict"]
    return pd.DataFrame(columns).rename_axis("claim")


WHY_NOT = {
    "transfer_bound": "the exact engine exceeds Theorem 1's transfer bound at some points "
                      "inside the step condition, as in the project's sweeps (the bound adds "
                      "head errors in quadrature: [bounds](bounds.md))",
    "kd_order": "the der exponents of two alpha_S at one alpha_T have not converged by "
                "N = 2^22 (not asymptotic in the project's sweeps up to N = 2^30 too)",
    "w2s_min_risk": "Theorem 5's stated exponents are false in the exact model "
                    "([Theorem 5](theorem5.md))",
    "w2s_gap": "as w2s_min_risk", "w2s_nopt": "as w2s_min_risk",
    "w2s_proof_bound": "neither sweep has a lowdim point inside the proofs' step condition "
                       "(its claim fails in the project's w2s_proof sweep)",
}
"""Why a claim does not hold for the correct engine on these two sweeps."""


def page(table: pd.DataFrame) -> str:
    """docs/science/planted-engines.md from the verdict table."""
    grids = "\n".join(f"- `{k}`: grid {cfg['grid']}, fixed {cfg['fixed']}, methods "
                      f"{cfg['methods']}" for k, cfg in SWEEPS.items())
    engines = "\n".join(f"- **{name}**: {what}" for name, (what, _) in ENGINES.items())
    holds = [c for c in table.index if table.loc[c, "correct"] == "holds"]
    missed = [c for c in holds if (table.loc[c] == "holds").all()]
    others = "\n".join(f"- `{c}` ({table.loc[c, 'correct']}): {WHY_NOT.get(c, '')}"
                       for c in table.index if c not in holds)
    return "\n".join([
        "# Verdicts that wrong engines cannot pass", "",
        "Each column is an engine: the correct exact engine, or one planted with a known error "
        "(a wrapper around the sweep's engines that transforms the exact engine's outputs or "
        "runs it at altered points; the bound estimator keeps the correct points). Each row is "
        "a claim of [the claim table](claims.md), judged by the same fits and claims over two "
        "small sweeps written as cubes through the normal store path and combined as "
        "[the project's claim table](claim-table.md) combines sweeps. A claim that holds for "
        "the correct engine must not hold for an engine that violates it. The table is made "
        "by `tests/test_planted_engines.py`, which fails when this page differs from what it "
        f"computes; regenerate it with `{REGENERATE}`.", "",
        fits.markdown_table(table.reset_index()), "",
        f"Of the {len(holds)} claims that hold for the correct engine, "
        + (f"{len(missed)} hold for every planted engine: {', '.join(missed)}." if missed
           else "every one fails to hold for at least one planted engine."), "",
        "How the errors are caught: a wrong rate (risks × N^0.1, constant step) moves the "
        "fitted exponents; swapped spectra change the rates and turn the KD gain around "
        "(`kd_sign`); dropped label noise leaves the risk unchanged when σ² changes at fixed N "
        "(`noise_rate`) and removes the teacher error that W2S filters (`w2s_exists`); a "
        "constant factor leaves every exponent and ratio as it is and is seen only by the "
        "bounds, which compare the risk's level with the cube's numbers (`bound_sandwich`); a "
        "T2S student that copies its teacher never beats it (`w2s_exists`), though its der "
        "still has the KD exponent κ ([what exponents cannot see](fits.md)); a wrong n = ∞ "
        "limit is not the teacher (`w2s_vanishes`) and leaves der short of it (`kd_sign`, "
        "`kd_limit_value`). A cell reads `holds` where an error does not touch the claim: a "
        "factor N^0.1 on every risk leaves der and w2s_ratio as they are.", "",
        "Claims that do not hold for the correct engine on these sweeps:", "", others, "",
        "What each engine gets wrong:", "", engines, "",
        "The sweeps:", "", grids, ""])


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> pd.DataFrame:
    return verdict_table(tmp_path_factory.mktemp("planted"))


def test_claims_that_hold_fail_for_a_planted_engine(table):
    """Every claim that holds for the correct engine does not hold for at least one planted
    engine, and noise_rate is among them, caught by the engine without label noise.

    Planted bugs it catches: a claim check that accepts anything (w2s_exists calling a grid
    without W2S `holds`: every column holds); the noise claim without its check that the risk
    grows with sigma2 (the engine without label noise then passes on its fit rows); bound
    claims reading the bound estimator's own flags (every planted engine passes them)."""
    holds = table.index[table["correct"] == "holds"]
    assert {"teacher_rate", "student_rate", "noise_rate", "bound_sandwich", "kd_limit_rate",
            "kd_sign", "w2s_exists", "w2s_vanishes"} <= set(holds)
    for claim in holds:
        assert (table.loc[claim].drop("correct") != "holds").any(), claim
    assert table.loc["noise_rate", "noise dropped"] == "fails"
    assert table.loc["bound_sandwich", "factor 2"] == "fails"
    assert table.loc["kd_sign", "spectra swapped"] == "fails"


def test_committed_page_is_the_generated_one(table):
    """docs/science/planted-engines.md is what this file computes (regenerate it with the
    command in the module docstring). Mutation: any change of a fit or claim rule that moves a
    verdict of the table."""
    assert PAGE.read_text() == page(table), f"regenerate with: {REGENERATE}"


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result = verdict_table(Path(tmp))
    text = page(result)
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(text)
    print(text)
