"""The GPU check's own logic, without a GPU: the wheelhouse verifier and the e2e verdict.

The full check runs in CI as ``bash .ci/gpu-rehearsal`` (part of ``make test``); these tests
pin down the decisions it makes on small, hand-made inputs.
"""

from __future__ import annotations

import importlib.util
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

CI = Path(__file__).resolve().parents[1] / ".ci"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, CI / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


gpu_wheels = load("gpu_wheels")
gpu_check = load("gpu_check")


def make_wheel(folder: Path, name: str, version: str, tag: str, requires: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(folder / f"{name}-{version}-{tag}.whl", "w") as zf:
        zf.writestr(f"{name}-{version}.dist-info/METADATA", meta)


WHEELS = {  # name -> (version, compiled?, requirements)
    "alpha": ("1.0", False, ["beta>=2", "numpy", "gamma; python_version < '3.12'",
                             "omega; extra == 'docs'"]),
    "beta": ("2.0", True, []),
    "gamma": ("0.1", False, []),
}


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project needing alpha and numpy; the machine has numpy; alpha needs beta (compiled),
    and gamma on Python < 3.12 only."""
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\ndependencies = ["alpha>=1", "numpy>=2"]\n')
    (tmp_path / "machine.txt").write_text("numpy==2.0\n")
    (tmp_path / "lock.txt").write_text("alpha==1.0\nbeta==2.0\ngamma==0.1\nnumpy==2.0\n")
    (tmp_path / "list.txt").write_text("# carried\nalpha==1.0\nbeta==2.0\ngamma==0.1\n")
    for key, value in {"REPO": tmp_path, "MACHINE_LIST": tmp_path / "machine.txt",
                       "LOCK": tmp_path / "lock.txt",
                       "WHEELS_LIST": tmp_path / "list.txt"}.items():
        monkeypatch.setattr(gpu_wheels, key, value)
    for tag in gpu_wheels.PYTHONS:
        for name, (version, compiled, requires) in WHEELS.items():
            wheel_tag = f"{tag}-{tag}-manylinux_2_17_x86_64" if compiled else "py3-none-any"
            make_wheel(tmp_path / "wh" / tag, name, version, wheel_tag, requires)
    return tmp_path


def test_complete_wheelhouse_passes(world: Path) -> None:
    """gamma is needed on 3.11 only, yet both twins carry it: allowed (one list for both)."""
    assert gpu_wheels.verify(world / "wh") == []


def test_requirement_nobody_meets_is_reported(world: Path) -> None:
    """Planted bug: a closure walk that skips wheel metadata would pass this silently."""
    for tag in gpu_wheels.PYTHONS:
        (world / "wh" / tag / f"beta-2.0-{tag}-{tag}-manylinux_2_17_x86_64.whl").unlink()
        make_wheel(world / "wh" / tag, "beta", "2.0", f"{tag}-{tag}-manylinux_2_17_x86_64",
                   ["delta>=1"])
    problems = gpu_wheels.verify(world / "wh")
    assert any("needs delta>=1" in p and "GPU machine lacks" in p for p in problems), problems


def test_marker_for_one_python_is_checked_for_that_python(world: Path) -> None:
    """Planted bug: markers evaluated for the running Python, not each twin's, would miss
    that the 3.11 twin needs gamma (or flag it on 3.12)."""
    (world / "list.txt").write_text("alpha==1.0\nbeta==2.0\n")
    for tag in gpu_wheels.PYTHONS:
        (world / "wh" / tag / "gamma-0.1-py3-none-any.whl").unlink()
    problems = gpu_wheels.verify(world / "wh")
    assert problems and all(p.startswith("cp311:") and "gamma" in p for p in problems), problems


def test_unneeded_missing_stale_and_mismatched_wheels(world: Path) -> None:
    """Planted bugs: an extra wheel, a lock drift, and twins of different versions."""
    (world / "list.txt").write_text("alpha==1.0\nbeta==2.0\ngamma==0.1\nzeta==1.0\n")
    (world / "lock.txt").write_text("alpha==1.1\nbeta==2.0\ngamma==0.1\nzeta==1.0\n")
    for tag in gpu_wheels.PYTHONS:
        make_wheel(world / "wh" / tag, "zeta", "1.0", "py3-none-any", [])
    beta = world / "wh" / "cp311" / "beta-2.0-cp311-cp311-manylinux_2_17_x86_64.whl"
    beta.unlink()
    make_wheel(beta.parent, "beta", "2.1", "cp311-cp311-manylinux_2_17_x86_64", [])
    text = "\n".join(gpu_wheels.verify(world / "wh"))
    assert "zeta is needed by nothing" in text
    assert "alpha==1.0 but requirements.lock pins 1.1" in text
    assert "beta-2.1-cp311" in text and "hold different names or versions" in text


def test_extra_requirements_are_followed_only_when_asked(world: Path) -> None:
    """Planted bug: ignoring extras markers would demand omega (alpha[docs] only)."""
    assert not any("omega" in p for p in gpu_wheels.verify(world / "wh"))
    (world / "pyproject.toml").write_text(
        '[project]\nname = "x"\ndependencies = ["alpha[docs]>=1", "numpy>=2"]\n')
    assert any("needs omega" in p for p in gpu_wheels.verify(world / "wh"))


def test_committed_wheel_list_follows_the_lock() -> None:
    """The lock is the one place for versions: a lock bump without `gpu_wheels.py list`
    (planted: edit a version in either file) fails here, before any download."""
    listed = gpu_wheels.read_pins(CI / "gpu-wheels.txt")
    lock = gpu_wheels.read_pins(CI.parent / "requirements.lock")
    drift = {n: (v, lock.get(k, ("", "absent"))[1]) for k, (n, v) in listed.items()
             if lock.get(k, ("", ""))[1] != v}
    assert not drift, f"gpu-wheels.txt vs requirements.lock: {drift}"
    assert "torch" not in listed, "torch must not travel: the GPU machine's CUDA build is used"


def record(worker: str, methods: list[str], gpu: bool, **cuda: object) -> dict[str, object]:
    return {"key": f"evaluate_task-{worker}-{'-'.join(methods)}", "worker": worker,
            "methods": methods, "resources": {"GPU": 1} if gpu else {},
            "cuda_visible_devices": "0" if gpu else "", **cuda}


ON_GPU = {"cuda_available": True, "cuda_initialized": True, "max_memory_allocated": 1 << 20}


def test_e2e_verdict_on_the_gpu_machine() -> None:
    """Planted bugs: Monte Carlo routed to a CPU worker, or a GPU worker that never used
    CUDA (device fell back to the CPU), or a probe that never loaded."""
    good = [record("gpu0", ["mc"], True, **ON_GPU), record("cpu0", ["bound", "exact"], False)]
    assert gpu_check.judge_e2e(good, rehearsal=False) == []
    on_cpu = good + [record("cpu0", ["mc"], False, cuda_available=False)]
    assert "without the GPU resource" in " ".join(gpu_check.judge_e2e(on_cpu, False))
    idle = [record("gpu0", ["mc"], True, cuda_available=True, cuda_initialized=True,
                   max_memory_allocated=0)]
    assert "CUDA held no memory" in " ".join(gpu_check.judge_e2e(idle, False))
    assert "probe did not load" in " ".join(gpu_check.judge_e2e([], False))


def test_e2e_verdict_in_the_rehearsal() -> None:
    """Without a GPU, Monte Carlo must run on the CPU; a task that saw a GPU is wrong."""
    cpu = [record("0", ["mc"], False, cuda_available=False), record("1", ["exact"], False)]
    assert gpu_check.judge_e2e(cpu, rehearsal=True) == []
    assert gpu_check.judge_e2e([record("0", ["exact"], False)], True) == [
        "no Monte Carlo task ran"]
    saw = [record("gpu0", ["mc"], True, **ON_GPU)]
    assert "saw a GPU" in " ".join(gpu_check.judge_e2e(saw, rehearsal=True))


def test_driver_needs_only_the_standard_library() -> None:
    """The driver starts before the wheels are installed: a third-party import at its top
    (planted: `import yaml` there) would fail on the GPU machine before any step ran."""
    import subprocess

    res = subprocess.run([sys.executable, "-S", "-c", "import runpy; runpy.run_path("
                          f"{str(CI / 'gpu_check.py')!r}, run_name='check')"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
