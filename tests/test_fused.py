"""The fused Monte Carlo kernels against the exact engine, the torch path and their own stream.

The CPU kernel (numba) runs here; the GPU kernel (Triton) runs in Triton's interpreter in a
subprocess (tests/fused_interpreter.py) and must reproduce the CPU kernel's replicates, since
both draw the same stream; tests/test_fused_gpu.py runs it on CUDA (``-m gpu``).

False alarms: every statistical check uses fixed seeds, so a run is deterministic on a given
machine (another machine's rounding moves a z-score by far less than its margin). The
thresholds: |z| < 4 against the exact engine (each check a two-sided 6e-5 chance; about 120
checks, under 1 % all together), and p > 1e-4 for each two-sample test against the torch path
(24 tests: under 0.3 % together).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fused_points import BASE, CHECKPOINTS, COMPARED, POINTS, REPLICATES, SEED
from scipy import stats

from ktsweep.engines import exact, fused, mc
from ktsweep.engines.fused import stream
from ktsweep.model.params import Point, make_point
from ktsweep.model.quantities import CURVES, RISKS

numba = pytest.importorskip("numba")  # the GPU machine's rehearsal site has none
from ktsweep.engines.fused import cpu  # noqa: E402  (needs numba)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One numba and one torch thread: on a shared 2-core box spinning threads cost more."""
    before = numba.get_num_threads(), torch.get_num_threads()
    numba.set_num_threads(1)
    torch.set_num_threads(1)
    yield
    numba.set_num_threads(before[0])
    torch.set_num_threads(before[1])


def points_of(spec: Mapping[str, Mapping[str, Any]]) -> list[Point]:
    return [make_point({**BASE, **v}) for v in spec.values()]


@pytest.fixture(scope="module")
def agreement() -> tuple[list[Point], dict[str, np.ndarray], dict[str, np.ndarray]]:
    pts = points_of(POINTS)
    return pts, exact.evaluate(pts, CHECKPOINTS), mc.simulate(
        pts, REPLICATES, SEED, "cpu", "float32", CHECKPOINTS, kernel="fused")


def test_points_cover_every_feature() -> None:
    pts = points_of(POINTS)
    assert {p.target for p in pts} == {"gaussian", "lowdim", "power"}
    assert {p.inputs for p in pts} == {"gaussian", "rademacher", "uniform", "student_t"}
    kinds = {p.schedule_t for p in pts} | {p.schedule_s for p in pts}
    assert kinds == {"geometric", "tail_geometric", "constant"}
    assert any(p.batch_t != p.batch_s for p in pts)
    assert any(p.batch_t == p.batch_s > 1 and p.aligned for p in pts)
    assert any(p.batch_t == p.batch_s > 1 and not p.aligned for p in pts)
    assert any(not p.aligned and p.inputs == "gaussian" for p in pts)
    assert any(p.mixing_seed is not None for p in pts)
    assert any(p.plan_s > p.steps_s for p in pts) and any(p.plan_t > p.steps_t for p in pts)
    assert any(isinstance(p.gamma0_t, dict) and "tune" in p.gamma0_t for p in pts)


@pytest.mark.parametrize("name", COMPARED)
def test_fused_agrees_with_exact(name: str, agreement) -> None:
    """Mean risks and ratios of the fused CPU kernel within 4 standard errors of the exact
    engine at every feature point.

    Planted bugs caught: a reused counter (steps 2k and 2k + 1 drawing the same inputs: c1 =
    t >> 1); a missed halving (every phase at γ0); the T2S student paired with another
    replicate's teacher (its start and offset from the teacher's states rolled by one);
    Student-t draws not scaled to unit variance; Qᵀz drawn for a rotated student's inputs
    but the target not rotated (−θ instead of −Qᵀθ); the next row's residuals formed from
    the state before the update (the look-ahead within a block of drawn rows)."""
    pts, ex, sim = agreement
    assert list(sim["status"]) == ["ok"] * len(pts)
    for k in ("gamma0_t", "gamma0_s", "gamma0_direct", "gamma0_ceiling"):
        np.testing.assert_array_equal(sim[k], ex[k])
    checked = 0
    for i, label in enumerate(POINTS):
        if not np.isfinite(ex[name][i]):
            continue
        se = sim[name + "_se"][i]
        z = (sim[name][i] - ex[name][i]) / se
        assert abs(z) < 4.0, f"{label}: {name} exact {ex[name][i]:.6g} fused " \
                             f"{sim[name][i]:.6g} ± {se:.3g} (z = {z:.2f})"
        checked += 1
    assert checked >= 8


@pytest.mark.parametrize("name", CURVES)
def test_fused_curves_agree_with_exact(name: str, agreement) -> None:
    """Learning curves at every checkpoint (the kernel records them at segment starts).

    Planted bug caught: a checkpoint recorded one step late (after the step's update)."""
    pts, ex, sim = agreement
    for i, label in enumerate(POINTS):
        e, m, se = ex[name][i], sim[name][i], sim[name + "_se"][i]
        np.testing.assert_array_equal(np.isnan(e), np.isnan(m), err_msg=label)
        ok = ~np.isnan(e)
        excess = np.abs(m[ok] - e[ok]) - (4.0 * se[ok] + 1e-4 * np.abs(e[ok]))
        assert np.all(excess <= 0), f"{label} {name}: steps {CHECKPOINTS[ok][excess > 0]}"


def test_fused_mode_risks_agree_with_exact(agreement) -> None:
    """Per-mode risks in the student's basis, rotated points included (16 modes: 4.5σ)."""
    pts, ex, sim = agreement
    for i, label in enumerate(POINTS):
        for name in ("mode_teacher", "mode_t2s", "mode_ceiling"):
            se = sim[name + "_se"][i]
            ok = se > 0  # a mode outside a rank-deficient student's span never moves
            z = (sim[name][i][ok] - ex[name][i][ok]) / se[ok]
            assert np.all(np.abs(z) < 4.5), (label, name, np.round(z, 1))


def test_float64_agrees_with_exact() -> None:
    """The float64 state (the kernel compiled for it) at the first feature point."""
    p = make_point({**BASE, **POINTS["kd_gaussian_geometric"]})
    ex = exact.evaluate([p])
    sim = mc.simulate([p], REPLICATES, SEED, "cpu", "float64", kernel="fused")
    for k in RISKS:
        assert abs(sim[k][0] - ex[k][0]) < 4 * sim[k + "_se"][0], k


def test_fixed_target_shares_the_first_replicates_draw() -> None:
    """With ``fixed_target`` every replicate starts from the one target of tag 3, replicate
    0: the teacher's risk at step 0 is ½ Σ λ_i c_i² for every replicate (standard error 0);
    without it the replicates' targets differ.

    Planted bug caught: fixed_target ignored by the fused path (each replicate its own draw)."""
    p = make_point({**BASE, **POINTS["kd_gaussian_geometric"], "N": 50, "n": 50})
    ck = np.array([0, 10])
    c = stream.target_normals(stream.point_key(SEED, p.key), 1, p.d, True)[0]
    want = 0.5 * float(np.sum(c**2 * np.arange(1, p.d + 1) ** -p.alpha_t))
    fixed = mc.simulate([p], 32, SEED, "cpu", checkpoints=ck, fixed_target=True,
                        kernel="fused")
    assert fixed["curve_teacher"][0, 0] == pytest.approx(want, rel=1e-5)
    assert fixed["curve_teacher_se"][0, 0] == pytest.approx(0.0, abs=1e-6 * want)
    free = mc.simulate([p], 32, SEED, "cpu", checkpoints=ck, kernel="fused")
    assert free["curve_teacher_se"][0, 0] > 0.05 * free["curve_teacher"][0, 0]


# -- against the torch path ----------------------------------------------------------------


def replicate_risks(monkeypatch: pytest.MonkeyPatch, points: list[Point], kernel: str,
                    replicates: int, seed: int) -> dict[str, np.ndarray]:
    """Per-replicate final risks (run → (P, R)) of ``points``, caught where both paths
    summarise them."""
    caught: dict[str, list[np.ndarray]] = {}
    original = mc.summarize

    def spy(finals: mc.Finals, gam: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, err in finals.errors.items():
            caught.setdefault(name, []).append(
                (0.5 * err.double().square().sum(-1)).cpu().numpy())
        return original(finals, gam)

    monkeypatch.setattr(mc, "summarize", spy)
    for p in points:  # one point a call: the parts come back in order
        mc.simulate([p], replicates, seed, "cpu", "float32", kernel=kernel)
    monkeypatch.undo()
    return {k: np.concatenate(v) for k, v in caught.items()}


TWO_SAMPLE = ("kd_gaussian_geometric", "lowdim_batches_4_2", "rotated_gaussian",
              "rotated_rademacher_batch_2", "student_t_semantic_target",
              "power_batch_3_tail_geometric")


def test_fused_and_torch_paths_agree_in_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two-sample Kolmogorov–Smirnov test of each run's per-replicate risk, fused CPU kernel
    against the torch path (independent streams, 1000 replicates each), p > 1e-4 each.

    Planted bugs caught: a missed halving; the wrong replicate's teacher for the T2S
    student; Rademacher inputs as ±1 with a biased threshold (x ≥ 2^30)."""
    pts = [make_point({**BASE, **POINTS[k]}) for k in TWO_SAMPLE]
    a = replicate_risks(monkeypatch, pts, "fused", 1000, SEED)
    b = replicate_risks(monkeypatch, pts, "torch", 1000, SEED + 1)
    worst = []
    for run in ("teacher", "direct", "t2s", "ceiling"):
        for i, label in enumerate(TWO_SAMPLE):
            p = stats.ks_2samp(a[run][i], b[run][i]).pvalue
            worst.append((p, label, run))
    assert min(worst)[0] > 1e-4, sorted(worst)[:3]


# -- the stream --------------------------------------------------------------------------


def test_philox_known_answers() -> None:
    """Random123's published Philox-4x32-10 vectors (kat_vectors): zero, all-ones and π
    counters and keys.

    Planted bugs caught: the two multipliers swapped; the key bumped before the first round."""
    cases = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
             ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2,
              (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
             ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
              (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for ctr, key, want in cases:
        assert tuple(int(x) for x in stream.philox(*ctr, key)) == want


@pytest.mark.parametrize("law", list(stream.LAWS))
def test_cpu_kernel_draws_the_stream(law: str) -> None:
    """The CPU kernel's rows equal the NumPy definition (to float32 rounding of its own log,
    sine and cosine), at steps beyond 2^32, other replicates, samples and passes.

    Planted bugs caught: the step's high word dropped from c3 (in the definition); the
    samples' counters overlapping (c0 = b + k); the noise taken from lane 1; Student-t
    attempts of lanes 2, 3 reading the attempt field of lanes 0, 1."""
    key = stream.point_key(7, "0123456789abcdef")
    keys = stream.round_keys(key)
    nu = 6.5 if law == "student_t" else 0.0
    for d in (5, 16, 103):
        L = stream.width(d)
        row, words = np.zeros(L, np.float32), np.zeros(L, np.uint32)
        for t, r, b, tag in ((0, 0, 0, 0), (5, 3, 2, 2), (2**33 + 7, 11, 1, 1)):
            c3 = np.uint64(tag + ((t >> 32) << 16))
            cpu.fill_row(row, words, keys, np.uint64(b * (L // 4)), np.uint64(t & 0xFFFFFFFF),
                         np.uint64(r), c3, d, stream.LAWS[law], nu)
            want = stream.rows(key, tag, t, r, b, d, law, nu or None)
            err = np.abs(row - want) / (1 + np.abs(want))
            assert err.max() < 2e-6, (law, d, t, err.max())


@pytest.mark.parametrize("law", list(stream.LAWS))
def test_stream_laws(law: str) -> None:
    """Each input law's draws (the definition, 40 000 per law): KS test against the law at
    p > 1e-4 (Rademacher: the share of +1 within 4σ of ½), the noise slot Gaussian, and no
    correlation between neighbouring steps, replicates, samples or passes (|r| < 0.03, about
    6σ at this size).

    Planted bugs caught: Box–Muller's cosine lane and sine lane from one angle word with a
    sign slip (not Gaussian); the uniform law on (0, 1) not scaled to unit variance; the
    Student-t scale √(ν/(ν − 2)) for √((ν − 2)/ν); a reused counter (c1 = t >> 1)."""
    key = stream.point_key(1, "feedfacefeedface")
    d, nu = 8, 7.0
    steps = np.arange(5000)
    rows = stream.rows(key, 0, steps, 4, 0, d, law, nu if law == "student_t" else None)
    x = rows[:, :d].ravel()
    if law == "rademacher":
        assert set(np.unique(x)) == {-1.0, 1.0}
        assert abs((x > 0).mean() - 0.5) < 4 * 0.5 / math.sqrt(x.size)
    else:
        cdf = {"gaussian": stats.norm.cdf,
               "uniform": stats.uniform(-math.sqrt(3), 2 * math.sqrt(3)).cdf,
               "student_t": stats.t(nu, scale=math.sqrt((nu - 2) / nu)).cdf}[law]
        assert stats.kstest(x, cdf).pvalue > 1e-4
    assert stats.kstest(rows[:, stream.noise_slot(d)], stats.norm.cdf).pvalue > 1e-4
    others = {"step": stream.rows(key, 0, steps + 1, 4, 0, d, law, nu),
              "replicate": stream.rows(key, 0, steps, 5, 0, d, law, nu),
              "sample": stream.rows(key, 0, steps, 4, 1, d, law, nu),
              "pass": stream.rows(key, 2, steps, 4, 0, d, law, nu)}
    for what, y in others.items():
        r = np.corrcoef(x, y[:, :d].ravel())[0, 1]
        assert abs(r) < 0.03, (what, r)


# -- determinism and routing -------------------------------------------------------------


def test_fused_results_do_not_depend_on_stacking_or_threads(assert_identical: Callable,
                                                            take: Callable) -> None:
    """A point's numbers are the same alone, after other points, and with two threads (each
    replicate's draws are its own counters).

    Planted bug caught: the key taken from the point's position in the call instead of its
    hash. (Scratch rows shared by the threads race, and fail here only when the threads
    overlap in time: not a reliable catch on a loaded machine.)"""
    p = make_point({**BASE, **POINTS["kd_gaussian_geometric"], "N": 100, "n": 100})
    other = p.replace(alpha_t=1.4, d=12)
    alone = mc.simulate([p], 64, 5, "cpu", checkpoints=CHECKPOINTS, kernel="fused")
    stacked = mc.simulate([other, p], 64, 5, "cpu", checkpoints=CHECKPOINTS, kernel="fused")
    assert_identical(alone, take(stacked, 1))
    two = mc.simulate([p], 64, 5, "cpu", checkpoints=CHECKPOINTS, kernel="fused", threads=2)
    assert_identical(alone, two)


def test_fused_divergence_is_per_run(small_point: Callable[..., Point]) -> None:
    """A diverging teacher blanks the teacher and T2S runs only; a diverging student step
    the three students; the other point of the call is untouched (as the torch path).

    Planted bugs caught: a pass's flags merged over its models (the direct student blanked
    with its teacher); the divergence check compiled under LLVM's no-NaN assumption (a NaN
    risk then passes as below the limit)."""
    ok = small_point()
    bad_t, bad_s = ok.replace(gamma0_t=1e3), ok.replace(gamma0_s=1e3, N=250)
    res = mc.simulate([bad_t, ok, bad_s], 64, 9, "cpu", checkpoints=CHECKPOINTS,
                      kernel="fused")
    assert list(res["status"]) == ["diverged", "ok", "diverged"]
    blanked = {0: ("risk_teacher", "risk_t2s"), 2: ("risk_direct", "risk_t2s", "risk_ceiling")}
    for i, names in blanked.items():
        for k in RISKS:
            assert np.isnan(res[k][i]) == (k in names), (i, k)


def test_kernel_choice_and_fallback(small_point: Callable[..., Point],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto`` is fused where the kernel can run a point and torch elsewhere; ``fused``
    refuses such a point, naming why; an unknown kernel is refused.

    Planted bug caught: ``auto`` taking the fused kernel without asking whether it can run."""
    p = small_point(N=50, n=50)
    torch_res = mc.simulate([p], 16, 1, "cpu", kernel="torch")
    fused_res = mc.simulate([p], 16, 1, "cpu", kernel="fused")
    auto_res = mc.simulate([p], 16, 1, "cpu", kernel="auto")
    np.testing.assert_array_equal(auto_res["risk_t2s"], fused_res["risk_t2s"])
    assert not np.array_equal(torch_res["risk_t2s"], fused_res["risk_t2s"])
    monkeypatch.setattr(fused, "backend_missing", lambda device: "numba is not installed")
    np.testing.assert_array_equal(mc.simulate([p], 16, 1, "cpu", kernel="auto")["risk_t2s"],
                                  torch_res["risk_t2s"])
    with pytest.raises(ValueError, match="numba is not installed"):
        mc.simulate([p], 16, 1, "cpu", kernel="fused")
    with pytest.raises(ValueError, match="kernel 'cuda' is invalid"):
        mc.simulate([p], 16, 1, "cpu", kernel="cuda")


def test_gpu_kernel_refuses_rotated_non_gaussian(small_point: Callable[..., Point]) -> None:
    """The GPU kernel does not rotate inputs: a rotated student under Rademacher inputs is
    refused on CUDA (auto then takes torch), and accepted by the CPU kernel.

    Planted bug caught: the refusal dropped (the GPU kernel would raise mid-sweep)."""
    p = small_point(angle=30.0, inputs="rademacher")
    reason = fused.unsupported(p, torch.device("cuda"))
    assert reason is not None and ("rotat" in reason or "triton" in reason)
    assert fused.unsupported(p, torch.device("cpu")) is None
    assert fused.unsupported(p.replace(inputs="gaussian"), torch.device("cpu")) is None


# -- the GPU kernel ------------------------------------------------------------------------

INTERPRETER = Path(__file__).with_name("fused_interpreter.py")


def test_gpu_kernel_in_interpreter_reproduces_cpu_kernel() -> None:
    """The Triton kernel, run by Triton's interpreter on CPU tensors, gives every replicate's
    final errors, curves and diverged flags of the CPU kernel (same stream) to float32
    rounding, at tiny points covering batches, both pass layouts, every law, the rotated
    student, float64, a multi-phase schedule and divergence.

    Planted bugs caught (in gpu.py): the second model's gains read from the first's; rows
    loaded one replicate off; the noise placed in lane 1; a batch's samples sharing
    counters; the checkpoint branch skipped."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONWARNINGS": "ignore"}
    res = subprocess.run([sys.executable, str(INTERPRETER)], capture_output=True, text=True,
                         timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["cases"] >= 9
    bad = {k: v for k, v in out["worst"].items() if not v <= 2e-5}
    assert not bad, bad
