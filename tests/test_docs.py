"""The repository documents itself: nothing points outside it, and every docs/ page it cites exists.

The science lives in ``docs/`` (built by ``make docs``, which checks the pages' own links).
These tests scan every tracked text file for references that a fresh clone cannot follow.
"""

from __future__ import annotations

import re
import subprocess
import unicodedata
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SELF = Path(__file__).resolve().relative_to(ROOT).as_posix()  # quotes the patterns: not scanned
OUTSIDE = re.compile(r"\.\./shared|shared/docs")
OLD_CONTRACT = re.compile(r"(?<![\w/.-])model\.md")
DOC_REF = re.compile(r"(?<![\w/.-])docs/([\w/.-]+?\.md)(#[\w-]+)?")


@cache
def tracked_text() -> dict[str, str]:
    """Tracked UTF-8 text files but this one, keyed by their path in the repository."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True,
                           text=True).stdout.split("\0")
    out = {}
    for name in filter(None, names):
        path = ROOT / name
        if name == SELF:
            continue
        if path.is_symlink() or not path.is_file():
            continue
        try:
            out[name] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
    return out


def hits(pattern: re.Pattern[str], skip_docs: bool = False) -> list[str]:
    found = []
    for name, text in tracked_text().items():
        if skip_docs and name.startswith("docs/"):
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            if pattern.search(line):
                found.append(f"{name}:{lineno}: {line.strip()}")
    return found


def slug(heading: str) -> str:
    """Heading anchor as MkDocs' toc extension makes it (ASCII, lower case, hyphens)."""
    text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M)}


def test_scan_sees_the_repository() -> None:
    """The scan reads code, configs and docs (guards against an empty ``git ls-files``)."""
    names = tracked_text()
    assert {"README.md", "ktsweep/cli.py", "mkdocs.yml", "docs/index.md"} <= set(names)


def test_no_reference_outside_the_repository() -> None:
    """No tracked file points at the workspace outside the clone.

    Mutation caught: README saying the science is in the steering repo's shared docs folder again.
    """
    assert not hits(OUTSIDE), "\n".join(["references a clone does not have:", *hits(OUTSIDE)])


def test_no_reference_to_the_old_contract() -> None:
    """Code, configs, captions and tests cite docs/ pages, not the retired contract file.

    Mutation caught: a docstring or figure caption citing "model.md §4.2" (a bare file name
    that a reader of the repository cannot open). Pages under docs/ are exempt: their
    relative links to ``science/model.md`` are real, and ``mkdocs build --strict`` checks them.
    """
    found = hits(OLD_CONTRACT, skip_docs=True)
    assert not found, "\n".join(["cite docs/science/... instead of the old contract:", *found])


def test_cited_doc_pages_and_anchors_exist() -> None:
    """Every ``docs/PAGE.md#anchor`` cited in a tracked file names a real page and heading.

    Mutation caught: a page renamed or a heading reworded while code still cites the old
    one (e.g. ``docs/science/exact.md#the-t2s-cross-term`` after a retitle).
    """
    cited, broken = 0, []
    for name, text in tracked_text().items():
        for m in DOC_REF.finditer(text):
            cited += 1
            page = ROOT / "docs" / m.group(1)
            if not page.is_file():
                broken.append(f"{name}: docs/{m.group(1)} does not exist")
            elif m.group(2) and m.group(2)[1:] not in anchors(page):
                broken.append(f"{name}: no heading {m.group(2)} in docs/{m.group(1)}")
    assert cited >= 10, f"only {cited} docs/ citations found: is the pattern still right?"
    assert not broken, "\n".join(broken)


def test_slug_matches_mkdocs() -> None:
    """The anchor rule above is the one MkDocs' toc extension applies, on every docs heading.

    Mutation caught: a slug that keeps apostrophes or non-ASCII symbols (``lemma-1's-…``), which
    would let a broken anchor pass or a good one fail.
    """
    toc = pytest.importorskip("markdown.extensions.toc")
    headings = [m.group(1) for page in (ROOT / "docs").rglob("*.md")
                for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", page.read_text(encoding="utf-8"),
                                     re.M)]
    assert len(headings) > 20
    for heading in headings:
        assert slug(heading) == toc.slugify(heading, "-"), heading


def test_api_reference_covers_every_module() -> None:
    """Each module of the package has its ``::: module`` entry in docs/api/.

    Mutation caught: a new module (or a dropped ``::: ktsweep.engines.mc`` line) that the API
    reference silently leaves out; ``make docs`` only checks the entries that exist.
    """
    package = ROOT / "ktsweep"
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts)
               for p in package.rglob("*.py") if p.name != "__init__.py"}
    documented = {m.group(1) for page in (ROOT / "docs" / "api").glob("*.md")
                  for m in re.finditer(r"^:::\s+(ktsweep[\w.]*)\s*$",
                                       page.read_text(encoding="utf-8"), re.M)}
    missing = sorted(modules - documented)
    assert not missing, f"add to docs/api/: {', '.join(missing)}"
