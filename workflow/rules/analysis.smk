# Analysis of the finished cube: exponent fits against the theory, figures, the claim table.
# Each rule's last log line (what it wrote, with its counts) is echoed into Snakemake's output.
# Inputs are ancient (see common.smk): whether these outputs still describe the cube is
# decided by content before planning, and the repair checkpoint removes them when not.


rule fits:
    input:
        ancient(rules.cube.output),
    output:
        csv=report(f"{OUT}/fits.csv", caption="../report/fits.rst", category="Fits"),
        md=f"{OUT}/fits.md",
    log:
        f"{LOGS}/fits.log",
    benchmark:
        f"{LOGS}/benchmarks/fits.benchmark.tsv"
    localrule: True
    params:
        cube=CUBE,
    shell:
        "ktsweep fits {params.cube} --csv {output.csv} --md {output.md} > {log} 2>&1 "
        "&& tail -n 1 {log}"


rule figures:
    input:
        ancient(rules.cube.output),
    output:
        figure_outputs(),
    log:
        f"{LOGS}/figures.log",
    benchmark:
        f"{LOGS}/benchmarks/figures.benchmark.tsv"
    localrule: True
    params:
        cube=CUBE,
        outdir=lambda wildcards, output: os.path.dirname(output[0]),
    shell:
        "ktsweep figures {params.cube} --outdir {params.outdir} > {log} 2>&1 "
        "&& tail -n 1 {log}"


rule claims:
    input:
        cube=ancient(rules.cube.output),
        fits=ancient(rules.fits.output.csv),
    output:
        md=report(f"{OUT}/claims.md", caption="../report/claims.rst", category="Claims"),
        csv=report(
            f"{OUT}/claims.csv", caption="../report/claims.rst", category="Claims"
        ),
    log:
        f"{LOGS}/claims.log",
    benchmark:
        f"{LOGS}/benchmarks/claims.benchmark.tsv"
    localrule: True
    params:
        cube=CUBE,
    shell:
        "ktsweep claims {params.cube} --fits {input.fits} --md {output.md}"
        " --csv {output.csv} > {log} 2>&1 && tail -n 1 {log}"
