# Analysis of the finished cube: exponent fits against the theory, figures.


rule fits:
    input:
        rules.cube.output,
    output:
        csv=report(f"{OUT}/fits.csv", caption="../report/fits.rst", category="Fits"),
        md=f"{OUT}/fits.md",
    log:
        f"{LOGS}/fits.log",
    params:
        cube=CUBE,
    localrule: True
    shell:
        "{KTSWEEP} fits {params.cube} --csv {output.csv} --md {output.md} > {log} 2>&1"


rule figures:
    input:
        rules.cube.output,
    output:
        figure_outputs(),
    log:
        f"{LOGS}/figures.log",
    params:
        cube=CUBE,
        outdir=f"{OUT}/figures",
    localrule: True
    shell:
        "{KTSWEEP} figures {params.cube} --outdir {params.outdir} > {log} 2>&1"
