"""The moves researchers make with a finished sweep, on the real workflow: parsing it (dry
runs, lint, summary, report, a remote job's parse) changes nothing; a copied, moved or
restored results tree is complete as it is; switches of the Monte Carlo sub-grid keep every
cube; edited metadata, a swapped chunk with its time set back and bit rot are found by
content and repaired by the README procedure."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from e2e import REPO, SNAKEMAKE, private_copy, snakemake, write_config

from ktsweep.sweep.store import StoreError, open_cube


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under results/ with its size and mtime (links by their own stat)."""
    out = {}
    for p in sorted((folder / "results").rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(folder))] = (st.st_size if not p.is_dir() else 0, st.st_mtime_ns)
    return out


def _text(out: subprocess.CompletedProcess) -> str:
    return out.stdout + out.stderr


def _flip(path: Path, keep_time: bool = False) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 4
    path.write_bytes(bytes(data))
    if keep_time:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _chunks(folder: Path, var: str = "risk_t2s") -> list[Path]:
    cube = (folder / "results" / "tiny" / "cube.zarr").resolve()
    return sorted(p for p in (cube / var / "c").rglob("*") if p.is_file())


def test_parsing_the_workflow_changes_nothing(tiny_run, tmp_path):
    """On a results tree with damage to repair (a flipped chunk, the cube.zarr link gone), a
    dry run, --lint, --summary, --report, a dry run of another config with the same name and
    a remote job's own parse leave every path, size and mtime as they were, while the dry
    run does say what the real run will repair.

    Planted bugs: the look before planning resetting a chunk itself (the old plan-time check);
    the layout file written at parse time (a shared results/NAME/.ktsweep/layout.json)."""
    work, cfg = private_copy(tiny_run, tmp_path)
    _flip(_chunks(work)[0])
    (work / "results" / "tiny" / "cube.zarr").unlink()
    other = write_config(work / "other.yaml", **{"fixed.sigma2": 0.3})
    before = snapshot(work)
    runs = {
        "dry run": ["-n", "--configfile", str(cfg)],
        "lint": ["--lint", "--configfile", str(cfg)],
        "summary": ["--summary", "--configfile", str(cfg)],
        "report": ["--report", str(tmp_path / "report.html"), "--configfile", str(cfg)],
        "dry run of another config": ["-n", "--configfile", str(other)],
        "remote job parse": ["--mode", "remote", "--target-jobs", "simulate:chunk=c00000",
                             "-n", "--configfile", str(cfg)],
    }
    for label, args in runs.items():
        out = snakemake(work, *args, check=False)
        if label == "dry run":
            assert "content differs from its commit record: it is reset" in _text(out)
            assert "checkpoint repair" in _text(out), _text(out)
        assert snapshot(work) == before, f"{label} changed the results tree"


@pytest.mark.parametrize("move", ["copy_new_times", "move", "touch_all", "tar_restore"])
def test_moved_results_are_complete(tiny_run, tmp_path, move):
    """A results tree copied without its times (cp -r, rsync without -t), moved, touched or
    restored from a tar is complete: "Nothing to be done", and a real run recomputes nothing
    and leaves the cube's numbers as they were. `ktsweep check` then records the new times.

    Planted bugs: the look trusting size and mtime alone (every chunk "changed; reset, it
    reruns"); a non-ancient input between two rules (the later rule reruns when the copy
    gave its input the newer time); the interpreter's path in a rule's params (a moved
    project reruns every job)."""
    work, cfg, _ = tiny_run
    clean = open_cube(work / "results" / "tiny" / "cube.zarr").load()
    if move == "copy_new_times":
        dst, cfg = private_copy(tiny_run, tmp_path, copy_function=shutil.copyfile)
    elif move == "move":
        staged, _ = private_copy(tiny_run, tmp_path, "staged", copy_function=shutil.copy2)
        dst = tmp_path / "moved"
        os.rename(staged, dst)
        cfg = dst / cfg.name
    elif move == "touch_all":
        dst, cfg = private_copy(tiny_run, tmp_path, copy_function=shutil.copy2)
        files = sorted((p for p in (dst / "results").rglob("*") if p.is_file()), reverse=True)
        for i, p in enumerate(files):  # the records and summaries end up oldest
            os.utime(p, ns=(time.time_ns() + i * 10**6,) * 2)
    else:
        archive = tmp_path / "results.tar"
        subprocess.run(["tar", "-cf", str(archive), "-C", str(work), "results",
                        cfg.name], check=True)
        dst = tmp_path / "restored"
        dst.mkdir()
        subprocess.run(["tar", "-xf", str(archive), "-C", str(dst), "-m"], check=True)
        cfg = dst / cfg.name
    shutil.rmtree(dst / ".snakemake", ignore_errors=True)  # a new place: no metadata
    dry = snakemake(dst, "-n", "--configfile", str(cfg))
    assert "Nothing to be done" in _text(dry), _text(dry)
    real = snakemake(dst, "--configfile", str(cfg))
    assert "rule simulate" not in _text(real) and "Nothing to be done" in _text(real)
    moved = open_cube(dst / "results" / "tiny" / "cube.zarr").load()
    for name in clean.data_vars:
        np.testing.assert_array_equal(moved[name].values, clean[name].values, err_msg=name)
    check = subprocess.run([*SNAKEMAKE[:1], "-m", "ktsweep.cli", "check",
                            str(dst / "results" / "tiny")], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    assert check.returncode == 0, check.stdout + check.stderr
    again = snakemake(dst, "-n", "--configfile", str(cfg))
    assert "new times" not in _text(again)  # the records learned the new times


def test_monte_carlo_subgrid_and_stride_switches_keep_every_point(tiny_run, tmp_path):
    """A (Monte Carlo at N = 256) -> B (another sub-grid) -> C (a stride) -> A: each config
    has its own cube (the sub-grid and stride are in its key), B and C copy what they share,
    and A comes back complete and unchanged, computing nothing.

    Planted bugs: the sub-grid or the stride left out of the cube key (B writes into A's
    cube: A then says "Nothing to be done" with Monte Carlo values missing, or is stuck on
    "missing: {mc: ...}")."""
    work, cfg = private_copy(tiny_run, tmp_path)
    a = open_cube(work / "results" / "tiny" / "cube.zarr").load()
    b = write_config(work / "b.yaml", **{"mc.subgrid": {"N": [64]}})
    c = write_config(work / "c.yaml", **{"mc.subgrid": {}, "mc.stride": {"alpha_s": 2}})
    for other in (b, c):
        snakemake(work, "sweep", "--configfile", str(other))
        summary = json.loads((work / "results" / "tiny" / "cube.json").read_text())
        assert summary["missing"] == {}, summary
    back = snakemake(work, "sweep", "--configfile", str(cfg))
    assert "rule simulate" not in _text(back)
    again = open_cube(work / "results" / "tiny" / "cube.zarr").load()
    for name in a.data_vars:
        np.testing.assert_array_equal(again[name].values, a[name].values, err_msg=name)
    assert len(list((work / "results" / "tiny" / "cubes").glob("*.zarr"))) == 3


def test_a_dry_run_of_another_config_does_not_touch_a_starting_run(tmp_path):
    """`snakemake --configfile a.yaml &` then, while it starts, `snakemake -n --configfile
    b.yaml` (same name, another sigma2): A's cube holds A's numbers and key.

    Planted bug: the layout file written at parse time into results/NAME/.ktsweep/ (A's jobs
    then read B's layout)."""
    from e2e import assert_cube_equals_direct

    from ktsweep.sweep.layout import Layout, load_config

    a = write_config(tmp_path / "a.yaml", methods=["exact"], **{"jobs.points_per_job": 6})
    b = write_config(tmp_path / "b.yaml", methods=["exact"], **{"jobs.points_per_job": 6,
                                                                 "fixed.sigma2": 0.2})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [*SNAKEMAKE, "-s", str(REPO / "workflow" / "Snakefile"), "--directory",
           str(tmp_path), "--cores", "2", "sweep"]
    proc = subprocess.Popen([*cmd, "--configfile", str(a)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(0.5)
    subprocess.run([*cmd, "-n", "--configfile", str(b)], env=env, capture_output=True,
                   timeout=300)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert_cube_equals_direct(tmp_path / "results" / "tiny" / "cube.zarr",
                              Layout(load_config(str(a))))


@pytest.mark.parametrize("edit", ["consolidated_scale_factor", "array_endian"])
def test_edited_metadata_is_found_and_restored(tiny_run, tmp_path, edit):
    """A `scale_factor` added to risk_t2s in the consolidated root metadata (xarray would
    double every value) or the array's byte order flipped: open_cube refuses the cube naming
    the file, `ktsweep check` reports it, and the workflow restores the recorded copy without
    recomputing a chunk.

    Planted bugs: no skeleton record (the doubled values are read as numbers, check passes,
    the rerun does nothing); open_cube not checking the skeleton."""
    work, cfg = private_copy(tiny_run, tmp_path)
    clean = open_cube(work / "results" / "tiny" / "cube.zarr").load()
    cube = (work / "results" / "tiny" / "cube.zarr").resolve()
    if edit == "consolidated_scale_factor":
        root = json.loads((cube / "zarr.json").read_text())
        meta = root["consolidated_metadata"]["metadata"]["risk_t2s"]
        meta["attributes"]["scale_factor"] = 2.0
        (cube / "zarr.json").write_text(json.dumps(root))
        where = "metadata zarr.json"
    else:
        path = cube / "risk_t2s" / "zarr.json"
        meta = json.loads(path.read_text())
        for codec in meta["codecs"]:
            if codec["name"] == "bytes":
                codec["configuration"] = {"endian": "big"}
        path.write_text(json.dumps(meta))
        where = "metadata risk_t2s/zarr.json"
    with pytest.raises(StoreError, match=where):
        open_cube(work / "results" / "tiny" / "cube.zarr")
    check = subprocess.run([*SNAKEMAKE[:1], "-m", "ktsweep.cli", "check",
                            str(work / "results" / "tiny")], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    assert check.returncode == 1 and where in check.stdout, check.stdout
    out = snakemake(work, "sweep", "--configfile", str(cfg))
    assert "restored from its recorded copy" in _text(out)
    assert "rule simulate" not in _text(out)
    fixed = open_cube(work / "results" / "tiny" / "cube.zarr").load()
    for name in clean.data_vars:
        np.testing.assert_array_equal(fixed[name].values, clean[name].values, err_msg=name)


@pytest.mark.parametrize("damage", ["swap_time_kept", "bit_rot_time_kept"])
def test_damage_with_its_time_kept_is_found_by_content(tiny_run, tmp_path, damage):
    """A chunk copied over another of the same size, or a flipped bit, with the mtime set
    back: the quick look before planning cannot see it, but every read names the variable
    and chunk, `ktsweep check` (which hashes every file) finds it, and the README procedure's
    full verification (`--config verify=full`) resets and recomputes that chunk alone.

    Planted bugs: reads not verified against the records (wrong numbers returned); a full
    verification that still trusts times."""
    work, cfg = private_copy(tiny_run, tmp_path)
    clean = open_cube(work / "results" / "tiny" / "cube.zarr").load()
    cube = (work / "results" / "tiny" / "cube.zarr").resolve()
    if damage == "swap_time_kept":  # two chunks of one variable, same size, other content
        victim, same = next(
            (a, b) for var in sorted(p.name for p in cube.iterdir() if (p / "c").is_dir())
            for a in sorted((cube / var / "c").rglob("*")) for b in
            sorted((cube / var / "c").rglob("*")) if a.is_file() and b.is_file() and a != b
            and a.stat().st_size == b.stat().st_size and a.read_bytes() != b.read_bytes())
        st = victim.stat()
        shutil.copyfile(same, victim)
        os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    else:
        victim = _chunks(work)[1]
        _flip(victim, keep_time=True)
    var = victim.relative_to(cube).parts[0]
    assert "Nothing to be done" in _text(snakemake(work, "sweep", "-n", "--configfile",
                                                   str(cfg)))
    with pytest.raises(StoreError, match=rf"variable {var}, chunk c0000\d .*does not match"):
        open_cube(work / "results" / "tiny" / "cube.zarr")[var].load()
    check = subprocess.run([*SNAKEMAKE[:1], "-m", "ktsweep.cli", "check",
                            str(work / "results" / "tiny")], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    assert check.returncode == 1 and f"variable {var}" in check.stdout
    out = snakemake(work, "sweep", "--configfile", str(cfg), "--config", "verify=full")
    assert _text(out).count("rule simulate") == 1, _text(out)
    fixed = open_cube(work / "results" / "tiny" / "cube.zarr").load()
    for name in clean.data_vars:
        np.testing.assert_array_equal(fixed[name].values, clean[name].values, err_msg=name)


def test_deleted_records_are_written_again_without_recomputing(tiny_run, tmp_path):
    """`rm -rf cubes/<key>.commits`: the next run records the cube again from its committed
    chunks (nothing recomputed) instead of "Nothing to be done" with no records left.

    Planted bug: init_cube leaving an existing cube without recording its skeleton (open_cube
    then has no record to check metadata against)."""
    work, cfg = private_copy(tiny_run, tmp_path)
    cube = (work / "results" / "tiny" / "cube.zarr").resolve()
    commits = cube.with_name(cube.name.removesuffix(".zarr") + ".commits")
    shutil.rmtree(commits)
    out = snakemake(work, "sweep", "--configfile", str(cfg))
    assert "Nothing to be done" not in _text(out)
    summary = json.loads((work / "results" / "tiny" / "cube.json").read_text())
    assert summary["missing"] == {} and sum(summary["computed"].values()) == 0, summary
    assert (commits / "skeleton.json").exists()
    assert len(list(commits.glob("c*.json"))) == summary["chunks"]
