# The sweep: lay out the cube, compute it chunk by chunk, check it is complete.


rule init_cube:
    output:
        f"{STATE}/layout-{KEY}.json",
    log:
        f"{LOGS}/init_cube.log",
    params:
        layout=LAYOUT.to_json(),
        cube=CUBE,
    localrule: True
    shell:
        "{KTSWEEP} init-cube {params.layout:q} --cube {params.cube} --marker {output} > {log} 2>&1"


rule simulate:
    input:
        rules.init_cube.output,
    output:
        f"{STATE}/{KEY}/{{chunk}}.json",
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
        cube=CUBE,
        scheduler=scheduler_flag(),
    shell:
        "{KTSWEEP} run-chunk {input} {wildcards.chunk} --cube {params.cube} "
        "--threads {threads} {params.scheduler} --marker {output} > {log} 2>&1"


rule cube:
    input:
        layout=rules.init_cube.output,
        chunks=chunk_markers,
    output:
        f"{OUT}/cube.json",
    log:
        f"{LOGS}/cube.log",
    params:
        cube=CUBE,
    localrule: True
    shell:
        "{KTSWEEP} summarize {input.layout} --cube {params.cube} "
        "--markers {input.chunks} --out {output} > {log} 2>&1"
