# Stage 2: the analysis-ready cube. Coarse data stay coarse; static layers are warped
# to the fine grid; target maps become one chunked Zarr array.


rule prepare_target:
    input:
        fine=CFG.datasets.fine.archive or [],
        coarse=CFG.datasets.coarse.historical,
    output:
        grids=f"{CUBE}/grids.json",
        target=directory(f"{CUBE}/target.zarr"),
    params:
        config=CONFIG_ARGS,
        config_hash=slice_hash(CFG, "prepare_target"),
    log:
        f"{LOGS}/prepare/target.log",
    benchmark:
        f"{BENCHMARKS}/prepare_target.tsv"
    conda:
        "../envs/ai4land.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
    shell:
        "ai4land prepare target {params.config} > {log} 2>&1"


rule prepare_static:
    input:
        grids=rules.prepare_target.output.grids,
        target=rules.prepare_target.output.target,
        layers=[layer.path for layer in CFG.datasets.static],
    output:
        directory(f"{CUBE}/static.zarr"),
    params:
        config=CONFIG_ARGS,
        config_hash=slice_hash(CFG, "prepare_static"),
    log:
        f"{LOGS}/prepare/static.log",
    benchmark:
        f"{BENCHMARKS}/prepare_static.tsv"
    conda:
        "../envs/ai4land.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
    shell:
        "ai4land prepare static {params.config} > {log} 2>&1"


rule prepare_coarse:
    input:
        grids=rules.prepare_target.output.grids,
        target=rules.prepare_target.output.target,
        states=coarse_source,
        static=CFG.datasets.coarse.static or [],
    output:
        directory(f"{CUBE}/coarse/{{scenario}}.zarr"),
    params:
        config=CONFIG_ARGS,
        config_hash=slice_hash(CFG, "prepare_coarse"),
    log:
        f"{LOGS}/prepare/coarse_{{scenario}}.log",
    benchmark:
        f"{BENCHMARKS}/prepare_coarse_{{scenario}}.tsv"
    conda:
        "../envs/ai4land.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    shell:
        "ai4land prepare coarse {params.config} --scenario {wildcards.scenario} > {log} 2>&1"


# The cube a job reads: target, static and the historical coarse cube (the observed
# years training and evaluation use); a prediction adds its scenario's cube
# (scenario_cube), so only the SSPs listed in `scenarios:` are prepared and downloaded.
CUBE_PARTS = [
    rules.prepare_target.output.grids,
    rules.prepare_target.output.target,
    rules.prepare_static.output[0],
    f"{CUBE}/coarse/historical.zarr",
]
