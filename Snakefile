# ai4land: downscale coarse land-use scenarios to annual 1 km land-use maps.
#
#   make demo    (snakemake --cores 2 --configfile config/demo.yaml)   # demo world
#   snakemake --profile profiles/slurm --configfile config/config.yaml   # production
#
# The config files given with --configfile are the whole config (several merge in order,
# later files win; unset settings take the schema's defaults, src/ai4land/config.py),
# exactly what `ai4land config check FILE...` prints. Without --configfile the run is
# the demo world (config/demo.yaml). profiles/default/ (rerun-incomplete) is used unless
# --workflow-profile names another, so rerunning a killed command resumes it.
# The Snakefile holds no logic: rules shell out to `ai4land <stage>`.

import sys

from snakemake.utils import min_version

min_version("9.0")


if not workflow.overwrite_configfiles:

    configfile: f"{workflow.basedir}/config/demo.yaml"

    if workflow.is_main_process:
        print("ai4land: no --configfile given: running the demo world (config/demo.yaml)",
              file=sys.stderr)


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/split.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/publish.smk"


rule all:
    default_target: True
    input:
        rules.publish.output if CFG.product_years else [],
        rules.evaluate.output,
