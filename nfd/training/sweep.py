"""``nfd sweep``: train one preset for several seeds and thread counts, score every run, write one table.

A GAN's trajectory changes with float rounding, so with the thread count as much as with the seed: one run says
little about a setting. The sweep trains each (seed, threads) pair with the ``nfd train`` CLI in its own process
(``train.threads`` and ``OMP_NUM_THREADS`` set per run), as many at once as fit in ``--cores``, then samples and
scores each final model with the same verbs the pipeline uses (``nfd sample``, ``nfd evaluate mnist|shapes``), and
writes ``OUT/sweep.tsv`` and ``OUT/sweep.md``: one row per run with its wall time, its metrics and the share of
saturated (|v| > 0.99) and grey (|v| < 0.9) values in its samples beside the data's own shares.

With ``--budget SECONDS`` every run trains for that wall-clock time instead of a step count (time-to-quality), and
the snapshots it keeps (``--set train.keep_every=N``) are scored as well: ``OUT/curves.tsv`` holds each run's metric
against its training seconds.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nfd.cli import RawHelpFormatter, verb_help
from nfd.errors import NfdError
from nfd.io import atomic_path
from nfd.report.timing import cpu_model

SATURATED = 0.99
"""|v| above this counts as saturated (the tanh output's gradient is below 2% of its maximum there)."""
GREY = 0.9
"""|v| below this counts as grey (neither black nor white, neither empty nor occupied)."""


@dataclass
class Run:
    """One (seed, threads) training run of the sweep and what it measured."""

    seed: int
    threads: int
    folder: Path
    wall_s: float = 0.0
    status: str = "pending"
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"s{self.seed}_t{self.threads}"


def value_shares(values: np.ndarray) -> tuple[float, float]:
    """(saturated share, grey share) of an array of features in [-1, 1]."""
    a = np.abs(np.asarray(values, dtype=np.float32))
    return float((a > SATURATED).mean()), float((a < GREY).mean())


def data_shares(data: str | Path, split: str = "train", limit: int = 500) -> tuple[float, float]:
    """The data's own saturated and grey shares, over up to ``limit`` examples of ``split``."""
    from nfd.data.dataset import PointCloudDataset

    ds = PointCloudDataset(Path(data), split=split, num_points=0)
    idx = list(range(min(limit, len(ds))))
    return value_shares(ds.read(idx, None).numpy())


def _nfd(*args: str, threads: int, log: Path) -> None:
    """Run one ``nfd`` verb in its own process with ``threads`` intra-op threads; its output goes to ``log``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(log, "a") as f:
        f.write("$ nfd " + " ".join(args) + "\n")
        f.flush()
        rc = subprocess.call([sys.executable, "-m", "nfd", *args], stdout=f, stderr=subprocess.STDOUT, env=env)
    if rc != 0:
        raise NfdError(f"'nfd {' '.join(args[:2])}' failed with exit code {rc}; see {log}")


def _train_cmd(args: argparse.Namespace, run: Run) -> list[str]:
    cmd = [
        "train",
        "--preset",
        args.preset,
        "--data",
        str(args.data),
        "--out",
        str(run.folder / "run"),
        "--quiet",
        "--force",
        "--set",
        f"train.seed={run.seed}",
        "--set",
        f"train.threads={run.threads}",
    ]
    if args.config:
        cmd += ["--config", str(args.config)]
    for s in args.set or []:
        cmd += ["--set", s]
    if args.budget is not None:
        cmd += ["--set", f"train.max_seconds={args.budget}"]
    if args.steps is not None:
        cmd += ["--steps", str(args.steps)]
    elif args.budget is not None:
        cmd += ["--steps", str(BUDGET_STEP_CAP)]  # the budget, not the preset's steps, ends the run
    return cmd


BUDGET_STEP_CAP = 10**9
"""The step count of runs with a wall-clock budget and no ``--steps``: never reached, the budget ends them."""


def progress_curve(args: argparse.Namespace, run: Run, coord_dim: int) -> list[dict[str, str]]:
    """Score every snapshot of the run (``nfd evaluate progress`` with the sweep's scoring settings) and return
    the rows of its ``RUN/progress.tsv``: the metric against the training's wall-clock seconds."""
    out = run.folder / "progress.tsv"
    cmd = ["evaluate", "progress", "--run", str(run.folder / "run"), "--data", str(args.data), "--out", str(out)]
    cmd += ["--num-samples", str(args.num_samples), "--seed", str(args.sample_seed)]
    if coord_dim == 2:
        if args.classifier is None:
            raise NfdError("scoring 2D runs needs --classifier (nfd evaluate train-classifier)")
        cmd += ["--classifier", str(args.classifier)]
    else:
        cmd += ["--points", str(args.points), "--num-ref", str(args.num_ref)]
    _nfd(*cmd, threads=run.threads, log=run.folder / "log.txt")
    frame = pd.read_csv(out, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)
    return frame.to_dict(orient="records")


def write_curves(out: Path, curves: dict[str, list[dict[str, str]]]) -> None:
    """``OUT/curves.tsv``: every scored snapshot of every run (run, step, train_seconds, the metric's columns)."""
    cols = ["run"]
    for rows in curves.values():
        for row in rows:
            cols += [k for k in row if k not in cols and k != "seconds"]
    lines = ["\t".join(cols)]
    lines += ["\t".join([name, *(row.get(c, "") for c in cols[1:])]) for name, rows in curves.items() for row in rows]
    with atomic_path(out / "curves.tsv") as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def score(args: argparse.Namespace, run: Run, coord_dim: int) -> dict[str, Any]:
    """Sample the run's final model and score it as the pipeline does; add the samples' value shares."""
    model = run.folder / "run" / "model.pt"
    samples = run.folder / "samples.npz"
    record = run.folder / "eval.json"
    log = run.folder / "log.txt"
    res = 28 if coord_dim == 2 else args.resolution
    _nfd(
        "sample",
        "--checkpoint",
        str(model),
        "--num",
        str(args.num_samples),
        "--resolution",
        str(res),
        "--seed",
        str(args.sample_seed),
        "--out",
        str(samples),
        threads=run.threads,
        log=log,
    )
    if coord_dim == 2:
        if args.classifier is None:
            raise NfdError("scoring 2D runs needs --classifier (nfd evaluate train-classifier)")
        _nfd(
            "evaluate",
            "mnist",
            "--samples",
            str(samples),
            "--data",
            str(args.data),
            "--classifier",
            str(args.classifier),
            "--out",
            str(record),
            threads=run.threads,
            log=log,
        )
        keys = ("classifier_fd", "confident_share", "class_entropy")
    else:
        _nfd(
            "evaluate",
            "shapes",
            "--samples",
            str(samples),
            "--data",
            str(args.data),
            "--points",
            str(args.points),
            "--num-ref",
            str(args.num_ref),
            "--out",
            str(record),
            threads=run.threads,
            log=log,
        )
        keys = ("cov", "mmd", "1nna", "failure_rate")
    results = json.loads(record.read_text())["results"]
    with np.load(samples, allow_pickle=False) as z:
        feats = np.asarray(z["features"], dtype=np.float32)
    sat, grey = value_shares(feats)
    out = {k: results.get(k) for k in keys}
    if coord_dim == 3:
        occupied = (feats > 0).reshape(len(feats), -1).mean(axis=1)
        out["empty"] = int((occupied == 0).sum())
    out.update(saturated=sat, grey=grey)
    return out


def _schedule(runs: list[Run], cores: int, args: argparse.Namespace) -> None:
    """Train the runs, as many at once as their threads fit in ``cores``, longest-thread runs first."""
    pending = sorted(runs, key=lambda r: -r.threads)
    active: list[tuple[Run, subprocess.Popen, float, Any]] = []
    while pending or active:
        used = sum(r.threads for r, *_ in active)
        started = False
        for r in list(pending):
            done = r.folder / "train_seconds.txt"
            if args.reuse and (r.folder / "run" / "model.pt").is_file() and done.is_file():
                r.wall_s, r.status = float(done.read_text()), "trained"
                pending.remove(r)
                print(f"nfd sweep: {r.name} reused ({r.wall_s:.0f} s)", flush=True)
                continue
            if used + r.threads <= cores or not active:
                r.folder.mkdir(parents=True, exist_ok=True)
                log = open(r.folder / "log.txt", "w")
                cmd = _train_cmd(args, r)
                log.write("$ nfd " + " ".join(cmd) + "\n")
                log.flush()
                env = {**os.environ, "OMP_NUM_THREADS": str(r.threads), "MKL_NUM_THREADS": str(r.threads)}
                proc = subprocess.Popen(
                    [sys.executable, "-m", "nfd", *cmd], stdout=log, stderr=subprocess.STDOUT, env=env
                )
                active.append((r, proc, time.perf_counter(), log))
                pending.remove(r)
                used += r.threads
                started = True
                print(f"nfd sweep: started {r.name}", flush=True)
        if started:
            continue
        time.sleep(1.0)
        for item in list(active):
            r, proc, t0, log = item
            if proc.poll() is not None:
                r.wall_s = time.perf_counter() - t0
                r.status = "trained" if proc.returncode == 0 else f"train failed ({proc.returncode})"
                if proc.returncode == 0:
                    (r.folder / "train_seconds.txt").write_text(f"{r.wall_s:.1f}\n")
                log.close()
                active.remove(item)
                print(f"nfd sweep: {r.name} {r.status} in {r.wall_s:.0f} s", flush=True)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def previous_rows(out: Path) -> list[dict[str, str]]:
    """The rows of an existing ``OUT/sweep.tsv``, so that sweeps run in parts (e.g. one seed at a time, side by side
    with another preset's) add up to one table."""
    path = out / "sweep.tsv"
    if not path.is_file():
        return []
    # every cell as the text written (no NaN for empty cells, no quote handling: cells never hold a tab)
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)
    return frame.to_dict(orient="records")


def write_table(out: Path, runs: list[Run], header: dict[str, Any]) -> None:
    """``OUT/sweep.tsv`` (one row per run, earlier rows of other runs kept) and ``OUT/sweep.md`` (the same table,
    with this invocation's settings)."""
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r.results if k not in keys]
    cols = ["run", "seed", "threads", "train_s", "status", *keys]
    names = {r.name for r in runs}
    old = [row for row in previous_rows(out) if row.get("run") not in names]
    for row in old:
        cols += [k for k in row if k not in cols]
    rows = [[row.get(c, "") for c in cols] for row in old]
    rows += [
        [r.name, r.seed, r.threads, round(r.wall_s, 1), r.status, *[r.results.get(k) for k in cols[5:]]] for r in runs
    ]
    rows.sort(key=lambda row: (int(row[2]), int(row[1])))
    with atomic_path(out / "sweep.tsv") as tmp:
        tmp.write_text("\t".join(cols) + "\n" + "".join("\t".join(_fmt(v) for v in row) + "\n" for row in rows))
    lines = [f"# Sweep: {header['preset']}", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    lines += ["", "| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    with atomic_path(out / "sweep.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def run_sweep(args: argparse.Namespace) -> int:
    from nfd.metrics.data import h5_info

    info = h5_info(args.data)
    if args.cores < 1 or any(t < 1 for t in args.threads):
        raise NfdError("--cores and every --threads must be >= 1")
    out = Path(args.out)
    runs = [Run(s, t, out / f"s{s}_t{t}") for t in args.threads for s in args.seeds]
    sat, grey = data_shares(args.data)
    header = {
        "preset": args.preset,
        "data": str(args.data),
        "overrides": " ".join(args.set or []) or "none",
        "steps": args.steps
        if args.steps is not None
        else ("until the budget" if args.budget is not None else "preset"),
        "cpu": cpu_model(),
        "cores": args.cores,
        "data_saturated": round(sat, 4),
        "data_grey": round(grey, 4),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if args.budget is not None:
        header["budget_s"] = args.budget
    t0 = time.perf_counter()
    _schedule(runs, args.cores, args)
    curves: dict[str, list[dict[str, str]]] = {}
    for r in runs:
        if r.status == "trained":
            try:
                r.results = score(args, r, info.coord_dim)
                if args.budget is not None:
                    curves[r.name] = progress_curve(args, r, info.coord_dim)
                    r.results["steps"] = int(curves[r.name][-1]["step"])
                r.status = "ok"
            except NfdError as e:
                r.status = f"scoring failed: {e}"
    header["wall_s"] = round(time.perf_counter() - t0, 1)
    write_table(out, runs, header)
    if curves:
        write_curves(out, curves)
    print((out / "sweep.md").read_text())
    return 0 if all(r.status == "ok" for r in runs) else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help=verb_help(__name__), description=__doc__, formatter_class=RawHelpFormatter)
    p.add_argument("--preset", required=True, help="model preset (nfd train --preset)")
    p.add_argument("--data", required=True, type=Path, help="processed HDF5 file")
    p.add_argument("--out", required=True, type=Path, help="sweep folder: one sub-folder per run, sweep.tsv, sweep.md")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="train.seed of the runs")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts; every seed runs with each")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="threads running at once, in all")
    p.add_argument("--config", default=None, help="YAML overrides passed to every nfd train")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override for every run (repeatable)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="wall-clock budget per run (train.max_seconds) instead of a step count; every kept snapshot "
        "(train.keep_every) is then scored and OUT/curves.tsv holds the metric against the training's seconds",
    )
    p.add_argument(
        "--reuse",
        action="store_true",
        help="do not retrain runs whose RUN/run/model.pt and RUN/train_seconds.txt exist; score them",
    )
    p.add_argument("--classifier", type=Path, default=None, help="MNIST classifier (2D data: required)")
    p.add_argument("--num-samples", type=int, default=500, help="samples scored per run (use 100 for the chairs)")
    p.add_argument("--sample-seed", type=int, default=1, help="latent seed of the scored samples")
    p.add_argument("--resolution", type=int, default=32, help="3D data: sampling resolution for the shape metrics")
    p.add_argument("--points", type=int, default=2048, help="3D data: surface points per shape")
    p.add_argument("--num-ref", type=int, default=100, help="3D data: reference shapes (0: the whole test split)")
    p.set_defaults(func=run_sweep)
