# Stage 5: harmonised chains of the U-Net and the baselines on held-out blocks and years.
from ai4land.evaluate.models import evaluated_models

EVAL = f"{RESULTS}/eval"
EVAL_FIGURES = {
    # figure name: its caption in workflow/report/
    "confusion_matrix": "evaluate_confusion_matrix.rst",
    "per_class_iou": "evaluate_per_class_iou.rst",
    "by_year": "evaluate_by_year.rst",
    "tiles": "evaluate_tiles.rst",
    "class_area": "evaluate_class_area.rst",
    "calibration": "evaluate_calibration.rst",
    "change_fom": "evaluate_change_fom.rst",
}


rule evaluate:
    input:
        cube=CUBE_PARTS,
        split=rules.split.output.split,
        weights=rules.train.output.weights,
        card=rules.train.output.card,
    output:
        metrics=f"{EVAL}/metrics.json",
        # the CLI writes the tables beside metrics.json and the figures in figures/
        tables=[
            f"{EVAL}/{name}.csv"
            for name in ("metrics_by_model", "metrics_by_year", "metrics_by_block", "per_class_iou")
        ],
        figures=[
            report(f"{EVAL}/figures/{name}.png", caption=f"../report/{caption}",
                   category="Evaluation")
            for name, caption in EVAL_FIGURES.items()
        ],
    params:
        config=CONFIG_ARGS,
        config_hash=slice_hash(CFG, "evaluate"),
        # the models scored (the report's captions name only these)
        models=evaluated_models(CFG),
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
        " --output {output.metrics} > {log} 2>&1"
