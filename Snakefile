# Entry point: config, schema check, the default target (every figure and table of the preset) and the rules
# in workflow/rules/; every command comes from nfd.pipeline (see README).
from snakemake.utils import min_version, validate

min_version("8.20")

configfile: "params.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"


rule all:
    input:
        plan.targets(),

include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/tables.smk"
