"""Figures of a result cube (PNG, matplotlib's Agg canvas, no pyplot state), one module per
family: phase maps (:mod:`.maps`), rates against N (:mod:`.rates`), learning curves
(:mod:`.curves`), per-mode spectra (:mod:`.spectral`), bounds (:mod:`.bounds`), Monte Carlo
parity (:mod:`.parity`), Theorem 5's crossover (:mod:`.crossover`) and misaligned bases
(:mod:`.misalignment`); what they share is in :mod:`.common`.

:func:`planned_figures` decides the figure names from the :class:`~ktsweep.sweep.layout.Layout`
alone (Snakemake declares them as outputs before any cube exists); :func:`make_figures` writes
exactly those files, drawing a 'no data' panel where a planned figure's data are all missing.
Every figure shows one slice of the grid, chosen by its slice rule where the figure has
something to show; its title names the slice, its footer the slice and the rule. A figure
reads the cube alone: parameters from its coordinates, values by label. Risks are excess risks
with the ½ factor (docs/science/model.md#risk-convention).

To add a figure: write its drawing function and :class:`~.common.FigureSpec` (name, when the
grid supports it, caption) in the module of its family, add it to :data:`REGISTRY`, and
regenerate the report captions (``python -m ktsweep.analysis.report workflow/report``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import xarray as xr
from matplotlib.figure import Figure

from ktsweep.analysis.figures import (
    bounds,
    crossover,
    curves,
    maps,
    misalignment,
    parity,
    rates,
    spectral,
)
from ktsweep.analysis.figures.common import DPI, FigureCube, FigureSpec, NoDataError, no_data
from ktsweep.sweep.layout import Layout

REGISTRY: tuple[FigureSpec, ...] = (
    *maps.SPECS,
    rates.RISK_VS_N,
    *crossover.SPECS,
    rates.DER_VS_DALPHA,
    *curves.SPECS,
    *spectral.SPECS,
    *parity.SPECS,
    *bounds.SPECS,
    *misalignment.SPECS,
)
"""Every figure ktsweep knows, in the order they are planned (the one registry)."""

FIGURES: tuple[str, ...] = tuple(spec.name for spec in REGISTRY)
CAPTIONS: dict[str, str] = {spec.name: spec.caption for spec in REGISTRY}
_BY_NAME: dict[str, FigureSpec] = {spec.name: spec for spec in REGISTRY}

__all__ = ["CAPTIONS", "FIGURES", "REGISTRY", "FigureCube", "NoDataError", "draw_figure",
           "make_figures", "planned_figures"]


def planned_figures(layout: Layout) -> list[str]:
    """The figure names this grid supports, decided from the layout alone (cheap: the
    workflow calls it when it parses)."""
    return [spec.name for spec in REGISTRY if spec.needs(layout)]


def draw_figure(ds: xr.Dataset | FigureCube, name: str) -> Figure:
    """One planned figure of the cube as a matplotlib Figure (a 'no data' panel saying why
    when its data are all missing); tests read the plotted data back from it."""
    cube = ds if isinstance(ds, FigureCube) else FigureCube(ds)
    try:
        with warnings.catch_warnings():  # dask's chunk reductions of lazy variables
            warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
            return _BY_NAME[name].draw(cube)
    except NoDataError as why:
        return no_data(name, str(why))


def make_figures(ds: xr.Dataset, outdir: str | os.PathLike) -> list[Path]:
    """Write every planned figure of the cube's layout as ``outdir/<name>.png``.

    A figure whose data are all missing is still written, as a 'no data' panel saying why.
    """
    cube = FigureCube(ds)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in planned_figures(cube.layout):
        path = out / f"{name}.png"
        draw_figure(cube, name).savefig(path, dpi=DPI)
        paths.append(path)
    return paths
