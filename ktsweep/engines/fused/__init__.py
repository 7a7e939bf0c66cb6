"""Fused Monte Carlo kernels: every step of every run of a point inside one compiled kernel.

The same SGD as :mod:`ktsweep.engines.mc` (the torch path, the reference), with each draw
computed where it is used from a counter-based stream (:mod:`~ktsweep.engines.fused.stream`)
instead of drawn into memory by torch's generators: numba on the CPU
(:mod:`~ktsweep.engines.fused.cpu`), Triton on a CUDA GPU (:mod:`~ktsweep.engines.fused.gpu`).
The stream differs from the torch path's, so the numbers differ replicate by replicate; their
law is the same (tests/test_fused.py holds both to the exact engine and to each other).
:func:`ktsweep.engines.mc.simulate` routes points here with ``kernel="fused"`` or ``"auto"``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from ktsweep.engines.fused import passes, stream
from ktsweep.model.params import Point

if TYPE_CHECKING:
    from ktsweep.engines.mc import Sampling


def backend_missing(device: torch.device) -> str | None:
    """Why no fused kernel can run on ``device`` here (None: one can)."""
    try:
        if device.type == "cuda":
            import triton  # noqa: F401
        else:
            import numba  # noqa: F401
    except ImportError as err:
        return (f"the fused {device.type} kernel needs {err.name}, which is not installed "
                "here")
    return None


def unsupported(p: Point, device: torch.device, replicates: int = 1) -> str | None:
    """Why the fused kernel of ``device`` cannot run point ``p`` with ``replicates``
    replicates (None: it can)."""
    missing = backend_missing(device)
    if missing:
        return missing
    if max(p.batch_t, p.batch_s) * stream.counters(p.d) >= passes.MAX_COUNTERS:
        return f"batch × (d/4 + 1) reaches 2^31 (batch {max(p.batch_t, p.batch_s)}, d {p.d})"
    if 2 * replicates * stream.width(p.d) >= passes.MAX_SLOTS:
        return f"2 × replicates × (d + 8) reaches 2^31 (replicates {replicates}, d {p.d})"
    if max(p.steps_t, p.steps_s, p.steps_direct) >= stream.MAX_STEP:
        return "a run takes 2^48 steps or more"
    if device.type == "cuda" and not p.aligned and p.inputs != "gaussian":
        return ("a rotated student under non-Gaussian inputs rotates every sample (O(d^2)); "
                "the GPU kernel does not, the torch path's batched matmul does")
    return None


def runner(device: torch.device) -> passes.Runner:
    """The kernel that runs a pass on ``device``."""
    if device.type == "cuda":
        from ktsweep.engines.fused import gpu

        return gpu.run
    return _run_cpu


def _run_cpu(ps: passes.Pass) -> None:
    from ktsweep.engines.fused import cpu

    models = ps.models
    M, L = len(models), models[0].state.shape[1]
    state = torch.stack([m.state for m in models]).contiguous()
    width = max(m.gains.shape[0] for m in models)
    gains = torch.zeros((M, width, L), dtype=state.dtype)
    offset = torch.zeros_like(state)
    for i, m in enumerate(models):
        gains[i, : m.gains.shape[0]] = m.gains
        if m.offset is not None:
            offset[i] = m.offset
    q = (ps.basis if ps.basis is not None and any(m.rotate for m in models)
         else torch.zeros((1, 1)))
    cpu.run_pass(stream.round_keys(ps.key), np.uint64(ps.tag), ps.d, stream.LAWS[ps.law],
                 ps.nu, ps.batch, state.numpy(), gains.numpy(), ps.segments, offset.numpy(),
                 np.array([m.record for m in models]), np.array([m.rotate for m in models]),
                 q.to(torch.float32).contiguous().numpy(), ps.limit, ps.curves.numpy(),
                 ps.diverged.numpy(), passes.CHECK_EVERY, state.numpy().dtype.type(0))
    for i, m in enumerate(models):
        m.state.copy_(state[i])


def simulate(points: Sequence[Point], gam: dict[str, np.ndarray], how: Sampling,
             threads: int | None, tick: Callable[[int], object] | None = None,
             run: passes.Runner | None = None) -> dict[str, np.ndarray]:
    """Every quantity of ``points`` (one after another, each by its own passes), as
    :func:`ktsweep.engines.mc.simulate` returns them. ``threads``: numba's threads on the
    CPU (None: numba's default, every core). ``run``: the kernel (default: the device's;
    the tests run the GPU kernel in Triton's interpreter on CPU tensors)."""
    from ktsweep.engines.mc import summarize
    from ktsweep.model.quantities import assemble

    run = run or runner(how.device)
    parts = []
    previous = None
    if run is _run_cpu and threads is not None:
        import numba

        previous = numba.get_num_threads()
        # numba.config reads its settings from the environment at import, as attributes its
        # source does not declare
        most = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
        numba.set_num_threads(min(threads, most))
    try:
        for i, p in enumerate(points):
            g = {k: v[i : i + 1] for k, v in gam.items()}
            finals = passes.simulate_point(p, {k: float(v[0]) for k, v in g.items()}, how,
                                           run, tick)
            parts.append(([i], summarize(finals, g)))
    finally:
        if previous is not None:
            import numba

            numba.set_num_threads(previous)
    return assemble(len(points), parts)
