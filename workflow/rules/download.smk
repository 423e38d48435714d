# Stage 1: inputs. The demo config writes a synthetic world with the real names,
# formats and quirks; the production config downloads and verifies each source.

if CFG.demo_world:

    rule demo_world:
        output:
            CFG.datasets.coarse.historical,
            CFG.datasets.coarse.static,
            list(CFG.datasets.coarse.scenarios.values()),
            CFG.datasets.fine.archive,
            [layer.path for layer in CFG.datasets.static],
        params:
            config=CONFIG_ARGS,
            config_hash=slice_hash(CFG, "demo_world"),
        log:
            f"{LOGS}/demo_world.log",
        benchmark:
            f"{BENCHMARKS}/demo_world.tsv"
        conda:
            "../envs/ai4land.yaml"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=20,
        shell:
            "ai4land demo-world {params.config} > {log} 2>&1"

else:
    for _key, _source in CFG.sources.items():

        rule:
            name:
                f"download_{_key}"
            output:
                _source.path,
            params:
                config=CONFIG_ARGS,
                key=_key,
                config_hash=slice_hash(CFG, "download", item=_key),
            log:
                f"{LOGS}/download/{_key}.log",
            retries: 3
            conda:
                "../envs/ai4land.yaml"
            threads: 1
            resources:
                mem_mb=1000,
                runtime=600,
            shell:
                "ai4land download {params.config} --only {params.key} > {log} 2>&1"
