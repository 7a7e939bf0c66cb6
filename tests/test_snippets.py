"""Every command and snippet the README and the docs show is run, against a cube of the
default config's shape: what a researcher copies from a page works.

Blocks fenced as ``python`` run as a script; blocks fenced as ``bash`` run line by line.
They run in a folder laid out like a checkout after ``make run``: ``config/``, ``workflow/``,
``examples/`` of this repository and ``results/default/`` holding the default-shaped cube with
its fits and claims. Snakemake commands run as dry runs (``-n``: the config and the plan are
checked, nothing computed), ``make`` targets are what CI itself runs. A block that cannot run
here (a cluster, a GPU, an install) says why in an HTML comment on the line before it:
``<!-- snippet: skip because ... -->``; the test fails on a block that neither runs nor says.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", REPO / "config" / "README.md",
         *sorted((REPO / "docs").rglob("*.md"))]
SKIP = re.compile(r"<!--\s*snippet:\s*skip\s+(.+?)\s*-->")
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass(frozen=True)
class Snippet:
    page: Path
    line: int
    lang: str
    code: str
    skip: str | None

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def snippets() -> list[Snippet]:
    """Every python and bash block of the pages, with the skip reason written above it."""
    out = []
    for page in PAGES:
        lines = page.read_text().splitlines()
        i = 0
        while i < len(lines):
            m = FENCE.match(lines[i])
            if not m:
                i += 1
                continue
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            if m.group(1) in ("python", "bash"):
                above = "\n".join(lines[max(0, i - 2):i])
                skip = SKIP.search(above)
                out.append(Snippet(page, i + 1, m.group(1), "\n".join(lines[i + 1:j]),
                                   skip.group(1) if skip else None))
            i = j + 1
    return out


def _commands(code: str) -> list[str]:
    """The commands of a bash block: comments dropped, continued lines joined."""
    joined = re.sub(r"\\\n\s*", " ", code)
    out = []
    for line in joined.splitlines():
        line = re.split(r"\s+#\s", line, maxsplit=1)[0].strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


@pytest.fixture(scope="module")
def checkout(default_cube, tmp_path_factory) -> Path:
    """A folder laid out like a checkout after ``make run``: the repository's config,
    workflow and examples, and results/default as the workflow leaves it (the cube under
    cubes/ with its commit records beside it, cube.zarr linking to it, fits and claims), on
    the default-shaped cube; ``my.yaml`` is a copy of the default config (what a page says to
    copy and edit)."""
    from ktsweep import cli
    from ktsweep.sweep import store

    root = tmp_path_factory.mktemp("checkout")
    for name in ("config", "workflow", "examples"):
        (root / name).symlink_to(REPO / name)
    shutil.copy(REPO / "config" / "config.yaml", root / "my.yaml")
    out = root / "results" / "default"
    key = store.cube_key(store.layout_of(default_cube))
    cube = out / "cubes" / f"{key}.zarr"
    cube.parent.mkdir(parents=True)
    shutil.copytree(default_cube, cube)
    shutil.copytree(store.commits_dir(default_cube), store.commits_dir(cube))
    assert cli.main(["summarize", str(cube), "--link", str(out / "cube.zarr"),  # the cube rule
                     "--out", str(out / "cube.json")]) == 0
    assert cli.main(["fits", str(out / "cube.zarr"), "--csv", str(out / "fits.csv"),
                     "--md", str(out / "fits.md")]) == 0
    assert cli.main(["claims", str(out / "cube.zarr"), "--fits", str(out / "fits.csv"),
                     "--md", str(out / "claims.md"), "--csv", str(out / "claims.csv")]) == 0
    return root


ALL = snippets()


def test_every_block_runs_or_says_why() -> None:
    """A block that is skipped gives a reason. Planted bug: the skip marker's reason left
    out (the block would pass unexamined)."""
    assert ALL, "no snippet found"
    for s in ALL:
        if s.skip is not None:
            assert len(s.skip.split()) >= 3, f"{s.name}: say why the block cannot run here"


@pytest.mark.parametrize("snippet", [s for s in ALL if s.skip is None], ids=lambda s: s.name)
def test_snippet_runs(snippet: Snippet, checkout: Path) -> None:
    """Each block runs without an error, as a user would run it, from the checkout folder.
    Planted bugs it catches (seen failing): ``exact.pgr.sel(N=32768)`` on a cube whose N are
    powers of 4 (KeyError), a command whose flag was renamed, a path that moved."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    if snippet.lang == "python":
        res = subprocess.run([sys.executable, "-c", snippet.code], cwd=checkout, env=env,
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, f"{snippet.name}:\n{snippet.code}\n{res.stderr[-3000:]}"
        return
    for command in _commands(snippet.code):
        if command.startswith("make "):
            continue  # CI itself runs make test; make run is the default sweep
        if command.startswith("snakemake"):
            command += " -n"
        if command.startswith(("source ", "tail -f ")):
            continue  # a venv's activation; following a running job's log
        res = subprocess.run(["bash", "-c", command], cwd=checkout, env=env,
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, f"{snippet.name}: {command}\n{res.stdout[-1500:]}" \
                                    f"\n{res.stderr[-3000:]}"
    shutil.rmtree(checkout / ".snakemake", ignore_errors=True)
