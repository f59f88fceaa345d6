"""``nfd train``: the command line of the training loop (its options, its help, its exit codes).

Kept apart from :mod:`nfd.training.trainer` so that the loop reads as training alone; this module turns a command
line into a config and a :class:`~nfd.training.trainer.Trainer`, and an interruption into exit code 128 + signal.
"""

from __future__ import annotations

import argparse
import signal
import sys

from nfd.config import describe
from nfd.presets import resolve
from nfd.training import distributed
from nfd.training.trainer import Interrupted, StopSignals, Trainer


def run_train(args: argparse.Namespace) -> int:
    with StopSignals() as stop:  # before the slow start-up, so no signal falls outside the handler
        cfg = resolve(args.preset, args.config, args.set)
        if args.steps is not None:
            cfg.train.steps = args.steps
        trainer = Trainer(cfg, args.data, args.out, device=args.device)
        try:
            final = trainer.fit(resume=args.resume, progress=not args.quiet, force=args.force, stop=stop)
        except Interrupted as e:
            if trainer.world.is_main:
                print(
                    f"nfd train: interrupted ({signal.Signals(e.signum).name}) after step {e.step}; checkpoint "
                    f"{e.checkpoint}; continue with the same command and --resume",
                    file=sys.stderr,
                )
            return 128 + e.signum
        finally:
            distributed.shutdown(trainer.world)
    if trainer.world.is_main:
        print(f"nfd train: {trainer.step} steps done; checkpoint {final}")
    return 0


def _config_help() -> str:
    rows = describe()
    width = max(len(k) for k, _, _ in rows)
    return "config keys (--set KEY=VALUE):\n" + "\n".join(f"  {k:<{width}}  {d}  (default: {v})" for k, v, d in rows)


def register(sub: argparse._SubParsersAction) -> None:
    from nfd.cli import RawHelpFormatter, int_at_least, verb_help
    from nfd.presets import PRESETS

    p = sub.add_parser(
        "train",
        help=verb_help(__name__),
        description="Train a neural function distribution against a point-cloud discriminator "
        "(or the auto-decoder / set-discriminator baselines). Writes OUT/config.yaml, "
        "OUT/metrics.tsv, OUT/samples/*.png, OUT/checkpoints/last.pt, OUT/snapshots/ "
        "(generator-only snapshots every train.keep_every steps) and OUT/model.pt. Data-parallel over "
        "N GPUs (or N CPU processes): `torchrun --nproc_per_node=N -m nfd train ...`; the "
        "batch is the global batch, split over the processes, and a run resumes with any N.",
        epilog=_config_help(),
        formatter_class=RawHelpFormatter,
    )
    p.add_argument("--preset", required=True, help=f"named preset: {', '.join(PRESETS)}")
    p.add_argument("--data", required=True, help="processed HDF5 file (nfd data prepare ...)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--config", default=None, help="YAML file of overrides applied after the preset")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument(
        "--steps", type=int_at_least(1), default=None, help="number of training steps, >= 1 (overrides train.steps)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/checkpoints/last.pt if it exists (later outputs are dropped)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="start afresh in an OUT that holds another run's outputs, deleting them first",
    )
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (overrides train.device)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)
