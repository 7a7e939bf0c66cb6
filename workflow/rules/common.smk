# Config validation and input functions; rule files hold rules only.
import os
import sys

from snakemake.exceptions import WorkflowError

from ktsweep.sweep.config import ConfigError
from ktsweep.sweep.layout import Layout, config_for_workflow
from ktsweep.sweep.store import commits_dir, cube_path, plan_check

try:
    # Types the config (ktsweep/sweep/config.py, whose schema is workflow/schemas/), fills its
    # defaults and validates every grid point before any job is scheduled; the config file is
    # re-read for duplicated keys and to name the line of an error.
    LAYOUT = Layout(config_for_workflow(config, workflow.configfiles))
except ConfigError as err:
    raise WorkflowError(f"invalid ktsweep config: {err}") from None

NAME = LAYOUT.name
OUT = f"results/{NAME}"
CUBE = f"{OUT}/cube.zarr"  # the path users open: a symlink to CUBE_DIR once complete
CUBE_DIR = str(cube_path(LAYOUT))  # content-addressed: results/NAME/cubes/<key>.zarr
COMMITS = str(commits_dir(CUBE_DIR))  # init.json and one commit record per chunk
LAYOUT_FILE = f"{OUT}/.ktsweep/layout.json"
LOGS = f"logs/{NAME}"
KTSWEEP = f"{sys.executable} -m ktsweep.cli"

# Cheap check of what exists before Snakemake plans: commit records whose chunk files
# changed or vanished, a cube whose metadata is broken, a summary of another cube. Each is
# reset so the affected jobs rerun (nothing but records and status files is removed).
for _line in plan_check(LAYOUT):
    print(f"ktsweep: {_line}", file=sys.stderr)


def write_layout(path, text):
    """Write the layout file (the rules' one way to receive the layout) atomically, and only
    when its content changes: rules take it as ancient() input, so a rewrite reruns nothing;
    what a change of layout must rerun follows from the content-addressed cube paths."""
    import os

    try:
        with open(path) as fh:
            if fh.read() == text:
                return
    except OSError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


write_layout(LAYOUT_FILE, LAYOUT.to_json())


def chunk_markers(wildcards=None):
    """One commit record per chunk of the current cube (Snakemake's markers)."""
    return expand(f"{COMMITS}/{{chunk}}.json", chunk=LAYOUT.chunk_ids())


def figure_outputs():
    """The figures this grid supports (decided from the layout alone)."""
    from ktsweep.analysis.figures import planned_figures

    # (a line may not start with `report(`: Snakemake would read it as the report keyword)
    figures, captions = planned_figures(LAYOUT), f"{workflow.basedir}/report"
    outputs = []
    for f in figures:
        png, caption = f"{OUT}/figures/{f}.png", f"{captions}/{f}.rst"
        outputs.append(report(png, caption=caption, category="Figures"))
    return outputs


def final_outputs():
    return [
        f"{OUT}/cube.json",
        f"{OUT}/fits.csv",
        f"{OUT}/fits.md",
        f"{OUT}/claims.md",
        f"{OUT}/claims.csv",
        *figure_outputs(),
    ]


def simulate_threads():
    return LAYOUT.config.jobs.threads


def simulate_gpus():
    """GPUs a chunk job requests: jobs.gpus, else 1 when Monte Carlo is set to run on cuda."""
    return LAYOUT.config.jobs.gpus_per_job(
        LAYOUT.config.mc.device, "mc" in LAYOUT.methods
    )


def scheduler_flag():
    address = LAYOUT.config.dask.scheduler
    return f"--scheduler {address}" if address else ""
