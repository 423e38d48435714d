# Stage 5: the U-Net beside its baselines on held-out blocks and years.


rule evaluate:
    input:
        cube=CUBE_PARTS,
        split=rules.split.output.split,
        weights=rules.train.output.weights,
        card=rules.train.output.card,
    output:
        f"{RESULTS}/eval/metrics.json",
    params:
        config=CONFIG_ARGS,
        model=lambda wildcards, input: os.path.dirname(input.weights),
    log:
        f"{LOGS}/evaluate.log",
    benchmark:
        f"{BENCHMARKS}/evaluate.tsv"
    conda:
        "../envs/ai4land.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    shell:
        "ai4land evaluate {params.config} --model {params.model} --split {input.split}"
        " --output {output} > {log} 2>&1"
