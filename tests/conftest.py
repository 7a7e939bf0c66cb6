"""Shared small fixtures for the science-core tests (points of small d, checkpoint grids).

The ``gpu`` marker (declared in pyproject.toml) is skipped automatically when torch sees
no CUDA device; ``slow`` is deselected by ``-m 'not slow'``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ktsweep.model.params import Point, make_point

SMALL_DEFAULTS: dict[str, Any] = {
    "alpha_t": 1.3, "alpha_s": 1.6, "N": 200, "n": 300, "sigma2": 0.1, "d": 20,
}
"""A cheap KD point (α_T < α_S): exact in milliseconds, Monte Carlo in well under a second."""


LONGEST_FIRST = ("test_cluster.py", "test_workflow.py", "test_recovery.py")
"""The end-to-end files, each minutes long (Snakemake and job start-ups). Collected first, so
that ``pytest -n 2 --dist loadfile`` hands them out before the many short files, which then
fill the workers in around them (longest job first); alphabetically they came last and one
worker ran the longest file alone at the end."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the end-to-end files first (:data:`LONGEST_FIRST`); skip ``@pytest.mark.gpu``
    tests when no CUDA device is visible."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: rest in order
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    """The tiny config through the whole workflow once per session, shared by the end-to-end
    tests: (folder, config, its content-addressed cube). Tests that switch the folder to other
    grids still compare against that cube: a committed cube is never changed in place."""
    from e2e import snakemake, write_config

    work = tmp_path_factory.mktemp("tiny")
    cfg = write_config(work / "tiny.yaml")
    out = snakemake(work, "--configfile", str(cfg))
    (work / "snakemake.out").write_text(out.stdout + out.stderr)  # for the console checks
    return work, cfg, (work / "results" / "tiny" / "cube.zarr").resolve()


@pytest.fixture
def small_point() -> Callable[..., Point]:
    """Factory: a validated small point, ``SMALL_DEFAULTS`` overridden by keyword arguments."""

    def build(**changes: Any) -> Point:
        return make_point({**SMALL_DEFAULTS, **changes})

    return build


@pytest.fixture
def checkpoints() -> np.ndarray:
    """A short learning-curve grid (steps) for small points."""
    return np.array([0, 1, 3, 10, 30, 100, 200], dtype=np.int64)


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind in "USO" or b.dtype.kind in "USO":
        return a.shape == b.shape and bool(np.all(a == b))
    return bool(np.array_equal(a, b, equal_nan=True))


@pytest.fixture
def assert_identical() -> Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], None]:
    """Assert two result mappings (name -> array, point first) are bit-for-bit equal.

    Per-mode arrays of the second may be NaN-padded wider; they are cut to the first's width.
    """

    def check(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> None:
        assert set(a) == set(b)
        bad = []
        for k in a:
            x, y = np.asarray(a[k]), np.asarray(b[k])
            if x.ndim == 2 and y.ndim == 2 and y.shape[1] > x.shape[1]:
                y = y[:, : x.shape[1]]
            if not _equal(x, y):
                bad.append(k)
        assert not bad, f"outputs differ: {bad}"

    return check


def pick(results: Mapping[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    """Row ``i`` of every array of a result mapping, keeping the point dimension."""
    return {k: np.asarray(v)[i : i + 1] for k, v in results.items()}


@pytest.fixture
def take() -> Callable[[Mapping[str, np.ndarray], int], dict[str, np.ndarray]]:
    """The :func:`pick` helper as a fixture."""
    return pick


PHASE_CONFIG: dict[str, Any] = {
    "name": "phase",
    "grid": {"target": ["gaussian", "lowdim"], "alpha_t": [1.25, 2.0, 3.0],
             "alpha_s": [1.25, 2.0, 3.0], "N": [64, 256], "n": [32, 128, 512, float("inf")]},
    "fixed": {"sigma2": 1.0, "d": 30, "k_dagger": 3, "amplitude": 1.0},
    "methods": ["exact", "bound"], "outputs": {"modes": False, "curves": False},
    "jobs": {"points_per_job": 144},
}
"""A small exact cube (d = 30) where both regions exist: W2S (w2s_ratio < 1) at finite n with
the lowdim target, KD (der > 1) at n = inf for alpha_S > alpha_T; about 15 s on one core."""


@pytest.fixture(scope="session")
def phase_cube(tmp_path_factory):
    """Path of the committed :data:`PHASE_CONFIG` cube (phase maps and claims tests)."""
    from ktsweep.sweep import runner, store
    from ktsweep.sweep.layout import Layout

    layout = Layout.from_config(PHASE_CONFIG)
    path = tmp_path_factory.mktemp("phase") / "cube.zarr"
    store.init_cube(layout, path)
    for chunk in layout.chunk_ids():
        runner.run_chunk(layout, chunk, path, threads=1, processes=False, report=lambda s: None)
    return path


DEFAULT_CUBE_D = 40
"""The default-shaped cube's dimension: every axis and value of config/config.yaml, at a d
small enough to compute in about half a minute on two cores."""


@pytest.fixture(scope="session")
def default_cube(tmp_path_factory) -> Path:
    """Path of a committed cube of the default config's shape (config/config.yaml: the string
    ``target`` axis, both alphas, 7 N, 12 n with n = inf, the tied γ0 axis, exact, Monte
    Carlo on its sub-grid and bounds, per-mode risks and curves) at d = DEFAULT_CUBE_D,
    computed in-process. The figure, notebook and label tests read what a user's first
    ``make run`` gives them. Built once per test run: pytest-xdist workers share it through a
    lock file in the run's common temporary folder."""
    import fcntl

    import yaml

    from ktsweep.sweep import runner, store
    from ktsweep.sweep.layout import Layout

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml")
                         .read_text())
    cfg["fixed"]["d"] = DEFAULT_CUBE_D
    cfg["mc"]["device"] = "cpu"
    cfg["jobs"] = {"points_per_job": 8400, "points_per_task": 1400, "threads": 2}
    layout = Layout.from_config(cfg)
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = shared / "default_cube"
    folder.mkdir(exist_ok=True)
    path = folder / "cube.zarr"
    with open(shared / "default_cube.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one worker builds, the others wait for it
        if not (folder / "built").exists():
            store.init_cube(layout, path)
            for chunk in layout.chunk_ids():
                runner.run_chunk(layout, chunk, path, threads=2, processes=False,
                                 report=lambda s: None)
            (folder / "built").write_text("ok")
    return path
