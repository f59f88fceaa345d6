"""``nfd table``: the tables of the reproduction, each written as a CSV file and a Markdown twin.

* **T1 sample quality**: every numeric field of the evaluation records given with ``--input`` (``nfd evaluate``
  JSON files), marked ``measured``, beside the published anchors, marked ``published``.
* **T2 resolution independence** (paper Sec. 3.4): time and peak memory of one discriminator step (D on a real and a
  fake batch, non-saturating loss, R1 on the real batch through ``torch.autograd.grad(create_graph=True)``, backward)
  as the grid grows, for the PointConv discriminator on all points, for the same discriminator on K points sampled
  from the grid (how training stays resolution independent), and for a DCGAN-like CNN of the same depth and channels.
* **T3 parameter counts** of every config preset: hypernetwork g_phi, discriminator, and the size of one generated
  function f_theta.
* **T4 Lipschitz constant of the Fourier features** (App. B.3.2, C.2): ||B||, the bound 2 sqrt(2) pi ||B||, and the
  largest Jacobian norm of gamma measured with autograd over random points.

File format. The CSV has one header row, then the data rows, then comment rows starting with ``#``: the table's title
and its notes on the protocol (read it with ``pandas.read_csv(path, comment="#")``). The Markdown twin (same stem,
``.md``) has the title as a caption, the table, and the same notes as footnotes. Both files are written atomically.
Numbers are never invented: a metric that could not be computed shows its "not computed: ..." message, a missing
published number says so.

``--preset`` names a pipeline preset of ``params.yaml`` (tiny, demo, paper) or a config preset (mnist, celebahq64,
...). T1 labels its measured rows with it; T2 measures the discriminator of the config preset it maps to (see
:data:`nfd.report.t2.T2_MODEL`, or ``--model``); T3 and T4 always list every config preset.
"""

from __future__ import annotations

import argparse

from nfd.cli import RawHelpFormatter, int_at_least, verb_help
from nfd.errors import NfdError
from nfd.presets import PRESETS
from nfd.report.t1 import table_t1
from nfd.report.t2 import T2_BATCH, T2_MODEL, table_t2
from nfd.report.t3 import table_t3
from nfd.report.t4 import table_t4
from nfd.report.table import PIPELINE_PRESETS, Table, write_table
from nfd.report.table_registry import TABLES


def build_table(args: argparse.Namespace) -> Table:
    """The table ``args.table`` asks for (the CLI's arguments as a namespace)."""
    preset = args.preset
    if preset not in PIPELINE_PRESETS and preset not in PRESETS:
        raise NfdError(f"unknown preset '{preset}' (known: {', '.join([*PIPELINE_PRESETS, *sorted(PRESETS)])})")
    if args.table != "t1" and args.input:
        raise NfdError(f"--input is read by t1 only, not by {args.table}")
    if args.table == "t1":
        return table_t1(preset, args.input or [])
    if args.table == "t2":
        log = None if args.quiet else (lambda s: print(s, flush=True))
        return table_t2(
            preset,
            max_points=args.max_points,
            repeats=args.repeats,
            batch=args.batch,
            k_points=args.k_points,
            min_resolution=args.min_resolution,
            device=args.device,
            model=args.model,
            log=log,
        )
    if args.table == "t3":
        return table_t3(preset)
    return table_t4(preset, num_points=args.t4_points)


def run_table(args: argparse.Namespace) -> int:
    table = build_table(args)
    out, md = write_table(table, args.out)
    print(f"nfd table: wrote {out} and {md} ({len(table.rows)} rows)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``table`` verb to the ``nfd`` parser."""
    p = sub.add_parser(
        "table",
        help=verb_help(__name__),
        formatter_class=RawHelpFormatter,
        description=(
            "Write one table as FILE.csv and its Markdown twin FILE.md (same stem), both atomically. Each ends with\n"
            "its title and notes on the protocol (CSV: '#' comment rows, read with pandas.read_csv(comment='#')).\n\n"
            + "".join(f"  {name}  " + spec.summary.replace("\n", "\n      ") + "\n" for name, spec in TABLES.items())
            + "\n"
            "--preset is a pipeline preset of params.yaml (tiny, demo, paper) or a config preset\n"
            f"({', '.join(PRESETS)}).\n"
            "T2 measures the discriminator of config preset "
            + ", ".join(f"{k} -> {v}" for k, v in T2_MODEL.items())
            + " (or --model).\n\n"
            "examples:\n"
            "  nfd table t1 --out results/tables/t1.csv --preset demo --input results/eval/mnist.json\n"
            "  nfd table t2 --out results/tables/t2.csv --preset demo --max-points 65536 --repeats 3\n"
            "  nfd table t3 --out results/tables/t3.csv --preset demo"
        ),
    )
    p.add_argument("table", choices=list(TABLES), help=f"which table: {', '.join(TABLES)}")
    p.add_argument("--out", required=True, metavar="FILE.csv", help="CSV to write; FILE.md is written beside it")
    p.add_argument(
        "--preset",
        default="demo",
        metavar="NAME",
        help="pipeline preset (tiny, demo, paper) or config preset (default: demo)",
    )
    p.add_argument(
        "--input",
        action="extend",
        nargs="+",
        default=[],
        metavar="FILE",
        help="t1: evaluation JSON files from 'nfd evaluate' (repeatable); the file stem names the experiment",
    )
    p.add_argument(
        "--max-points",
        type=int_at_least(1),
        default=65536,
        metavar="N",
        help="t2: largest grid, in points (default: 65536 = 256^2)",
    )
    p.add_argument(
        "--repeats",
        type=int_at_least(1),
        default=3,
        metavar="R",
        help="t2: timed runs per measurement, the median is reported (default: 3)",
    )
    p.add_argument(
        "--batch",
        type=int_at_least(1),
        default=None,
        metavar="B",
        help="t2: real and fake sets per discriminator step (default: "
        + ", ".join(f"{k} {v}" for k, v in T2_BATCH.items())
        + ", 1 for a config preset)",
    )
    p.add_argument(
        "--k-points",
        type=int_at_least(1),
        default=4096,
        metavar="K",
        help="t2: points sampled from the grid for the resolution-independent column (default: 4096)",
    )
    p.add_argument(
        "--min-resolution",
        type=int_at_least(1),
        default=None,
        metavar="R",
        help="t2: smallest grid side (default: 16 in 2D, 8 in 3D; at least 2^(levels + 1))",
    )
    p.add_argument(
        "--model",
        default=None,
        metavar="PRESET",
        help="t2: config preset whose discriminator to measure (default: from --preset, see above)",
    )
    p.add_argument("--device", default="auto", help="t2: auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument(
        "--t4-points",
        type=int_at_least(1),
        default=4096,
        metavar="N",
        help="t4: random points at which the Jacobian norm of gamma is measured (default: 4096)",
    )
    p.add_argument("--quiet", action="store_true", help="t2: no progress lines")
    p.set_defaults(func=run_table)
