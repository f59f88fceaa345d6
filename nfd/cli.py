"""The ``nfd`` command. Each verb lives beside the code it drives and registers itself here.

Every Snakemake rule and every DVC stage calls exactly one of these verbs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from nfd import __version__
from nfd.errors import NfdError

VERB_MODULES = [
    "nfd.training.trainer",
    "nfd.sampling.sample",
    "nfd.training.fit_image",
    "nfd.data.cli",
    "nfd.viz.mesh",
    "nfd.viz.render",
    "nfd.viz.figures",
    "nfd.metrics.cli",
    "nfd.report.tables",
    "nfd.report.bench",
    "nfd.training.sweep",
    "nfd.pipeline",
]
"""Modules that define ``register(subparsers)``; each adds one verb (or a verb group) with full ``--help``."""


def int_at_least(low: int):
    """An argparse ``type`` for integers >= ``low``, with a one-line error otherwise (shared by the verbs)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nfd",
        description="Generative models as distributions of functions: data, training, sampling, figures, metrics.",
    )
    parser.add_argument("--version", action="version", version=f"nfd {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for name in VERB_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except NfdError as e:
        print(f"nfd {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nfd {args.verb}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
