# The plan of the active preset; each rule takes its command, inputs and outputs from it.
from nfd.pipeline import Plan

plan = Plan(config)


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
