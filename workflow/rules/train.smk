# Stage 4: U-Net training under torchrun (DDP: gloo on CPU, nccl on GPU).
# On Slurm the profile sets nodes/GPUs; the rendezvous comes from the allocation.


rule train:
    input:
        cube=CUBE_PARTS,
        split=rules.split.output.split,
    output:
        weights=f"{MODEL_DIR}/model.pt",
        card=f"{MODEL_DIR}/model_card.json",
        metrics=f"{MODEL_DIR}/metrics.csv",
    params:
        config=CONFIG_ARGS,
        model=lambda wildcards, output: os.path.dirname(output.weights),
        nproc=CFG.train.nproc,
    log:
        f"{LOGS}/train.log",
    benchmark:
        f"{BENCHMARKS}/train.tsv"
    conda:
        "../envs/ai4land.yaml"
    threads: CFG.train.nproc
    resources:
        mem_mb=8000,
        runtime=720,
    shell:
        "torchrun --standalone --nproc_per_node={params.nproc} -m ai4land train {params.config}"
        " --split {input.split} --output {params.model} > {log} 2>&1"
