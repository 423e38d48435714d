# ai4land: downscale coarse land-use scenarios to annual 1 km land-use maps.
#
#   snakemake --cores 2                                   # demo world (config/demo.yaml)
#   snakemake --profile profiles/slurm --configfile config/config.yaml   # production
#
# The Snakefile holds no logic: rules shell out to `ai4land <stage>`.

from snakemake.utils import min_version

min_version("9.0")


DEFAULT_CONFIG = f"{workflow.basedir}/config/demo.yaml"


configfile: DEFAULT_CONFIG


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
        rules.publish.output,
        rules.evaluate.output,
