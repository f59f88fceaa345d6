"""Measuring one configuration of ``nfd bench`` in this process: timed training steps (with their FLOPs, peak memory
and, on request, a profile) or sampling on a large grid. The subprocess harness in :mod:`nfd.report.bench` runs each
configuration in a fresh interpreter, so that the peak RSS measured here is that configuration's own.
"""

from __future__ import annotations

import itertools
import os
import resource
import sys
import time
from typing import Any

import torch

from nfd import ALLOCATOR, MALLOC_TUNED, RUNTIME_ENV
from nfd.config import Config
from nfd.grid import grid_coords
from nfd.models.build import build_generator
from nfd.report.bench_step import (
    BenchSetup,
    DataShape,
    build_setup,
    count_flops,
    flops_text,
    generator_cost,
    run_step,
    step_inputs,
)
from nfd.report.timing import sync, time_calls


def _loadavg() -> float | None:
    """The 1-minute load average (other processes competing for the cores), or None where unknown."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def current_rss_bytes() -> int:
    """Resident set size now (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _profile_top(setup: BenchSetup, step: int, naive: bool, amp: bool, top: int) -> list[dict[str, Any]]:
    """One step under torch.profiler: the ``top`` ops by self CPU time (self CUDA time on a GPU); also printed."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if setup.device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        run_step(setup, step, naive=naive, amp=amp)
        sync(setup.device)
    cuda = setup.device.type == "cuda"
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = prof.key_averages()
    print(events.table(sort_by=key, row_limit=top), flush=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    rows = sorted(events, key=lambda e: getattr(e, key, 0.0), reverse=True)[:top]
    return [
        {
            "name": e.key,
            "self_cpu_s": e.self_cpu_time_total / 1e6,
            "self_cpu_fraction": e.self_cpu_time_total / total,
            "self_device_s": getattr(e, "self_device_time_total", 0.0) / 1e6 if cuda else 0.0,
            "calls": e.count,
        }
        for e in rows
    ]


def measure_steps(
    cfg: Config,
    shape: DataShape,
    device: torch.device,
    mode: str,
    steps: int,
    warmup: int,
    amp: bool = False,
    compile: bool = False,
    gen_scaling: bool = True,
    profile_top: int = 0,
    verbose: bool = True,
) -> dict[str, Any]:
    """Build the setup and time ``steps`` training steps after ``warmup`` ones, in this process."""
    naive = mode == "naive"
    setup = build_setup(cfg, shape, device, seed=cfg.train.seed)
    rss_models = current_rss_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if compile:
        setup.G_run = torch.compile(setup.G)  # type: ignore[assignment]
    say = (lambda m: print(f"nfd bench [{mode}] {m}", flush=True)) if verbose else (lambda m: None)
    step = 0
    flops, metrics0 = None, None
    if warmup > 0 and not compile:
        t0 = time.perf_counter()
        flops, metrics0 = count_flops(lambda: run_step(setup, 0, naive=naive, amp=amp, eager=True))
        say(f"warm-up step 1/{warmup} (FLOPs counted): {time.perf_counter() - t0:.2f} s")
        step = 1
    while step < warmup:
        t0 = time.perf_counter()
        run_step(setup, step, naive=naive, amp=amp)
        sync(device)
        say(f"warm-up step {step + 1}/{warmup}: {time.perf_counter() - t0:.2f} s")
        step += 1
    load_before = _loadavg()
    step_numbers = itertools.count(step)
    timing = time_calls(
        lambda: run_step(setup, next(step_numbers), naive=naive, amp=amp),
        device,
        steps,
        log=lambda i, wall, cpu: say(f"step {i + 1}/{steps}: {wall:.3f} s (CPU time {cpu:.3f} s)"),
    )
    step += steps
    load_after = _loadavg()
    peak_steps = peak_rss_bytes()  # the process so far: imports, models, the FLOP-counted and the timed steps
    peak_cuda_steps = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else 0
    if flops is None:
        flops, _ = count_flops(lambda: run_step(setup, step, naive=naive, amp=amp, eager=True))
        step += 1
    rec: dict[str, Any] = {
        "mode": mode,
        "seconds_per_step": timing.summary(),
        "cpu_seconds_per_step": timing.cpu_summary(),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "flops_per_step": flops,
        "gflops_per_s": flops / timing.median / 1e9,
        "metrics": timing.last,
        "metrics_step0": metrics0,
        "rss_after_build_bytes": rss_models,
        "threads": torch.get_num_threads(),
        "parallel_branches": setup.branches is not None and not naive,
        "env": {k: os.environ.get(k) for k in RUNTIME_ENV},
        "malloc_tuned": MALLOC_TUNED,
        "allocator": ALLOCATOR,
    }
    if gen_scaling:
        coords = step_inputs(setup, step)[0]
        b = setup.batch_size
        sizes = sorted({max(1, b // 4), max(1, b // 2), b})
        rec["generator"] = [generator_cost(setup.G, coords, s, naive=naive) for s in sizes]
        for r in rec["generator"]:
            say(
                f"generator fwd+bwd batch {r['batch']}: {r['seconds_per_example'] * 1e3:.2f} ms/example, "
                f"{flops_text(r['flops_per_example'])}/example"
            )
    if profile_top > 0:
        rec["profile_top"] = _profile_top(setup, step, naive, amp, profile_top)
    rec["peak_rss_bytes"] = peak_steps
    rec["peak_rss_gb"] = peak_steps / 1e9
    rec["peak_cuda_bytes"] = peak_cuda_steps
    rec["peak_rss_process_bytes"] = peak_rss_bytes()  # also the generator-scaling and profiled runs
    return rec


def measure_sample(
    cfg: Config,
    shape: DataShape,
    device: torch.device,
    resolution: int,
    num: int,
    chunk_points: int,
    verbose: bool = True,
) -> dict[str, Any]:
    """Time evaluating ``num`` sampled functions on a ``resolution**d`` grid in chunks; peak RSS of this process."""
    torch.manual_seed(cfg.train.seed)
    G = build_generator(cfg, shape.coord_dim, shape.feature_dim).to(device).eval()
    z = G.sample_latents(num, generator=torch.Generator().manual_seed(0), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # FLOPs are affine in the number of points (the hypernetwork runs once per function): count two small grids.
    n1, n2 = (grid_coords(r, shape.coord_dim, device=device) for r in (8, 16))
    f1, _ = count_flops(lambda: G.evaluate(z, n1, chunk_points=chunk_points))
    f2, _ = count_flops(lambda: G.evaluate(z, n2, chunk_points=chunk_points))
    timing = time_calls(
        lambda: G.evaluate(z, grid_coords(resolution, shape.coord_dim, device=device), chunk_points=chunk_points),
        device,
        1,
    )
    sec, out = timing.median, timing.last
    points = resolution**shape.coord_dim
    flops = int(f1 + (f2 - f1) * (points - n1.shape[0]) / (n2.shape[0] - n1.shape[0]))
    if verbose:
        print(f"nfd bench [sample] {num} x {resolution}^{shape.coord_dim}: {sec:.2f} s", flush=True)
    rec = {
        "resolution": resolution,
        "points": points,
        "num": num,
        "seconds": sec,
        "seconds_per_function": sec / num,
        "output_bytes": out.numel() * out.element_size(),
        "flops": flops,
        "gflops_per_s": flops / sec / 1e9,
        "finite": bool(torch.isfinite(out).all()),
    }
    del out, timing
    rec["peak_rss_bytes"] = peak_rss_bytes()
    rec["peak_rss_gb"] = rec["peak_rss_bytes"] / 1e9
    rec["peak_cuda_bytes"] = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else 0
    return rec
