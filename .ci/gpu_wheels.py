"""The GPU machine's wheelhouse: which wheels travel with the repo, fetched and checked here.

The GPU machine reaches no package index. It has Python 3.12, its own CUDA torch and the
packages of ``.ci/gpu-machine.txt``; everything else the project needs must travel as wheels
in a git-ignored folder of the copied repo. Names and versions are ``.ci/gpu-wheels.txt``
(versions as in requirements.lock); the same list is fetched twice, for CPython 3.12 (the GPU
machine) and 3.11 (the twin the CI rehearsal installs), into ``DIR/cp312`` and ``DIR/cp311``.

    python .ci/gpu_wheels.py list            # rewrite .ci/gpu-wheels.txt from pip's resolver
    python .ci/gpu_wheels.py download DIR    # fetch both folders, verify, print their sizes
    python .ci/gpu_wheels.py verify DIR      # only verify (what CI runs after downloading)

``verify`` fails when a folder lacks a listed wheel or holds an unlisted one, when the two
folders differ in names or versions, when a version differs from requirements.lock, when a
requirement (read from the wheels' own metadata, markers evaluated for that Python) is met
neither by a carried wheel nor by the GPU machine, or when a carried wheel is needed by
nothing the project depends on.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

CI = Path(__file__).resolve().parent
REPO = CI.parent
WHEELS_LIST = CI / "gpu-wheels.txt"
MACHINE_LIST = CI / "gpu-machine.txt"
LOCK = REPO / "requirements.lock"
PYTHONS = {"cp312": "3.12", "cp311": "3.11"}
"""Folder name -> CPython version: the GPU machine's, and CI's (the rehearsal twin)."""
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
LIMIT_MIB = 48
"""Most one wheel folder may hold: 64 MiB may travel to the GPU machine, repo included."""
ALSO_CARRY = {
    "typing-extensions": "pydantic needs >= 4.16; the machine's copy only follows torch (>= 4.10)",
}
"""Packages the GPU machine has, carried anyway because its version may be too old."""
LEAVE_OUT = {
    "numba": "its llvmlite wheel alone is 60 MB, over the carry; without it the exact engine "
             "takes LAPACK's roots and numpy's products (engines/stretch.py: compiled)",
}
"""Runtime dependencies not carried, and why (the code runs without them)."""
BUILD_MARK = "# no wheel on the index: built here from the sdist"


def read_pins(path: Path) -> dict[str, tuple[str, str]]:
    """``name==version`` lines (``#`` comments allowed) -> canonical name -> (name, version)."""
    pins: dict[str, tuple[str, str]] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not name.strip() or not version.strip():
            raise SystemExit(f"{path}:{number}: {raw!r} is not name==version; write e.g. "
                             "zarr==3.1.6")
        pins[canonicalize_name(name)] = (name.strip(), version.strip().split("+")[0])
    return pins


def roots() -> list[Requirement]:
    """The project's runtime dependencies (pyproject) the GPU machine does not have."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    machine = read_pins(MACHINE_LIST)
    return [r for r in map(Requirement, deps)
            if canonicalize_name(r.name) not in machine and canonicalize_name(r.name)
            not in LEAVE_OUT]


def marker_env(python: str) -> dict[str, str]:
    """Marker values of CPython ``python`` on Linux x86-64."""
    env = dict(default_environment())
    env.update({"python_version": python, "python_full_version": python + ".0",
                "implementation_name": "cpython", "platform_python_implementation": "CPython",
                "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
                "platform_machine": "x86_64"})
    return env


def wheel_requirements(wheel: Path) -> list[Requirement]:
    """Requires-Dist of a wheel, from its METADATA."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist()
                    if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        msg = Parser().parsestr(zf.read(meta).decode())
    return [Requirement(r) for r in msg.get_all("Requires-Dist") or []]


def folder_wheels(folder: Path) -> dict[str, tuple[Version, Path]]:
    out: dict[str, tuple[Version, Path]] = {}
    for whl in sorted(folder.glob("*.whl")):
        name, version, _, _ = parse_wheel_filename(whl.name)
        if name in out:
            raise SystemExit(f"{folder}: two wheels of {name}; delete the folder and run "
                             "`make gpu-wheels` again")
        out[name] = (version, whl)
    return out


def verify(folder: Path) -> list[str]:
    """Every problem of the wheelhouse under ``folder`` (empty: it is complete and minimal)."""
    listed = read_pins(WHEELS_LIST)
    machine = read_pins(MACHINE_LIST)
    lock = read_pins(LOCK)
    problems = []
    for key, (name, version) in listed.items():
        if key not in lock:
            problems.append(f"{WHEELS_LIST.name}: {name} is not in requirements.lock (the one "
                            "place for versions): add it there")
        elif Version(lock[key][1]) != Version(version):
            problems.append(f"{WHEELS_LIST.name}: {name}=={version} but requirements.lock "
                            f"pins {lock[key][1]}: run `python .ci/gpu_wheels.py list`")
    found = {tag: folder_wheels(folder / tag) for tag in PYTHONS}
    for tag, wheels in found.items():
        for key, (name, version) in listed.items():
            if key not in wheels:
                problems.append(f"{folder / tag}: no wheel of {name}=={version}: run "
                                "`make gpu-wheels`")
            elif wheels[key][0] != Version(version):
                problems.append(f"{folder / tag}: {wheels[key][1].name} is not version "
                                f"{version}: run `make gpu-wheels`")
        for key in sorted(set(wheels) - set(listed)):
            problems.append(f"{folder / tag}: {wheels[key][1].name} is not in "
                            f"{WHEELS_LIST.name}: delete it")
    a, b = ({k: v for k, (v, _) in found[t].items()} for t in PYTHONS)
    if a != b:
        problems.append(f"{' and '.join(PYTHONS)} hold different names or versions: "
                        f"{sorted(set(a.items()) ^ set(b.items()))}")
    reached: set[str] = set()
    for tag, python in PYTHONS.items():
        walked, missing = _closure(found[tag], machine, python, tag)
        reached |= walked
        problems += missing
    for key in sorted(set(listed) - reached):  # the twins share one list: needed by either
        problems.append(f"{listed[key][0]} is needed by nothing the project depends on: drop "
                        f"it from {WHEELS_LIST.name}")
    return problems


def _closure(wheels: dict[str, tuple[Version, Path]], machine: dict[str, tuple[str, str]],
             python: str, tag: str) -> tuple[set[str], list[str]]:
    """Walk requirements from the project's roots through the carried wheels' metadata.

    Returns the carried packages reached and the requirements nothing meets.
    """
    env = marker_env(python)
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()  # (package, extra or "") already walked
    todo = [(r, "pyproject.toml", "") for r in roots()]
    while todo:
        req, needed_by, extra = todo.pop()
        if req.marker and not req.marker.evaluate({**env, "extra": extra}):
            continue
        key = canonicalize_name(req.name)
        if key in wheels:
            version, path = wheels[key]
            if not req.specifier.contains(version, prereleases=True):
                problems.append(f"{tag}: {needed_by} needs {req}, carried is {version}")
            for e in ("", *sorted(req.extras)):
                if (key, e) not in seen:
                    seen.add((key, e))
                    todo += [(r, path.name, e) for r in wheel_requirements(path)]
        elif key not in machine:
            problems.append(f"{tag}: {needed_by} needs {req}, which the GPU machine lacks and "
                            f"{WHEELS_LIST.name} does not carry: run "
                            "`python .ci/gpu_wheels.py list`")
    return {k for k, _ in seen}, sorted(set(problems))


def pip_target_args(python: str) -> list[str]:
    args = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    for p in PLATFORMS:
        args += ["--platform", p]
    return args


def resolve() -> list[str]:
    """name==version of every package the roots need on the GPU machine (pip's resolver).

    Constrained by requirements.lock and the machine's own pins, so shared dependencies
    resolve to what the machine has; torch is left out (the machine's CUDA build is used).
    Resolved for this Python (a cross-version resolve cannot see sdist-only packages);
    ``verify`` then checks the list against the 3.12 wheels' own requirements.
    """
    machine = read_pins(MACHINE_LIST)
    with tempfile.TemporaryDirectory() as tmp:
        cons = Path(tmp) / "constraints.txt"
        cons.write_text(LOCK.read_text() + "".join(
            f"{n}=={v}\n" for k, (n, v) in machine.items() if k != "torch"))
        report = Path(tmp) / "report.json"
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--dry-run",
                        "--ignore-installed", "--report", str(report),
                        "-c", str(cons), *map(str, roots())], check=True)
        installs = json.loads(report.read_text())["install"]
    out = []
    for item in installs:
        meta = item["metadata"]
        key = canonicalize_name(meta["name"])
        if key not in machine or key in ALSO_CARRY:
            built = "" if item["download_info"]["url"].endswith(".whl") else f"  {BUILD_MARK}"
            out.append(f"{meta['name']}=={meta['version']}{built}")
    return sorted(out, key=str.lower)


def to_build() -> set[str]:
    """Listed packages that have no wheel on the index (marked with BUILD_MARK)."""
    return {canonicalize_name(line.split("==")[0]) for line in WHEELS_LIST.read_text().splitlines()
            if BUILD_MARK in line and not line.startswith("#")}


def download(folder: Path) -> None:
    """Fetch the listed wheels for both Pythons (reusing files already there).

    A package marked as having no wheel is built here from its sdist; it must come out pure
    Python (``py3-none-any``), the same file for both Pythons.
    """
    listed = read_pins(WHEELS_LIST)
    build = to_build()
    for tag, python in PYTHONS.items():
        dest = folder / tag
        dest.mkdir(parents=True, exist_ok=True)
        for whl in dest.glob("*.whl"):  # stale wheels of an older list
            name, version, _, _ = parse_wheel_filename(whl.name)
            if name not in listed or version != Version(listed[name][1]):
                whl.unlink()
        with tempfile.TemporaryDirectory() as tmp:
            pins = Path(tmp) / "pins.txt"
            pins.write_text("".join(f"{n}=={v}\n" for k, (n, v) in listed.items()
                                    if k not in build))
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                            *pip_target_args(python), "-d", str(dest), "-r", str(pins)],
                           check=True)
        have = folder_wheels(dest)
        for key in sorted(build - set(have)):
            name, version = listed[key]
            subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                            "-w", str(dest), f"{name}=={version}"], check=True)
        for key in build:
            whl = folder_wheels(dest)[key][1]
            if not whl.name.endswith("-py3-none-any.whl"):
                raise SystemExit(f"{whl}: built from an sdist but not pure Python; it cannot "
                                 "travel to another Python")


def size_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*.whl")) / 2**20


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["list", "download", "verify"])
    ap.add_argument("folder", nargs="?", type=Path, default=REPO / "gpu-wheels")
    args = ap.parse_args(argv)
    if args.command == "list":
        header = [line for line in WHEELS_LIST.read_text().splitlines()
                  if line.startswith("#")] if WHEELS_LIST.exists() else []
        WHEELS_LIST.write_text("\n".join(header + resolve()) + "\n")
        print(f"wrote {WHEELS_LIST}")
        return 0
    if args.command == "download":
        download(args.folder)
    problems = verify(args.folder)
    for p in problems:
        print(f"gpu-wheels: {p}", file=sys.stderr)
    sizes = {tag: round(size_mib(args.folder / tag), 1) for tag in PYTHONS}
    print(json.dumps({"wheels": len(read_pins(WHEELS_LIST)), "mib": sizes,
                      "limit_mib": LIMIT_MIB, "ok": not problems}))
    if sizes["cp312"] > LIMIT_MIB:
        print(f"gpu-wheels: cp312 holds {sizes['cp312']} MiB, over {LIMIT_MIB} MiB (64 MiB "
              "may travel to the GPU machine, repo included)", file=sys.stderr)
        return 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
