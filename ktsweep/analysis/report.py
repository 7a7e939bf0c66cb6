"""Figure captions for Snakemake's report: ``workflow/report/<figure>.rst``.

The captions live in :data:`ktsweep.analysis.figures.CAPTIONS` (one source); this module renders
them as the reStructuredText files the workflow's ``report()`` outputs point to. Regenerate with
``python -m ktsweep.analysis.report workflow/report``.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

from ktsweep.analysis.figures import CAPTIONS, FIGURES


def caption_rst(name: str) -> str:
    """The caption of one figure as a short reStructuredText document."""
    body = textwrap.fill(CAPTIONS[name], width=96)
    return (f"{body}\n\nRisks are excess risks with the 1/2 factor "
            "(docs/science/model.md#risk-convention).\n")


def write_captions(directory: str | os.PathLike) -> list[Path]:
    """Write ``<name>.rst`` for every figure ktsweep knows; returns the paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in FIGURES:
        path = out / f"{name}.rst"
        path.write_text(caption_rst(name))
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write_captions(sys.argv[1] if len(sys.argv) > 1 else "workflow/report"):
        print(p)
