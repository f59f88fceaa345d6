"""``nfd bench``: time full training steps of a preset (fast path against the naive references) and sampling at scale.

This module is the harness: it runs each configuration in a fresh subprocess (:mod:`nfd.report.bench_measure` measures
it there, on the step built by :mod:`nfd.report.bench_step`), assembles the JSON record, prints the summary and
defines the command line. The record's keys and what each number means are documented in docs/bench_record.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from nfd import ALLOCATOR, MALLOC_TUNED, RUNTIME_ENV, untuned_env
from nfd.cli import verb_help
from nfd.config import Config, to_dict
from nfd.errors import NfdError
from nfd.io import atomic_path
from nfd.models.build import pick_device
from nfd.presets import PRESETS, resolve
from nfd.report.bench_measure import measure_sample, measure_steps
from nfd.report.bench_step import DataShape, data_shape, flops_text
from nfd.report.timing import cpu_model

SCHEMA = "nfd-bench/2"
"""Version 2: no comparison with the authors' times stored from another machine (benchmarks/reference_bench.py
measures that side by side)."""

SAMPLE_RESOLUTIONS = {2: [1024], 3: [128, 256]}
"""Default ``--sample`` grids per coordinate dimension."""


def _environment(device: torch.device) -> dict[str, Any]:
    cpu = cpu_model()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    return {
        "device": str(device),
        "device_name": name,
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "env": {k: os.environ.get(k) for k in RUNTIME_ENV},
        "malloc_tuned": MALLOC_TUNED,
        "allocator": ALLOCATOR,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _setup_process(args: argparse.Namespace) -> tuple[Config, DataShape, torch.device]:
    cfg = resolve(args.preset, args.config, args.set)
    shape = data_shape(cfg, args.dim, args.features, args.resolution)
    device = pick_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    elif cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    if args.compile and args.naive:
        raise NfdError("--compile applies to the fast path only")
    return cfg, shape, device


def _child_argv(args: argparse.Namespace, child: str, out: Path) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "nfd",
        "bench",
        "--preset",
        args.preset,
        "--device",
        args.device,
        "--threads",
        str(args.threads),
        "--child",
        child,
        "--json",
        str(out),
    ]
    if args.config:
        argv += ["--config", str(args.config)]
    for item in args.set or []:
        argv += ["--set", item]
    for flag in ("dim", "features", "resolution"):
        if getattr(args, flag):
            argv += [f"--{flag}", str(getattr(args, flag))]
    if child == "naive":
        argv += ["--steps", str(args.naive_steps), "--warmup", str(args.naive_warmup)]
    else:
        argv += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    if args.amp:
        argv.append("--amp")
    if args.compile and child == "fast":
        argv.append("--compile")
    if args.no_gen_scaling:
        argv.append("--no-gen-scaling")
    if args.no_env_tuning:
        argv.append("--no-env-tuning")
    if args.profile and child != "naive":
        argv += ["--profile", str(args.profile)]
    if child.startswith("sample:"):
        argv += ["--num", str(args.num), "--chunk-points", str(args.chunk_points)]
    return argv


def _run_child(args: argparse.Namespace, child: str) -> dict[str, Any]:
    """Run one configuration in a fresh interpreter and return its record (or an ``error`` record)."""
    with tempfile.TemporaryDirectory(prefix="nfd-bench-") as tmp:
        out = Path(tmp) / "child.json"
        env = dict(os.environ)
        if args.no_env_tuning:  # what importing nfd (or its re-execution under jemalloc) set, not the user
            env = untuned_env(env)
        else:
            for k, v in RUNTIME_ENV.items():
                env.setdefault(k, v)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parents[2]), *filter(None, [env.get("PYTHONPATH")])]
        )
        proc = subprocess.run(_child_argv(args, child, out), env=env)
        if proc.returncode != 0 or not out.is_file():
            how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
            return {"mode": child, "error": f"child process failed ({how}; an out-of-memory kill shows as signal 9)"}
        return json.loads(out.read_text())


def _run_child_inline(args: argparse.Namespace, child: str) -> dict[str, Any]:
    cfg, shape, device = _setup_process(args)
    if child.startswith("sample:"):
        return measure_sample(cfg, shape, device, int(child.split(":")[1]), args.num, args.chunk_points)
    naive = child == "naive"
    return measure_steps(
        cfg,
        shape,
        device,
        child,
        args.naive_steps if naive else args.steps,
        args.naive_warmup if naive else args.warmup,
        amp=args.amp,
        compile=args.compile and not naive,
        gen_scaling=not args.no_gen_scaling,
        profile_top=0 if naive else args.profile,
    )


def _gb(x: float) -> str:
    return f"{x / 1e9:.2f} GB"


def _mode_line(rec: dict[str, Any]) -> str:
    if "error" in rec:
        return f"  {rec['mode']:5s}: FAILED: {rec['error']}"
    s = rec["seconds_per_step"]
    cuda = f", peak CUDA {_gb(rec['peak_cuda_bytes'])}" if rec.get("peak_cuda_bytes") else ""
    cpu = rec.get("cpu_seconds_per_step", {}).get("median")
    cpu_s = f", CPU {cpu:.3f} s" if cpu is not None else ""
    return (
        f"  {rec['mode']:5s}: {s['median']:.3f} s/step (median of {len(s['all'])}; min {s['min']:.3f}, max "
        f"{s['max']:.3f}{cpu_s}), peak RSS {_gb(rec['peak_rss_bytes'])}{cuda}, {flops_text(rec['flops_per_step'])}"
        f"/step, {rec['gflops_per_s']:.1f} GFLOP/s"
    )


def bench_steps(args: argparse.Namespace) -> dict[str, Any]:
    cfg, shape, device = _setup_process(args)
    modes = ["naive"] if args.naive else ["fast"] + ([] if args.no_naive else ["naive"])
    run = _run_child_inline if args.in_process else _run_child
    results = {m: run(args, m) for m in modes}
    primary = results[modes[0]]
    n_total = shape.points_total
    points = cfg.train.num_points if 0 < cfg.train.num_points < n_total else n_total
    rec: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": "step",
        "preset": args.preset,
        "config": to_dict(cfg),
        "sets": list(args.set or []),
        **_environment(device),
        "data": {
            "coord_dim": shape.coord_dim,
            "feature_dim": shape.feature_dim,
            "resolution": shape.resolution,
            "points_total": n_total,
            "points_per_step": points,
            "batch_size": cfg.train.batch_size,
        },
        "steps": args.naive_steps if args.naive else args.steps,
        "warmup": args.naive_warmup if args.naive else args.warmup,
        "amp": bool(args.amp),
        "compile": bool(args.compile),
        "rss_isolated": not args.in_process,
        "mode": modes[0],
    }
    for key in (
        "seconds_per_step",
        "cpu_seconds_per_step",
        "peak_rss_bytes",
        "peak_rss_gb",
        "peak_cuda_bytes",
        "flops_per_step",
        "gflops_per_s",
        "metrics",
        "threads",
        "env",
        "error",
    ):
        if key in primary:
            rec[key] = primary[key]
    rec["fast"] = results.get("fast")
    rec["naive"] = results.get("naive")
    ok = {m: r for m, r in results.items() if "error" not in r}
    if "fast" in ok and "naive" in ok:
        f, n = ok["fast"]["seconds_per_step"]["median"], ok["naive"]["seconds_per_step"]["median"]
        rec["fast_over_naive"], rec["speedup_over_naive"] = f / n, n / f
    else:
        rec["fast_over_naive"] = rec["speedup_over_naive"] = None
    rec["step0_max_rel_diff"] = None
    m0 = [ok.get(m, {}).get("metrics_step0") for m in ("fast", "naive")]
    if all(m0):
        rec["step0_max_rel_diff"] = max(abs(m0[0][k] - m0[1][k]) / max(abs(m0[1][k]), 1e-12) for k in m0[0])
    return rec


def print_steps(rec: dict[str, Any]) -> None:
    d = rec["data"]
    print(
        f"nfd bench {rec['preset']}: {rec['device']} ({rec['device_name']}), {rec['threads']} threads, batch "
        f"{d['batch_size']}, {d['points_per_step']} of {d['points_total']} points, d={d['coord_dim']}, "
        f"k={d['feature_dim']}{', amp' if rec['amp'] else ''}{', compile' if rec['compile'] else ''}"
    )
    for m in ("fast", "naive"):
        if rec.get(m):
            print(_mode_line(rec[m]))
            for g in rec[m].get("generator", []):
                print(
                    f"         generator fwd+bwd, batch {g['batch']:4d}: {g['seconds_per_example'] * 1e3:8.2f} "
                    f"ms/example, {flops_text(g['flops_per_example'])}/example"
                )
    if rec.get("speedup_over_naive"):
        print(f"  fast/naive time ratio {rec['fast_over_naive']:.3f} (speed-up x{rec['speedup_over_naive']:.1f})")
    if rec.get("step0_max_rel_diff") is not None:
        print(
            f"  same first step, fast vs naive: losses agree to {rec['step0_max_rel_diff']:.1e} (largest relative "
            "difference)"
        )


def bench_sample(args: argparse.Namespace) -> dict[str, Any]:
    cfg, shape, device = _setup_process(args)
    res_list = args.sample_resolution or SAMPLE_RESOLUTIONS[shape.coord_dim]
    run = _run_child_inline if args.in_process else _run_child
    results = [dict(run(args, f"sample:{r}"), resolution=r) for r in res_list]
    return {
        "schema": SCHEMA,
        "kind": "sample",
        "preset": args.preset,
        "config": to_dict(cfg),
        "sets": list(args.set or []),
        **_environment(device),
        "coord_dim": shape.coord_dim,
        "feature_dim": shape.feature_dim,
        "num": args.num,
        "chunk_points": args.chunk_points,
        "rss_isolated": not args.in_process,
        "results": results,
    }


def print_sample(rec: dict[str, Any]) -> None:
    print(
        f"nfd bench {rec['preset']} --sample: {rec['device']}, {rec['threads']} threads, {rec['num']} functions, "
        f"chunks of {rec['chunk_points']} points"
    )
    for r in rec["results"]:
        if "error" in r:
            print(f"  {r['resolution']}^{rec['coord_dim']}: FAILED: {r['error']}")
            continue
        print(
            f"  {r['resolution']}^{rec['coord_dim']}: {r['seconds']:.2f} s ({r['seconds_per_function']:.2f} s per "
            f"function, {r['gflops_per_s']:.1f} GFLOP/s), peak RSS {_gb(r['peak_rss_bytes'])} (result tensor "
            f"{_gb(r['output_bytes'])})"
        )


def run_bench(args: argparse.Namespace) -> int:
    for name in ("steps", "naive_steps", "num", "chunk_points"):
        if getattr(args, name) < 1:
            raise NfdError(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0 or args.naive_warmup < 0:
        raise NfdError("--warmup must be >= 0")
    if args.child:
        rec = _run_child_inline(args, args.child)
        Path(args.json).write_text(json.dumps(rec))
        return 0
    rec = bench_sample(args) if args.sample else bench_steps(args)
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(rec, indent=1) + "\n")
    (print_sample if args.sample else print_steps)(rec)
    failed = [r for r in (rec.get("results") or [rec.get(m) for m in ("fast", "naive")]) if r and "error" in r]
    return 2 if failed else 0


DESCRIPTION = """\
Time full training steps of a config preset, or sampling at scale, on random
data of the shape the preset trains on.

One step is the trainer's own GAN step: a discriminator step (real and fake
passes, non-saturating loss, the R1 penalty through a double backward, Adam),
then a generator step (fresh latents, backward through D into the
hypernetwork, Adam). Times are wall-clock seconds per step (median of the
timed steps); the FLOPs of the matrix products are counted on one untimed
step. Each configuration runs in a fresh subprocess, so that its peak RSS is
its own (--in-process turns this off)."""
"""What ``nfd bench --help`` says above the options: plain text, shown as written."""

EPILOG = """\
modes:
  (default)   the fast path (--steps after --warmup), then the naive
              reference path (--naive-steps: per-example generator loop,
              brute-force neighbours, naive PointConv) and their time ratio
  --no-naive  the fast path only
  --naive     the naive path only
  --sample    --num functions evaluated on large grids in chunks (default
              128^3 and 256^3 in 3D, 1024^2 in 2D), each resolution in its
              own subprocess: time and peak RSS

--json FILE writes one JSON object (schema nfd-bench/2); its keys and what
each number means are documented in docs/bench_record.md.

examples:
  nfd bench --preset mnist --steps 3 --json results/benchmarks/mnist.json
  nfd bench --preset shapenet_chairs --set batch=8 --no-naive
  nfd bench --preset celebahq64 --device cuda --amp --no-naive
  nfd bench --preset shapenet_chairs --sample \\
      --json results/benchmarks/sample_chairs.json"""
"""What ``nfd bench --help`` says below the options."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help=verb_help(__name__),
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", required=True, help=f"config preset: {', '.join(PRESETS)}")
    p.add_argument("--config", default=None, help="YAML file of overrides applied after the preset")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config key, e.g. batch=32 or points=2048 (repeatable)",
    )
    p.add_argument("--steps", type=int, default=3, help="timed steps of the fast path")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before them; the first also counts the FLOPs")
    p.add_argument("--naive", action="store_true", help="measure only the naive reference path")
    p.add_argument("--no-naive", action="store_true", help="measure only the fast path (no naive comparison)")
    p.add_argument("--naive-steps", type=int, default=1, help="timed steps of the naive path")
    p.add_argument("--naive-warmup", type=int, default=1, help="untimed naive steps before them")
    p.add_argument("--json", default=None, metavar="FILE", help="write the record (one JSON object) here")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (default: train.threads if set, else torch's default, the core count)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the generator (D is run eagerly: R1 needs a double backward, which compiled "
        "graphs do not support)",
    )
    p.add_argument("--amp", action="store_true", help="bf16 autocast for the forward passes (CUDA; CPU with bf16)")
    p.add_argument(
        "--no-gen-scaling", action="store_true", help="skip timing the generator alone at 1/4, 1/2 and all of the batch"
    )
    p.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="profile one extra fast step with torch.profiler and print the top N ops by self time",
    )
    p.add_argument("--dim", type=int, default=None, help="override the coordinate dimension d of the data")
    p.add_argument("--features", type=int, default=None, help="override the feature dimension k of the data")
    p.add_argument("--resolution", type=int, default=None, help="override the grid resolution of the data")
    p.add_argument(
        "--sample",
        action="store_true",
        help="time sampling instead: NUM functions on large grids (see --sample-resolution)",
    )
    p.add_argument(
        "--sample-resolution",
        type=int,
        action="append",
        default=None,
        metavar="R",
        help="grid resolution for --sample, repeatable (default: 128 and 256 in 3D, 1024 in 2D)",
    )
    p.add_argument("--num", type=int, default=16, help="functions to sample with --sample")
    p.add_argument(
        "--chunk-points", type=int, default=1 << 15, help="grid points per chunk with --sample; bounds memory"
    )
    p.add_argument(
        "--no-env-tuning",
        action="store_true",
        help="run the measuring subprocesses in the environment as the user set it (default: nfd.RUNTIME_ENV's "
        "OMP_WAIT_POLICY=PASSIVE, GOMP_SPINCOUNT=10000 and THP_MEM_ALLOC_ENABLE=1 unless set, jemalloc where "
        "installed (nfd.run_under_jemalloc), else glibc's malloc keeping freed memory: nfd.keep_freed_memory)",
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="measure in this process instead of a fresh subprocess per configuration (peak RSS then "
        "mixes the configurations)",
    )
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run_bench)
