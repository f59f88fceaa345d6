"""Time the discriminator's building blocks against their naive references, in one run on one machine.

kNN (KD-tree / chunked cdist vs brute force), plan building (farthest-point sampling + kNN, per level), PointConv
(efficient vs per-neighbour weight matrices, forward + backward) and a whole MNIST-preset discriminator. Prints
medians and fast/naive speed-ups measured in this run; asserts nothing about time. The shared-neighbourhood forms of
each preset's levels, and the cost model that chooses between them, are timed by ``bench_pointconv_forms.py``.

    .venv/bin/python benchmarks/bench_pointconv.py [--repeat 3] [--large] [--device cpu|cuda] [--threads N]

On a CPU shared with other jobs, ``--threads 1`` gives far steadier numbers than torch's default thread pool.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from nfd.grid import grid_coords
from nfd.models.discriminators import PointConvDiscriminator
from nfd.models.neighbours import build_plan, canonical_knn, knn, knn_naive, pool_levels
from nfd.models.pointconv import PointConv, pointconv_naive
from nfd.presets import preset
from nfd.report.timing import time_op


def median_time(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of one call of ``fn`` in seconds, over ``repeat`` calls (each after the Timer's warm-up)."""
    return time_op(fn, repeat).median


def row(name: str, fast: float, naive: float | None = None) -> None:
    extra = f"  naive {naive * 1e3:9.2f} ms  speed-up x{naive / fast:7.1f}" if naive is not None else ""
    print(f"{name:46s} fast {fast * 1e3:9.2f} ms{extra}", flush=True)


def bench_knn(device: torch.device, repeat: int, large: bool) -> None:
    print("== kNN, all grid points as queries, k = 9, l2 ==")
    for res in (28, 64) if large else (28, 48):
        x = grid_coords(res, 2, device=device)
        backend = "kdtree" if device.type == "cpu" else "torch"
        fast = median_time(lambda: knn(x, x, 9, backend=backend), repeat)
        naive = median_time(lambda: knn_naive(x, x, 9), repeat)
        row(f"{backend} vs brute force, N={res * res}", fast, naive)
        if device.type == "cpu":
            row(
                f"torch cdist+topk (CUDA path on CPU), N={res * res}",
                median_time(lambda: knn(x, x, 9, backend="torch"), repeat),
            )
        row(
            f"canonical ({backend}, lexsorted points), N={res * res}",
            median_time(lambda: canonical_knn(x, x, 9), repeat),
        )


def bench_plan(device: torch.device, repeat: int, large: bool) -> None:
    print("== plan building: FPS + kNN for every level (uncached) ==")
    for res, levels in ((28, 3), (64, 4), (128, 5)) if large else ((28, 3), (64, 4)):
        x = grid_coords(res, 2, device=device)
        row(
            f"build_plan grid {res}x{res}, {levels} levels",
            median_time(lambda: build_plan(x, pool_levels(levels, 9), keep_fraction=0.25), max(1, repeat // 2)),
        )
    x = grid_coords(32, 3, device=device)[torch.randperm(32**3, device=device)[:4096]]
    row(
        "build_plan chairs 4096 of 32^3, 3 levels",
        median_time(lambda: build_plan(x, pool_levels(3, 27), keep_fraction=0.125), repeat),
    )


def bench_pointconv(device: torch.device, repeat: int, large: bool) -> None:
    print("== PointConv forward + backward, shared neighbourhoods, k = 9, weight MLP 4 x 16 ==")
    sizes = ((16, 28, 1, 64), (16, 14, 64, 128), (4, 32, 64, 128)) if large else ((8, 28, 1, 64), (4, 14, 64, 128))
    for batch, res, cin, cout in sizes:
        torch.manual_seed(0)
        conv = PointConv(2, cin, cout, [16, 16, 16, 16]).to(device)
        x = grid_coords(res, 2, device=device)
        idx = canonical_knn(x, x, 9)
        offsets = x[idx] - x[:, None]
        feats = torch.randn(batch, len(x), cin, device=device, requires_grad=True)

        def step(naive: bool) -> None:
            out = pointconv_naive(conv, feats, idx, offsets) if naive else conv(feats, idx, offsets)
            out.square().mean().backward()

        row(
            f"B={batch} N={len(x)} Cin={cin} Cout={cout}",
            median_time(lambda: step(False), repeat),
            median_time(lambda: step(True), repeat),
        )


def bench_discriminator(device: torch.device, repeat: int, large: bool) -> None:
    batch = 16 if large else 4
    print(f"== MNIST-preset discriminator, forward + backward, B = {batch} ==")
    torch.manual_seed(0)
    D = PointConvDiscriminator(2, 1, preset("mnist").discriminator).to(device)
    x = grid_coords(28, 2, device=device)
    feats = torch.rand(batch, len(x), 1, device=device) * 2 - 1
    plan = D.plan(x)
    fast = median_time(lambda: D(x, feats, plan=plan).sum().backward(), repeat)
    naive = median_time(lambda: D(x, feats, naive=True).sum().backward(), repeat)
    row("cached plan + efficient vs re-planned brute force + naive", fast, naive)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="timed calls per measurement (median reported)")
    ap.add_argument("--large", action="store_true", help="also the CelebAHQ-sized cases (minutes on a CPU)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, repeat {args.repeat}")
    for bench in (bench_knn, bench_plan, bench_pointconv, bench_discriminator):
        bench(device, args.repeat, args.large)


if __name__ == "__main__":
    main()
