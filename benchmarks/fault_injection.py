"""Fault injection: kills, full disks, config switches and store damage, each followed by the
README's recovery procedure only, then compared with a clean reference cube.

Trials (small config, 12 points in 2 chunks, sweep target ``sweep``: the cube and its summary):

- ``kill``: ``kill -9`` of the workflow's process group at a random moment, and at named
  points (``KTSWEEP_FAILPOINT``: while creating the cube, after a task is staged, between a
  chunk's values and its status, between the status and its record, before publishing);
- ``disk``: a small tmpfs filled to a random level so the disk runs full mid-run; space is
  then freed (skipped cleanly where mounting is not allowed);
- ``switch``: config A -> B -> A, narrowing then widening a grid axis, and switches of the
  Monte Carlo sub-grid and stride (A -> sub-grid -> stride -> A);
- ``damage``: store damage, among it edited metadata (a ``scale_factor`` in the consolidated
  metadata, a flipped byte order), a same-size chunk swapped in and bit rot with their times
  set back, deleted commit records; before the procedure, a dry run must leave the tree as
  it found it (``dry_run_changed_tree``), and ``open_cube``, ``ktsweep check`` and the
  workflow's look must agree on which chunks are damaged (``disagree``);
- ``move``: the finished tree copied without its times, moved, touched, restored from a tar:
  a dry run must say "Nothing to be done" and a run must compute nothing
  (``chunks_recomputed``);
- ``dry_run_during_run``: a dry run of another config with the same name while a run starts.

README procedure: ``snakemake --unlock``, then the same command again (once more if it
says so); if a read of the cube then reports a file that does not match its record, the same
command with ``--config verify=full``. Outcomes: ``identical`` (exact to 1e-12, the rest bit
for bit), ``silent_loss`` (the workflow reports success but the cube differs), ``stuck``
(still failing). For damage, ``read_as_number`` counts damaged values that ``open_cube``
returned without an error (``raw_xarray_read_as_number``: the same through plain
``xarray.open_zarr``, which checks crc32c but not the records). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import xarray as xr
import yaml

REPO = Path(__file__).resolve().parents[1]
TARGET = "sweep"
EXACT = ("risk_teacher", "risk_direct", "risk_t2s", "risk_ceiling", "der", "pgr", "w2s_ratio")
FAILPOINTS = ("init", "stage", "values", "status", "publish")
DAMAGE = ("delete_data_chunk", "delete_status_chunk", "bit_flip", "chunk_copied_over",
          "random_bytes", "truncated_array_json", "truncated_root_json", "deleted_variable",
          "removed_cube", "metadata_scale_factor", "metadata_endian", "swap_time_kept",
          "bit_rot_time_kept", "deleted_records")
MOVES = ("copy_new_times", "move", "touch_all", "tar_restore")


def config(**changes) -> dict:
    cfg = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
    cfg["name"] = "fi"
    cfg["dask"] = {"processes": False}
    cfg["jobs"]["points_per_job"] = 6  # 2 chunk jobs: fewer process starts per trial
    for key, value in changes.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return cfg


def write_config(work: Path, cfg: dict, name: str = "config.yaml") -> Path:
    path = work / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def command(work: Path, cfg: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"),
            "--directory", str(work), "--cores", "2", *args, "--configfile", str(cfg)]


def run(work: Path, cfg: Path, *args: str, extra_env: dict | None = None,
        timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(command(work, cfg, TARGET, *args), capture_output=True, text=True,
                          env=env(**(extra_env or {})), timeout=timeout,
                          start_new_session=True)


def readme_procedure(work: Path, cfg: Path) -> tuple[bool, str]:
    """Unlock, rerun the same command, once more if it fails; if a read of the cube then
    names a file unlike its record, the same command with ``--config verify=full``; then it
    must have settled."""
    subprocess.run(command(work, cfg, "--unlock"), capture_output=True, env=env(), timeout=300)
    out = run(work, cfg)
    if out.returncode:
        out = run(work, cfg)
    if not out.returncode and read_error(work):
        out = run(work, cfg, "--config", "verify=full")
    if out.returncode:
        return False, (out.stdout + out.stderr)[-1500:]
    again = run(work, cfg, "-n")
    if "Nothing to be done" not in again.stdout + again.stderr:
        return False, ("a further run still had work to do:\n" + again.stdout[-1500:]
                       + "\nthe run before it ended:\n" + (out.stdout + out.stderr)[-3000:])
    return True, ""


def read_error(work: Path) -> bool:
    """Whether reading the published cube reports a file unlike its record."""
    from ktsweep.sweep.store import StoreError

    try:
        load(work / "results" / "fi" / "cube.zarr")
    except StoreError as err:
        return "does not match" in str(err) or "missing although" in str(err)
    except Exception:  # noqa: BLE001 - not the error this step answers
        return False
    return False


def load(cube: Path, checked: bool = True) -> xr.Dataset:
    if checked:
        from ktsweep.sweep.store import open_cube

        return open_cube(cube).load()
    return xr.open_zarr(cube, consolidated=None).load()


def differences(ds: xr.Dataset, ref: xr.Dataset) -> list[str]:
    """Variables of ``ds`` that are not those of ``ref`` (exact: 1e-12 relative)."""
    bad = sorted(set(ref.data_vars) ^ set(ds.data_vars))
    for name in ref.data_vars:
        if name not in ds.data_vars:
            continue
        x, y = ds[name].values, ref[name].values
        if x.shape != y.shape:
            bad.append(name)
        elif name in EXACT or name.startswith(("bound_", "kstar_")):
            close = np.isclose(x, y, rtol=1e-12, atol=0, equal_nan=True)
            if not close.all():
                bad.append(name)
        elif not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
            bad.append(name)
    return bad


def outcome(work: Path, cfg: Path, ref: xr.Dataset, counts: Counter, notes: list,
            label: str) -> None:
    ok, why = readme_procedure(work, cfg)
    if not ok:
        counts["stuck"] += 1
        notes.append(f"{label}: stuck: {why}")
        return
    summary = json.loads((work / "results" / "fi" / "cube.json").read_text())
    try:
        bad = differences(load(work / "results" / "fi" / "cube.zarr"), ref)
    except Exception as err:  # noqa: BLE001 - any failure to read back is a finding
        counts["stuck"] += 1
        notes.append(f"{label}: cube unreadable after recovery: {err}")
        return
    if bad or summary["missing"]:
        counts["silent_loss"] += 1
        notes.append(f"{label}: silent loss in {bad} (cube.json missing={summary['missing']})")
    else:
        counts["identical"] += 1


def kill_trial(work: Path, cfg: Path, ref: xr.Dataset, clean_s: float, counts: Counter,
               notes: list, point: str | None, rng: random.Random) -> str:
    if point:
        flag = work / f"failpoint-{point}"
        run(work, cfg, extra_env={"KTSWEEP_FAILPOINT": f"{point}:{flag}"})
        label = f"failpoint {point}" + ("" if flag.exists() else " (not reached)")
    else:
        delay = rng.uniform(0.5, clean_s)
        proc = subprocess.Popen(command(work, cfg, TARGET), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env(), start_new_session=True)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        label = f"kill at {delay:.1f}s"
    outcome(work, cfg, ref, counts, notes, label)
    return label


def damage(kind: str, work: Path, rng: random.Random) -> None:
    """Apply one kind of damage to the published cube of ``work``."""
    link = work / "results" / "fi" / "cube.zarr"
    cube = link.resolve()
    chunks = sorted(p for p in (cube / "risk_t2s" / "c").rglob("*") if p.is_file())
    target = rng.choice(chunks)
    if kind == "delete_data_chunk":
        target.unlink()
    elif kind == "delete_status_chunk":
        rng.choice([p for p in (cube / "status" / "c").rglob("*") if p.is_file()]).unlink()
    elif kind == "bit_flip":
        data = bytearray(target.read_bytes())
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
        target.write_bytes(bytes(data))
    elif kind == "chunk_copied_over":
        other = rng.choice([c for c in chunks if c != target])
        shutil.copyfile(other, target)
    elif kind == "random_bytes":
        target.write_bytes(rng.randbytes(target.stat().st_size))
    elif kind == "truncated_array_json":
        meta = cube / "risk_t2s" / "zarr.json"
        meta.write_text(meta.read_text()[: 40])
    elif kind == "truncated_root_json":
        meta = cube / "zarr.json"
        meta.write_text(meta.read_text()[: 40])
    elif kind == "deleted_variable":
        shutil.rmtree(cube / "risk_t2s")
    elif kind == "removed_cube":
        subprocess.run(["rm", "-rf", str(link)], check=True)
    elif kind == "metadata_scale_factor":
        root = json.loads((cube / "zarr.json").read_text())
        meta = root["consolidated_metadata"]["metadata"]["risk_t2s"]
        meta["attributes"]["scale_factor"] = 2.0
        (cube / "zarr.json").write_text(json.dumps(root))
    elif kind == "metadata_endian":
        path = cube / "risk_t2s" / "zarr.json"
        meta = json.loads(path.read_text())
        for codec in meta["codecs"]:
            if codec["name"] == "bytes":
                codec["configuration"] = {"endian": "big"}
        path.write_text(json.dumps(meta))
    elif kind == "swap_time_kept":
        pairs = [(a, b) for var in sorted(p for p in cube.iterdir() if (p / "c").is_dir())
                 for a in sorted((var / "c").rglob("*")) for b in sorted((var / "c").rglob("*"))
                 if a.is_file() and b.is_file() and a != b
                 and a.stat().st_size == b.stat().st_size and a.read_bytes() != b.read_bytes()]
        victim, other = rng.choice(pairs)
        st = victim.stat()
        shutil.copyfile(other, victim)
        os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif kind == "bit_rot_time_kept":
        st = target.stat()
        data = bytearray(target.read_bytes())
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        target.write_bytes(bytes(data))
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif kind == "deleted_records":
        shutil.rmtree(cube.with_name(cube.name.removesuffix(".zarr") + ".commits"))
    else:
        raise ValueError(kind)


def tree(work: Path) -> dict[str, tuple[int, int]]:
    """Every path under results/ with its size and mtime (a dry run must not change any)."""
    out = {}
    for p in sorted((work / "results").rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(work))] = (0 if p.is_dir() else st.st_size, st.st_mtime_ns)
    return out


def damaged_views(work: Path) -> dict[str, set[str]]:
    """The damaged chunks as open_cube (reading every variable), `ktsweep check` and the
    workflow's look see them."""
    from ktsweep.sweep import rules, store
    from ktsweep.sweep.layout import Layout, load_config

    cube = (work / "results" / "fi" / "cube.zarr").resolve()
    lay = Layout(load_config(str(work / "config.yaml")))
    views: dict[str, set[str]] = {"open_cube": set(), "check": set(), "look": set()}
    try:
        ds = store.open_cube(cube)
        for name in ds.data_vars:
            try:
                ds[name].load()
            except store.StoreError as err:
                views["open_cube"] |= {w.rstrip(" ,(") for w in str(err).split()
                                       if w.startswith("c0")}
    except store.StoreError:
        views["open_cube"].add("cube")
    try:
        found = store.health(cube, lay, full=True)
        views["check"] = set(found.damaged) | ({"cube"} if found.skeleton else set())
    except store.StoreError:
        views["check"].add("cube")
    look = rules.look(lay, [], root=work / "results", full=True)
    for line in look.repairs:
        if line.startswith("chunk c"):
            views["look"].add(line.split()[1].rstrip(":"))
        elif line.startswith("metadata") or "gone" in line:
            views["look"].add("cube")
    # damaged metadata makes the whole cube unreadable: that is what every view must say
    return {k: {"cube"} if "cube" in v else v for k, v in views.items()}


def read_as_number(work: Path, ref: xr.Dataset, checked: bool) -> int:
    """1 if reading the damaged cube returned values unlike the reference without an error."""
    try:
        ds = load(work / "results" / "fi" / "cube.zarr", checked)
    except Exception:  # noqa: BLE001 - an error is the wanted outcome
        return 0
    return int(bool(differences(ds, ref)))


def move_trial(kind: str, clean: Path, root: Path) -> Path:
    """The clean, finished folder copied, moved, touched or restored the way ``kind`` says
    (never with Snakemake's own metadata: a new place)."""
    dst = root / f"move-{kind}"
    if kind == "copy_new_times":
        shutil.copytree(clean, dst, symlinks=True, copy_function=shutil.copyfile)
    elif kind == "move":
        staged = copy_work(clean, root, "move-staged")
        os.rename(staged, dst)
    elif kind == "touch_all":
        copy_work(clean, root, dst.name)
        files = sorted((p for p in (dst / "results").rglob("*") if p.is_file()), reverse=True)
        for i, p in enumerate(files):  # records and summaries end up the oldest
            os.utime(p, ns=(time.time_ns() + i * 10**6,) * 2)
    elif kind == "tar_restore":
        archive = root / "results.tar"
        subprocess.run(["tar", "-cf", str(archive), "-C", str(clean), "results",
                        "config.yaml"], check=True)
        dst.mkdir()
        subprocess.run(["tar", "-xf", str(archive), "-C", str(dst), "-m"], check=True)
    else:
        raise ValueError(kind)
    shutil.rmtree(dst / ".snakemake", ignore_errors=True)
    return dst


def copy_work(src: Path, root: Path, name: str) -> Path:
    dst = root / name
    shutil.copytree(src, dst, symlinks=True)
    return dst


def progress(label: str, counts: Counter) -> None:
    print(json.dumps({"trial": label, **counts}), file=sys.stderr, flush=True)


def mount_tmpfs(path: Path, size_mb: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                         capture_output=True, text=True)
    return out.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=30, help="kill trials (>= 5 failpoints)")
    parser.add_argument("--disk", type=int, default=4, help="full-disk trials (0: none)")
    parser.add_argument("--damage", nargs="*", default=list(DAMAGE), choices=DAMAGE)
    parser.add_argument("--no-switch", action="store_true")
    parser.add_argument("--no-move", action="store_true",
                        help="skip the move trials and the dry run during a run")
    parser.add_argument("--seed", type=int, default=2606)
    parser.add_argument("--keep", action="store_true", help="keep the work folders")
    parser.add_argument("--budget", type=float, default=float("inf"),
                        help="seconds after which no new kill trial starts (kills run last)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    deadline = time.perf_counter() + args.budget
    root = Path(tempfile.mkdtemp(prefix="ktsweep-fi-"))
    result: dict = {"benchmark": "fault_injection"}
    notes: list[str] = []
    try:
        clean = root / "clean"
        clean.mkdir()
        cfg_a = write_config(clean, config())
        t0 = time.perf_counter()
        out = run(clean, cfg_a)
        clean_s = time.perf_counter() - t0
        if out.returncode:
            raise SystemExit(f"clean run failed:\n{out.stdout}\n{out.stderr}")
        ref = load(clean / "results" / "fi" / "cube.zarr")
        result["clean_seconds"] = round(clean_s, 1)

        dmg: dict[str, dict] = {}
        for kind in args.damage:
            work = copy_work(clean, root, f"damage-{kind}")
            cfg = work / "config.yaml"
            damage(kind, work, rng)
            entry: Counter = Counter()
            before = tree(work)
            run(work, cfg, "-n")
            entry["dry_run_changed_tree"] = int(tree(work) != before)
            if kind not in ("removed_cube", "deleted_records", "truncated_root_json"):
                views = damaged_views(work)
                seen = [v for k, v in views.items() if k != "open_cube" or v]
                entry["disagree"] = int(any(v != seen[0] for v in seen))
                if entry["disagree"]:
                    notes.append(f"damage {kind}: views differ: {views}")
            entry["read_as_number"] = read_as_number(work, ref, checked=True)
            entry["raw_xarray_read_as_number"] = read_as_number(work, ref, checked=False)
            check = subprocess.run([sys.executable, "-m", "ktsweep.cli", "check",
                                    str(work / "results" / "fi")], capture_output=True,
                                   text=True, env=env(), timeout=300)
            entry["check_reports_it"] = int(check.returncode != 0)
            outcome(work, cfg, ref, entry, notes, f"damage {kind}")
            dmg[kind] = dict(entry)
            progress(f"damage {kind}", entry)
            if not args.keep:
                shutil.rmtree(work)
        result["damage"] = dmg

        if not args.no_switch:
            sw: Counter = Counter()
            work = copy_work(clean, root, "switch")
            cfg_b = write_config(work, config(**{"fixed.sigma2": 0.2}), "b.yaml")
            cfg_w = write_config(work, config(), "config.yaml")
            records = {p: p.stat().st_mtime_ns for p in
                       (work / "results" / "fi" / "cubes").rglob("*.commits/*.json")}
            out_b = run(work, cfg_b)
            sw["b_ok"] += out_b.returncode == 0
            b_cube = load(work / "results" / "fi" / "cube.zarr")
            sw["b_differs_from_a"] += bool(differences(b_cube, ref))
            outcome(work, cfg_w, ref, sw, notes, "A -> B -> A")
            narrow = write_config(work, config(**{"grid.alpha_t": [1.5]}), "narrow.yaml")
            out_n = run(work, narrow)
            if out_n.returncode:
                sw["stuck"] += 1
                notes.append("narrowing: " + out_n.stderr[-800:])
            else:
                got = load(work / "results" / "fi" / "cube.zarr")
                bad = differences(got, ref.sel(alpha_t=[1.5]))
                sw["narrow_identical" if not bad else "silent_loss"] += 1
            outcome(work, cfg_w, ref, sw, notes, "narrow -> widen")
            touched = [p for p, t in records.items() if not p.exists()
                       or p.stat().st_mtime_ns != t]
            sw["a_records_touched"] = len(touched)
            for label, change in (("mc sub-grid", {"mc.subgrid": {"N": [64]}}),
                                  ("mc stride", {"mc.subgrid": {}, "mc.stride": {"alpha_s": 2}})):
                other = write_config(work, config(**change), "mc.yaml")
                out_m = run(work, other)
                sw[f"{label} ok"] += out_m.returncode == 0
                outcome(work, cfg_w, ref, sw, notes, f"A -> {label} -> A")
            result["switch"] = dict(sw)
            progress("switch", sw)

        if not args.no_move:
            mv: dict[str, dict] = {}
            for kind in MOVES:
                entry = Counter()
                dst = move_trial(kind, clean, root)
                cfg = dst / "config.yaml"
                dry = run(dst, cfg, "-n")
                entry["dry_run_nothing_to_do"] = int("Nothing to be done" in dry.stdout
                                                     + dry.stderr)
                real = run(dst, cfg)
                entry["chunks_recomputed"] = (real.stdout + real.stderr).count("rule simulate")
                outcome(dst, cfg, ref, entry, notes, f"move {kind}")
                mv[kind] = dict(entry)
                progress(f"move {kind}", entry)
                if not args.keep:
                    shutil.rmtree(dst)
            result["move"] = mv

            live: Counter = Counter()
            work = root / "dry-during-run"
            work.mkdir()
            cfg_a = write_config(work, config())
            cfg_b = write_config(work, config(**{"fixed.sigma2": 0.2}), "b.yaml")
            proc = subprocess.Popen(command(work, cfg_a, TARGET), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, env=env(), start_new_session=True)
            time.sleep(0.5)
            run(work, cfg_b, "-n")
            live["a_ok"] = int(proc.wait(timeout=900) == 0)
            outcome(work, cfg_a, ref, live, notes, "dry run of B during A")
            result["dry_run_during_run"] = dict(live)
            progress("dry run during run", live)

        disk: Counter = Counter()
        if args.disk:
            footprint = sum(f.stat().st_size for f in clean.rglob("*") if f.is_file())
            size_mb = max(8, int(footprint * 4 / 1e6) + 8)
            for i in range(args.disk):
                mnt = root / f"disk{i}"
                if not mount_tmpfs(mnt, size_mb):
                    result["disk"] = {"skipped": "mounting a tmpfs is not allowed here"}
                    break
                try:
                    cfg = write_config(mnt, config())
                    free = shutil.disk_usage(mnt).free
                    leave = int(rng.uniform(0.05, 1.0) * footprint)
                    filler = mnt / "filler"
                    with open(filler, "wb") as fh:
                        fh.truncate(0)
                        fh.write(b"\0" * max(0, free - leave))
                    first = run(mnt, cfg)
                    filler.unlink()
                    disk["disk_full_failed_run" if first.returncode else "finished_anyway"] += 1
                    outcome(mnt, cfg, ref, disk, notes, f"disk full, {leave} bytes left")
                    progress(f"disk {i}", disk)
                finally:
                    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
            else:
                result["disk"] = {"trials": args.disk, **disk}

        kills: Counter = Counter()
        named = [FAILPOINTS[i % len(FAILPOINTS)] for i in range(min(args.kills // 2, 10))]
        plan: list[str | None] = []  # named points alternate with random moments
        for i in range(args.kills):
            plan.append(named[i // 2] if i % 2 == 0 and i // 2 < len(named) else None)
        done = 0
        for i, point in enumerate(plan):
            if time.perf_counter() > deadline:
                notes.append(f"time budget reached after {done} of {len(plan)} kill trials")
                break
            done += 1
            work = root / f"kill{i}"
            work.mkdir()
            label = kill_trial(work, write_config(work, config()), ref, clean_s, kills, notes,
                               point, rng)
            progress(f"kill {i}: {label}", kills)
            if not args.keep:
                shutil.rmtree(work)
        result["kill"] = {"trials": done, **kills}

        every = [result.get("kill", {}), result.get("disk", {}), result.get("switch", {}),
                 result.get("dry_run_during_run", {}), *dmg.values(),
                 *result.get("move", {}).values()]
        result["silent_losses"] = sum(c.get("silent_loss", 0) for c in every)
        result["stuck"] = sum(c.get("stuck", 0) for c in every)
        result["damaged_read_as_numbers"] = sum(d["read_as_number"] for d in dmg.values())
        result["raw_xarray_damaged_read_as_numbers"] = sum(
            d["raw_xarray_read_as_number"] for d in dmg.values())
        result["dry_runs_that_changed_the_tree"] = sum(d["dry_run_changed_tree"]
                                                       for d in dmg.values())
        result["views_disagreeing"] = sum(d.get("disagree", 0) for d in dmg.values())
        moves = result.get("move", {}).values()
        result["chunks_recomputed_after_a_move"] = sum(m["chunks_recomputed"] for m in moves)
        result["moves_with_work_to_do"] = sum(1 - m["dry_run_nothing_to_do"] for m in moves)
        result["notes"] = notes
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
