"""The ``nfd`` command. Each verb lives beside the code it drives and registers itself here.

Every Snakemake rule and every DVC stage calls exactly one of these verbs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from typing import Any

from nfd import ALLOCATOR, __version__, run_under_jemalloc
from nfd.errors import NfdError

VERBS: dict[str, tuple[str, str]] = {
    "nfd.training.train_cli": ("train", "train an NFD (or a baseline) on a processed HDF5 data set"),
    "nfd.sampling.sample": ("sample", "sample functions and evaluate them on a grid of any resolution"),
    "nfd.training.fit_image": ("fit-image", "Fig. 2: fit one image with an MLP, with or without Fourier features"),
    "nfd.data.cli": ("data", "download and preprocess datasets into nfd-pointcloud HDF5; synthetic chairs"),
    "nfd.viz.mesh": ("mesh", "mesh 3D occupancy samples with marching cubes"),
    "nfd.viz.render": ("render", "render mesh files to PNG images"),
    "nfd.viz.figures": ("figure", "compose one paper figure from samples and renders"),
    "nfd.metrics.cli": ("evaluate", "train the MNIST classifier; score samples (MNIST, 3D shapes, FID)"),
    "nfd.report.tables": ("table", "write a table of the reproduction (T1-T4) as CSV and Markdown"),
    "nfd.report.bench": ("bench", "time full training steps (fast vs naive path) or sampling at scale"),
    "nfd.training.sweep": ("sweep", "train a preset over seeds x thread counts, score every run, write one table"),
    "nfd.pipeline.cli": ("pipeline", "the reproduction plan shared by Snakemake and DVC"),
}
"""Module -> (verb, one-line help) of each module that defines ``register(subparsers)`` (one verb or verb group
with full ``--help``). The help lives here so that ``nfd --help`` lists every verb without importing its module
(torch, matplotlib and trimesh load only for the verb that runs)."""

VERB_MODULES = list(VERBS)
"""The modules whose verbs ``nfd`` offers, in ``--help`` order."""


class HelpFormatter(argparse.HelpFormatter):
    """Every ``--help`` shows defaults one way, ``(default: X)`` at the end of an option's help, except the
    uninformative ones (no default, off switches, required options) and where the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or default is None
            or default is False
            or default in ([], "")
            or action.required
            or default is argparse.SUPPRESS
            or "default" in text
        ):
            return action.help
        shown = " ".join(map(str, default)) if isinstance(default, list | tuple) else "%(default)s"
        return f"{text} (default: {shown})"


class RawHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """:class:`HelpFormatter` for a description laid out by hand (line breaks and tables kept)."""


class ArgumentParser(argparse.ArgumentParser):
    """The parser class of ``nfd`` and all its verbs (sub-parsers inherit it): :class:`HelpFormatter` by default."""

    def __init__(self, *args, formatter_class: type[argparse.HelpFormatter] = HelpFormatter, **kwargs) -> None:
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


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


def verb_help(module: str) -> str:
    """The one-line help of the verb that ``module`` registers (see :data:`VERBS`)."""
    return VERBS[module][1]


def requested_verb(argv: list[str]) -> str:
    """The verb of a command line (its first word that is not an option; the top-level options take no values), or
    "" when there is none (``nfd --help``)."""
    return next((a for a in argv if not a.startswith("-")), "")


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The ``nfd`` parser. ``verb=None`` registers every verb in full; otherwise only the module of ``verb`` is imported
    and registered, and the other verbs are listed by name and help alone (so ``nfd --help`` and ``nfd VERB`` import
    only what they need)."""
    parser = ArgumentParser(
        prog="nfd",
        description="Generative models as distributions of functions: data, training, sampling, figures, metrics.",
    )
    parser.add_argument("--version", action="version", version=f"nfd {__version__} (allocator {ALLOCATOR})")
    parser.add_argument(
        "-v",
        "--verbose",
        dest="log_verbose",
        action="count",
        default=0,
        help="log more (-v: progress notes, -vv: debug); before the verb",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        dest="log_quiet",
        action="count",
        default=0,
        help="log errors only, no progress bars; before the verb",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for name in VERB_MODULES:
        name_verb, help_text = VERBS[name]
        if verb is None or verb == name_verb:
            importlib.import_module(name).register(sub)
        else:
            sub.add_parser(name_verb, help=help_text)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to the ``sys.stderr`` of the moment (a handler made once must follow a redirected stderr)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


_HANDLER = _StderrHandler()
_HANDLER.setFormatter(logging.Formatter("nfd: %(message)s"))


def configure_logging(verbose: int = 0, quiet: int = 0) -> None:
    """The one logging setup of the ``nfd`` command: warnings by default, -v info, -vv debug, -q errors only.

    Records of the ``nfd.*`` loggers and Python warnings (``logging.captureWarnings``, so a library's warning is shown
    once, as a log line) go to stderr; calling it again only changes the level."""
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    for name in ("nfd", "py.warnings"):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if _HANDLER not in logger.handlers:
            logger.addHandler(_HANDLER)
    logging.captureWarnings(True)


class _StartUpSignals:
    """While the verb's module is imported (torch, ...: seconds in which Ctrl-C is likely), SIGINT and SIGTERM only
    record themselves. A KeyboardInterrupt raised at that moment could land in a finaliser run by the garbage
    collector, where Python prints and drops it, and the command would go on as if never interrupted; a recorded
    signal cannot be lost. Only the main thread can install handlers."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _record(self, signum: int, frame: Any) -> None:
        self.signum = self.signum or signum

    def __enter__(self) -> _StartUpSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._record)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def main(argv: list[str] | None = None) -> int:
    """The ``nfd`` command. Run as the process's entry (``argv`` None), it first re-executes itself under jemalloc
    where one is installed (:func:`nfd.run_under_jemalloc`)."""
    if argv is None:
        run_under_jemalloc([sys.executable, "-m", "nfd", *sys.argv[1:]])
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    with _StartUpSignals() as start_up:
        try:
            parser = build_parser(requested_verb(argv))
        except KeyboardInterrupt:  # a SIGINT sent before the handlers were installed
            start_up.signum = signal.SIGINT
    if start_up.signum is not None:
        print("nfd: interrupted", file=sys.stderr)
        return 128 + start_up.signum
    args = parser.parse_args(argv)
    configure_logging(args.log_verbose, args.log_quiet)
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
