"""The fused GPU kernel on CUDA (``-m gpu``; skipped without a GPU): against the exact engine
at the feature points of tests/test_fused.py, and against the CPU kernel, which draws the same
stream. Kept apart from tests/test_fused.py, which needs numba at import: the GPU machine's
Python may lack it, and then only the comparison with the CPU kernel is left out.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from fused_points import BASE, CHECKPOINTS, COMPARED, POINTS, REPLICATES, SEED

from ktsweep.engines import exact, fused, mc
from ktsweep.model.params import make_point


@pytest.mark.gpu
def test_gpu_kernel_agrees_with_exact_and_cpu_kernel() -> None:
    """The Triton kernel on CUDA within 4 standard errors of the exact engine at every
    feature point it runs (the rotated student under Rademacher inputs is refused and left
    out), and, where numba is installed, equal to the CPU kernel's means to 10^-3 (the same
    stream; libdevice's logarithm and the CPU's polynomial differ by rounding).

    No bug can be planted without a GPU: the interpreter test of tests/test_fused.py holds
    this kernel's code to the CPU kernel; this test adds the compiler and the device."""
    pts = [make_point({**BASE, **v}) for v in POINTS.values()]
    pts = [p for p in pts if fused.unsupported(p, torch.device("cuda")) is None]
    assert len(pts) == len(POINTS) - 1
    ex = exact.evaluate(pts, CHECKPOINTS)
    gpu = mc.simulate(pts, REPLICATES, SEED, "cuda", "float32", CHECKPOINTS, kernel="fused")
    assert list(gpu["status"]) == ["ok"] * len(pts)
    for name in COMPARED:
        for i, p in enumerate(pts):
            if np.isfinite(ex[name][i]):
                z = (gpu[name][i] - ex[name][i]) / gpu[name + "_se"][i]
                assert abs(z) < 4.0, (p.key, name, z)
    if importlib.util.find_spec("numba") is None:
        return
    cpu = mc.simulate(pts, REPLICATES, SEED, "cpu", "float32", CHECKPOINTS, kernel="fused",
                      threads=None)
    for name in COMPARED:
        ok = np.isfinite(cpu[name])
        np.testing.assert_allclose(gpu[name][ok], cpu[name][ok], rtol=1e-3, err_msg=name)
