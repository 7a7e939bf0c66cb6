# The sweep: create the cube, compute it chunk by chunk, verify and publish; repair first
# when the look before planning found damage.


rule init_cube:
    output:
        f"{COMMITS}/init.json",
    log:
        f"{LOGS}/init_cube.log",
    localrule: True
    run:
        steps.init(LAYOUT, CUBE_DIR, output[0], log[0])


checkpoint repair:
    output:
        f"{OUT}/.ktsweep/repairs/{{run}}.json",
    log:
        f"{LOGS}/repair/{{run}}.log",
    localrule: True
    run:
        steps.repair_rule(
            LAYOUT, published(), "results", output[0], VERIFY_FULL, log[0]
        )


rule simulate:
    input:
        init=ancient(rules.init_cube.output),
    output:
        f"{COMMITS}/{{chunk}}.json",
    log:
        f"{LOGS}/simulate/{{chunk}}.log",
    benchmark:
        f"{LOGS}/benchmarks/simulate.{{chunk}}.benchmark.tsv"
    wildcard_constraints:
        chunk=r"c\d+",
    threads: simulate_threads()
    resources:
        mem_mb=lambda wc, attempt: LAYOUT.job_mem_mb * attempt,
        runtime=lambda wc, attempt: LAYOUT.job_runtime * attempt,
        gpu=simulate_gpus(),
    params:
        cube=CUBE_DIR,
    # The job's progress goes to its log (follow it with `tail -f`, or the whole sweep with
    # `ktsweep watch results/NAME`); its last line, the chunk's and the sweep's progress, is
    # echoed into Snakemake's own output. ktsweep_run_chunk: common.smk's shell prefix.
    shell:
        "ktsweep_run_chunk {params.cube} {wildcards.chunk} --threads {threads} "
        "> {log} 2>&1 && tail -n 1 {log}"


rule cube:
    input:
        chunks=chunk_markers,
    output:
        f"{OUT}/cube.json",
    log:
        f"{LOGS}/cube.log",
    benchmark:
        f"{LOGS}/benchmarks/cube.benchmark.tsv"
    localrule: True
    params:
        cube=CUBE_DIR,
        link=CUBE,
    shell:
        "ktsweep summarize {params.cube} --link {params.link} --out {output} "
        "> {log} 2>&1 && tail -n 1 {log}"
