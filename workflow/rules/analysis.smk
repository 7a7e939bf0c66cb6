# Analysis of the finished cube: exponent fits against the theory, figures, the claim table.


rule fits:
    input:
        rules.cube.output,
    output:
        csv=report(f"{OUT}/fits.csv", caption="../report/fits.rst", category="Fits"),
        md=f"{OUT}/fits.md",
    log:
        f"{LOGS}/fits.log",
    localrule: True
    params:
        ktsweep=KTSWEEP,
        cube=CUBE,
    shell:
        "{params.ktsweep} fits {params.cube} --csv {output.csv} --md {output.md} > {log} 2>&1"


rule figures:
    input:
        rules.cube.output,
    output:
        figure_outputs(),
    log:
        f"{LOGS}/figures.log",
    localrule: True
    params:
        ktsweep=KTSWEEP,
        cube=CUBE,
        outdir=lambda wildcards, output: os.path.dirname(output[0]),
    shell:
        "{params.ktsweep} figures {params.cube} --outdir {params.outdir} > {log} 2>&1"


rule claims:
    input:
        cube=rules.cube.output,
        fits=rules.fits.output.csv,
    output:
        md=report(f"{OUT}/claims.md", caption="../report/claims.rst", category="Claims"),
        csv=report(
            f"{OUT}/claims.csv", caption="../report/claims.rst", category="Claims"
        ),
    log:
        f"{LOGS}/claims.log",
    localrule: True
    params:
        ktsweep=KTSWEEP,
        cube=CUBE,
    shell:
        "{params.ktsweep} claims {params.cube} --fits {input.fits} --md {output.md}"
        " --csv {output.csv} > {log} 2>&1"
