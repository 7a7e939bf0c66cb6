# The sweep: create the cube, compute it chunk by chunk, verify and publish.


rule init_cube:
    input:
        layout=ancient(LAYOUT_FILE),
    output:
        f"{COMMITS}/init.json",
    log:
        f"{LOGS}/init_cube.log",
    localrule: True
    params:
        ktsweep=KTSWEEP,
        cube=CUBE_DIR,
    shell:
        "{params.ktsweep} init-cube {input.layout} --cube {params.cube} > {log} 2>&1"


rule simulate:
    input:
        layout=ancient(LAYOUT_FILE),
        init=rules.init_cube.output,
    output:
        f"{COMMITS}/{{chunk}}.json",
    log:
        f"{LOGS}/simulate/{{chunk}}.log",
    wildcard_constraints:
        chunk=r"c\d+",
    threads: simulate_threads()
    resources:
        mem_mb=lambda wc, attempt: LAYOUT.config.jobs.mem_mb * attempt,
        runtime=lambda wc, attempt: LAYOUT.config.jobs.runtime * attempt,
        gpu=simulate_gpus(),
    params:
        ktsweep=KTSWEEP,
        cube=CUBE_DIR,
        scheduler=scheduler_flag(),
    # The job's progress goes to its log (follow it with `tail -f`, or the whole sweep with
    # `ktsweep watch results/NAME`); its last line, the chunk's and the sweep's progress, is
    # echoed into Snakemake's own output.
    shell:
        "{params.ktsweep} run-chunk {input.layout} {wildcards.chunk} --cube {params.cube} "
        "--threads {threads} {params.scheduler} > {log} 2>&1 && tail -n 1 {log}"


rule cube:
    input:
        layout=ancient(LAYOUT_FILE),
        chunks=chunk_markers,
    output:
        f"{OUT}/cube.json",
    log:
        f"{LOGS}/cube.log",
    localrule: True
    params:
        ktsweep=KTSWEEP,
        cube=CUBE_DIR,
        link=CUBE,
    shell:
        "{params.ktsweep} summarize {input.layout} --cube {params.cube} --link {params.link} "
        "--out {output} > {log} 2>&1"
