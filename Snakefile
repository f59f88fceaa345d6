# Entry point: config, the default target (every figure and table of the preset) and the rules in
# workflow/rules/; every command comes from nfd.pipeline.plan (see README). The plan is built from the config each time
# Snakemake parses this file, so an edit of params.yaml always takes effect; common.smk checks the config against
# the package's nfd/schemas/config.schema.yaml (nfd.pipeline.validate_params) and stops with one line naming the bad key.
from snakemake.utils import min_version

min_version("8.20")

configfile: "params.yaml"


include: "workflow/rules/common.smk"


rule all:
    input:
        plan.targets(),

include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/tables.smk"
