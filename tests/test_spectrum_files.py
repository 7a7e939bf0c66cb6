"""Spectra from files (ktsweep.model.spectrum_files): the α fit, errors, hashing, the engines."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ktsweep.engines import dispatch
from ktsweep.model.params import ParameterError, make_point, point_hash
from ktsweep.model.spectra import student_spectrum, teacher_spectrum
from ktsweep.model.spectrum_files import fit_alpha, load_spectrum
from ktsweep.model.theory import predictions
from ktsweep.sweep.layout import Layout

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "spectra" / "relu_features.txt"
BASE = {"N": 200, "n": 400, "sigma2": 0.01}


def _power_law(alpha: float, size: int = 800) -> np.ndarray:
    """k^-α with a distorted head (k ≤ 25, ×(1 + 3/k)) and a noise-floor tail (k > 450): the
    fit must recover α exactly from the middle it keeps."""
    k = np.arange(1, size + 1, dtype=np.float64)
    lam = k**-alpha
    lam[:25] *= 1.0 + 3.0 / k[:25]
    if size > 450:
        lam[450:] = lam[449] * np.linspace(0.9, 0.5, size - 450)
    return lam


def _save(path: Path, values: np.ndarray) -> str:
    if path.suffix == ".npy":
        np.save(path, values)
    else:
        np.savetxt(path, values, delimiter=",")
    return str(path)


@pytest.mark.parametrize("suffix", [".npy", ".csv", ".txt"])
def test_fit_recovers_known_alpha_from_every_file_type(tmp_path: Path, suffix: str) -> None:
    """Round trip: a power law with α = 1.7 (distorted head, flat tail, stored in ascending
    order) written to a file and read back gives α = 1.7 to 1e-9, fitted on eigenvalues
    26..450 of the top 500. Catches: extremes not dropped (the head and tail bend the slope
    by > 0.05), a file read unsorted (ascending order fits a negative slope), text written
    with too few digits, the top-500 cap forgotten (the fit runs into the flat tail)."""
    lam = _power_law(1.7)
    path = _save(tmp_path / f"eigs{suffix}", lam[::-1].copy())
    spec = load_spectrum(path)
    assert spec.fit.alpha == pytest.approx(1.7, abs=1e-9)
    assert (spec.fit.first, spec.fit.last) == (26, 450)
    assert spec.fit.alpha_se < 1e-9
    np.testing.assert_array_equal(spec.values, lam)
    assert fit_alpha(lam).alpha == spec.fit.alpha


def test_fit_without_dropping_extremes_would_miss() -> None:
    """The distortions of :func:`_power_law` matter: a plain fit over the top 500 is off by
    more than 0.05 (so the round trip above tests the dropping, not luck)."""
    lam = _power_law(1.7)
    k = np.arange(1, 501, dtype=np.float64)
    slope = np.polyfit(np.log(k), np.log(lam[:500]), 1)[0]
    assert abs(-slope - 1.7) > 0.05


def test_point_takes_alpha_and_d_from_files_and_theory_uses_them(tmp_path: Path) -> None:
    """A point with spectrum files needs no α: α_T, α_S are the fits (which the theory's
    predictions read), d defaults to the shorter file and the engines see the files'
    eigenvalues. Catches: α left at a placeholder, spectra still built as k^-α, d left at
    1000 (longer than the files)."""
    t = _save(tmp_path / "t.npy", _power_law(1.3, 600))
    s = _save(tmp_path / "s.txt", _power_law(2.1, 500))
    p = make_point({**BASE, "spectrum_t": t, "spectrum_s": s})
    assert p.d == 500
    assert p.alpha_t == pytest.approx(1.3, abs=1e-9) and p.alpha_s == pytest.approx(2.1, abs=1e-9)
    np.testing.assert_array_equal(teacher_spectrum(p), _power_law(1.3, 600)[:500])
    np.testing.assert_array_equal(student_spectrum(p), _power_law(2.1, 500))
    assert predictions(p)["kstar_teacher"] == pytest.approx(1 / p.alpha_t)
    low = make_point({**BASE, "spectrum_t": t, "alpha_s": 1.5, "d": 100, "r_t": 50})
    assert (teacher_spectrum(low)[50:] == 0).all() and teacher_spectrum(low)[49] > 0
    res = dispatch.run([p], ("exact", "bound"))
    assert res["exact"]["status"][0] == "ok"
    for est in ("exact", "bound"):
        assert res[est]["spectrum_alpha_t"][0] == p.alpha_t
        assert (res[est]["spectrum_fit_first_s"][0], res[est]["spectrum_fit_last_s"][0]) == (26,
                                                                                            450)
    plain = dispatch.run([make_point({**BASE, "alpha_t": 1.2, "alpha_s": 1.5, "d": 20})])
    assert math.isnan(plain["exact"]["spectrum_alpha_t"][0])


def test_file_hash_follows_bytes_not_path(tmp_path: Path) -> None:
    """The point hash (cube key, Monte Carlo seeds) records the file's SHA-256: a copy at
    another path is the same point, a changed file a new one, and so is the layout's result
    key (a changed file starts a fresh cube). Catches: hashing the path (a moved file would
    orphan its results; an edited file would reuse stale ones), a load cache that ignores
    the file's modification."""
    a = _save(tmp_path / "a.npy", _power_law(1.5, 300))
    b = str(tmp_path / "b.npy")
    shutil.copy(a, b)
    ha = point_hash({**BASE, "spectrum_t": a, "alpha_s": 2.0})
    assert point_hash({**BASE, "spectrum_t": b, "alpha_s": 2.0}) == ha
    cfg = {"name": "files", "grid": {"n": [100, 200]},
           "fixed": {"N": 100, "sigma2": 0.01, "alpha_s": 2.0, "spectrum_t": a},
           "methods": ["exact"]}
    key = Layout.from_config(cfg).result_key()
    lam = _power_law(1.5, 300)
    lam[100] *= 1.0001
    np.save(a, lam)
    os.utime(a, ns=(1, 1))  # same size; a different mtime
    assert point_hash({**BASE, "spectrum_t": a, "alpha_s": 2.0}) != ha
    assert Layout.from_config(cfg).result_key() != key


@pytest.mark.parametrize(
    ("values", "suffix", "extra", "words"),
    [
        (np.r_[_power_law(1.5, 100), -1e-3], ".npy", {}, ["negative", "index 100", "clip"]),
        (np.r_[_power_law(1.5, 100)[:7], np.nan, _power_law(1.5, 100)[8:]], ".txt", {},
         ["NaN", "line 8"]),
        (_power_law(1.5, 10), ".csv", {}, ["10 positive", "at least 20"]),
        (_power_law(1.5, 100), ".npy", {"d": 200}, ["'d'", "100 eigenvalues", "d <= 100"]),
        (np.ones(50), ".npy", {}, ["alpha", "not > 0"]),
    ],
)
def test_bad_files_are_named_with_the_fix(tmp_path: Path, values, suffix, extra, words) -> None:
    """Catches a bad file that passes silently (negative, NaN, too short, shorter than d,
    flat) or an error that names neither the file nor what to do."""
    path = _save(tmp_path / f"bad{suffix}", values)
    with pytest.raises(ParameterError) as info:
        make_point({**BASE, "alpha_s": 2.0, "spectrum_t": path, **extra})
    msg = str(info.value)
    assert "bad" + suffix in msg, msg
    for w in words:
        assert w in msg, (w, msg)


def test_missing_or_unknown_files_and_conflicting_alpha(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match=r"'spectrum_s'.*not found"):
        make_point({**BASE, "alpha_t": 1.5, "spectrum_s": str(tmp_path / "none.npy")})
    odd = tmp_path / "eigs.json"
    odd.write_text("[1, 0.5]")
    with pytest.raises(ParameterError, match=r"\.npy, \.csv, \.txt"):
        make_point({**BASE, "alpha_t": 1.5, "spectrum_s": str(odd)})
    t = _save(tmp_path / "t.npy", _power_law(1.5, 100))
    with pytest.raises(ParameterError, match=r"'alpha_t'.*drop alpha_t"):
        make_point({**BASE, "alpha_t": 1.4, "alpha_s": 2.0, "spectrum_t": t})
    p = make_point({**BASE, "alpha_s": 2.0, "spectrum_t": t})
    assert p.replace(n=800).alpha_t == p.alpha_t  # the fitted α round-trips


@pytest.mark.slow
def test_example_spectrum_is_the_scripts_output(tmp_path: Path) -> None:
    """The committed example equals what scripts/make_relu_spectrum.py writes (fixed seed),
    and its decay is a usable power law. Catches an example edited by hand or a script whose
    output drifted from the committed file."""
    import runpy

    mod = runpy.run_path(str(ROOT / "scripts" / "make_relu_spectrum.py"))
    out = tmp_path / "relu.txt"
    mod["main"](["x", str(out)])
    assert out.read_bytes() == EXAMPLE.read_bytes()
    fit = load_spectrum(str(EXAMPLE)).fit
    assert 1.0 < fit.alpha < 1.6 and fit.alpha_se < 0.01
