"""The package installs from pyproject.toml alone: every module it imports is declared.

`pip install ktsweep` (or `pip install .`) installs the ``dependencies`` of pyproject.toml and
nothing from requirements.lock, so a module the code imports that no declared distribution
provides works on a developer's machine (the lock installed it) and fails for a user.
CI also installs the package into a fresh venv without the lock and runs it
(.ci/fresh-install); this test finds the same gap in a second, before any install.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

OPTIONAL = {
    "triton": "the fused GPU Monte Carlo kernel, imported only where CUDA is present",
}
"""Modules the package may import behind a guard, each with the reason it is not required."""


def _imports(package: Path) -> dict[str, list[str]]:
    """Top-level module name -> the files importing it (absolute imports only)."""
    found: dict[str, list[str]] = {}
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], []).append(
                    str(path.relative_to(package.parent)))
    return found


def _declared() -> set[str]:
    """Normalised names of the distributions pyproject.toml requires (extras included)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = set()
    for spec in project["dependencies"]:
        name = re.split(r"[\s\[<>=!~;]", spec, maxsplit=1)[0]
        names.add(_norm(name))
        extras = re.search(r"\[([^\]]+)\]", spec)
        if extras:  # dask[distributed] brings the distributed distribution
            names |= {_norm(e) for e in extras.group(1).split(",")}
    return names


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def undeclared(package: Path, declared: set[str]) -> dict[str, list[str]]:
    """Imported modules that neither the standard library, the package itself nor a declared
    distribution provides (module -> importing files)."""
    providers = metadata.packages_distributions()
    out = {}
    for module, files in _imports(package).items():
        if module in sys.stdlib_module_names or module == package.name or module in OPTIONAL:
            continue
        dists = {_norm(d) for d in providers.get(module, [module])}
        if not dists & declared:
            out[module] = files
    return out


def test_every_import_is_declared() -> None:
    """Planted bugs it catches: tqdm (imported by the CLI's progress path) missing from the
    dependencies, as it once was; a new ``import tabulate`` with pandas alone declared."""
    missing = undeclared(REPO / "ktsweep", _declared())
    assert not missing, ("imported but not declared in pyproject.toml's dependencies "
                         f"(module: importing files): {missing}")


def test_the_check_sees_a_missing_declaration(tmp_path) -> None:
    """The scan itself: a package importing tqdm is flagged when tqdm is not declared and
    passes when it is; stdlib, relative and the package's own imports are never flagged."""
    pkg = tmp_path / "demo"
    pkg.mkdir()
    (pkg / "cli.py").write_text("import json\nfrom . import x\nfrom demo import y\n"
                                "def f():\n    from tqdm import tqdm\n")
    assert undeclared(pkg, {"numpy"}) == {"tqdm": ["demo/cli.py"]}
    assert undeclared(pkg, {"tqdm"}) == {}
