"""The same sweep on a real single-node SLURM and on a real external dask cluster.

Both systems are started by the tests themselves (no mocks). SLURM runs as a private cluster
(.ci/slurm/up.sh): its own slurm.conf, munge socket, ports and state under
/tmp/ktsweep-slurm-private, reached through SLURM_CONF; teardown stops only the pids it
started, so a system SLURM keeps running. It needs root and Debian's `slurm-wlm` +
`munge`; these are installed only when KTSWEEP_SLURM_INSTALL=1 (set by .ci/run). Where it
cannot run, the test says why and skips, except under CI, where it must run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e import REPO, assert_cube_equals_direct, assert_cubes_equal, snakemake, write_config

from ktsweep.sweep.layout import Layout, load_config

SLURM_DIR = REPO / ".ci" / "slurm"
CANNOT_INSTALL = 3
"""up.sh's exit status when a package is missing and installing was not allowed."""


def _cannot_run_slurm() -> str | None:
    if os.geteuid() != 0:
        return "starting slurmctld/slurmd/munged needs root"
    if not shutil.which("slurmctld", path=os.environ["PATH"] + ":/usr/sbin") and \
            os.environ.get("KTSWEEP_SLURM_INSTALL") != "1":
        return "SLURM is not installed (KTSWEEP_SLURM_INSTALL=1 lets the test apt-get it)"
    return None


def _skip_or_fail(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"SLURM end-to-end test must run in CI but cannot: {message}")
    pytest.skip(message)


@pytest.fixture(scope="session")
def slurm_cluster():
    """Start the private SLURM once; stop exactly its daemons when the session ends.

    Kept up for the session on purpose: with slurm installed but its controller down, the
    Snakemake SLURM plugin's import-time `scontrol` query stalls every later snakemake call
    by ~10 s. SLURM_CONF points this process (and so every snakemake it starts) at it.
    """
    reason = _cannot_run_slurm()
    if reason:
        _skip_or_fail(reason)
    up = subprocess.run(["bash", str(SLURM_DIR / "up.sh")], capture_output=True, text=True,
                        timeout=600)
    if up.returncode != 0:
        _skip_or_fail(f"private SLURM did not start (exit {up.returncode}):\n"
                      f"{up.stdout[-3000:]}\n{up.stderr[-3000:]}")
    conf = up.stdout.strip().splitlines()[-1]
    before = {name: os.environ.get(name) for name in ("SLURM_CONF", "PATH")}
    os.environ["SLURM_CONF"] = conf
    # up.sh's srun shim first: the jobstep plugin drops SLURM_CONF before its nested srun
    os.environ["PATH"] = f"{Path(conf).parent / 'bin'}{os.pathsep}{os.environ['PATH']}"
    # Stop the cluster afterwards only if this session started a daemon of it: another test
    # session on this machine (same private cluster, same ports) may still be using it.
    started = "starting our" in up.stderr
    try:
        yield conf
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if started:
            subprocess.run(["bash", str(SLURM_DIR / "down.sh")], capture_output=True,
                           timeout=120)


@pytest.fixture
def local_tiny(tiny_run):
    """The cube of the local reference run (conftest's session-wide tiny run)."""
    return tiny_run[2]


@pytest.mark.slurm
def test_slurm_sweep_equals_local_run(slurm_cluster, local_tiny, tmp_path):
    cfg = write_config(tmp_path / "tiny.yaml")
    snakemake(
        tmp_path, "sweep", "--configfile", str(cfg),  # the cube: no figures
        "--profile", str(REPO / "workflow" / "profiles" / "slurm"),
        "--jobs", "4",
        # this test cluster has no accounting database and one 2-core node:
        "--slurm-status-command", "squeue",
        "--slurm-init-seconds-before-status-checks", "1",
        "--default-resources", "slurm_partition=debug", "mem_mb=500", "runtime=10",
        "--slurm-keep-successful-logs",
        timeout=900,
    )
    logs = list((tmp_path / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert any("simulate" in str(p) for p in logs), "no simulate job went through SLURM"
    assert_cubes_equal(tmp_path / "results" / "tiny" / "cube.zarr", local_tiny)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dask_cluster():
    """`dask scheduler` and two `dask worker` processes on loopback."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    bin_dir = Path(sys.executable).parent
    procs = [subprocess.Popen([str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--no-dashboard"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)]
    for _ in range(2):
        procs.append(subprocess.Popen([str(bin_dir / "dask"), "worker", address, "--nthreads",
                                       "1", "--no-dashboard"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, env=env))
    from distributed import Client

    try:
        deadline = time.time() + 60
        while True:
            try:
                with Client(address, timeout="5s") as client:
                    client.wait_for_workers(2, timeout=30)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        yield address
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_external_dask_cluster_equals_local_run(dask_cluster, local_tiny, tmp_path):
    cfg = write_config(tmp_path / "tiny.yaml")
    snakemake(tmp_path, "sweep", "--configfile", str(cfg), "--config",
              f"dask={{scheduler: '{dask_cluster}'}}")
    from distributed import Client

    with Client(dask_cluster) as client:
        tasks_run = client.run_on_scheduler(
            lambda dask_scheduler: len(dask_scheduler.task_prefixes.get("evaluate_task").states)
            if "evaluate_task" in dask_scheduler.task_prefixes else 0)
    assert tasks_run, "no evaluate_task ever reached the external scheduler"
    assert_cubes_equal(tmp_path / "results" / "tiny" / "cube.zarr", local_tiny)
    assert_cube_equals_direct(tmp_path / "results" / "tiny" / "cube.zarr",
                              Layout(load_config(str(cfg))))


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_scale_sweep(slurm_cluster, tmp_path):
    """The scale benchmark's sweep through SLURM: about 10^5 exact points at d = 10 in
    time-sized jobs (several, so SLURM schedules them side by side), complete, and equal to
    the engines called directly on a sample of points. Prints one JSON line (points per
    second through SLURM). Planted bug it catches: the job's memory request from a config
    field that is null under auto sizing (SLURM refuses the job)."""
    import json

    import numpy as np
    import yaml

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import bench_scale
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    from ktsweep.engines.dispatch import run
    from ktsweep.sweep.store import open_cube

    cfg_data = bench_scale.grid(10**5, d=10, minutes=0.5)
    cfg = tmp_path / "scale.yaml"
    cfg.write_text(yaml.safe_dump(cfg_data))
    layout = Layout(load_config(str(cfg)))
    assert layout.n_chunks >= 2
    start = time.perf_counter()
    snakemake(tmp_path, "sweep", "--configfile", str(cfg),
              "--profile", str(REPO / "workflow" / "profiles" / "slurm"), "--jobs", "4",
              "--slurm-status-command", "squeue",
              "--slurm-init-seconds-before-status-checks", "1",
              "--default-resources", "slurm_partition=debug", timeout=3600)
    seconds = time.perf_counter() - start
    summary = json.loads((tmp_path / "results" / "scale" / "cube.json").read_text())
    assert summary["missing"] == {}
    ds = open_cube(tmp_path / "results" / "scale" / "cube.zarr")
    rng = np.random.default_rng(0)
    flat = rng.choice(layout.n_points, 20, replace=False)
    index = [tuple(int(i) for i in np.unravel_index(f, layout.shape)) for f in flat]
    ref = run([layout.point_at(i) for i in index], ["exact"], layout.checkpoints)["exact"]
    got = ds["risk_t2s"].sel(estimator="exact").values
    np.testing.assert_allclose([got[i] for i in index], ref["risk_t2s"], rtol=1e-12)
    print(json.dumps({"benchmark": "slurm_scale", "points": layout.n_points,
                      "jobs": layout.n_chunks, "seconds": round(seconds, 1),
                      "points_per_second": round(layout.n_points / seconds, 1)}))
