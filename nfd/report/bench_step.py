"""One training step of a preset, built to be timed by ``nfd bench``: its models, optimisers and inputs, the step
itself, and the FLOPs it does.

The step is exactly :func:`nfd.training.step.gan_step`, built by the trainer's own functions, on random features
in [-1, 1] of the preset's data shape (reading the HDF5 file is not timed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from nfd.config import Config
from nfd.data.shapes import PRESET_DATA
from nfd.errors import NfdError
from nfd.grid import grid_coords
from nfd.models.build import build_discriminator_for, build_generator
from nfd.report.timing import time_calls
from nfd.training.step import ParallelBranches, gan_optimizers, gan_step, parallel_branches_for, step_generator

BENCH_RESOLUTION = {"tiny": 16}
"""Grid sides ``nfd bench`` uses instead of the primary data set's own: the tiny preset is timed on a 16^2 grid, so
that a whole benchmark takes seconds (tests)."""


@dataclass
class DataShape:
    """The data one preset trains on: ``resolution**coord_dim`` grid points with ``feature_dim`` features each."""

    coord_dim: int
    feature_dim: int
    resolution: int

    @property
    def points_total(self) -> int:
        return self.resolution**self.coord_dim


def data_shape(
    cfg: Config, dim: int | None = None, features: int | None = None, resolution: int | None = None
) -> DataShape:
    """The shape of the preset's primary data set (:data:`nfd.data.shapes.PRESET_DATA`, with the grid side of
    :data:`BENCH_RESOLUTION`), with any of its three numbers overridden."""
    known = PRESET_DATA.get(cfg.name)
    if known is None and None in (dim, features, resolution):
        raise NfdError(f"no data shape known for config '{cfg.name}'; give --dim, --features and --resolution")
    d, k, r = (
        (known[0].coord_dim, known[0].feature_dim, BENCH_RESOLUTION.get(cfg.name, known[0].resolution))
        if known is not None
        else (0, 0, 0)
    )
    shape = DataShape(dim or d, features or k, resolution or r)
    if shape.coord_dim not in (2, 3) or shape.feature_dim < 1 or shape.resolution < 2:
        raise NfdError(
            f"bad data shape d={shape.coord_dim}, k={shape.feature_dim}, resolution={shape.resolution} "
            "(d must be 2 or 3, k >= 1, resolution >= 2)"
        )
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
    branches: ParallelBranches | None = None
    """The D step's side thread, as the trainer chooses it (``train.d_branches``) for these sizes."""

    @property
    def batch_size(self) -> int:
        return self.data.shape[0]


def build_setup(cfg: Config, shape: DataShape, device: torch.device | str = "cpu", seed: int = 0) -> BenchSetup:
    """The preset's models and optimisers (built as :class:`nfd.training.trainer.Trainer` builds them) for ``shape``,
    and random real features in [-1, 1] for one batch, all in torch's default dtype."""
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
    data = (
        torch.rand(cfg.train.batch_size, n_total, shape.feature_dim, generator=g, dtype=torch.get_default_dtype()) * 2
        - 1
    ).to(device)
    branches = parallel_branches_for(cfg.train, D, device, cfg.train.batch_size, num_points or n_total)
    return BenchSetup(cfg, shape, device, G, D, opt_g, opt_d, coords, data, num_points, G_run=G, branches=branches)


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


def run_step(
    setup: BenchSetup, step: int, naive: bool = False, amp: bool = False, eager: bool = False
) -> dict[str, float]:
    """One training step of the setup: :func:`nfd.training.step.gan_step` on the inputs of ``step``. ``eager``
    calls the eager generator and keeps the whole D step on this thread (FLOP counting sees this thread's
    operations only)."""
    coords, real, gen = step_inputs(setup, step)
    G = setup.G if eager or setup.G_run is None else setup.G_run
    branches = None if eager else setup.branches
    return gan_step(
        G,
        setup.D,
        setup.opt_g,
        setup.opt_d,
        coords,
        real,
        setup.cfg.train,
        gen,
        naive=naive,
        amp=amp,
        branches=branches,
    )


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
        if (
            sparse
            and isinstance(out, torch.Tensor)
            and (func_packet in self.flop_registry or func_packet is torch.ops.aten._sparse_addmm)
        ):
            self.flop_counts["Global"][func_packet] += 2 * sum(int(a._nnz()) for a in sparse) * int(out.shape[-1])
            return out
        return super()._count_flops(func_packet, out, args, kwargs)


def count_flops(fn: Any) -> tuple[int, Any]:
    """(FLOPs of the matrix products run by ``fn()``, its result)."""
    counter = StepFlopCounter()
    with counter:
        out = fn()
    return int(counter.get_total_flops()), out


def flops_text(x: float) -> str:
    """A FLOP count for people: GFLOP from 0.1 GFLOP up, MFLOP below."""
    return f"{x / 1e9:.1f} GFLOP" if x >= 1e8 else f"{x / 1e6:.2f} MFLOP"


def generator_cost(
    G: torch.nn.Module, coords: torch.Tensor, batch: int, naive: bool = False, repeats: int = 2
) -> dict[str, float]:
    """Time and FLOPs of the generator alone (forward at ``coords`` and backward into the hypernetwork) at one batch
    size: the G half of a step without D. Its per-example figures must not grow with the batch on the fast path."""
    device = coords.device
    g = torch.Generator(device=device).manual_seed(0)

    def once() -> None:
        out = G(G.sample_latents(batch, generator=g, device=device), coords, naive=naive)
        out.square().mean().backward()

    flops, _ = count_flops(once)  # also the warm-up of the timed calls
    sec = time_calls(once, device, max(1, repeats)).median
    G.zero_grad(set_to_none=True)
    return {
        "batch": batch,
        "seconds": sec,
        "seconds_per_example": sec / batch,
        "flops": flops,
        "flops_per_example": flops / batch,
    }
