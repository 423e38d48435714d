# Stage 7: STAC catalog, checksums manifest, provenance, the dataset README, quicklooks,
# animations, class-area trajectories and the static web viewer. A config
# that asks for no maps (no years.backward, years.forward or years.observed) has nothing
# to publish: its run ends with the evaluation (rule all).


rule publish:
    input:
        maps=ALL_MAPS,
        metrics=rules.evaluate.output[0],
        weights=rules.train.output.weights,
        store=expand(STORE_MARKER, scenario=CFG.product_scenarios),
        # the viewer's cells (grids.json) and the change since the anchor (observed maps)
        cube=[rules.prepare_target.output.grids, rules.prepare_target.output.target],
    output:
        catalog=f"{RESULTS}/publish/catalog.json",
        manifest=f"{RESULTS}/publish/SHA256SUMS",
        provenance=f"{RESULTS}/publish/provenance.json",
        readme=f"{RESULTS}/publish/README.md",
        viewer=f"{RESULTS}/publish/viewer/index.html",
    params:
        config=CONFIG_ARGS,
        config_hash=slice_hash(CFG, "publish"),
        model=lambda wildcards, input: os.path.dirname(input.weights),
        # beside the outputs, not taken from the inputs: a config with no maps reaches the
        # CLI's one-line "nothing to publish" when the rule is asked for by name
        store=lambda wildcards, output: results_path(output.catalog, "product/ai4land.zarr"),
        maps=lambda wildcards, output: results_path(output.catalog, "maps"),
        output=lambda wildcards, output: os.path.dirname(output.catalog),
    log:
        f"{LOGS}/publish.log",
    benchmark:
        f"{BENCHMARKS}/publish.tsv"
    conda:
        "../envs/ai4land.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "ai4land publish {params.config} --maps {params.maps} --store {params.store} --model {params.model}"
        " --metrics {input.metrics} --output {params.output} > {log} 2>&1"
