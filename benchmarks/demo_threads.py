"""Training wall time of a demo preset with one thread against two, side by side: what the second core buys.

Timings on shared machines drift within minutes, so the runs alternate: for each round, every (source, threads)
pair trains the same steps of the preset in a fresh ``nfd train`` process (``OMP_NUM_THREADS`` and
``train.threads`` set), round after round. Each run's seconds are the sum of its ``metrics.tsv`` step times past the
first ``--skip`` steps (start-up, allocator warm-up), so data loading and the loop's bookkeeping count but the
interpreter's start does not; the record keeps every run, the medians and the speed-up of two threads over one
(median over rounds of the per-round ratio). ``--src NAME=DIR`` (repeatable) times another copy of the package
beside the installed one (e.g. the last commit, ``git archive HEAD nfd | tar -x -C DIR``), alternating with it.

    python benchmarks/demo_threads.py --preset demo_chairs --data data/processed/chairs.h5 --steps 30 --rounds 3 \\
        [--src before=/tmp/old] [--out results/benchmarks/demo_threads_demo_chairs.json]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nfd.metrics.registry import write_json
from nfd.report.timing import cpu_model


def step_seconds(metrics: Path, skip: int) -> list[float]:
    with metrics.open() as f:
        return [float(r["step_time"]) for r in csv.DictReader(f, delimiter="\t")][skip:]


def train_once(src: str | None, preset: str, data: str, steps: int, threads: int, out: Path) -> float:
    """Wall time of one fresh ``nfd train`` process (previews, snapshots and checkpoints off until the end)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if src:
        env["PYTHONPATH"] = src
    cmd = [sys.executable, "-m", "nfd", "train", "--preset", preset, "--data", data, "--out", str(out)]
    cmd += ["--steps", str(steps), "--force", "--quiet", "--set", f"train.threads={threads}"]
    for key in ("sample_every", "checkpoint_every", "keep_every"):
        cmd += ["--set", f"train.{key}={steps + 1}"]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="demo_chairs", help="training preset (default demo_chairs)")
    ap.add_argument("--data", required=True, help="processed HDF5 file the preset trains on")
    ap.add_argument("--steps", type=int, default=30, help="training steps per run")
    ap.add_argument("--skip", type=int, default=3, help="first steps of each run left out of its seconds")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; each trains every (source, threads) pair once")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts compared (default 1 2)")
    ap.add_argument("--src", action="append", default=[], metavar="NAME=DIR", help="another copy of the package")
    ap.add_argument("--out", help="write the JSON record here")
    args = ap.parse_args(argv)
    if not Path(args.data).is_file():
        ap.error(f"{args.data}: no such data file")
    if args.steps <= args.skip:
        ap.error("--steps must exceed --skip")
    sources: list[tuple[str, str | None]] = [("current", None)]
    for item in args.src:
        name, sep, path = item.partition("=")
        if not sep or not (Path(path) / "nfd").is_dir():
            ap.error(f"--src {item}: expected NAME=DIR with DIR/nfd a copy of the package")
        sources.append((name, path))
    runs = []
    with tempfile.TemporaryDirectory(prefix="nfd-threads-") as tmp:
        for rnd in range(args.rounds):
            order = sources if rnd % 2 == 0 else sources[::-1]
            for name, src in order:
                for threads in args.threads if rnd % 2 == 0 else args.threads[::-1]:
                    out = Path(tmp) / f"{name}_t{threads}_r{rnd}"
                    wall = train_once(src, args.preset, args.data, args.steps, threads, out)
                    steps = step_seconds(out / "metrics.tsv", args.skip)
                    runs.append(
                        {
                            "source": name,
                            "threads": threads,
                            "round": rnd,
                            "wall_s": round(wall, 2),
                            "step_s_sum": round(sum(steps), 2),
                            "step_s_median": round(statistics.median(steps), 3),
                        }
                    )
                    print(
                        f"round {rnd} {name} {threads} thread(s): {sum(steps):.1f} s for {len(steps)} steps "
                        f"(median {statistics.median(steps):.3f} s/step), process {wall:.1f} s",
                        flush=True,
                    )
    summary = {}
    for name, _ in sources:
        by = {t: [r for r in runs if r["source"] == name and r["threads"] == t] for t in args.threads}
        med = {t: statistics.median(r["step_s_sum"] for r in rs) for t, rs in by.items()}
        lo, hi = min(args.threads), max(args.threads)
        ratios = [a["step_s_sum"] / b["step_s_sum"] for a, b in zip(by[lo], by[hi])]
        summary[name] = {
            "median_s": med,
            f"speedup_{hi}_over_{lo}": round(statistics.median(ratios), 3),
            "per_round_speedup": [round(x, 3) for x in ratios],
        }
        print(
            f"{name}: "
            + ", ".join(f"{t} thread(s) {s:.1f} s" for t, s in med.items())
            + f"; {hi} over {lo} threads: x{statistics.median(ratios):.2f} (rounds: "
            + ", ".join(f"{x:.2f}" for x in ratios)
            + ")"
        )
    record = {
        "schema": "nfd-demo-threads/1",
        "preset": args.preset,
        "steps": args.steps,
        "skip": args.skip,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "runs": runs,
        "summary": summary,
    }
    if args.out:
        write_json(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
