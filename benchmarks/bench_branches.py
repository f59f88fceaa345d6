"""The training step with the D step's branches side by side against one after the other, in one process.

``train.d_branches`` runs the D step's fake branch on a second thread beside the real one. Whole training
runs drift too much on shared machines to show a 10% effect, so this times the two forms of the same step
alternately, step after step, on the same inputs (the preset's models on random data of its shape, the trainer's
point subsets), and reports the medians and the median of the per-step ratios.

    python benchmarks/bench_branches.py --preset demo_chairs --steps 24 --threads 2 [--out FILE.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import nfd  # before torch: nfd's runtime tuning (nfd.RUNTIME_ENV) acts only so

if __name__ == "__main__":  # under jemalloc where installed, as the nfd command runs
    nfd.run_under_jemalloc([sys.executable, *sys.argv])

import torch

from nfd.metrics.registry import write_json
from nfd.presets import preset
from nfd.report.bench_step import build_setup, data_shape, step_inputs
from nfd.report.timing import cpu_model
from nfd.training.step import ParallelBranches, gan_step


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="demo_chairs", help="training preset (default demo_chairs)")
    ap.add_argument("--steps", type=int, default=24, help="steps per form (default 24)")
    ap.add_argument("--skip", type=int, default=4, help="first steps of each form left out (default 4)")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    ap.add_argument("--out", help="write the JSON record here")
    args = ap.parse_args(argv)
    if args.steps <= args.skip:
        ap.error("--steps must exceed --skip")
    if args.threads < 2:
        ap.error("--threads must be at least 2 (one per branch)")
    torch.set_num_threads(args.threads)
    cfg = preset(args.preset)
    setup = build_setup(cfg, data_shape(cfg))
    if setup.branches is not None:
        setup.branches.close()
    branches = ParallelBranches(setup.D, args.threads)
    times: dict[str, list[float]] = {"sequential": [], "branches": []}
    try:
        for step in range(args.steps):
            setup.D.plan(step_inputs(setup, step)[0])  # both forms find the plan in the cache
            order = ("sequential", "branches") if step % 2 else ("branches", "sequential")
            for form in order:
                coords, real, gen = step_inputs(setup, step)
                t0 = time.perf_counter()
                gan_step(
                    setup.G,
                    setup.D,
                    setup.opt_g,
                    setup.opt_d,
                    coords,
                    real,
                    cfg.train,
                    gen,
                    branches=branches if form == "branches" else None,
                )
                times[form].append(time.perf_counter() - t0)
    finally:
        branches.close()
    kept = {k: v[args.skip :] for k, v in times.items()}
    ratios = [a / b for a, b in zip(kept["sequential"], kept["branches"])]
    record = {
        "schema": "nfd-bench-branches/1",
        "preset": args.preset,
        "threads": args.threads,
        "steps": args.steps,
        "skip": args.skip,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": {k: [round(x, 4) for x in v] for k, v in times.items()},
        "median_s": {k: round(statistics.median(v), 4) for k, v in kept.items()},
        "speedup_median": round(statistics.median(ratios), 3),
    }
    print(
        f"{args.preset}, {args.threads} threads: sequential {record['median_s']['sequential']:.3f} s/step, "
        f"branches {record['median_s']['branches']:.3f} s/step, x{record['speedup_median']:.3f} (median of pairs)"
    )
    if args.out:
        write_json(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
