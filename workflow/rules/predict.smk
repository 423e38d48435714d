# Stage 6: one job per (scenario, year). Each job's prior is the neighbouring year's
# map, so every scenario is a chain in the DAG and scenarios run in parallel.


rule init_store:
    input:
        grids=rules.prepare_target.output.grids,
    output:
        STORE_MARKER,
    params:
        config=CONFIG_ARGS,
        config_hash=slice_hash(CFG, "init_store"),
        store=lambda wildcards, output: store_of(output[0]),
    log:
        f"{LOGS}/predict/init_store_{{scenario}}.log",
    conda:
        "../envs/ai4land.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "ai4land init-store {params.config} --store {params.store} --scenario {wildcards.scenario}"
        " > {log} 2>&1"


rule predict:
    input:
        cube=scenario_cube,
        weights=rules.train.output.weights,
        card=rules.train.output.card,
        store=STORE_MARKER,
        prior=prior_map,
    output:
        classes=f"{RESULTS}/maps/{{scenario}}/ai4land_{{scenario}}_{{year}}.tif",
        probability=f"{RESULTS}/maps/{{scenario}}/ai4land_{{scenario}}_{{year}}_probability.tif",
        entropy=f"{RESULTS}/maps/{{scenario}}/ai4land_{{scenario}}_{{year}}_entropy.tif",
        report=f"{RESULTS}/maps/{{scenario}}/ai4land_{{scenario}}_{{year}}.json",
    params:
        config=CONFIG_ARGS,
        config_hash=slice_hash(CFG, "predict"),
        model=lambda wildcards, input: os.path.dirname(input.weights),
        store=lambda wildcards, input: store_of(input.store),
        prior=prior_arg,
    log:
        f"{LOGS}/predict/{{scenario}}_{{year}}.log",
    benchmark:
        f"{BENCHMARKS}/predict_{{scenario}}_{{year}}.tsv"
    group:
        "predict"
    conda:
        "../envs/ai4land.yaml"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=60,
    shell:
        "ai4land predict {params.config} --scenario {wildcards.scenario} --year {wildcards.year}"
        " --model {params.model} {params.prior} --output {output.classes} --store {params.store}"
        " > {log} 2>&1"
