# Analysis of the finished cube: exponent fits against the theory, figures.


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
