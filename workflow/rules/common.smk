# The plan of the active preset; each rule takes its command, inputs and outputs from it. A bad config (schema,
# unknown preset) stops Snakemake with the one line of nfd.pipeline instead of a traceback.
import sys

from nfd.errors import NfdError
from nfd.pipeline import Plan

try:
    plan = Plan(config)
except NfdError as e:
    sys.exit(f"snakemake: error: {e}")


wildcard_constraints:
    dataset=r"[A-Za-z0-9_]+",
    exp=r"[A-Za-z0-9_]+",
    tag=r"r\d+_n\d+_s\d+",
    variant=r"rff|plain",
    fig=r"fig\d+",
    table=r"t\d+",


def deps(rule_name):
    return lambda wc: plan.get(rule_name, wc).deps


def cmd(rule_name):
    return lambda wc: plan.get(rule_name, wc).shell


def caption(rule_name):
    return lambda wc: plan.caption(rule_name, wc)
