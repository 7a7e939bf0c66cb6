# Config validation and input functions; rule files hold rules only.
import sys

from snakemake.exceptions import WorkflowError

from ktsweep.sweep.config import ConfigError
from ktsweep.sweep.layout import Layout, config_for_workflow

try:
    # Types the config (ktsweep/sweep/config.py, whose schema is workflow/schemas/), fills its
    # defaults and validates every grid point before any job is scheduled; the config file is
    # re-read for duplicated keys and to name the line of an error.
    LAYOUT = Layout(config_for_workflow(config, workflow.configfiles))
except ConfigError as err:
    raise WorkflowError(f"invalid ktsweep config: {err}") from None

NAME = LAYOUT.name
OUT = f"results/{NAME}"
CUBE = f"{OUT}/cube.zarr"
KEY = LAYOUT.layout_key()
STATE = f"{OUT}/.ktsweep"
LOGS = f"logs/{NAME}"
KTSWEEP = f"{sys.executable} -m ktsweep.cli"


def chunk_markers(wildcards=None):
    """One marker per chunk job of the current layout."""
    return expand(f"{STATE}/{KEY}/{{chunk}}.json", chunk=LAYOUT.chunk_ids())


def figure_outputs():
    """The figures this grid supports (decided from the layout alone)."""
    from ktsweep.analysis.figures import planned_figures

    # (a line may not start with `report(`: Snakemake would read it as the report keyword)
    figures, captions = planned_figures(LAYOUT), f"{workflow.basedir}/report"
    return [report(f"{OUT}/figures/{f}.png", caption=f"{captions}/{f}.rst", category="Figures")
            for f in figures]


def final_outputs():
    return [f"{OUT}/cube.json", f"{OUT}/fits.csv", f"{OUT}/fits.md", *figure_outputs()]


def simulate_threads():
    return LAYOUT.config.jobs.threads


def simulate_gpus():
    """GPUs a chunk job requests: jobs.gpus, else 1 when Monte Carlo is set to run on cuda."""
    return LAYOUT.config.jobs.gpus_per_job(LAYOUT.config.mc.device, "mc" in LAYOUT.methods)


def scheduler_flag():
    address = LAYOUT.config.dask.scheduler
    return f"--scheduler {address}" if address else ""
