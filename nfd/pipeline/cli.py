"""``nfd pipeline``: list the plan's jobs, write ``dvc.yaml`` from it, or check that it is up to date."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nfd.cli import verb_help
from nfd.errors import NfdError
from nfd.io import atomic_path
from nfd.pipeline.dvc import STAMP_TEXT, check_dvc_yaml, dvc_yaml, dvc_yaml_text
from nfd.pipeline.plan import Plan, load_params


def run_dvc_yaml(args: argparse.Namespace) -> int:
    if args.check:
        return run_check(args)
    plan = Plan(load_params(args.params, args.preset))
    text = dvc_yaml_text(plan)
    out = Path(args.out)
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    print(f"nfd pipeline: wrote {out} ({len(dvc_yaml(plan)['stages'])} stages, preset {plan.preset})")
    return 0


def run_check(args: argparse.Namespace) -> int:
    stamp = Path(args.stamp) if getattr(args, "stamp", None) else None
    try:
        plan = check_dvc_yaml(args.params, args.out, args.preset)
    except NfdError:
        if stamp is not None:  # an old stamp must not vouch for a file that no longer matches
            stamp.unlink(missing_ok=True)
        raise
    if stamp is not None:
        with atomic_path(stamp) as tmp:
            tmp.write_text(STAMP_TEXT)
    print(f"nfd pipeline: {args.out} is up to date with {args.params} (preset {plan.preset})")
    return 0


def run_list(args: argparse.Namespace) -> int:
    plan = Plan(load_params(args.params, args.preset))
    for st in plan.stages:
        print(json.dumps({"name": st.name, "cmd": st.shell, "deps": st.deps, "outs": st.outs}))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pipeline",
        help=verb_help(__name__),
        description="Inspect the plan derived from params.yaml, or write dvc.yaml from it.",
    )
    verbs = p.add_subparsers(dest="pipeline_verb", metavar="ACTION")
    verbs.required = True
    for name, func, helptext in (
        ("dvc-yaml", run_dvc_yaml, "write dvc.yaml from params.yaml"),
        (
            "check",
            run_check,
            "check that params.yaml is valid and dvc.yaml is the file it writes (DVC's first "
            "stage runs this after every edit of params.yaml)",
        ),
        ("list", run_list, "print every job as a JSON line"),
    ):
        q = verbs.add_parser(name, help=helptext, description=helptext)
        q.add_argument("--params", default="params.yaml", help="pipeline config (default: params.yaml)")
        q.add_argument("--preset", default=None, help="override the preset chosen in params.yaml")
        if name in ("dvc-yaml", "check"):
            q.add_argument("--out", default="dvc.yaml", help="the dvc.yaml to write or check (default: dvc.yaml)")
        if name == "dvc-yaml":
            q.add_argument("--check", action="store_true", help="only check that the file is up to date")
        if name == "check":
            q.add_argument(
                "--stamp",
                default=None,
                metavar="FILE",
                help="when the check passes, write this file (the output of DVC's check stage)",
            )
        q.set_defaults(func=func)
