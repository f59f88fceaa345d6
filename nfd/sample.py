"""Sampling functions from a trained model and evaluating them on grids of any resolution, in bounded memory.

The latents depend only on the seed, so the same seed gives the same functions at every resolution: this is what
superresolution (Fig. 7) and the 32^3/64^3/128^3 comparison (Fig. 10) rely on.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nfd import checkpoint as ckpt
from nfd.errors import NfdError
from nfd.grid import grid_coords
from nfd.io import atomic_path
from nfd.models import build_generator, pick_device


def load_generator(path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The generator of a checkpoint in eval mode (its moving average G_ema when it has one: see
    ``train.ema_beta``), and the checkpoint's metadata (without the weights)."""
    data = ckpt.load(path, map_location=device)
    cfg = ckpt.config_of(data, path)
    points = 1
    for n in data.get("grid_shape", [1]):
        points *= int(n)
    G = build_generator(cfg, int(data["coord_dim"]), int(data["feature_dim"]),
                        num_examples=int(data.get("num_examples", 0)), points_per_example=points)
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


def sample_grid(G: torch.nn.Module, z: torch.Tensor, resolution: int, coord_dim: int,
                chunk_points: int = 1 << 18) -> np.ndarray:
    """Evaluate the functions of ``z`` on a ``resolution**d`` grid: ``[num, R, ..., R, k]`` float32."""
    coords = grid_coords(resolution, coord_dim, device=z.device)
    feats = G.evaluate(z, coords, chunk_points=chunk_points)
    return feats.reshape(z.shape[0], *([resolution] * coord_dim), -1).numpy()


def run_sample(args: argparse.Namespace) -> int:
    if args.num < 1 or args.resolution < 2:
        raise NfdError("--num must be >= 1 and --resolution >= 2")
    device = pick_device(args.device)
    G, meta = load_generator(args.checkpoint, device=str(device))
    d = int(meta["coord_dim"])
    z = latents(G, args.num, args.seed, device)
    feats = sample_grid(G, z, args.resolution, d, chunk_points=args.chunk_points)
    with atomic_path(args.out) as tmp:
        np.savez(tmp, features=feats.astype(np.float32), latents=z.cpu().numpy(), resolution=args.resolution,
                 coord_dim=d, feature_dim=int(meta["feature_dim"]), seed=args.seed, preset=meta["cfg"].name,
                 train_resolution=int(meta.get("grid_shape", [0])[0]), model=str(meta["model"]))
    print(f"nfd sample: {args.num} functions at {args.resolution}^{d} -> {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="sample functions and evaluate them on a grid of any resolution",
                       description="Draw NUM latents from the seed, map them to functions and evaluate them on an "
                                   "R x R (2D) or R^3 (3D) grid over [-1, 1]^d, in chunks. Writes an .npz with "
                                   "'features' [NUM, R, ..., R, k] in [-1, 1] and 'latents'.")
    p.add_argument("--checkpoint", required=True, help="model.pt or checkpoints/last.pt of a training run")
    p.add_argument("--num", type=int, required=True, help="number of functions to sample")
    p.add_argument("--resolution", type=int, required=True, help="grid points per axis")
    p.add_argument("--seed", type=int, default=0, help="latent seed; the same seed gives the same functions")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--chunk-points", type=int, default=1 << 18, help="grid points evaluated per chunk (memory bound)")
    p.set_defaults(func=run_sample)
