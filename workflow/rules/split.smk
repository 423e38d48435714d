# Stage 3: spatial blocks chosen by farthest point sampling, plus the temporal split.


rule split:
    input:
        grids=rules.prepare_target.output.grids,
        target=rules.prepare_target.output.target,
        static=rules.prepare_static.output[0],
    output:
        split=f"{RESULTS}/split/split.json",
        figure=report(f"{RESULTS}/split/split.png", caption="../report/split.rst", category="Split"),
    params:
        config=CONFIG_ARGS,
        config_hash=slice_hash(CFG, "split"),
    log:
        f"{LOGS}/split.log",
    conda:
        "../envs/ai4land.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    shell:
        "ai4land split {params.config} --output {output.split} --figure {output.figure} > {log} 2>&1"
