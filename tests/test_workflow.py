"""The real workflow end to end: Snakemake + dask + zarr on the tiny config, no mocks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
from e2e import REPO, SNAKEMAKE, assert_cube_equals_direct, snakemake, write_config

from ktsweep.sweep.layout import Layout, load_config
from ktsweep.sweep.store import open_cube


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("tiny")
    cfg = write_config(work / "tiny.yaml")
    snakemake(work, "--configfile", str(cfg))
    return work, cfg


def test_cube_equals_direct_engine_calls(tiny_run):
    work, cfg = tiny_run
    layout = Layout(load_config(str(cfg)))
    cube = work / "results" / "tiny" / "cube.zarr"
    assert_cube_equals_direct(cube, layout)
    ds = open_cube(cube)
    assert ds["risk_t2s"].attrs["long_name"]
    assert "1/2" in ds["risk_t2s"].attrs["note"]
    for key in ("ktsweep_config", "code_version", "package_versions", "created", "mc_device"):
        assert key in ds.attrs
    summary = json.loads((work / "results" / "tiny" / "cube.json").read_text())
    assert summary["missing"] == {}
    assert (work / "results" / "tiny" / "fits.csv").exists()


def test_rerun_does_nothing(tiny_run):
    work, cfg = tiny_run
    out = snakemake(work, "--configfile", str(cfg), "-n")
    assert "Nothing to be done" in out.stdout + out.stderr
    markers = sorted((work / "results" / "tiny" / ".ktsweep").rglob("c*.json"))
    before = [m.stat().st_mtime_ns for m in markers]
    snakemake(work, "--configfile", str(cfg))
    assert [m.stat().st_mtime_ns for m in markers] == before


def test_extended_grid_computes_only_new_points(tiny_run, tmp_path):
    work, cfg = tiny_run
    old = open_cube(work / "results" / "tiny" / "cube.zarr").load()
    bigger = write_config(tmp_path / "bigger.yaml", **{"grid.alpha_t": [1.5, 2.5, 3.5]})
    snakemake(work, "--configfile", str(bigger))
    summary = json.loads((work / "results" / "tiny" / "cube.json").read_text())
    # 3 alpha_s x 2 N new points for alpha_t = 3.5; Monte Carlo only where N = 256.
    assert summary["computed"] == {"exact": 6, "mc": 3, "bound": 6}
    new = open_cube(work / "results" / "tiny" / "cube.zarr")
    kept = new.sel(alpha_t=[1.5, 2.5]).load()
    for k in ("risk_t2s", "risk_t2s_se", "status", "bound_t2s"):
        np.testing.assert_array_equal(kept[k].values, old[k].values, err_msg=k)
    assert_cube_equals_direct(work / "results" / "tiny" / "cube.zarr",
                              Layout(load_config(str(bigger))))


def test_killed_job_recovers(tmp_path):
    cfg = write_config(tmp_path / "slow.yaml", name="slow", **{
        "fixed.d": 64, "fixed.n": 4096, "mc.replicates": 256, "mc.subgrid": {},
        "jobs.points_per_job": 6, "jobs.points_per_task": 1})
    layout = Layout(load_config(str(cfg)))
    cmd = [*SNAKEMAKE, "-s", str(REPO / "workflow" / "Snakefile"), "--directory", str(tmp_path),
           "--cores", "1", "--configfile", str(cfg)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    logs = tmp_path / "logs" / "slow" / "simulate"
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            texts = [p.read_text() for p in logs.glob("*.log")] if logs.exists() else []
            if any("point-evaluations done" in t for t in texts):
                break
            time.sleep(0.2)
        else:
            pytest.fail("no chunk job started computing in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    markers = list((tmp_path / "results" / "slow" / ".ktsweep").rglob("c*.json"))
    assert len(markers) < layout.n_chunks, "the kill came too late to interrupt a job"
    # A killed Snakemake leaves its lock behind: unlock, then rerun (as README says).
    snakemake(tmp_path, "--configfile", str(cfg), "--unlock")
    snakemake(tmp_path, "--configfile", str(cfg))
    summary = json.loads((tmp_path / "results" / "slow" / "cube.json").read_text())
    assert summary["missing"] == {}
    assert_cube_equals_direct(tmp_path / "results" / "slow" / "cube.zarr", layout)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"grid.alpha_t": [-1.0, 2.0]}, ["alpha_t", "> 0"]),
        ({"fixed.sigma": 0.1}, ["sigma", "sigma2"]),
        ({"methods": ["exact", "montecarlo"]}, ["methods", "montecarlo"]),
        ({"mc.replicates": 0}, ["mc.replicates", "greater than or equal to 1"]),
        ({"mc.subgrid": {"N": [999]}}, ["mc.subgrid.N", "999"]),
    ],
)
def test_bad_config_fails_before_any_job(tmp_path, change, words):
    cfg = write_config(tmp_path / "bad.yaml", **change)
    out = snakemake(tmp_path, "--configfile", str(cfg), check=False)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    for w in words:
        assert w in text, text
    assert not (tmp_path / "results").exists()
    assert "Traceback" not in text
