# Stage 4: U-Net training under torchrun (DDP: gloo on CPU, nccl on GPU).
# `ai4land torchrun` runs torchrun --standalone on one machine; inside a Slurm job that
# spans several nodes it starts one torchrun agent per node with srun and takes the
# c10d rendezvous from the allocation (first host). train.nproc = processes per node.
# A rerun resumes from checkpoints/last.pt when the training settings are unchanged (a
# killed job) and starts afresh, setting the old checkpoints aside, when they changed
# (Snakemake reruns this rule because config_hash changed).


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
        config_hash=slice_hash(CFG, "train"),
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
        "ai4land torchrun --nproc {params.nproc} -- train {params.config}"
        " --split {input.split} --output {params.model} --restart-if-changed > {log} 2>&1"
