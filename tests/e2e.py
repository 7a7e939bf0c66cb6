"""Shared helpers of the end-to-end tests: run the real Snakefile, compare cubes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import xarray as xr
import yaml

from ktsweep.engines.dispatch import run
from ktsweep.sweep.layout import Layout
from ktsweep.sweep.store import open_cube

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(workdir: Path, *args: str, check: bool = True, cores: str = "2",
              timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the project's Snakefile with ``workdir`` as working directory."""
    cmd = [*SNAKEMAKE, "-s", str(REPO / "workflow" / "Snakefile"), "--directory", str(workdir),
           "--cores", cores, *args]  # rerun-incomplete etc. come from the default profile
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"snakemake failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def private_copy(tiny_run: tuple[Path, Path, Path], tmp_path: Path, name: str = "copy",
                 **copy_kw) -> tuple[Path, Path]:
    """A private copy of the session's finished tiny run (links kept as links): (folder,
    config). A test that runs the workflow on other grids, damages or moves results works on
    one, so the shared folder stays the finished tiny run for every test of the session."""
    work, cfg, _ = tiny_run
    dst = tmp_path / name
    shutil.copytree(work, dst, symlinks=True, **copy_kw)
    return dst, dst / cfg.name


def write_config(path: Path, **changes) -> Path:
    cfg = yaml.safe_load(TINY.read_text())
    for key, value in changes.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


def direct(layout: Layout) -> dict[str, dict[str, np.ndarray]]:
    """The engines called directly on every point of the layout, in C order."""
    torch.set_num_threads(1)
    idx_points = list(layout.iter_points())
    points = [p for _, p in idx_points]
    out = run(points, [m for m in layout.methods if m != "mc"], layout.checkpoints,
              layout.mc_settings)
    mc_idx = [i for i, (idx, _) in enumerate(idx_points) if layout.mc_selected(idx)]
    if "mc" in layout.methods:
        out["mc"] = run([points[i] for i in mc_idx], ["mc"], layout.checkpoints,
                        layout.mc_settings)["mc"]
        out["mc_index"] = {"i": np.array(mc_idx)}
    return out


def assert_cube_equals_direct(cube: Path, layout: Layout) -> None:
    """The cube holds exactly what the engines give when called directly on every point:
    exact and bound to 1e-12, Monte Carlo bit for bit on its sub-grid and missing elsewhere
    (each estimator checked where the layout runs it)."""
    ds = open_cube(cube)
    ref = direct(layout)
    flat = {k: ds[k].values.reshape((layout.n_points,) + ds[k].shape[len(layout.axes):])
            for k in ds.data_vars}
    e = layout.estimators.index("exact")
    for k in ("risk_teacher", "risk_direct", "risk_t2s", "risk_ceiling", "der", "w2s_ratio",
              "pgr"):
        np.testing.assert_allclose(flat[k][:, e], ref["exact"][k], rtol=1e-12, atol=0, err_msg=k)
    if layout.config.outputs.curves:
        np.testing.assert_allclose(flat["curve_t2s"][:, e], ref["exact"]["curve_t2s"],
                                   rtol=1e-6)
    if layout.config.outputs.modes:
        np.testing.assert_allclose(flat["mode_teacher"][:, e], ref["exact"]["mode_teacher"],
                                   rtol=1e-6)
    assert (flat["status"][:, e] == 1).all()
    if "bound" in layout.methods:
        np.testing.assert_allclose(flat["bound_upper_teacher"],
                                   ref["bound"]["bound_upper_teacher"], rtol=1e-12)
    if "mc" not in layout.methods:
        return
    m = layout.estimators.index("mc")
    sel = ref["mc_index"]["i"]
    for k in ("risk_teacher", "risk_t2s", "der"):
        np.testing.assert_array_equal(flat[k][sel, m], ref["mc"][k], err_msg=k)
        np.testing.assert_array_equal(flat[k + "_se"][sel], ref["mc"][k + "_se"], err_msg=k)
    others = np.setdiff1d(np.arange(layout.n_points), sel)
    assert np.isnan(flat["risk_teacher"][others, m]).all()
    assert (flat["status"][others, m] == 0).all()


def assert_cubes_equal(a: Path, b: Path) -> None:
    """Two cubes hold the same numbers: exact to 1e-12 relative, everything else identical."""
    da, db = open_cube(a).load(), open_cube(b).load()
    assert set(da.data_vars) == set(db.data_vars)
    for name in da.data_vars:
        x, y = da[name].values, db[name].values
        if name in ("risk_teacher", "risk_direct", "risk_t2s", "risk_ceiling", "der", "pgr",
                    "w2s_ratio") or name.startswith(("bound_", "kstar_")):
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=0, err_msg=name)
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)


def build_in_process(cfg: dict, path: Path) -> xr.Dataset:
    """The cube of ``cfg`` at ``path`` through the runner's own steps (missing points, tasks,
    merge, block commit), evaluated in this process: for tests of what a cube holds, where a
    scheduler and a cluster start per example would cost seconds. Whatever replaces
    ``runner.run`` at call time computes the numbers (the planted engines do)."""
    from ktsweep.sweep import runner, store

    layout = Layout.from_config(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    store.init_cube(layout, path)
    for chunk in layout.chunk_ids():
        index, points = layout.chunk_points(chunk)
        block, damage = store.read_block(path, layout, chunk)
        assert not damage
        todo = runner.missing(layout, block, index)
        for task in runner.make_tasks(layout, points, todo, workers=1):
            for method, result in runner.evaluate_task(task).items():
                runner.merge(layout, block, task.positions, method, result)
        record = {"chunk": chunk, "manifest": store.commit_block(path, layout, chunk, block)}
        store.write_record(path, chunk, record)
    return open_cube(path)
