# ktsweep: parameter sweeps of the spectral theory of knowledge transfer (arXiv 2606.01292).
#
#   config -> grid (chunks) -> engines on dask (one job per chunk) -> zarr cube -> fits, figures
#
# Run: snakemake --cores 2            (default config: config/config.yaml)
#      snakemake --cores 2 --configfile config/paper/kd_fig2a.yaml
# Rules call the `ktsweep` library; all logic lives there.
from snakemake.utils import min_version

min_version("9.0")


# --configfile X replaces the default config whole (no key-by-key merge of grids);
# --config KEY=VALUE overrides apply on top of either.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/sweep.smk"
include: "workflow/rules/analysis.smk"


rule all:
    input:
        final_outputs(),
    default_target: True
