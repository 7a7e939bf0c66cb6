# Config validation and input functions; rule files hold rules only.
#
# Parsing this file changes nothing in the results tree: a dry run, --lint, --summary,
# --report and every remote job's parse leave it as they found it. The main process only looks
# at the results (read-only) and says what it found; what must change happens in rules
# (ktsweep/sweep/rules.py).
import sys

from snakemake.exceptions import WorkflowError

from ktsweep.sweep import rules as steps
from ktsweep.sweep.config import ConfigError
from ktsweep.sweep.layout import Layout, config_for_workflow, config_warnings
from ktsweep.sweep.store import commits_dir, cube_path

# `snakemake --config verify=full` hashes every file of the cube before planning (the default
# hashes only files whose size or time changed): it also finds a same-size file swapped in
# with its time set back. A way to run, not part of the sweep: taken out before validation.
VERIFY_FULL = str(config.pop("verify", "")).lower() == "full"

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
LOGS = f"logs/{NAME}"
RUN = steps.run_id()
# Every shell command runs `ktsweep` (this interpreter's CLI) and `ktsweep_run_chunk` (a chunk
# job with its execution settings): shell functions, so that neither is a param (why: the
# docstring of ktsweep.sweep.rules.shell_prefix).
shell.prefix(steps.shell_prefix(LAYOUT))


onstart:
    # A run that computes something records the new times of copied files (same content).
    steps.refresh_times(LAYOUT)


def after_repair():
    """When the look found something to repair, the repair checkpoint runs first and
    Snakemake plans again after it (with what it removed now missing). Called by the input
    functions of the rules without outputs, `all` and `sweep`, which Snakemake always runs:
    a rule whose outputs exist is never rerun for a missing input, so a file target named
    on the command line does not wait for repairs (the look says so)."""
    if LOOK.needs_repair:
        checkpoints.repair.get(run=RUN)


def chunk_markers(wildcards=None):
    """One commit record per chunk of the current cube (Snakemake's markers)."""
    return [ancient(f"{COMMITS}/{c}.json") for c in LAYOUT.chunk_ids()]


def sweep_outputs(wildcards=None):
    """The cube and its summary, without the analysis (`snakemake sweep`)."""
    after_repair()
    return [f"{OUT}/cube.json"]


def figure_names():
    """The figures this grid supports (decided from the layout alone), by name."""
    from ktsweep.analysis.figures import planned_figures

    return planned_figures(LAYOUT)


def figure_path(name):
    return f"{OUT}/figures/{name}.png"


def figure_outputs():
    """The figures rule's outputs: each figure flagged for the report with its caption (only
    a rule's own outputs may carry the flag: Snakemake turns the caption into a source file
    there, and a flagged input of `all` would reach the report with a bare string)."""
    # (a line may not start with `report(`: Snakemake would read it as the report keyword)
    captions = f"{workflow.basedir}/report"
    outputs = []
    for name in figure_names():
        png, caption = figure_path(name), f"{captions}/{name}.rst"
        outputs.append(report(png, caption=caption, category="Figures"))
    return outputs


def final_outputs(wildcards=None, repair=True):
    if repair:
        after_repair()
    return [
        f"{OUT}/cube.json",
        f"{OUT}/fits.csv",
        f"{OUT}/fits.md",
        f"{OUT}/claims.md",
        f"{OUT}/claims.csv",
        *map(figure_path, figure_names()),
    ]


def simulate_threads():
    return LAYOUT.config.jobs.threads


def simulate_gpus():
    """GPUs a chunk job requests: jobs.gpus, else 1 when Monte Carlo is set to run on cuda."""
    return LAYOUT.config.jobs.gpus_per_job(
        LAYOUT.config.mc.device, "mc" in LAYOUT.methods
    )


# The main process looks at the results before Snakemake plans; remote jobs (and the
# subprocesses of run: blocks) do not: they run one job each and change nothing else.
def published():
    """The workflow's final outputs as plain paths (what the repair checkpoint may remake)."""
    return [str(p) for p in final_outputs(repair=False)]


if workflow.is_main_process:
    for _line in config_warnings(LAYOUT):
        print(f"ktsweep: warning: {_line}", file=sys.stderr)
    LOOK = steps.look(LAYOUT, published(), full=VERIFY_FULL)
    for _line in LOOK.lines():
        print(f"ktsweep: {_line}", file=sys.stderr)
    if LOOK.needs_repair:
        print(
            "ktsweep: repairs run before the targets `all` (the default) and `sweep`; a "
            "file named as a target is made only once they are done",
            file=sys.stderr,
        )
else:
    LOOK = steps.Look(cube_path(LAYOUT))
