"""One training step of nfd and of the authors' released code, side by side: seconds per step, peak memory, ratios.

Timings on shared machines drift within minutes, so only numbers measured in one run, alternating, compare. For each
preset this script starts one child process per (round, implementation), alternating which goes first, each with the
same thread count, float32 (``--nfd-amp`` adds a third child, nfd under bf16 autocast) and the preset's batch size
and point count. A child builds the models, runs the warm-up steps untimed, times the next steps one by one and
reports the median and its own peak RSS (so that neither side's allocations count against the other). The parent
writes one JSON record and prints a Markdown table.

The authors' side is built as their ``main.py`` builds it (EmilienDupont/neural-function-distributions: their
``FourierFeatures``, ``FunctionRepresentation``, ``HyperNetwork``, ``FunctionDistribution``,
``PointConvDiscriminator`` and ``Trainer.train_batch``, one D step with R1 then one G step) from their released
``configs/config_*.json``; MNIST has no released config, so it gets one in their layout with the paper's values (the
same layers as nfd's ``mnist`` preset). Their code is never copied or fetched here: ``--reference-src`` names a local
copy (the search tool's fetch brings one). Their ``training.py`` imports ``torchvision.utils.save_image`` for its
sample grids, which a step never calls; where torchvision is not installed the child puts a stand-in module in its
place (the only stand-in: everything that runs is their code).

    python benchmarks/reference_bench.py --reference-src DIR [--preset mnist ...] [--steps 2] [--rounds 2] \\
        [--threads 2] [--out results/benchmarks/reference.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import nfd  # before torch (imported by the children only): its runtime tuning acts only so (nfd.RUNTIME_ENV)

if __name__ == "__main__":  # the whole process tree under jemalloc where installed; the 'ref' child gets it removed
    nfd.run_under_jemalloc([sys.executable, *sys.argv])

PRESETS = ("mnist", "celebahq64", "celebahq128", "shapenet_chairs")
IMPLS = ("nfd", "ref", "nfd_bf16", "ref_tuned")
"""The children of a round: nfd in float32, the authors' code, (with ``--nfd-amp``) nfd under bf16 autocast and (with
``--reference-tuned``) the authors' code under nfd's runtime tuning."""
RELEASED_CONFIG = {
    "celebahq64": "configs/config_celebahq64.json",
    "celebahq128": "configs/config_celebahq128.json",
    "shapenet_chairs": "configs/config_shapenet_voxels.json",
}
"""The authors' released config of each preset; MNIST has none (see :func:`mnist_reference_config`)."""


def mnist_reference_config(widths: tuple[int, int, int] = (64, 128, 256)) -> dict[str, Any]:
    """MNIST in the authors' config layout with the paper's values (App. A.2): the generator of every image preset,
    RFF with 128 frequencies of scale 1, and the discriminator of nfd's ``mnist`` preset (64, 128, 256, conv then
    pool, 9 neighbours; points 784 -> 196 -> 49 -> 13 -> 1). ``widths``: the three PointConv widths (nfd's
    ``demo_mnist`` has 32, 64, 128)."""
    mid = [16, 16, 16, 16]
    layers: list[dict[str, Any]] = []
    for channels, points, pooled in zip(widths, (784, 196, 49), (196, 49, 13), strict=True):
        layers.append({"out_channels": channels, "num_output_points": points, "num_neighbors": 9, "mid_channels": mid})
        layers.append({"num_output_points": pooled, "num_neighbors": 9})
    layers.append({"out_channels": 1, "num_output_points": 1, "num_neighbors": 13, "mid_channels": mid})
    return {
        "dataset": "mnist",
        "resolution": 28,
        "training": {"batch_size": 128, "max_num_points": None, "lr": 1e-4, "lr_disc": 4e-4, "r1_weight": 10.0},
        "generator": {
            "layer_sizes": [128, 128, 128],
            "latent_dim": 64,
            "hypernet_layer_sizes": [256, 512],
            "encoding": {"num_frequencies": 128, "std_dev": 1.0},
        },
        "discriminator": {
            "norm_order": 2.0,
            "add_batchnorm": True,
            "add_weightnet_batchnorm": True,
            "deterministic": True,
            "same_coordinates": True,
            "linear_layer_sizes": [],
            "layer_configs": layers,
        },
    }


def reference_config(src: Path, preset: str) -> dict[str, Any]:
    if preset == "mnist":
        return mnist_reference_config()
    path = src / RELEASED_CONFIG[preset]
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"reference_bench: error: {path}: cannot read the authors' config ({e})") from None


def nfd_settings(preset: str) -> tuple[int, int, tuple[int, ...]]:
    """(batch, points per step or 0, data shape (k, R, R[, R])) of nfd's preset: both sides train on these."""
    from nfd.data.shapes import PRESET_DATA
    from nfd.presets import preset as nfd_preset

    cfg = nfd_preset(preset)
    data = PRESET_DATA[preset][0]
    return cfg.train.batch_size, cfg.train.num_points, (data.feature_dim, *([data.resolution] * data.coord_dim))


# -- children ----------------------------------------------------------------------------------------------------
def _time_steps(step: Any, warmup: int, steps: int) -> list[float]:
    for i in range(warmup):
        step(i)
    times = []
    for i in range(warmup, warmup + steps):
        t0 = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t0)
    return times


def child_nfd(args: argparse.Namespace) -> dict[str, Any]:
    from nfd.presets import preset as nfd_preset
    from nfd.report.bench_step import DataShape, build_setup, run_step

    cfg = nfd_preset(args.preset)
    batch, points, shape = nfd_settings(args.preset)
    cfg.train.batch_size = args.batch or batch
    setup = build_setup(cfg, DataShape(len(shape) - 1, shape[0], shape[1]))
    amp = args.child == "nfd_bf16"
    return {"seconds": _time_steps(lambda i: run_step(setup, i, amp=amp), args.warmup, args.steps)}


def _stand_in_torchvision() -> None:
    """``training.py`` imports ``torchvision.utils.save_image`` (for sample grids a step never writes)."""
    try:
        import torchvision.utils  # noqa: F401
    except ImportError:
        tv, utils = types.ModuleType("torchvision"), types.ModuleType("torchvision.utils")

        def save_image(*_: Any, **__: Any) -> None:
            raise RuntimeError("stand-in torchvision: save_image is not available in the benchmark")

        utils.save_image = save_image  # type: ignore[attr-defined]
        tv.utils = utils  # type: ignore[attr-defined]
        sys.modules["torchvision"], sys.modules["torchvision.utils"] = tv, utils


def import_reference(src: Path) -> types.SimpleNamespace:
    """The authors' classes, imported from their repository at ``src`` (put first on ``sys.path``; their packages
    are the top-level ``data``, ``models`` and ``training``), with the torchvision stand-in where needed."""
    sys.path.insert(0, str(Path(src).resolve()))
    _stand_in_torchvision()
    from data.conversion import GridDataConverter
    from models.discriminator import PointConvDiscriminator
    from models.function_distribution import FunctionDistribution, HyperNetwork
    from models.function_representation import FourierFeatures, FunctionRepresentation
    from training.training import Trainer

    return types.SimpleNamespace(
        GridDataConverter=GridDataConverter,
        PointConvDiscriminator=PointConvDiscriminator,
        FunctionDistribution=FunctionDistribution,
        HyperNetwork=HyperNetwork,
        FourierFeatures=FourierFeatures,
        FunctionRepresentation=FunctionRepresentation,
        Trainer=Trainer,
    )


def build_generator(ref: types.SimpleNamespace, config: dict[str, Any], input_dim: int, output_dim: int) -> Any:
    """Their ``FunctionDistribution`` as their ``main.py`` builds it (RFF matrix drawn from torch's global RNG)."""
    import torch

    enc_cfg = config["generator"]["encoding"]
    if enc_cfg["num_frequencies"]:
        encoding: torch.nn.Module = ref.FourierFeatures(
            torch.normal(mean=torch.zeros(enc_cfg["num_frequencies"], input_dim), std=enc_cfg["std_dev"])
        )
    else:
        encoding = torch.nn.Identity()
    act = torch.nn.LeakyReLU(0.1)
    rep = ref.FunctionRepresentation(
        input_dim, output_dim, config["generator"]["layer_sizes"], encoding, act, torch.nn.Tanh()
    )
    hyper = ref.HyperNetwork(rep, config["generator"]["latent_dim"], config["generator"]["hypernet_layer_sizes"], act)
    return ref.FunctionDistribution(hyper)


def build_discriminator(ref: types.SimpleNamespace, config: dict[str, Any], input_dim: int, output_dim: int) -> Any:
    """Their ``PointConvDiscriminator`` as their ``main.py`` builds it."""
    dc = config["discriminator"]
    return ref.PointConvDiscriminator(
        input_dim,
        output_dim,
        dc["layer_configs"],
        linear_layer_sizes=dc["linear_layer_sizes"],
        norm_order=dc["norm_order"],
        add_sigmoid=True,
        add_batchnorm=dc["add_batchnorm"],
        add_weightnet_batchnorm=dc["add_weightnet_batchnorm"],
        deterministic=dc["deterministic"],
        same_coordinates=dc["same_coordinates"],
    )


def build_trainer(
    ref: types.SimpleNamespace, config: dict[str, Any], shape: tuple[int, ...], points: int, device: Any
) -> Any:
    """Their ``Trainer`` (generator, discriminator, ``GridDataConverter`` with features in [-1, 1]) for data of
    ``shape`` (k, R, R[, R]) as their ``main.py`` sets it up; ``points``: points per step (0: all)."""
    input_dim, output_dim = len(shape) - 1, shape[0]
    fd = build_generator(ref, config, input_dim, output_dim)
    disc = build_discriminator(ref, config, input_dim, output_dim)
    tc = config["training"]
    return ref.Trainer(
        device,
        fd,
        disc,
        ref.GridDataConverter(device, shape, normalize_features=True),
        lr=tc["lr"],
        lr_disc=tc["lr_disc"],
        r1_weight=tc["r1_weight"],
        max_num_points=points or None,
        is_voxel=input_dim == 3,
    )


def child_reference(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    src = Path(args.reference_src).resolve()
    ref = import_reference(src)
    config = reference_config(src, args.preset)
    batch, points, shape = nfd_settings(args.preset)
    batch = args.batch or batch
    input_dim = len(shape) - 1
    torch.manual_seed(0)
    trainer = build_trainer(ref, config, shape, points, torch.device("cpu"))
    tc = config["training"]
    g = torch.Generator().manual_seed(1)
    if input_dim == 3:
        data = (torch.rand((batch, *shape), generator=g) > 0.9).float()  # occupancy in {0, 1}, as their voxels
    else:
        data = torch.rand((batch, *shape), generator=g)  # pixel values in [0, 1], as their image loaders
    params = {"released_batch_size": tc["batch_size"], "released_max_num_points": tc["max_num_points"]}
    return {"seconds": _time_steps(lambda i: trainer.train_batch((data, None)), args.warmup, args.steps), **params}


def run_child(args: argparse.Namespace) -> None:
    import resource

    import torch

    torch.set_num_threads(args.threads)
    (args.preset,) = args.preset  # a child times one preset
    try:
        rec = child_reference(args) if args.child.startswith("ref") else child_nfd(args)
    except MemoryError:
        rec = {"error": "out of memory"}
    rec["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    rec["threads"] = torch.get_num_threads()
    rec["runtime_tuning"] = {
        **{k: os.environ.get(k) for k in nfd.RUNTIME_ENV},
        "malloc_tuned": nfd.MALLOC_TUNED,
        "allocator": nfd.ALLOCATOR,
    }
    print(json.dumps(rec))


# -- parent ------------------------------------------------------------------------------------------------------
def spawn(args: argparse.Namespace, impl: str, preset: str) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--child", impl, "--preset", preset, "--steps", str(args.steps)]
    argv += ["--warmup", str(args.warmup), "--threads", str(args.threads), "--reference-src", str(args.reference_src)]
    if args.batch:
        argv += ["--batch", str(args.batch)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    if impl == "ref":  # the authors' code as their users run it: none of nfd's runtime tuning
        env = nfd.untuned_env(env)
    t0 = time.perf_counter()
    res = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1]
        killed = res.returncode in (-9, 137)
        return {"error": "killed (out of memory?)" if killed else last, "wall_s": wall}
    rec = json.loads(res.stdout.strip().splitlines()[-1])
    rec["wall_s"] = wall
    return rec


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "seconds" in r]
    if not ok:
        return {"error": runs[-1].get("error", "no run finished")}
    per_run = [statistics.median(r["seconds"]) for r in ok]
    return {
        "seconds_per_step": statistics.median(per_run),
        "seconds_per_step_runs": per_run,
        "peak_rss_bytes": max(r["peak_rss_bytes"] for r in ok),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference-src", type=Path, required=True, help="local copy of the authors' repository")
    p.add_argument("--preset", nargs="+", choices=PRESETS, default=list(PRESETS), help="presets to time")
    p.add_argument("--steps", type=int, default=2, help="timed steps per child (default: 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before them (default: 1)")
    p.add_argument("--rounds", type=int, default=2, help="children per implementation, alternating (default: 2)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of every child")
    p.add_argument("--batch", type=int, default=0, help="override both sides' batch size (0: the preset's)")
    p.add_argument("--out", type=Path, default=None, help="write the JSON record here")
    p.add_argument(
        "--nfd-amp",
        action="store_true",
        help="also time nfd under bf16 autocast (train.amp), a third child per round; the authors' code has no "
        "bf16 mode and always runs in float32",
    )
    p.add_argument(
        "--reference-tuned",
        action="store_true",
        help="also time the authors' code under nfd's runtime tuning (nfd.RUNTIME_ENV, and jemalloc where installed, "
        "else glibc malloc keeping freed memory), a further child per round: how much of the speedup is the runtime's",
    )
    p.add_argument("--child", choices=IMPLS, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        run_child(args)
        return 0
    for name in ("models/discriminator.py", "training/training.py", "main.py"):
        if not (args.reference_src / name).is_file():
            p.error(f"{args.reference_src}: not a copy of the authors' repository (no {name})")
    import torch

    from nfd.report.timing import cpu_model

    record: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "torch": torch.__version__,
        "steps": args.steps,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "nfd_amp": args.nfd_amp,
        "reference_tuned": args.reference_tuned,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "presets": {},
    }
    for preset in args.preset:
        batch, points, shape = nfd_settings(preset)
        impls = [i for i in IMPLS if (args.nfd_amp or i != "nfd_bf16") and (args.reference_tuned or i != "ref_tuned")]
        runs: dict[str, list[dict[str, Any]]] = {i: [] for i in impls}
        for r in range(args.rounds):
            for impl in impls if r % 2 == 0 else impls[::-1]:
                runs[impl].append(spawn(args, impl, preset))
                print(f"reference_bench: {preset} round {r} {impl}: {runs[impl][-1]}", file=sys.stderr, flush=True)
        entry: dict[str, Any] = {
            "batch_size": args.batch or batch,
            "points_per_step": points or math.prod(shape[1:]),
            "reference": summarise(runs["ref"]),
            "runs": runs,
        }
        ref = entry["reference"]
        for impl, suffix in (("nfd", ""), ("nfd_bf16", "_bf16")):
            if impl not in runs:
                continue
            n = entry[impl] = summarise(runs[impl])
            if "seconds_per_step" in n and "seconds_per_step" in ref:
                entry["speedup" + suffix] = ref["seconds_per_step"] / n["seconds_per_step"]
                entry["memory_fraction" + suffix] = n["peak_rss_bytes"] / ref["peak_rss_bytes"]
        if "ref_tuned" in runs:
            tuned = entry["reference_tuned"] = summarise(runs["ref_tuned"])
            if "seconds_per_step" in tuned and "seconds_per_step" in entry.get("nfd", {}):
                entry["speedup_vs_tuned_reference"] = tuned["seconds_per_step"] / entry["nfd"]["seconds_per_step"]
                entry["memory_fraction_vs_tuned_reference"] = entry["nfd"]["peak_rss_bytes"] / tuned["peak_rss_bytes"]
        record["presets"][preset] = entry
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        tmp.replace(args.out)
    print(
        f"CPU: {record['cpu']}, {args.threads} threads, torch {record['torch']}, the authors' code in float32, medians "
        f"of {args.rounds} children x {args.steps} steps after {args.warmup} warm-up"
    )
    print(
        "| preset | nfd precision | batch | points | nfd s/step | authors s/step | speedup | nfd peak GB "
        "| authors peak GB | memory |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")

    def cell(d: dict[str, Any], key: str, scale: float = 1.0) -> str:
        return f"{d[key] / scale:.2f}" if key in d else d.get("error", "-")

    for preset, e in record["presets"].items():
        ref = e["reference"]
        for impl, suffix, precision in (("nfd", "", "float32"), ("nfd_bf16", "_bf16", "bf16 autocast")):
            if impl not in e:
                continue
            n = e[impl]
            print(
                f"| {preset} | {precision} | {e['batch_size']} | {e['points_per_step']} | "
                f"{cell(n, 'seconds_per_step')} | {cell(ref, 'seconds_per_step')} | "
                f"{e.get('speedup' + suffix, float('nan')):.1f}x | {cell(n, 'peak_rss_bytes', 1e9)} | "
                f"{cell(ref, 'peak_rss_bytes', 1e9)} | {e.get('memory_fraction' + suffix, float('nan')):.2f} |"
            )
        if "reference_tuned" in e and "nfd" in e:
            n, t = e["nfd"], e["reference_tuned"]
            print(
                f"| {preset} | float32 vs the authors' under nfd's runtime tuning | {e['batch_size']} | "
                f"{e['points_per_step']} | {cell(n, 'seconds_per_step')} | {cell(t, 'seconds_per_step')} | "
                f"{e.get('speedup_vs_tuned_reference', float('nan')):.1f}x | {cell(n, 'peak_rss_bytes', 1e9)} | "
                f"{cell(t, 'peak_rss_bytes', 1e9)} | {e.get('memory_fraction_vs_tuned_reference', float('nan')):.2f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
