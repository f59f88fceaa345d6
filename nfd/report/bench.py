"""``nfd bench``: time full training steps of a preset (fast path against the naive references) and sampling at scale.

**What is timed.** One step is exactly :func:`nfd.training.trainer.gan_step`, the function :class:`nfd.training.trainer.Trainer` calls: a D
step (real and fake passes, non-saturating loss, the R1 penalty on the real sets through a double backward, Adam),
then a G step (fresh latents, D on the fakes, backward through D into the hypernetwork, Adam). The models and
optimisers are the preset's, built by the same functions as the trainer's, for the preset's data shapes
(:data:`DATA_SHAPES`), on random features in [-1, 1] (reading the HDF5 file is not timed). When the preset samples K
points per step (``train.num_points``, e.g. 4096 of the 32^3 chair grid) every step draws a fresh K-subset with the
trainer's random streams, so the neighbour plan is rebuilt every step and its time is included; on full grids the
plan is built once and cached, as in training.

**Fast and naive.** ``--naive`` runs the same step through the reference implementations (``gan_step(...,
naive=True)``: the per-example generator loop of :func:`nfd.models.function.per_example_mlp`, brute-force neighbours
recomputed on every D call and :func:`nfd.models.pointconv.pointconv_naive`). The default run measures the fast path and
then, in the same invocation, the naive path (``--naive-steps``, fewer), and reports their ratio.

**Isolation.** Every configuration (fast, naive, each sampling resolution) runs in a fresh subprocess of this
command, so its peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``) is its own: imports, models, optimiser state and
the step's activations, nothing else. ``--in-process`` skips the subprocesses (tests, debugging); the JSON then says
``"rss_isolated": false``.

**FLOPs** are counted on one (untimed) step with :class:`torch.utils.flop_counter.FlopCounterMode`, which counts the
matrix products (mm, bmm, baddbmm, addmm, convolutions): element-wise work is not counted, so GFLOP/s is the rate of
useful matrix arithmetic. On a CPU the machine's peak is about 32 FP32 FLOP per cycle per core with AVX-512 FMA.

**Sampling** (``--sample``): 16 functions evaluated on 128^3 and 256^3 grids (3D presets) or 1024^2 (2D), through
:meth:`nfd.models.hypernetwork.FunctionDistribution.evaluate` in chunks of ``--chunk-points`` points, so the memory beyond
the result tensor itself is bounded; each resolution in its own subprocess, reporting time and peak RSS.

**JSON record** (``--json FILE``, one object; ``schema`` = ``nfd-bench/1``). Step mode keys: ``schema, kind`` (=
``"step"``), ``preset, config`` (the resolved config as plain data), ``sets, device, device_name, threads,
torch_version, cpu, timestamp, data`` (``coord_dim, feature_dim, resolution, points_total, points_per_step,
batch_size``), ``steps, warmup, amp, compile, rss_isolated``, the primary mode's numbers at top level
(``mode, seconds_per_step`` {``median, min, max, all``}, ``peak_rss_bytes, peak_rss_gb, peak_cuda_bytes,
flops_per_step, gflops_per_s, metrics``), ``env`` (the tuned environment variables as the measurement saw them),
``fast`` and ``naive`` (the same numbers per mode, or null when not run;
each mode also has ``metrics_step0`` (the first step's losses), ``cpu_seconds_per_step`` (process CPU time: less sensitive than wall time to other processes on a
shared machine), ``loadavg_before``/``loadavg_after``, ``rss_after_build_bytes``, ``peak_rss_process_bytes`` (the peak over the
whole subprocess, including the generator-scaling and profiled runs that follow the steps; ``peak_rss_bytes`` is the
peak up to the end of the timed steps), ``generator`` = per-batch-size
generator cost, ``error`` when it failed, ``profile_top`` with ``--profile``), ``fast_over_naive`` (fast median / naive median seconds), ``speedup_over_naive`` (its inverse),
``step0_max_rel_diff`` (both modes start from the same weights and data, so their FLOP-counted first steps must give
the same losses: the largest relative difference of ``metrics_step0``, or null),
``reference`` (the authors' released code at the paper settings, or null) and ``speedup_over_reference``,
``rss_fraction_of_reference``. Sample mode: ``schema, kind`` (= ``"sample"``), ``preset, device, threads, num,
chunk_points, results`` (per resolution: ``resolution, points, seconds, peak_rss_bytes, peak_rss_gb,
peak_cuda_bytes, output_bytes, flops, gflops_per_s``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from nfd import ENV_SET_BY_NFD, RUNTIME_ENV
from nfd.config import Config, PRESETS, resolve, to_dict
from nfd.cli import verb_help
from nfd.errors import NfdError
from nfd.grid import grid_coords
from nfd.io import atomic_path
from nfd.models.build import build_discriminator_for, build_generator, pick_device
from nfd.training.trainer import gan_optimizers, gan_step, step_generator

SCHEMA = "nfd-bench/1"

DATA_SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist": (2, 1, 28),
    "celebahq64": (2, 3, 64),
    "celebahq128": (2, 3, 128),
    "shapenet_chairs": (3, 1, 32),
    "demo_mnist": (2, 1, 28),
    "demo_chairs": (3, 1, 32),
    "tiny": (2, 1, 16),
}
"""(coordinate dim d, feature dim k, grid resolution) of the data each config preset trains on."""

REFERENCE: dict[str, dict[str, Any]] = {
    "mnist": {"seconds_per_step": 10.0, "peak_rss_bytes": 5.0e9, "batch_size": 128, "points_per_step": 784},
    "celebahq64": {"seconds_per_step": 24.6, "peak_rss_bytes": 10.4e9, "batch_size": 64, "points_per_step": 4096},
    "shapenet_chairs": {"seconds_per_step": 17.2, "peak_rss_bytes": 9.6e9, "batch_size": 24, "points_per_step": 4096},
}
"""The authors' released code, one training step (D step with R1, then G step) at the paper's settings, measured on a
2-core CPU machine with 2 threads, idle (code: github.com/EmilienDupont/neural-function-distributions). Compared only
when batch size and points per step match."""

REFERENCE_SOURCE = ("authors' released code (github.com/EmilienDupont/neural-function-distributions), "
                    "2 threads, idle")
"""The ``source`` of a record's ``reference``."""

SAMPLE_RESOLUTIONS = {2: [1024], 3: [128, 256]}
"""Default ``--sample`` grids per coordinate dimension."""


# =====================================================================================================================
# Building a step


@dataclass
class DataShape:
    """The data one preset trains on: ``resolution**coord_dim`` grid points with ``feature_dim`` features each."""

    coord_dim: int
    feature_dim: int
    resolution: int

    @property
    def points_total(self) -> int:
        return self.resolution ** self.coord_dim


def data_shape(cfg: Config, dim: int | None = None, features: int | None = None,
               resolution: int | None = None) -> DataShape:
    """The preset's data shape (:data:`DATA_SHAPES`), with any of its three numbers overridden."""
    base = DATA_SHAPES.get(cfg.name)
    if base is None and None in (dim, features, resolution):
        raise NfdError(f"no data shape known for config '{cfg.name}'; give --dim, --features and --resolution")
    d, k, r = base if base is not None else (0, 0, 0)
    shape = DataShape(dim or d, features or k, resolution or r)
    if shape.coord_dim not in (2, 3) or shape.feature_dim < 1 or shape.resolution < 2:
        raise NfdError(f"bad data shape d={shape.coord_dim}, k={shape.feature_dim}, resolution={shape.resolution} "
                       "(d must be 2 or 3, k >= 1, resolution >= 2)")
    return shape


@dataclass
class BenchSetup:
    """Everything one benchmarked training step needs: models, optimisers, the grid and a pool of real data."""

    cfg: Config
    shape: DataShape
    device: torch.device
    G: torch.nn.Module
    D: torch.nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    all_coords: torch.Tensor
    data: torch.Tensor
    num_points: int
    G_run: torch.nn.Module | None = None
    """The generator the timed steps call (``torch.compile``'d with ``--compile``); ``G`` stays eager."""

    @property
    def batch_size(self) -> int:
        return self.data.shape[0]


def build_setup(cfg: Config, shape: DataShape, device: torch.device | str = "cpu", seed: int = 0) -> BenchSetup:
    """The preset's models and optimisers (built as :class:`nfd.training.trainer.Trainer` builds them) for ``shape``, and random
    real features in [-1, 1] for one batch, all in torch's default dtype."""
    if cfg.train.model != "gan":
        raise NfdError(f"nfd bench times the GAN step; train.model is '{cfg.train.model}'")
    device = torch.device(device)
    torch.manual_seed(seed)
    G = build_generator(cfg, shape.coord_dim, shape.feature_dim).to(device)
    D = build_discriminator_for(cfg, shape.coord_dim, shape.feature_dim).to(device)
    opt_g, opt_d = gan_optimizers(G, D, cfg.train)
    coords = grid_coords(shape.resolution, shape.coord_dim, device=device).to(torch.get_default_dtype())
    n_total = coords.shape[0]
    num_points = cfg.train.num_points if 0 < cfg.train.num_points < n_total else 0
    g = torch.Generator().manual_seed(seed + 1)
    data = (torch.rand(cfg.train.batch_size, n_total, shape.feature_dim, generator=g,
                       dtype=torch.get_default_dtype()) * 2 - 1).to(device)
    return BenchSetup(cfg, shape, device, G, D, opt_g, opt_d, coords, data, num_points, G_run=G)


def step_inputs(setup: BenchSetup, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Generator]:
    """Coordinates ``[N, d]``, real features ``[B, N, k]`` and the latent generator of ``step``: a fresh sorted
    K-subset of the grid per step when the preset samples points (the trainer's streams), else the full grid."""
    seed = setup.cfg.train.seed
    coords, real = setup.all_coords, setup.data
    if setup.num_points:
        gen = step_generator(seed, step, stream=2)
        idx = torch.randperm(coords.shape[0], generator=gen)[: setup.num_points].sort().values.to(setup.device)
        coords, real = coords.index_select(0, idx), real.index_select(1, idx)
    else:
        real = real.clone()
    return coords, real, step_generator(seed, step, stream=3, device=setup.device)


def run_step(setup: BenchSetup, step: int, naive: bool = False, amp: bool = False,
             eager: bool = False) -> dict[str, float]:
    """One training step of the setup: :func:`nfd.training.trainer.gan_step` on the inputs of ``step``."""
    coords, real, gen = step_inputs(setup, step)
    G = setup.G if eager or setup.G_run is None else setup.G_run
    return gan_step(G, setup.D, setup.opt_g, setup.opt_d, coords, real, setup.cfg.train, gen, naive=naive, amp=amp)


# =====================================================================================================================
# Measuring


class _GlobalOnly:
    """Stands in for FlopCounterMode's module tracker, whose backward hooks break ``autograd.grad`` on leaf tensors
    (the R1 penalty); every FLOP is then attributed to 'Global' only."""

    parents = {"Global"}

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class StepFlopCounter(FlopCounterMode):
    """:class:`torch.utils.flop_counter.FlopCounterMode` that works through double backward (no per-module table) and
    counts a product with a sparse operand (the discriminator's average pooling) as the 2 nnz n multiply-adds it
    does, not as the dense product of its shapes."""

    def __init__(self) -> None:
        super().__init__(display=False)
        self.mod_tracker = _GlobalOnly()  # type: ignore[assignment]

    def _count_flops(self, func_packet: Any, out: Any, args: Any, kwargs: Any) -> Any:
        sparse = [a for a in args if isinstance(a, torch.Tensor) and a.layout != torch.strided]
        if sparse and isinstance(out, torch.Tensor) and (func_packet in self.flop_registry
                                                         or func_packet is torch.ops.aten._sparse_addmm):
            self.flop_counts["Global"][func_packet] += 2 * sum(int(a._nnz()) for a in sparse) * int(out.shape[-1])
            return out
        return super()._count_flops(func_packet, out, args, kwargs)


def count_flops(fn: Any) -> tuple[int, Any]:
    """(FLOPs of the matrix products run by ``fn()``, its result)."""
    counter = StepFlopCounter()
    with counter:
        out = fn()
    return int(counter.get_total_flops()), out


def _loadavg() -> float | None:
    """The 1-minute load average (other processes competing for the cores), or None where unknown."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


def generator_cost(G: torch.nn.Module, coords: torch.Tensor, batch: int, naive: bool = False,
                   repeats: int = 2) -> dict[str, float]:
    """Time and FLOPs of the generator alone (forward at ``coords`` and backward into the hypernetwork) at one batch
    size: the G half of a step without D. Its per-example figures must not grow with the batch on the fast path."""
    device = coords.device
    g = torch.Generator(device=device).manual_seed(0)

    def once() -> None:
        out = G(G.sample_latents(batch, generator=g, device=device), coords, naive=naive)
        out.square().mean().backward()

    flops, _ = count_flops(once)
    times = []
    for _ in range(max(1, repeats)):
        _sync(device)
        t0 = time.perf_counter()
        once()
        _sync(device)
        times.append(time.perf_counter() - t0)
    G.zero_grad(set_to_none=True)
    sec = statistics.median(times)
    return {"batch": batch, "seconds": sec, "seconds_per_example": sec / batch, "flops": flops,
            "flops_per_example": flops / batch}


def _profile_top(setup: BenchSetup, step: int, naive: bool, amp: bool, top: int) -> list[dict[str, Any]]:
    """One step under torch.profiler: the ``top`` ops by self CPU time (self CUDA time on a GPU); also printed."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if setup.device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        run_step(setup, step, naive=naive, amp=amp)
        _sync(setup.device)
    cuda = setup.device.type == "cuda"
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = prof.key_averages()
    print(events.table(sort_by=key, row_limit=top), flush=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    rows = sorted(events, key=lambda e: getattr(e, key, 0.0), reverse=True)[:top]
    return [{"name": e.key, "self_cpu_s": e.self_cpu_time_total / 1e6, "self_cpu_fraction": e.self_cpu_time_total / total,
             "self_device_s": getattr(e, "self_device_time_total", 0.0) / 1e6 if cuda else 0.0,
             "calls": e.count} for e in rows]


def measure_steps(cfg: Config, shape: DataShape, device: torch.device, mode: str, steps: int, warmup: int,
                  amp: bool = False, compile: bool = False, gen_scaling: bool = True,
                  profile_top: int = 0, verbose: bool = True) -> dict[str, Any]:
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
        _sync(device)
        say(f"warm-up step {step + 1}/{warmup}: {time.perf_counter() - t0:.2f} s")
        step += 1
    times, cpu_times, metrics = [], [], {}
    load_before = _loadavg()
    for i in range(steps):
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        metrics = run_step(setup, step, naive=naive, amp=amp)
        _sync(device)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
        say(f"step {i + 1}/{steps}: {times[-1]:.3f} s (CPU time {cpu_times[-1]:.3f} s)")
        step += 1
    load_after = _loadavg()
    peak_steps = peak_rss_bytes()  # the process so far: imports, models, the FLOP-counted and the timed steps
    peak_cuda_steps = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else 0
    if flops is None:
        flops, _ = count_flops(lambda: run_step(setup, step, naive=naive, amp=amp, eager=True))
        step += 1
    median = statistics.median(times)
    rec: dict[str, Any] = {
        "mode": mode,
        "seconds_per_step": {"median": median, "min": min(times), "max": max(times), "all": times},
        "cpu_seconds_per_step": {"median": statistics.median(cpu_times), "min": min(cpu_times),
                                 "max": max(cpu_times), "all": cpu_times},
        "loadavg_before": load_before, "loadavg_after": load_after,
        "flops_per_step": flops,
        "gflops_per_s": flops / median / 1e9,
        "metrics": metrics,
        "metrics_step0": metrics0,
        "rss_after_build_bytes": rss_models,
        "threads": torch.get_num_threads(),
        "env": {k: os.environ.get(k) for k in RUNTIME_ENV},
    }
    if gen_scaling:
        coords = step_inputs(setup, step)[0]
        b = setup.batch_size
        sizes = sorted({max(1, b // 4), max(1, b // 2), b})
        rec["generator"] = [generator_cost(setup.G, coords, s, naive=naive) for s in sizes]
        for r in rec["generator"]:
            say(f"generator fwd+bwd batch {r['batch']}: {r['seconds_per_example'] * 1e3:.2f} ms/example, "
                f"{_flops(r['flops_per_example'])}/example")
    if profile_top > 0:
        rec["profile_top"] = _profile_top(setup, step, naive, amp, profile_top)
    rec["peak_rss_bytes"] = peak_steps
    rec["peak_rss_gb"] = peak_steps / 1e9
    rec["peak_cuda_bytes"] = peak_cuda_steps
    rec["peak_rss_process_bytes"] = peak_rss_bytes()  # also the generator-scaling and profiled runs
    return rec


def measure_sample(cfg: Config, shape: DataShape, device: torch.device, resolution: int, num: int,
                   chunk_points: int, verbose: bool = True) -> dict[str, Any]:
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
    _sync(device)
    t0 = time.perf_counter()
    coords = grid_coords(resolution, shape.coord_dim, device=device)
    out = G.evaluate(z, coords, chunk_points=chunk_points)
    _sync(device)
    sec = time.perf_counter() - t0
    points = resolution ** shape.coord_dim
    flops = int(f1 + (f2 - f1) * (points - n1.shape[0]) / (n2.shape[0] - n1.shape[0]))
    if verbose:
        print(f"nfd bench [sample] {num} x {resolution}^{shape.coord_dim}: {sec:.2f} s", flush=True)
    rec = {"resolution": resolution, "points": points, "num": num, "seconds": sec,
           "seconds_per_function": sec / num, "output_bytes": out.numel() * out.element_size(),
           "flops": flops, "gflops_per_s": flops / sec / 1e9, "finite": bool(torch.isfinite(out).all())}
    del out
    rec["peak_rss_bytes"] = peak_rss_bytes()
    rec["peak_rss_gb"] = rec["peak_rss_bytes"] / 1e9
    rec["peak_cuda_bytes"] = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else 0
    return rec


# =====================================================================================================================
# The command


def _environment(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    return {"device": str(device), "device_name": name, "threads": torch.get_num_threads(),
            "torch_version": torch.__version__, "cpu": cpu, "cpu_count": os.cpu_count(),
            "env": {k: os.environ.get(k) for k in RUNTIME_ENV}, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


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
    argv = [sys.executable, "-m", "nfd", "bench", "--preset", args.preset, "--device", args.device,
            "--threads", str(args.threads), "--child", child, "--json", str(out)]
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
        if args.no_env_tuning:
            for k in ENV_SET_BY_NFD:       # set by importing nfd, not by the user
                env.pop(k, None)
            env["NFD_RUNTIME_ENV"] = "0"   # and the child's import of nfd must not set them again
        else:
            for k, v in RUNTIME_ENV.items():
                env.setdefault(k, v)
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                             *filter(None, [env.get("PYTHONPATH")])])
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
    return measure_steps(cfg, shape, device, child, args.naive_steps if naive else args.steps,
                         args.naive_warmup if naive else args.warmup, amp=args.amp,
                         compile=args.compile and not naive, gen_scaling=not args.no_gen_scaling,
                         profile_top=0 if naive else args.profile)


def _gb(x: float) -> str:
    return f"{x / 1e9:.2f} GB"


def _mode_line(rec: dict[str, Any]) -> str:
    if "error" in rec:
        return f"  {rec['mode']:5s}: FAILED: {rec['error']}"
    s = rec["seconds_per_step"]
    cuda = f", peak CUDA {_gb(rec['peak_cuda_bytes'])}" if rec.get("peak_cuda_bytes") else ""
    cpu = rec.get("cpu_seconds_per_step", {}).get("median")
    cpu_s = f", CPU {cpu:.3f} s" if cpu is not None else ""
    return (f"  {rec['mode']:5s}: {s['median']:.3f} s/step (median of {len(s['all'])}; min {s['min']:.3f}, max "
            f"{s['max']:.3f}{cpu_s}), peak RSS {_gb(rec['peak_rss_bytes'])}{cuda}, {_flops(rec['flops_per_step'])}"
            f"/step, {rec['gflops_per_s']:.1f} GFLOP/s")


def _flops(x: float) -> str:
    return f"{x / 1e9:.1f} GFLOP" if x >= 1e8 else f"{x / 1e6:.2f} MFLOP"


def bench_steps(args: argparse.Namespace) -> dict[str, Any]:
    cfg, shape, device = _setup_process(args)
    modes = ["naive"] if args.naive else ["fast"] + ([] if args.no_naive else ["naive"])
    run = _run_child_inline if args.in_process else _run_child
    results = {m: run(args, m) for m in modes}
    primary = results[modes[0]]
    n_total = shape.points_total
    points = cfg.train.num_points if 0 < cfg.train.num_points < n_total else n_total
    rec: dict[str, Any] = {
        "schema": SCHEMA, "kind": "step", "preset": args.preset, "config": to_dict(cfg), "sets": list(args.set or []),
        **_environment(device),
        "data": {"coord_dim": shape.coord_dim, "feature_dim": shape.feature_dim, "resolution": shape.resolution,
                 "points_total": n_total, "points_per_step": points, "batch_size": cfg.train.batch_size},
        "steps": args.naive_steps if args.naive else args.steps,
        "warmup": args.naive_warmup if args.naive else args.warmup,
        "amp": bool(args.amp), "compile": bool(args.compile), "rss_isolated": not args.in_process,
        "mode": modes[0],
    }
    for key in ("seconds_per_step", "cpu_seconds_per_step", "peak_rss_bytes", "peak_rss_gb", "peak_cuda_bytes",
                "flops_per_step", "gflops_per_s", "metrics", "threads", "env", "error"):
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
    ref = REFERENCE.get(cfg.name)
    comparable = (ref is not None and ref["batch_size"] == cfg.train.batch_size and ref["points_per_step"] == points
                  and shape == data_shape(cfg))
    rec["reference"] = dict(ref, source=REFERENCE_SOURCE) \
        if comparable else None
    rec["speedup_over_reference"] = rec["rss_fraction_of_reference"] = None
    if comparable and "error" not in primary:
        rec["speedup_over_reference"] = ref["seconds_per_step"] / primary["seconds_per_step"]["median"]
        rec["rss_fraction_of_reference"] = primary["peak_rss_bytes"] / ref["peak_rss_bytes"]
    return rec


def print_steps(rec: dict[str, Any]) -> None:
    d = rec["data"]
    print(f"nfd bench {rec['preset']}: {rec['device']} ({rec['device_name']}), {rec['threads']} threads, batch "
          f"{d['batch_size']}, {d['points_per_step']} of {d['points_total']} points, d={d['coord_dim']}, "
          f"k={d['feature_dim']}{', amp' if rec['amp'] else ''}{', compile' if rec['compile'] else ''}")
    for m in ("fast", "naive"):
        if rec.get(m):
            print(_mode_line(rec[m]))
            for g in rec[m].get("generator", []):
                print(f"         generator fwd+bwd, batch {g['batch']:4d}: {g['seconds_per_example'] * 1e3:8.2f} "
                      f"ms/example, {_flops(g['flops_per_example'])}/example")
    if rec.get("speedup_over_naive"):
        print(f"  fast/naive time ratio {rec['fast_over_naive']:.3f} (speed-up x{rec['speedup_over_naive']:.1f})")
    if rec.get("step0_max_rel_diff") is not None:
        print(f"  same first step, fast vs naive: losses agree to {rec['step0_max_rel_diff']:.1e} (largest relative "
              "difference)")
    if rec.get("speedup_over_reference"):
        ref = rec["reference"]
        print(f"  vs the authors' code ({ref['seconds_per_step']} s/step, {_gb(ref['peak_rss_bytes'])}): "
              f"x{rec['speedup_over_reference']:.2f} faster, {rec['rss_fraction_of_reference']:.2f} of the peak RSS")


def bench_sample(args: argparse.Namespace) -> dict[str, Any]:
    cfg, shape, device = _setup_process(args)
    res_list = args.sample_resolution or SAMPLE_RESOLUTIONS[shape.coord_dim]
    run = _run_child_inline if args.in_process else _run_child
    results = [dict(run(args, f"sample:{r}"), resolution=r) for r in res_list]
    return {"schema": SCHEMA, "kind": "sample", "preset": args.preset, "config": to_dict(cfg),
            "sets": list(args.set or []), **_environment(device), "coord_dim": shape.coord_dim,
            "feature_dim": shape.feature_dim, "num": args.num, "chunk_points": args.chunk_points,
            "rss_isolated": not args.in_process, "results": results}


def print_sample(rec: dict[str, Any]) -> None:
    print(f"nfd bench {rec['preset']} --sample: {rec['device']}, {rec['threads']} threads, {rec['num']} functions, "
          f"chunks of {rec['chunk_points']} points")
    for r in rec["results"]:
        if "error" in r:
            print(f"  {r['resolution']}^{rec['coord_dim']}: FAILED: {r['error']}")
            continue
        print(f"  {r['resolution']}^{rec['coord_dim']}: {r['seconds']:.2f} s ({r['seconds_per_function']:.2f} s per "
              f"function, {r['gflops_per_s']:.1f} GFLOP/s), peak RSS {_gb(r['peak_rss_bytes'])} (result tensor "
              f"{_gb(r['output_bytes'])})")


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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help=verb_help(__name__),
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  nfd bench --preset mnist --steps 3 --json results/benchmarks/mnist.json\n"
               "  nfd bench --preset shapenet_chairs --set batch=8 --no-naive\n"
               "  nfd bench --preset celebahq64 --device cuda --amp --no-naive\n"
               "  nfd bench --preset shapenet_chairs --sample --json results/benchmarks/sample_chairs.json")
    p.add_argument("--preset", required=True, help=f"config preset: {', '.join(PRESETS)}")
    p.add_argument("--config", default=None, help="YAML file of overrides applied after the preset")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. batch=32 or points=2048 (repeatable)")
    p.add_argument("--steps", type=int, default=3, help="timed steps of the fast path (default 3)")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed steps before them (default 1; the first also counts the FLOPs)")
    p.add_argument("--naive", action="store_true", help="measure only the naive reference path")
    p.add_argument("--no-naive", action="store_true", help="measure only the fast path (no naive comparison)")
    p.add_argument("--naive-steps", type=int, default=1, help="timed steps of the naive path (default 1)")
    p.add_argument("--naive-warmup", type=int, default=1, help="untimed naive steps before them (default 1)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the record (one JSON object) here")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (default: train.threads if set, else torch's default, the core count)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the generator (D is run eagerly: R1 needs a double backward, which compiled "
                        "graphs do not support)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast for the forward passes (CUDA; CPU with bf16)")
    p.add_argument("--no-gen-scaling", action="store_true",
                   help="skip timing the generator alone at 1/4, 1/2 and all of the batch")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="profile one extra fast step with torch.profiler and print the top N ops by self time")
    p.add_argument("--dim", type=int, default=None, help="override the coordinate dimension d of the data")
    p.add_argument("--features", type=int, default=None, help="override the feature dimension k of the data")
    p.add_argument("--resolution", type=int, default=None, help="override the grid resolution of the data")
    p.add_argument("--sample", action="store_true",
                   help="time sampling instead: NUM functions on large grids (see --sample-resolution)")
    p.add_argument("--sample-resolution", type=int, action="append", default=None, metavar="R",
                   help="grid resolution for --sample (repeatable; default 128 and 256 in 3D, 1024 in 2D)")
    p.add_argument("--num", type=int, default=16, help="functions to sample with --sample (default 16)")
    p.add_argument("--chunk-points", type=int, default=1 << 15,
                   help="grid points per chunk with --sample (bounds memory; default 32768)")
    p.add_argument("--no-env-tuning", action="store_true",
                   help="run the measuring subprocesses in the environment as the user set it (default: "
                        "OMP_WAIT_POLICY=PASSIVE and THP_MEM_ALLOC_ENABLE=1 unless set: nfd.RUNTIME_ENV)")
    p.add_argument("--in-process", action="store_true",
                   help="measure in this process instead of a fresh subprocess per configuration (peak RSS then "
                        "mixes the configurations)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run_bench)
