"""T2 resolution independence (paper Sec. 3.4): one discriminator step as the grid grows, PointConv on all points, on
K sampled points, and the CNN baseline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from nfd.data.shapes import PRESET_DATA
from nfd.errors import NfdError
from nfd.models.conv_baseline import ConvDiscriminator
from nfd.presets import PRESETS
from nfd.presets import preset as config_preset
from nfd.report.profiling import time_and_memory
from nfd.report.table import PIPELINE_PRESETS, Table

T2_MODEL = {"tiny": "tiny", "demo": "celebahq64", "paper": "celebahq64"}
"""Config preset whose discriminator T2 measures, per pipeline preset (a config preset maps to itself)."""

T2_BATCH = {"tiny": 4, "demo": 1, "paper": 4}
"""Default sets per batch of the T2 step, per pipeline preset (1 for config presets): the demo's paper-sized
discriminator on every point of a 256^2 grid takes seconds per step on two CPU cores, so the demo uses one set."""


def _grid_features(features: torch.Tensor, res: int, d: int) -> torch.Tensor:
    """``[B, R^d, k]`` features on a C-order grid -> ``[B, k, R, ..., R]``."""
    b, _, k = features.shape
    return features.reshape(b, *([res] * d), k).movedim(-1, 1).contiguous()


Step = Callable[[], None]


def _d_step_fn(
    D: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    r1_weight: float,
    call: Callable[[nn.Module, torch.Tensor], torch.Tensor],
) -> tuple[Step, Step]:
    """One discriminator step as the trainer does it: D(real), D(fake), loss, R1 on real, backward; and the reset
    that drops its parameter gradients."""
    from nfd.models.losses import d_loss, r1_penalty

    def step() -> None:
        x = real.detach().requires_grad_(True)
        real_logits = call(D, x)
        fake_logits = call(D, fake)
        total = d_loss(real_logits, fake_logits) + r1_weight * r1_penalty(real_logits, x, create_graph=True)
        total.backward()

    def reset() -> None:
        D.zero_grad(set_to_none=True)

    return step, reset


def _build_plan(D: nn.Module, coords: torch.Tensor) -> Any:
    """The discriminator's neighbour plan for ``coords``, built afresh (not from the process-wide cache)."""
    try:
        from nfd.models.neighbours import build_plan

        return build_plan(coords, D.level_specs, D.p, D.keep_fraction)  # type: ignore[attr-defined]
    except AttributeError:  # another discriminator layout: go through its public interface
        return D.plan(coords)  # type: ignore[operator]


def _resolutions(d: int, max_points: int, levels: int, min_resolution: int | None) -> list[int]:
    # the PointConv discriminator needs >= 2 points after its last pooling (batchnorm of the final weight MLP),
    # the CNN >= 1 position: both hold from 2^(levels + 1) per axis
    smallest = 2 ** (levels + 1)
    lo = max(min_resolution if min_resolution is not None else (16 if d == 2 else 8), smallest)
    out = []
    r = 1
    while r < lo:
        r *= 2
    while r**d <= max_points:
        out.append(r)
        r *= 2
    return out


def t2_model_preset(preset: str) -> str:
    """The config preset whose discriminator T2 measures for a pipeline or config preset name."""
    if preset in T2_MODEL:
        return T2_MODEL[preset]
    if preset in PRESETS:
        return preset
    raise NfdError(f"unknown preset '{preset}' (known: {', '.join([*PIPELINE_PRESETS, *sorted(PRESETS)])})")


def _mib(v: int | str) -> float | str:
    return v / 2**20 if isinstance(v, int) else v


def _ms(v: float | str) -> float | str:
    return 1e3 * v if isinstance(v, float) else v


def _fmt_ms(v: float | str) -> str:
    return f"{1e3 * v:.1f} ms" if isinstance(v, float) else str(v)


def _ratio(cur: Any, prev: Any) -> float | None:
    if isinstance(cur, int | float) and isinstance(prev, int | float) and prev > 0:
        return float(cur) / float(prev)
    return None


def table_t2(
    preset: str,
    max_points: int = 65536,
    repeats: int = 3,
    batch: int | None = None,
    k_points: int = 4096,
    min_resolution: int | None = None,
    device: str = "auto",
    model: str | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> Table:
    """T2: one discriminator step at growing grid resolutions, for the CNN, PointConv on all points and PointConv on
    ``k_points`` points sampled from the grid. See the table's notes for the protocol."""
    from nfd.grid import grid_coords
    from nfd.models.build import pick_device
    from nfd.models.discriminators import build_discriminator

    batch = batch if batch is not None else T2_BATCH.get(preset, 1)
    if max_points < 1 or repeats < 1 or batch < 1 or k_points < 1:
        raise NfdError("--max-points, --repeats, --batch and --k-points must be >= 1")
    name = model or t2_model_preset(preset)
    if name not in PRESETS:
        raise NfdError(f"unknown config preset '{name}' for --model (known: {', '.join(sorted(PRESETS))})")
    cfg = config_preset(name)
    data = PRESET_DATA[name][0]
    dataset, d, k = data.dataset, data.coord_dim, data.feature_dim
    dcfg = cfg.discriminator
    if dcfg.kind != "pointconv":
        dcfg.kind = "pointconv"
    levels = len(dcfg.channels)
    res_list = _resolutions(d, max_points, levels, min_resolution)
    if not res_list:
        raise NfdError(
            f"--max-points {max_points} is below the smallest grid ({2 ** (levels + 1)}^{d} points for a "
            f"{levels}-level discriminator)"
        )
    dev = pick_device(device)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pc = build_discriminator(d, k, dcfg).to(dev).train()
        cnn = ConvDiscriminator(d, k, dcfg).to(dev).train()
    r1 = cfg.train.r1_weight
    say = log or (lambda s: None)
    rows: list[dict[str, Any]] = []
    prev: dict[str, Any] = {}
    for res in res_list:
        n = res**d
        coords = grid_coords(res, d)
        real = (torch.rand(batch, n, k, generator=gen) * 2 - 1).to(dev)
        fake = (torch.rand(batch, n, k, generator=gen) * 2 - 1).to(dev)
        row: dict[str, Any] = {"grid": "x".join([str(res)] * d), "points": n}

        # CNN on the full grid
        step, reset = _d_step_fn(cnn, _grid_features(real, res, d), _grid_features(fake, res, d), r1, lambda D, x: D(x))
        t, mem = time_and_memory(step, dev, repeats, reset)
        row.update(cnn_time_ms=_ms(t), cnn_peak_mib=_mib(mem), cnn_mem_ratio=_ratio(mem, prev.get("cnn")))
        prev["cnn"] = mem
        say(f"t2: {row['grid']} cnn {_fmt_ms(t)}")

        # PointConv on every point of the grid (the plan is built once per coordinate set, as for a fixed grid)
        t0 = time.perf_counter()
        plan = _build_plan(pc, coords)
        plan_s = time.perf_counter() - t0
        plan = plan.to(dev) if hasattr(plan, "to") else plan
        c_dev = coords.to(dev)
        step, reset = _d_step_fn(pc, real, fake, r1, lambda D, x, c=c_dev, p=plan: D(c, x, plan=p))
        t, mem = time_and_memory(step, dev, repeats, reset)
        row.update(
            pointconv_all_time_ms=_ms(t),
            pointconv_all_peak_mib=_mib(mem),
            pointconv_all_mem_ratio=_ratio(mem, prev.get("all")),
            pointconv_all_plan_s=plan_s,
        )
        prev["all"] = mem
        say(f"t2: {row['grid']} pointconv all {_fmt_ms(t)} (plan {plan_s:.2f} s)")
        del plan

        # PointConv on K points sampled uniformly without replacement from the grid (fresh subsets in training);
        # with K >= N the subset is the whole grid in the same order, i.e. the measurement above
        kk = min(k_points, n)
        if kk < n:
            idx = torch.randperm(n, generator=gen)[:kk].sort().values
            sub = coords[idx]
            t0 = time.perf_counter()
            plan_k = _build_plan(pc, sub)
            plan_k_s = time.perf_counter() - t0
            plan_k = plan_k.to(dev) if hasattr(plan_k, "to") else plan_k
            s_dev, i_dev = sub.to(dev), idx.to(dev)
            step, reset = _d_step_fn(
                pc, real[:, i_dev], fake[:, i_dev], r1, lambda D, x, c=s_dev, p=plan_k: D(c, x, plan=p)
            )
            t, mem = time_and_memory(step, dev, repeats, reset)
            del plan_k
        else:
            plan_k_s = plan_s
        row.update(
            pointconv_k_points=kk,
            pointconv_k_time_ms=_ms(t),
            pointconv_k_peak_mib=_mib(mem),
            pointconv_k_mem_ratio=_ratio(mem, prev.get("k")),
            pointconv_k_plan_s=plan_k_s,
        )
        prev["k"] = mem
        say(f"t2: {row['grid']} pointconv K={kk} {_fmt_ms(t)} (plan {plan_k_s:.2f} s)")
        rows.append(row)
        del real, fake

    columns = [
        "grid",
        "points",
        "cnn_time_ms",
        "cnn_peak_mib",
        "cnn_mem_ratio",
        "pointconv_all_time_ms",
        "pointconv_all_peak_mib",
        "pointconv_all_mem_ratio",
        "pointconv_all_plan_s",
        "pointconv_k_points",
        "pointconv_k_time_ms",
        "pointconv_k_peak_mib",
        "pointconv_k_mem_ratio",
        "pointconv_k_plan_s",
    ]
    n_cnn = sum(p.numel() for p in cnn.parameters())
    n_pc = sum(p.numel() for p in pc.parameters())
    expect = 2**d
    mem_how = (
        "torch.cuda.max_memory_allocated"
        if dev.type == "cuda"
        else "the PyTorch profiler's CPU allocation events (running sum of allocations and frees, maximum)"
    )
    notes = [
        f"One discriminator step on a batch of {batch} real and {batch} fake sets (uniform random features in "
        f"[-1, 1], k={k}): D(real), D(fake), non-saturating loss, R1 penalty (weight {r1:g}) on the real logits "
        "via torch.autograd.grad(create_graph=True), backward to the parameters; no optimizer update.",
        f"Discriminators: the PointConv discriminator of config preset '{name}' (channels {dcfg.channels}, "
        f"{pc.k if hasattr(pc, 'k') else 3**d} neighbours, weight MLP {dcfg.weight_hidden}; {n_pc:,} parameters) "
        f"and, for comparison, a DCGAN-like CNN with the same depth and channels (conv 4x4 stride 2 + batchnorm + "
        f"LeakyReLU per level, a 3-wide conv to one channel averaged over positions; {n_cnn:,} parameters) on the "
        f"same {d}D grids over [-1, 1]^{d}.",
        f"time_ms: median wall time over {repeats} run(s) on {dev.type} ({torch.get_num_threads()} threads), after "
        "one untimed run. peak_mib: peak tensor memory of one step above what was allocated before it (inputs, "
        f"weights and neighbour plans excluded), from {mem_how}. Memory is deterministic; wall times depend on the "
        "machine and on whatever else runs on it.",
        f"mem_ratio: peak memory divided by that of the previous row, i.e. at 2x the resolution ({expect}x the "
        f"points). The paper (Sec. 3.4): a CNN at 2x the resolution needs {expect}x the memory; so does PointConv on "
        "every point, while PointConv on K sampled points costs the same at every resolution. Each peak also holds a "
        "part that does not grow with the grid (the weight gradients and the buffers of their double backward: the "
        f"CNN's weights alone are {4 * n_cnn / 2**20:.2f} MiB in float32), so a ratio reaches {expect} only once "
        "the activations dominate, at larger grids or batches.",
        f"pointconv_k: the same PointConv discriminator on K={k_points} points drawn uniformly without replacement "
        "from the grid, which is how training with train.num_points stays resolution independent (Sec. 3.2); on "
        "grids of at most K points it is the all-points measurement.",
        "plan_s: time to build the neighbour plan (kNN and farthest-point query selection, on the CPU), not part of "
        "the step time: for a fixed full grid it is built once and cached, with a fresh K-subset per training step "
        "it is paid every step (and does not grow with the grid).",
    ]
    title = (
        f"Resolution independence: one discriminator step ({dataset}-like {d}D grids, k={k}) as the number of "
        f"points grows (preset {preset})."
    )
    return Table("t2", title, columns, rows, notes)
