"""Sampling functions from a trained model and evaluating them on grids of any resolution, in bounded memory.

The latents depend only on the seed, so the same seed gives the same functions at every resolution: this is what
superresolution (Fig. 7) and the 32^3/64^3/128^3 comparison (Fig. 10) rely on.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nfd.errors import NfdError
from nfd.grid import grid_coords
from nfd.io import atomic_path, free_disk_bytes, writing
from nfd.models.build import build_generator, pick_device
from nfd.progressbar import progress_bar
from nfd.sampling.samples_file import write_samples
from nfd.training import checkpoint as ckpt


def load_generator(path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The generator of a checkpoint in eval mode (its moving average G_ema when it has one: see
    ``train.ema_beta``), and the checkpoint's metadata (without the weights)."""
    data = ckpt.load(path, map_location=device)
    cfg = ckpt.config_of(data, path)
    points = 1
    for n in data.get("grid_shape", [1]):
        points *= int(n)
    G = build_generator(
        cfg,
        int(data["coord_dim"]),
        int(data["feature_dim"]),
        num_examples=int(data.get("num_examples", 0)),
        points_per_example=points,
    )
    try:
        G.load_state_dict(data["G_ema"] if data.get("G_ema") is not None else data["G"])
    except RuntimeError as e:
        raise NfdError(f"{path}: generator weights do not fit the stored config ({str(e).splitlines()[0]})") from None
    G.to(device).eval()
    meta = {k: v for k, v in data.items() if k not in ("G", "G_ema", "D", "opt_g", "opt_d", "rng")}
    meta["cfg"] = cfg
    return G, meta


def latents(G: torch.nn.Module, num: int, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The ``num`` latents of ``seed``: the i-th latent does not depend on ``num`` or on the resolution.

    Drawn one at a time: torch's vectorised normal sampler makes row i of ``randn(num, d)`` depend on ``num``.
    """
    g = torch.Generator().manual_seed(seed)
    return torch.cat([G.sample_latents(1, generator=g) for _ in range(num)]).to(device)


CHUNK_BATCH = 16
"""Latents per generator call inside :meth:`evaluate` (its default): part of the working-memory estimate."""


def grid_axis(resolution: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The per-axis coordinates of :func:`nfd.grid.grid_coords` (same tensor values, same device)."""
    return grid_coords(resolution, 1, device=device)[:, 0]


def grid_rows(axis: torch.Tensor, dim: int, start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` of ``grid_coords(len(axis), dim)`` without building the others: in C order row ``i``
    has the base-``R`` digits of ``i`` as its axis indices. Values are copies of ``axis``, so bit-identical."""
    r = axis.shape[0]
    idx = torch.arange(start, stop, dtype=torch.int64, device=axis.device)
    return torch.stack([axis[(idx // r ** (dim - 1 - j)) % r] for j in range(dim)], dim=-1)


def _mlp_shape(G: torch.nn.Module) -> tuple[int, int]:
    """(widest layer, feature_dim) of the generator's f_theta, for the estimates; (256, 1) if it has no MLPShape."""
    shape = getattr(G, "shape", None) or getattr(getattr(G, "decoder", None), "shape", None)
    if shape is None:
        return 256, 1
    return max(shape.in_dim, *shape.hidden, shape.out_dim), int(shape.out_dim)


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def available_memory() -> int | None:
    """Bytes this process can still allocate: MemAvailable, capped by a cgroup v2 limit; None if unknown.

    Read from /proc (psutil is not a dependency); os.sysconf's free pages is the fallback."""
    avail: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, AttributeError):
            return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            avail = min(avail, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return avail


def sample_bytes(
    num: int, resolution: int, coord_dim: int, feature_dim: int, chunk_points: int, width: int = 256
) -> tuple[int, int]:
    """(output bytes, peak working bytes) of evaluating ``num`` functions on a ``resolution**coord_dim`` grid.

    Output: the float32 features. Working: one chunk's coordinates (+ int64 indices), the generator's result for
    it, and about three float32 activations of the widest layer per (latent, point) of one generator call."""
    points = resolution**coord_dim
    chunk = min(chunk_points, points)
    output = num * points * feature_dim * 4
    working = chunk * coord_dim * 12 + num * chunk * feature_dim * 4 + min(num, CHUNK_BATCH) * chunk * width * 12
    return output, working


def check_sample_size(
    num: int,
    resolution: int,
    coord_dim: int,
    feature_dim: int,
    chunk_points: int,
    width: int = 256,
    out: str | Path | None = None,
) -> None:
    """Refuse upfront, in one line, a grid whose output does not fit in memory (or on ``out``'s disk), instead of
    a raw allocation failure (or a kill) after minutes of work."""
    output, working = sample_bytes(num, resolution, coord_dim, feature_dim, chunk_points, width)
    what = (
        f"{num} function{'s' if num != 1 else ''} at {resolution}^{coord_dim} x {feature_dim} float32 "
        f"({resolution**coord_dim} points each)"
    )
    mem = available_memory()
    if mem is not None and output + working > mem:
        raise NfdError(
            f"{what} need {_gb(output + working)} of memory ({_gb(output)} output), only {_gb(mem)} "
            "available; lower --resolution or --num"
        )
    if out is not None:
        free = free_disk_bytes(out)
        need = output + (64 << 10)  # the .npz: features, latents, a few scalars and zip headers
        if free is not None and need > free:
            raise NfdError(
                f"cannot write {out}: {what} need {_gb(need)} on disk, only {_gb(free)} free there; "
                "lower --resolution or --num"
            )


def sample_grid(
    G: torch.nn.Module,
    z: torch.Tensor,
    resolution: int,
    coord_dim: int,
    chunk_points: int = 1 << 18,
    progress: bool = False,
) -> np.ndarray:
    """Evaluate the functions of ``z`` on a ``resolution**d`` grid: ``[num, R, ..., R, k]`` float32.

    The grid is generated ``chunk_points`` rows at a time, each chunk evaluated and copied into the one output
    array, so memory is the output plus one chunk; the chunks are those :meth:`evaluate` used on the whole grid,
    which keeps the result bit-identical to evaluating the full coordinate array at once. ``progress``: a bar of
    the grid points done (``nfd.progressbar``)."""
    if chunk_points < 1:
        raise NfdError(f"chunk_points must be >= 1, got {chunk_points}")
    num, points = int(z.shape[0]), resolution**coord_dim
    width, feature_dim = _mlp_shape(G)
    check_sample_size(num, resolution, coord_dim, feature_dim, chunk_points, width)
    axis = grid_axis(resolution, device=z.device)
    out: np.ndarray | None = None
    with progress_bar(desc="sample", unit="point", total=points, unit_scale=True, enabled=progress) as bar:
        for p0 in range(0, points, chunk_points):
            p1 = min(p0 + chunk_points, points)
            part = G.evaluate(z, grid_rows(axis, coord_dim, p0, p1), chunk_points=chunk_points).numpy()
            if out is None:
                out = np.empty((num, points, part.shape[-1]), dtype=np.float32)
            out[:, p0:p1] = part
            bar.update(p1 - p0)
    assert out is not None
    return out.reshape(num, *([resolution] * coord_dim), -1)


def run_sample(args: argparse.Namespace) -> int:
    device = pick_device(args.device)
    G, meta = load_generator(args.checkpoint, device=str(device))
    d, k = int(meta["coord_dim"]), int(meta["feature_dim"])
    check_sample_size(args.num, args.resolution, d, k, args.chunk_points, _mlp_shape(G)[0], out=args.out)
    z = latents(G, args.num, args.seed, device)
    feats = sample_grid(G, z, args.resolution, d, chunk_points=args.chunk_points, progress=not args.log_quiet)
    with writing(args.out), atomic_path(args.out) as tmp:
        write_samples(
            tmp,
            feats,
            z.cpu().numpy(),
            resolution=args.resolution,
            coord_dim=d,
            feature_dim=k,
            seed=args.seed,
            preset=meta["cfg"].name,
            train_resolution=int(meta.get("grid_shape", [0])[0]),
            model=str(meta["model"]),
        )
    print(f"nfd sample: {args.num} functions at {args.resolution}^{d} -> {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from nfd.cli import int_at_least, verb_help

    p = sub.add_parser(
        "sample",
        help=verb_help(__name__),
        description="Draw NUM latents from the seed, map them to functions and evaluate them on an "
        "R x R (2D) or R^3 (3D) grid over [-1, 1]^d, in chunks. Writes an .npz with "
        "'features' [NUM, R, ..., R, k] in [-1, 1] and 'latents'.",
    )
    p.add_argument("--checkpoint", required=True, help="model.pt or checkpoints/last.pt of a training run")
    p.add_argument("--num", type=int_at_least(1), required=True, help="number of functions to sample")
    p.add_argument(
        "--resolution",
        type=int_at_least(2),
        required=True,
        help="grid points per axis (refused upfront if the output does not fit in memory or on disk)",
    )
    p.add_argument("--seed", type=int, default=0, help="latent seed; the same seed gives the same functions")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--chunk-points",
        type=int_at_least(1),
        default=1 << 18,
        help="grid points generated and evaluated per chunk ; bounds working memory",
    )
    p.set_defaults(func=run_sample)
