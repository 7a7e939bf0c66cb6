"""The claim table: every claim gets a verdict and a reason, and each point-wise check turns
to `fails` (or `not asymptotic`) when the cube is planted with the error it exists to catch.

The cube is conftest's ``phase_cube`` (exact + bound, n up to inf, W2S and KD regions)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from ktsweep import cli
from ktsweep.analysis import claims
from ktsweep.analysis import fits as fitting
from ktsweep.analysis.fits import fit_cube, write_fits
from ktsweep.sweep import store
from ktsweep.sweep.layout import Layout


@pytest.fixture(scope="module")
def ds(phase_cube):
    return store.open_cube(phase_cube).load()


@pytest.fixture(scope="module")
def fits(ds):
    return fit_cube(ds)


def _verdicts(ds, fits) -> dict[str, claims.Outcome]:
    df = claims.evaluate_claims(ds, fits)
    return {r.claim: r for r in df.itertuples(index=False)}


def _plant(ds, name, value_fn, **sel):
    """A copy of ``ds`` with ``name`` (exact) replaced by ``value_fn(old)`` at ``sel``."""
    out = ds.copy()
    da = out[name].copy()
    where = {**sel, "estimator": "exact"} if "estimator" in da.dims else sel
    da.loc[where] = value_fn(da.loc[where])
    out[name] = da
    return out


def test_every_claim_has_a_verdict_and_a_reason_unless_it_holds(ds, fits):
    df = claims.evaluate_claims(ds, fits)
    assert list(df["claim"]) == [c.key for c in claims.CLAIMS]
    assert set(df["verdict"]) <= set(claims.CLAIM_VERDICTS)
    for r in df.itertuples(index=False):
        assert r.measured
        assert bool(r.reason) == (r.verdict != "holds"), r
    v = {r.claim: r.verdict for r in df.itertuples(index=False)}
    # what this cube shows by construction (docs/science/limits.md, the phase-map test cube)
    assert v["kd_sign"] == "holds"
    assert v["w2s_exists"] == "holds"
    assert v["w2s_vanishes"] == "holds"
    md = claims.to_markdown(df)
    table = md[md.index("## The claims"):md.index("## Rules")]
    assert table.count("\n| ") == len(df) + 1  # header + one row per claim
    assert md.index("## How to read this") < md.index("## The claims")


def test_kd_sign_fails_when_der_drops_below_one_at_n_inf(ds, fits):
    """Mutation: an engine whose T2S limit is worse than the direct student at one point of
    the KD regime (der <= 1 at n = inf) is caught; checking the sign at finite n only, or
    outside the regime, would not call it `fails`. Without n = inf the claim is not tested
    (mutation: judging der at the largest finite n, where it is below 1 in this cube, calls
    it `fails` or `holds`)."""
    bad = _plant(ds, "der", lambda d: 0.9, target="gaussian", alpha_t=1.25, alpha_s=3.0,
                 N=256.0, n=np.inf)
    out = _verdicts(bad, fits)["kd_sign"]
    assert out.verdict == "fails" and "n = inf" in out.reason
    assert "alpha_T=1.25, alpha_S=3, N=256" in out.reason
    finite = bad.sel(n=[32.0, 128.0, 512.0])
    finite.attrs = _attrs_with_n(ds, [32, 128, 512])
    out = _verdicts(finite, fits)["kd_sign"]
    assert out.verdict == "not in this sweep"
    assert out.reason.startswith(claims.ADD_N_INF) and "largest n here is 512" in out.reason


def _attrs_with_n(ds, n_values):
    from ktsweep.sweep.layout import Layout

    cfg = Layout.from_json(ds.attrs["ktsweep_config"]).config.to_dict()
    cfg["grid"]["n"] = n_values
    return {**ds.attrs, "ktsweep_config": Layout.from_config(cfg).to_json()}


def test_w2s_claims_catch_a_teacher_copy_and_a_wrong_limit(ds, fits):
    """Mutations: a T2S student that is never better than its teacher (w2s_ratio >= 1
    everywhere: a T2S that copies the teacher) makes `w2s_exists` fail; an n = inf limit that
    is not the teacher (risk_t2s off by 10 %) makes `w2s_vanishes` fail."""
    copy = ds.copy()
    copy["w2s_ratio"] = np.maximum(ds["w2s_ratio"], 1.0)
    assert _verdicts(copy, fits)["w2s_exists"].verdict == "fails"
    off = _plant(ds, "risk_t2s", lambda r: 1.1 * r, target="lowdim", n=np.inf)
    assert _verdicts(off, fits)["w2s_vanishes"].verdict == "fails"


def test_der_limit_not_reached_is_not_asymptotic(ds, fits):
    """In the phase cube der closes in on its limit on 30 of its 36 lines over n; moving it
    away at the largest finite n (tripled) leaves one line closing in.

    Mutations: comparing the last finite n with the limit alone (no trend), or taking the
    two smallest n instead of the two largest, change these counts."""
    out = _verdicts(ds, fits)["kd_limit_value"]
    assert out.verdict == "not asymptotic" and "on 30 of 36 lines" in out.measured
    away = _plant(ds, "der", lambda d: 3.0 * d, n=512.0)
    out = _verdicts(away, fits)["kd_limit_value"]
    assert out.verdict == "not asymptotic" and "on 1 of 36 lines" in out.measured


def _bounded(ds, cond=1):
    """``ds`` with every run's bounds at half and twice its exact risk, in scope, and the step
    condition ``cond`` (1: yes, 0: no) everywhere."""
    out = ds.copy()
    out["step_condition"] = xr.full_like(ds["step_condition"], cond)
    for r in ("teacher", "direct", "ceiling"):
        risk = ds[f"risk_{r}"].sel(estimator="exact")
        out[f"bound_lower_{r}"] = 0.5 * risk
        out[f"bound_upper_{r}"] = 2.0 * risk
        out[f"scope_{r}"] = xr.full_like(ds[f"scope_{r}"], 1)
    return out


def test_bound_claims_compare_the_cubes_numbers_inside_the_step_condition(ds, fits):
    """The sandwich is judged from the exact risk and the bounds in the cube, at the points
    where the step condition holds: an exact risk above its upper bound there fails the claim
    and is named; the same risk outside the condition is not counted.

    Mutations: reading the stored sandwich flags instead of the numbers (the planted risk
    leaves them as they are: holds), counting every point (the paper's own settings violate
    the condition), or naming the first point of the grid instead of the violating one."""
    base = _bounded(ds)
    assert _verdicts(base, fits)["bound_sandwich"].verdict == "holds"
    one = {"target": "gaussian", "alpha_t": 2.0, "alpha_s": 2.0, "N": 64.0, "n": 32.0}
    bad = _plant(base, "risk_teacher", lambda r: 3.0 * r, **one)
    out = _verdicts(bad, fits)["bound_sandwich"]
    assert out.verdict == "fails"
    assert "first at target=gaussian, alpha_t=2, alpha_s=2, N=64, n=32 (teacher)" in out.reason
    outside = bad.copy()
    cond = outside["step_condition"].copy()
    cond.loc[{"target": "gaussian", "alpha_t": 2.0, "N": 64.0}] = 0
    outside["step_condition"] = cond
    assert _verdicts(outside, fits)["bound_sandwich"].verdict == "holds"
    none = _bounded(ds, cond=0)
    assert _verdicts(none, fits)["bound_sandwich"].verdict == "not in this sweep"


def test_bound_claims_agree_with_the_bound_estimators_flags(ds):
    """On the cube as computed, the comparisons the claims make from the numbers are the
    bound estimator's own sandwich and transfer flags, point for point (yes, no and
    undetermined alike). Mutation: NaN bounds (n = inf) counted as determined make them
    differ."""
    from ktsweep.model.cubespec import Flag

    ev = claims.Evidence(ds, fit_cube(ds))
    for kind in ("sandwich", "transfer"):
        for run, holds, known in claims.bound_verdicts(ev, kind):
            stored = ds["bound_t2s_holds" if kind == "transfer" else f"sandwich_{run}"]
            mine = xr.where(known, xr.where(holds, Flag.YES, Flag.NO), Flag.UNDETERMINED)
            np.testing.assert_array_equal(mine.transpose(*stored.dims).values,
                                          stored.values, err_msg=run)


def test_proof_bound_claim_reads_lowdim_points_inside_the_step_condition(ds, fits):
    """w2s_proof_bound: the reduced bound below the exact T2S risk at one lowdim point inside
    the step condition, where the full bound holds, fails the claim and names that point; the
    same shortfall outside the condition, where the full bound fails as well, or at a
    gaussian-target point is not counted; no point inside the condition reads `not in this
    sweep`. Mutations: comparing with the full bound, ignoring the step condition, the full
    bound's own verdict or the target, or naming another point, each fail here."""
    risk = ds["risk_t2s"].sel(estimator="exact")
    base = ds.copy()
    base["step_condition"] = xr.full_like(ds["step_condition"], 1)
    base["bound_t2s_reduced"] = 2 * risk.fillna(1.0)
    base["bound_t2s"] = 4 * risk.fillna(1.0)
    assert _verdicts(base, fits)["w2s_proof_bound"].verdict == "holds"
    one = {"target": "lowdim", "alpha_t": 3.0, "alpha_s": 2.0, "N": 256.0, "n": 128.0}
    bad = _plant(base, "bound_t2s_reduced", lambda r: r / 20.0, **one)
    out = _verdicts(bad, fits)["w2s_proof_bound"]
    assert out.verdict == "fails"
    assert "e.g. target=lowdim, alpha_t=3, alpha_s=2, N=256, n=128:" in out.reason
    # where the full bound fails too, the shortfall is transfer_bound's, not the proof's
    full_fails = _plant(bad, "bound_t2s", lambda r: r / 40.0, **one)
    assert _verdicts(full_fails, fits)["w2s_proof_bound"].verdict == "holds"
    outside = _plant(bad, "step_condition", lambda f: 0, **one)
    assert _verdicts(outside, fits)["w2s_proof_bound"].verdict == "holds"
    gauss = _plant(base, "bound_t2s_reduced", lambda r: r / 20.0,
                   **{**one, "target": "gaussian"})
    assert _verdicts(gauss, fits)["w2s_proof_bound"].verdict == "holds"
    none = base.copy()
    none["step_condition"] = xr.full_like(ds["step_condition"], 0)
    assert _verdicts(none, fits)["w2s_proof_bound"].verdict == "not in this sweep"


def _row(family, verdict, slope=0.5, predicted=0.5, alpha_t=2.0, alpha_s=None, notes=""):
    return {"family": family, "estimator": "exact", "target": "gaussian", "alpha_t": alpha_t,
            "alpha_s": alpha_s, "quantity": "", "axis": "N", "verdict": verdict,
            "slope": slope, "predicted": predicted, "difference": slope - predicted,
            "tolerance": 0.05, "notes": notes, "n_points": 3}


def _fit_table(ds, rows):
    """A fit table from hand-written rows, through the fits.csv reader (held axes of the
    phase cube: target, alpha_t, alpha_s; a missing alpha_s: the family ignores it)."""
    df = pd.DataFrame(rows)
    for c in fitting.COLUMNS:
        if c not in df:
            df[c] = np.nan if c in fitting.NUMBERS else ""
    return fitting.read_fits(io.StringIO(df.to_csv(index=False)), ds)


@pytest.mark.parametrize(("rows", "want"), [
    ([_row("teacher", "consistent"), _row("teacher", "not asymptotic", alpha_t=3.0)],
     "holds"),
    ([_row("teacher", "consistent"), _row("teacher", "inconsistent", slope=0.8, alpha_t=3.0)],
     "fails"),
    ([_row("teacher", "no prediction")], "not in this sweep"),
    ([_row("teacher", "not asymptotic", notes="drift 0.2"),
      _row("teacher", "no prediction", alpha_t=3.0)], "not asymptotic"),
    ([_row("teacher", "finite d", notes="raise d")], "finite d"),
    ([_row("direct", "consistent")], "not in this sweep"),
])
def test_rate_claims_gather_their_fit_rows(ds, rows, want):
    """Mutations: a claim that ignores an inconsistent row (holds), one that calls a family
    with no converged row `holds`, or one that reads another family's rows fail here."""
    out = claims._from_families("teacher")(claims.Evidence(ds, _fit_table(ds, rows)))
    assert out.verdict == want
    assert (out.reason == "") == (want == "holds")


def test_a_failing_rate_claim_states_the_comparison(ds):
    """The reason of a failing rate claim gives the row's held values and the comparison
    that failed, with enough digits to read true (|difference| 0.0501 against a tolerance
    0.05 is not printed as 0.050 > 0.050). Mutation: three fixed decimals."""
    rows = [_row("teacher", "inconsistent", slope=0.5501, alpha_t=3.0)]
    out = claims._from_families("teacher")(claims.Evidence(ds, _fit_table(ds, rows)))
    assert "e.g. teacher at target=gaussian, alpha_t=3: 0.550 vs 0.500 (|difference| " \
        "0.0501 > tolerance 0.05)" in out.reason


def test_kd_order_reads_the_fitted_exponents(ds):
    """Mutation: an ordering check that accepts a der exponent falling with alpha_S."""
    up = [_row("kd_der", "consistent", slope=s_, alpha_t=1.25, alpha_s=a)
          for a, s_ in ((1.25, 0.05), (2.0, 0.10), (3.0, 0.12))]
    assert claims.check_kd_order(claims.Evidence(ds, _fit_table(ds, up))).verdict == "holds"
    down = [dict(r, slope=s_) for r, s_ in zip(up, (0.05, 0.12, 0.10), strict=True)]
    out = claims.check_kd_order(claims.Evidence(ds, _fit_table(ds, down)))
    assert out.verdict == "fails" and out.reason.endswith("at target=gaussian, alpha_t=1.25")
    # Mutation: a grid without two alpha_S in the KD regime called `not asymptotic` (it can
    # never decide the ordering, however large N gets: the tied alpha_S = alpha_T sweep).
    outside = [dict(r, verdict="no prediction") for r in up]
    assert claims.check_kd_order(claims.Evidence(ds, _fit_table(ds, outside))).verdict == \
        "not in this sweep"
    waiting = [dict(r, verdict=v) for r, v in zip(
        up, ("consistent", "not asymptotic", "not asymptotic"), strict=True)]
    assert claims.check_kd_order(claims.Evidence(ds, _fit_table(ds, waiting))).verdict == \
        "not asymptotic"


def test_kd_order_keeps_lines_apart_by_label(tmp_path):
    """Each line over alpha_S is one value of every other held axis, whatever its label holds:
    a tuned gamma0 axis, whose map label is text with commas, splits the kd_der rows into
    two lines, one increasing and one falling, and the falling one is named.

    Mutations: lines keyed by text cut at ', ' (the map's list falls apart and rows of
    different gamma0 fall together), or the gamma0 axis dropped from the line's key (one
    line of six rows that is not increasing either way)."""
    cfg = {"name": "g", "grid": {"gamma0_t": [{"tune": [0.06, 0.07]}, 0.005],
                                 "alpha_s": [2.0, 3.0, 4.0], "N": [64, 128, 256],
                                 "n": [float("inf")]},
           "tie": {"gamma0_s": "gamma0_t"},
           "fixed": {"alpha_t": 1.5, "sigma2": 0.1, "d": 20}, "methods": ["exact"],
           "outputs": {"modes": False, "curves": False}}
    ds = store.template(Layout.from_config(cfg)).load()
    tune, plain = (str(v) for v in ds["gamma0_t"].values)
    rows = [{"family": "kd_der", "estimator": "exact", "gamma0_t": g, "alpha_s": a, "n": "inf",
             "verdict": "consistent", "slope": s_, "predicted": s_, "tolerance": 0.05,
             "n_points": 3}
            for g, slopes in ((tune, (0.05, 0.10, 0.12)), (plain, (0.12, 0.10, 0.05)))
            for a, s_ in zip((2.0, 3.0, 4.0), slopes, strict=True)]
    out = claims.check_kd_order(claims.Evidence(ds, _fit_table(ds, rows)))
    assert out.verdict == "fails" and out.measured == "1 of 2 lines increasing in alpha_S"
    assert out.reason.endswith("at gamma0_t=0.005, n=inf")


def test_cli_claims_from_the_fit_table(phase_cube, fits, tmp_path, capsys):
    write_fits(fits, tmp_path / "fits.csv", tmp_path / "fits.md")
    assert cli.main(["claims", str(phase_cube), "--fits", str(tmp_path / "fits.csv"),
                     "--md", str(tmp_path / "claims.md"), "--csv", str(tmp_path / "c.csv")]) == 0
    assert f"{len(claims.CLAIMS)} claims written" in capsys.readouterr().out
    from_csv = pd.read_csv(tmp_path / "c.csv")
    direct = claims.evaluate_claims(store.open_cube(phase_cube), fits)
    assert list(from_csv["verdict"]) == list(direct["verdict"])
    assert cli.main(["claims", str(tmp_path / "none.zarr"), "--md", str(tmp_path / "x.md")]) == 2


def _table(verdicts: dict[str, str]) -> pd.DataFrame:
    """A claims.csv frame: every claim ``not in this sweep`` except those given."""
    return pd.DataFrame([{"claim": c.key, "source": c.source, "statement": c.statement,
                          "measured": f"m-{c.key}", "verdict": verdicts.get(c.key,
                                                                           "not in this sweep"),
                          "reason": "" if verdicts.get(c.key) == "holds" else f"r-{c.key}"}
                         for c in claims.CLAIMS])


def test_combined_table_one_contradiction_fails_the_claim():
    """Mutations caught: a majority vote (holds 2 : fails 1 -> holds), `holds` winning over
    `fails`, or an undecided verdict hiding a sweep that decided."""
    df = claims.combine({"a": _table({"kd_sign": "holds", "kd_kappa": "not asymptotic"}),
                         "b": _table({"kd_sign": "fails", "kd_kappa": "holds",
                                      "teacher_rate": "finite d"}),
                         "c": _table({"kd_sign": "holds", "teacher_rate": "not asymptotic"})})
    got = df.set_index("claim")
    assert got.loc["kd_sign", "verdict"] == "fails"
    assert got.loc["kd_sign", "decided_by"] == "b" and "b: r-kd_sign" in got.loc["kd_sign",
                                                                                  "reason"]
    assert got.loc["kd_kappa", "verdict"] == "holds" and got.loc["kd_kappa", "reason"] == ""
    # nothing decided: 'not asymptotic' (raise the horizon) before 'finite d' (raise d)
    assert got.loc["teacher_rate", "verdict"] == "not asymptotic"
    assert got.loc["teacher_rate", "decided_by"] == "c"
    assert got.loc["w2s_gap", "verdict"] == "not in this sweep"
    assert [e["sweep"] for e in got.loc["kd_sign", "evidence"]] == ["a", "b", "c"]


def test_cli_claim_table_reads_each_sweeps_csv(tmp_path, capsys):
    """The command names the sweep by its results folder and refuses a sweep given twice."""
    for name, v in (("one", "holds"), ("two", "fails")):
        (tmp_path / name).mkdir()
        _table({"w2s_exists": v}).to_csv(tmp_path / name / "claims.csv", index=False)
    out = tmp_path / "table.md"
    assert cli.main(["claim-table", str(tmp_path / "one" / "claims.csv"),
                     str(tmp_path / "two" / "claims.csv"), "--md", str(out)]) == 0
    text = out.read_text()
    assert "| w2s_exists | Theorem 5 | fails | two |" in text  # one row, cells unpadded
    assert "over 2 sweeps" in capsys.readouterr().out
    assert cli.main(["claim-table", str(tmp_path / "one" / "claims.csv"),
                     str(tmp_path / "one" / "claims.csv"), "--md", str(out)]) == 2
    assert cli.main(["claim-table", str(tmp_path / "fits.csv"), "--md", str(out)]) == 2


def test_committed_project_table_covers_every_claim():
    """docs/science/claim-table.md (make claim-table) has one summary row and one evidence
    section per claim, with a verdict ktsweep knows, and counts that match its rows.

    Mutation caught: a claim added to CLAIMS (or renamed) without regenerating the table."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "science" / "claim-table.md"
            ).read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in {c.key for c in claims.CLAIMS}:
            rows.setdefault(cells[0], cells[2])  # the summary table comes first
    assert set(rows) == {c.key for c in claims.CLAIMS}
    assert set(rows.values()) <= set(claims.CLAIM_VERDICTS)
    for c in claims.CLAIMS:
        assert f"### {c.key}\n" in text
    counts = pd.Series(list(rows.values())).value_counts()
    summary = ", ".join(f"{int(counts[v])} {v}" for v in claims.CLAIM_VERDICTS if v in counts)
    assert f"{len(rows)} claims: {summary}." in text


def test_failing_theorem5_rate_claims_point_to_the_measured_late_law(ds):
    """A Theorem 5 rate claim that fails names where the docs explain it; a claim that holds,
    or another family's failure, does not (mutations: the pointer on every reason, or on
    none of the W2S claims)."""
    w2s = {c.key: c for c in claims.CLAIMS if c.key in ("w2s_min_risk", "w2s_gap", "w2s_nopt")}
    assert len(w2s) == 3
    for key, fam in (("w2s_min_risk", "w2s_min_risk"), ("w2s_gap", "w2s_gap"),
                     ("w2s_nopt", "w2s_nopt_paper")):
        bad = _fit_table(ds, [_row(fam, "inconsistent", slope=-0.75, alpha_s=2.0)])
        out = w2s[key].check(claims.Evidence(ds, bad))
        assert out.verdict == "fails"
        assert "docs/science/theorem5.md" in out.reason
        good = w2s[key].check(claims.Evidence(ds, _fit_table(ds, [_row(fam, "consistent",
                                                                    alpha_s=2.0)])))
        assert good.verdict == "holds" and good.reason == ""
    teacher = next(c for c in claims.CLAIMS if c.key == "teacher_rate")
    out = teacher.check(claims.Evidence(ds, _fit_table(ds, [_row("teacher", "inconsistent")])))
    assert out.verdict == "fails" and "theorem-5" not in out.reason
