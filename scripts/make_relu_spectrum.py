"""Write the example measured spectrum: the feature covariance of random ReLU features.

A fixed-seed stand-in for "the eigenvalues of my model's features": inputs x ~ N(0, diag(k^-1.5))
in 256 dimensions, 1024 random ReLU features relu(w·x) with w ~ N(0, I/256), their covariance
estimated from 20,000 inputs, its eigenvalues written one per line (decreasing).
Deterministic: run it again and the file is byte-identical (on the same NumPy).

    python scripts/make_relu_spectrum.py [OUT]   (default examples/spectra/relu_features.txt)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SEED = 20260601
INPUT_DIM, FEATURES, SAMPLES, INPUT_DECAY = 256, 1024, 20_000, 1.5


def relu_feature_spectrum(seed: int = SEED) -> np.ndarray:
    """Eigenvalues (decreasing) of the sample covariance of centred random ReLU features."""
    rng = np.random.default_rng(seed)
    scale = np.arange(1, INPUT_DIM + 1, dtype=np.float64) ** (-INPUT_DECAY / 2)
    x = rng.standard_normal((SAMPLES, INPUT_DIM)) * scale
    w = rng.standard_normal((INPUT_DIM, FEATURES)) / np.sqrt(INPUT_DIM)
    phi = np.maximum(x @ w, 0.0)
    phi -= phi.mean(axis=0)
    eig = np.linalg.eigvalsh(phi.T @ phi / (SAMPLES - 1))[::-1]
    return np.clip(eig, 0.0, None)  # round-off negatives of a PSD matrix


def main(argv: list[str]) -> None:
    out = Path(argv[1] if len(argv) > 1 else "examples/spectra/relu_features.txt")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(out, relu_feature_spectrum(), fmt="%.10e",
               header=f"random ReLU feature covariance eigenvalues (scripts/{Path(__file__).name},"
                      f" seed {SEED})")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv)
