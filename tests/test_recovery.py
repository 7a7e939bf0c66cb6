"""Recovery end to end: a killed workflow, a damaged store and a config switched back, each
brought back by the README procedure (the same command again) to the numbers of a clean run.
The fast subset of benchmarks/fault_injection.py, on the real Snakemake + dask + zarr."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import numpy as np
import pytest
from e2e import (
    REPO,
    SNAKEMAKE,
    assert_cube_equals_direct,
    private_copy,
    snakemake,
    write_config,
)

from ktsweep.sweep.layout import Layout, load_config
from ktsweep.sweep.store import open_cube


def test_killed_job_recovers(tmp_path):
    """kill -9 of the whole workflow (Snakemake and its job, one process group) right after a
    job staged its first finished task; the README procedure completes it, keeping that task.

    The kill comes from the store's ``stage`` failpoint (benchmarks/fault_injection.py uses
    the same), so it lands at the same place every run, with no slow config to race against.
    Mutations caught: run_chunk not staging finished tasks (no kill: the sweep completes),
    or ignoring staged tasks on the rerun (points computed twice); the default profile not
    loading (no "Using workflow specific profile", no rerun-incomplete: the rerun refuses
    the incomplete marker).
    """
    cfg = write_config(tmp_path / "slow.yaml", name="slow", **{"jobs.points_per_task": 1})
    layout = Layout(load_config(str(cfg)))
    flag = tmp_path / "killed"
    cmd = [*SNAKEMAKE, "-s", str(REPO / "workflow" / "Snakefile"), "--directory", str(tmp_path),
           "--cores", "1", "sweep", "--configfile", str(cfg)]
    proc = subprocess.run(cmd, capture_output=True, start_new_session=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO),
                               "KTSWEEP_FAILPOINT": f"stage:{flag}"})
    assert proc.returncode == -signal.SIGKILL and flag.exists(), proc.stderr.decode()[-2000:]
    cubes = tmp_path / "results" / "slow" / "cubes"
    markers = list(cubes.rglob("*.commits/c*.json"))
    assert len(markers) < layout.n_chunks, "the kill came after every chunk committed"
    staged = 0  # exact evaluations of finished tasks kept from the killed run
    for f in cubes.rglob("*.staging/*/*.npz"):
        with np.load(f) as z:
            staged += len(z["positions"]) if any(k.startswith("exact/") for k in z) else 0
    assert staged, "a finished exact task was reported but not staged"
    # A killed Snakemake leaves its lock behind: unlock, then rerun (as README says); the
    # profile's rerun-incomplete reruns the killed job without a flag.
    snakemake(tmp_path, "--configfile", str(cfg), "--unlock")
    out = snakemake(tmp_path, "sweep", "--configfile", str(cfg))
    assert "Using workflow specific profile" in out.stdout + out.stderr
    summary = json.loads((tmp_path / "results" / "slow" / "cube.json").read_text())
    assert summary["missing"] == {}
    records = [json.loads(p.read_text()) for p in cubes.rglob("*.commits/c*.json")]
    assert sum(r["staged_tasks_kept"] for r in records) >= 1
    # every point computed exactly once over the two runs: the kept tasks were not redone
    assert summary["computed"]["exact"] + staged == layout.n_points
    assert_cube_equals_direct(tmp_path / "results" / "slow" / "cube.zarr", layout)


def _published_copy(tiny_run, tmp_path):
    """A private copy of the finished tiny run: (folder, config, cube.zarr link)."""
    copy, cfg = private_copy(tiny_run, tmp_path)
    return copy, cfg, copy / "results" / "tiny" / "cube.zarr"


def test_store_damage_reruns_what_it_hit(tiny_run, tmp_path):
    """The fast subset of benchmarks/fault_injection.py: four kinds of damage at once on a
    copy of a finished sweep; the damaged reads fail by name; the README procedure (the same
    command again) repairs first and recomputes only the hit chunks, to the clean numbers.

    Mutations caught: the look before planning not hashing files whose times changed (the
    rerun says "Nothing to be done" and the damage stays); open_cube reading without the
    verified store (a chunk copied over another is read as numbers); the repair checkpoint
    not removing the published outputs (the summary is never redone); the cube rule not
    relinking a removed cube.zarr.
    """
    import shutil

    from ktsweep.sweep.store import StoreError

    copy, cfg, link = _published_copy(tiny_run, tmp_path)
    clean = open_cube(link).load()
    assert_cube_equals_direct(link, Layout(load_config(str(cfg))))
    cube = link.resolve()
    chunks = sorted(p for p in (cube / "risk_t2s" / "c").rglob("*") if p.is_file())
    data = bytearray(chunks[0].read_bytes())
    data[len(data) // 2] ^= 8
    chunks[0].write_bytes(bytes(data))  # one bit flipped
    shutil.copyfile(chunks[2], chunks[1])  # a chunk copied over another
    ds = open_cube(link)  # through the symlink users open: records found beside the cube
    with pytest.raises(StoreError, match=r"variable risk_t2s, chunk c0000[01] .* does not "
                       "match its commit record"):
        ds["risk_t2s"].load()
    status = next(p for p in (cube / "status" / "c").rglob("*") if p.is_file()
                  and p.parts[-4:] == chunks[3].parts[-4:])
    status.unlink()  # a status chunk deleted
    with pytest.raises(StoreError, match="variable status, chunk c0000.* missing"):
        open_cube(link)["status"].load()
    link.unlink()  # rm cube.zarr
    dry = snakemake(copy, "sweep", "-n", "--configfile", str(cfg))
    text = dry.stdout + dry.stderr
    assert text.count("content differs from its commit record: it is reset") == 2, text
    assert "status/c/" in text and "missing: it is reset" in text
    out = snakemake(copy, "sweep", "--configfile", str(cfg))
    text = out.stdout + out.stderr
    assert "Nothing to be done" not in text
    assert text.count("rule simulate") == 3  # only the three damaged chunks
    fixed = open_cube(link).load()
    for name in clean.data_vars:
        np.testing.assert_array_equal(fixed[name].values, clean[name].values, err_msg=name)
    assert "Nothing to be done" in (lambda o: o.stdout + o.stderr)(
        snakemake(copy, "sweep", "-n", "--configfile", str(cfg)))


@pytest.mark.slow
def test_config_switch_back_reuses_the_cube(tiny_run, tmp_path):
    """A -> B -> A: B gets its own cube; back on A nothing is recomputed and cube.zarr shows
    A's numbers again (issue 10: B's numbers were kept).

    Mutations caught: a cube key that ignores fixed values (B overwrites A); the summary not
    re-linking cube.zarr when switching back (cube.zarr shows B).
    """
    copy, cfg, link = _published_copy(tiny_run, tmp_path)
    a = open_cube(link).load()
    b_cfg = write_config(tmp_path / "b.yaml", **{"fixed.sigma2": 0.2, "methods": ["exact"]})
    snakemake(copy, "sweep", "--configfile", str(b_cfg))
    b = open_cube(link).load()
    assert not np.allclose(b["risk_teacher"].values[..., 0], a["risk_teacher"].values[..., 0])
    out = snakemake(copy, "sweep", "--configfile", str(cfg))
    assert "rule simulate" not in out.stdout + out.stderr
    back = open_cube(link).load()
    for name in a.data_vars:
        np.testing.assert_array_equal(back[name].values, a[name].values, err_msg=name)
