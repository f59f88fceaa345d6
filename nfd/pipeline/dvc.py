"""``dvc.yaml`` written from the plan, and the check that keeps DVC from running a stale one.

DVC runs the commands written into ``dvc.yaml``, which go stale when ``params.yaml`` is edited. So every DVC stage
depends on the output of a first stage, ``check`` (``nfd pipeline check``), which depends on ``params.yaml`` itself:
after any edit DVC runs the check before anything else, and the check stops the run with one line (invalid params,
or "dvc.yaml is stale ... run `nfd pipeline dvc-yaml`") instead of letting a stale command run and be recorded as
up to date. Its output is not cached, so DVC's run cache can never replay an old successful check.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from nfd.errors import NfdError
from nfd.pipeline.plan import Plan, load_params

REPORT = "results/report.html"
"""The HTML report (every figure, table and progress curve with its caption), built by ``snakemake --report``."""
REPORT_CMD = f"snakemake --report {REPORT}"
"""Snakemake builds the report in its own mode, not as a job; DVC runs the same command as its last stage."""
CHECK_STAGE = "check"
CHECK_STAMP = "results/pipeline_check.txt"
"""Written by the ``check`` stage when dvc.yaml matches params.yaml; every other DVC stage depends on it, so DVC
orders the check first. Its text never changes, so a passing check re-runs nothing downstream."""
STAMP_TEXT = "dvc.yaml matches params.yaml\n"
CHECK_CMD = f"nfd pipeline check --stamp {CHECK_STAMP}"
CHECK_DEPS = ["params.yaml", "nfd/schemas/config.schema.yaml"]
HEADER = (
    "# Written by `nfd pipeline dvc-yaml` from params.yaml (preset: {preset}); do not edit by hand.\n"
    "# Stage 'check' stops `dvc repro` when params.yaml no longer matches this file. For a dry run use\n"
    "# `dvc repro --dry --force-downstream`: a plain --dry stops at the first stage whose inputs it did not make.\n"
)


def dvc_yaml(plan: Plan) -> dict[str, Any]:
    """The stages as a ``dvc.yaml`` mapping (same commands and outputs as the Snakemake jobs), after the
    ``check`` stage that every one of them depends on (see the module docstring)."""
    # the check's output is not cached, so that DVC's run cache cannot restore it without running the check
    stages: dict[str, Any] = {
        CHECK_STAGE: {"cmd": CHECK_CMD, "deps": list(CHECK_DEPS), "outs": [{CHECK_STAMP: {"cache": False}}]}
    }
    plots: list[dict[str, Any]] = []
    for st in plan.stages:
        entry: dict[str, Any] = {"cmd": st.shell}
        entry["deps"] = [*st.deps, CHECK_STAMP]
        entry["params"] = ["preset", *st.params]
        entry["outs"] = [o for o in st.outs if o not in st.plots and o not in st.metrics]
        if st.plots:
            entry["plots"] = list(st.plots)
            what = {"train": "training losses", "progress": "sample quality over training"}[st.rule]
            plots += [{f"{what}: {st.wildcards['exp']}": {"x": "step", "y": {p: st.plot_y}}} for p in st.plots]
        if st.metrics:
            entry["metrics"] = list(st.metrics)
        stages[st.name] = entry
    stages["report"] = {
        "cmd": REPORT_CMD,
        "deps": [*plan.targets(), "workflow/report", CHECK_STAMP],
        "params": ["preset"],
        "outs": [REPORT],
    }
    return {"stages": stages, "plots": plots}


def dvc_yaml_text(plan: Plan) -> str:
    """The ``dvc.yaml`` file of the plan, with its header."""
    return HEADER.format(preset=plan.preset) + yaml.safe_dump(dvc_yaml(plan), sort_keys=False, width=1000)


def _names(names: list[str], limit: int = 3) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def stale_reason(old_text: str, plan: Plan) -> str | None:
    """Why a ``dvc.yaml`` text differs from the one ``plan`` writes (None if it does not), in a few words: the
    preset, or which stages the edit added, removed or changed."""
    new_text = dvc_yaml_text(plan)
    if old_text == new_text:
        return None
    m = re.search(r"\(preset: ([^)]+)\)", old_text.split("\n", 1)[0])
    if m and m.group(1) != plan.preset:
        return f"preset changed: {m.group(1)} -> {plan.preset}"
    try:
        old = yaml.safe_load(old_text)
        old_stages = dict(old["stages"])
    except (yaml.YAMLError, TypeError, KeyError):
        return "not a dvc.yaml written by `nfd pipeline dvc-yaml`"
    new_stages = dvc_yaml(plan)["stages"]
    parts = []
    added = [n for n in new_stages if n not in old_stages]
    removed = [n for n in old_stages if n not in new_stages]
    changed = [n for n in new_stages if n in old_stages and new_stages[n] != old_stages[n]]
    for what, names in (("changed", changed), ("added", added), ("removed", removed)):
        if names:
            parts.append(f"stage{'s' if len(names) > 1 else ''} {what}: {_names(names)}")
    return "; ".join(parts) or "edited by hand"


def check_dvc_yaml(params: str | Path, dvc_yaml: str | Path, preset: str | None = None) -> Plan:
    """The plan of ``params``, if ``dvc_yaml`` is the file it writes; otherwise a one-line error that says why and
    what to run."""
    plan = Plan(load_params(params, preset))
    out = Path(dvc_yaml)
    if not out.is_file():
        raise NfdError(f"{out} not found: run `nfd pipeline dvc-yaml`")
    reason = stale_reason(out.read_text(), plan)
    if reason is not None:
        raise NfdError(f"{out} is stale for {params} ({reason}): run `nfd pipeline dvc-yaml`")
    return plan
