"""Measured eigenvalue spectra read from files, and the power-law fit of their decay α
(docs/science/spectra.md).

A file (``.npy``, ``.csv`` or ``.txt``) holds one model's feature-covariance eigenvalues, in
any order; they are used sorted in decreasing order, as given (no rescaling). α is fitted
by the paper's recipe (its Fig. 2c/3c): a least-squares line through (log k, log λ_k) over
the top :data:`FIT_TOP` eigenvalues, extremes dropped: here the largest
:data:`FIT_DROP_HEAD` and the smallest :data:`FIT_DROP_TAIL` fractions of those (the head
bends under the few dominant directions, the tail under finite-sample and round-off noise).
Files are identified by the SHA-256 of their bytes, which is what a point's hash records.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

SUFFIXES = (".npy", ".csv", ".txt")
FIT_TOP = 500
"""The fit uses at most the top this many eigenvalues (the paper's recipe)."""
FIT_DROP_HEAD = 0.05
"""Fraction of the fitted eigenvalues dropped at the large end."""
FIT_DROP_TAIL = 0.10
"""Fraction of the fitted eigenvalues dropped at the small end."""
MIN_FIT = 20
"""Fewest positive eigenvalues a file must hold for the fit to mean anything."""


class SpectrumFileError(ValueError):
    """A spectrum file is missing, unreadable or holds invalid eigenvalues; names the file."""


@dataclass(frozen=True)
class SpectrumFit:
    """Power-law fit λ_k ≈ C k^{-α} over eigenvalue indices ``first``..``last`` (1-based)."""

    alpha: float
    alpha_se: float  # standard error of the least-squares slope
    first: int
    last: int


@dataclass(frozen=True)
class MeasuredSpectrum:
    """The eigenvalues of one file (decreasing), its SHA-256 and the fit of its decay."""

    path: str
    sha256: str
    values: np.ndarray
    fit: SpectrumFit


def fit_alpha(values: np.ndarray) -> SpectrumFit:
    """Fit α on decreasing, positive-headed eigenvalues by the recipe of this module."""
    pos = values[values > 0]
    top = min(FIT_TOP, pos.size)
    first = int(math.floor(FIT_DROP_HEAD * top)) + 1
    last = top - int(math.floor(FIT_DROP_TAIL * top))
    k = np.arange(first, last + 1, dtype=np.float64)
    x, y = np.log(k), np.log(pos[first - 1 : last])
    xc = x - x.mean()
    slope = float(xc @ (y - y.mean()) / (xc @ xc))
    resid = y - y.mean() - slope * xc
    se = float(math.sqrt(resid @ resid / max(1, k.size - 2) / (xc @ xc)))
    return SpectrumFit(alpha=-slope, alpha_se=se, first=first, last=last)


def _read(path: str) -> np.ndarray:
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in SUFFIXES:
        raise SpectrumFileError(f"spectrum file {path!r}: unknown type {suffix or '(none)'!r}; "
                                f"save the eigenvalues as {', '.join(SUFFIXES)}")
    try:
        if suffix == ".npy":
            raw = np.load(path, allow_pickle=False)
        else:
            raw = np.loadtxt(path, delimiter="," if suffix == ".csv" else None, ndmin=1,
                             dtype=np.float64)
    except FileNotFoundError:
        raise SpectrumFileError(
            f"spectrum file {path!r} not found (relative paths are read from the directory "
            "the command runs in); give the path to an existing file") from None
    except ValueError as err:
        raise SpectrumFileError(f"spectrum file {path!r} is not a list of numbers ({err}); "
                                "write one eigenvalue per line (or one .npy vector)") from None
    arr = np.asarray(raw)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1 or arr.dtype.kind not in "fiu":
        raise SpectrumFileError(f"spectrum file {path!r} holds an array of shape {arr.shape} "
                                f"and type {arr.dtype}; save a 1-D vector of eigenvalues")
    return arr.astype(np.float64)


def _check(path: str, values: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(values))
    where = "line" if path.lower().endswith((".csv", ".txt")) else "index"
    base = 1 if where == "line" else 0
    if bad.size:
        raise SpectrumFileError(
            f"spectrum file {path!r}: {bad.size} value(s) are NaN or infinite (first at {where} "
            f"{bad[0] + base}); remove them or recompute the eigenvalues")
    neg = np.flatnonzero(values < 0)
    if neg.size:
        raise SpectrumFileError(
            f"spectrum file {path!r}: {neg.size} negative eigenvalue(s) (first {values[neg[0]]!r} "
            f"at {where} {neg[0] + base}); a covariance has none: clip round-off negatives to 0 "
            "before saving")
    positive = int((values > 0).sum())
    if positive < MIN_FIT:
        raise SpectrumFileError(
            f"spectrum file {path!r}: {positive} positive eigenvalue(s), need at least "
            f"{MIN_FIT} to fit the decay alpha; save a longer spectrum")


@lru_cache(maxsize=64)
def _load(real: str, mtime_ns: int, size: int, given: str) -> MeasuredSpectrum:
    with open(real, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    values = _read(real)
    _check(given, values)
    values = np.sort(values)[::-1].copy()
    values.setflags(write=False)
    fit = fit_alpha(values)
    if not fit.alpha > 0:
        raise SpectrumFileError(
            f"spectrum file {given!r}: the fitted decay alpha = {fit.alpha:.3g} is not > 0 "
            f"(eigenvalues {fit.first}..{fit.last} do not decrease); check the file holds "
            "eigenvalues of a covariance")
    return MeasuredSpectrum(given, digest, values, fit)


def load_spectrum(path: str) -> MeasuredSpectrum:
    """Read, check and fit a spectrum file (cached until the file changes)."""
    if not isinstance(path, str) or not path:
        raise SpectrumFileError(f"spectrum path {path!r} is invalid: give a file path string")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SpectrumFileError(
            f"spectrum file {path!r} not found (relative paths are read from the directory "
            "the command runs in); give the path to an existing file") from None
    if os.path.splitext(path)[1].lower() not in SUFFIXES:
        _read(path)  # raises the unknown-type error
    return _load(os.path.realpath(path), st.st_mtime_ns, st.st_size, path)
