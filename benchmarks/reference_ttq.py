"""Time to quality of the authors' released code on real MNIST: classifier FD against training wall-clock seconds.

The counterpart of nfd's own curve (``nfd sweep --preset demo_mnist --budget 900 --set train.keep_every=100 --seeds
0 1 --threads 1 --cores 2``, ``results/benchmarks/sweeps/ttq_demo_mnist_curves.tsv``), for the code of
EmilienDupont/neural-function-distributions. Their code is never copied or fetched here: ``--reference-src`` names a
local copy of their repository, which is put first on ``sys.path`` and imported (``benchmarks/reference_bench.py``
builds their models as their ``main.py`` does).

Settings: nfd's ``demo_mnist`` preset in their config layout (generator as the paper's MNIST; PointConv widths 32, 64,
128 with 9 neighbours, points 784 -> 196 -> 49 -> 13 -> 1; batch 32, all 784 points; Adam lr 1e-4 / 4e-4; R1 weight
10) trained by their ``Trainer.train_batch`` (one D step with R1, one G step) as it is. Differences that stay, since
they are their code: their R1 penalty is on D's sigmoid output, nfd's ``demo_mnist`` puts it on the logit; their Adam
is PyTorch's default implementation (nfd's is the fused one); their step logs every parameter's mean gradient.

Data: the ``train`` split of nfd's processed HDF5, read with nfd's reader (features in [-1, 1]) and handed to their
``Trainer`` as their MNIST loader yields it (image batches ``[B, 1, 28, 28]`` in [0, 1]; their ``GridDataConverter``
maps them to [-1, 1] features at their grid coordinates). Batch ``s`` is the one nfd's trainer takes at step ``s`` (a
fresh permutation per epoch from ``(seed, epoch)``, nfd's ``step_generator``).

Each seed trains in its own child process (``OMP_NUM_THREADS`` and ``torch.set_num_threads`` set to ``--threads``, as
many at once as fit in ``--cores``, nfd's runtime environment applied) until its loop has run ``--budget`` seconds,
measured as nfd's trainer measures it: the clock of the whole loop, snapshot writes included, read after each step;
the step that crosses the budget is the last. A generator snapshot (``torch.save`` of their ``FunctionDistribution``'s
``state_dict`` with its step and training seconds) is kept every ``--keep-every`` steps and at the end.

Then every snapshot is sampled (``--num-samples`` functions with latents drawn from ``--sample-seed``, evaluated on the
28 x 28 grid by their ``FunctionDistribution.latent_to_data``, mapped back to nfd's [-1, 1] features), written as an
nfd samples file, read back with nfd's reader and scored as ``nfd evaluate progress`` scores nfd's snapshots
(classifier FD against the test split, confident share, class entropy). As a check of that path, as many real
``train`` digits as samples (the ones the metric's real-data floor ``baseline_fd`` uses) are sent through their
converter and the same files and scoring; their FD should equal ``baseline_fd``.

Outputs: ``OUT/curves.tsv`` (nfd's curves columns, runs named ``ref_s{seed}_t{threads}``), ``OUT/summary.md`` (the
settings, the CPU, the real-digit check, each run's steps and last FD), and per run ``OUT/RUN/`` with ``log.txt``,
``train.json``, ``snapshots/step_*.pt`` and ``samples/step_*.npz``.

    python benchmarks/reference_ttq.py --reference-src DIR --data data/processed/mnist.h5 \\
        --classifier results/eval/mnist_classifier.pt --budget 900 --keep-every 100 --seeds 0 1 --threads 1 \\
        --cores 2 --num-samples 500 --out results/benchmarks/reference_ttq
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nfd  # noqa: F401  (before torch: nfd's runtime environment, as for nfd's own runs)
from nfd.metrics.registry import write_json

PRESET = "demo_mnist"
SHAPE = (1, 28, 28)
"""Their ``data_shape`` of MNIST: (feature_dim, height, width)."""
METRIC_COLUMNS = ("classifier_fd", "confident_share", "class_entropy")
REQUIRED = (
    "main.py",
    "data/conversion.py",
    "models/discriminator.py",
    "models/function_distribution.py",
    "models/function_representation.py",
    "training/training.py",
)
"""Files of their repository that this script imports (``main.py``: a sign that the folder is their repository)."""


class TtqError(Exception):
    """A bad input or a failed run: reported as one line ``reference_ttq: error: ...``."""


def reference_bench() -> Any:
    """``benchmarks/reference_bench.py`` (their models' builders), imported from beside this file."""
    name = "reference_bench"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().with_name("reference_bench.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def ttq_config() -> dict[str, Any]:
    """nfd's ``demo_mnist`` in the authors' config layout: its generator, PointConv widths, batch, points, learning
    rates and R1 weight."""
    from nfd.presets import preset

    cfg = preset(PRESET)
    g, d, t = cfg.generator, cfg.discriminator, cfg.train
    if d.kind != "pointconv" or d.layers or len(d.channels) != 3 or d.neighbours not in (0, 9):
        raise TtqError(f"nfd's {PRESET} discriminator no longer has three conv-then-pool levels of 9 neighbours")
    config = reference_bench().mnist_reference_config(tuple(d.channels))
    config["training"].update(
        batch_size=t.batch_size, max_num_points=t.num_points or None, lr=t.lr_g, lr_disc=t.lr_d, r1_weight=t.r1_weight
    )
    config["generator"].update(
        layer_sizes=list(g.hidden),
        latent_dim=g.latent_dim,
        hypernet_layer_sizes=list(g.hyper_hidden),
        encoding={"num_frequencies": g.encoding.num_frequencies, "std_dev": g.encoding.scale},
    )
    return config


def nfd_settings() -> dict[str, Any]:
    """What nfd's ``demo_mnist`` does that their code does its own way (for the summary)."""
    from nfd.presets import preset

    cfg = preset(PRESET)
    return {
        "r1_on": cfg.train.r1_on,
        "betas": (cfg.train.beta1, cfg.train.beta2),
        "leaky_slope": cfg.generator.leaky_slope,
        "init": cfg.generator.init,
        "ema_beta": cfg.train.ema_beta,
    }


# -- data: nfd's features <-> their image batches ----------------------------------------------------------------
def features_to_images(features: Any) -> Any:
    """nfd features ``[B, 784, 1]`` (grid order, in [-1, 1]) -> their image batch ``[B, 1, 28, 28]`` in [0, 1] (what
    their MNIST loader's ``ToTensor`` yields). Point ``i * 28 + j`` (nfd's coordinate row ``i``, column ``j``) becomes
    pixel ``[0, i, j]``, which their ``GridDataConverter`` puts at the same coordinate."""
    import torch

    f = torch.as_tensor(features, dtype=torch.float32)
    return ((f + 1.0) / 2.0).reshape(f.shape[0], *SHAPE[1:], SHAPE[0]).permute(0, 3, 1, 2).contiguous()


def images_to_features(images: Any) -> Any:
    """Their images ``[B, 1, 28, 28]`` (or a list of ``[1, 28, 28]``) in [0, 1] -> nfd's sample features
    ``[B, 28, 28, 1]`` float32 in [-1, 1] (clipped, as ``nfd evaluate progress`` clips its samples)."""
    import numpy as np
    import torch

    x = torch.stack(list(images)) if isinstance(images, list | tuple) else torch.as_tensor(images)
    out = (2.0 * x.detach().float().cpu() - 1.0).permute(0, 2, 3, 1).numpy()
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def check_mnist_data(data: Path) -> None:
    from nfd.errors import NfdError
    from nfd.metrics.data import h5_info

    try:
        info = h5_info(data)
    except NfdError as e:
        raise TtqError(str(e)) from None
    if info.grid_shape != SHAPE[1:] or info.feature_dim != SHAPE[0]:
        raise TtqError(f"{data}: not 28 x 28 grey images (grid {list(info.grid_shape)}, {info.feature_dim} features)")
    for split in ("train", "test"):
        if not info.splits.get(split):
            raise TtqError(f"{data}: no {split!r} split")


def load_images(data: Path, split: str = "train", indices: Any = None) -> Any:
    """Examples of ``split`` (all, or those at ``indices`` of the split) read with nfd's ``PointCloudDataset``, as
    their image batch ``[N, 1, 28, 28]`` in [0, 1]."""
    from nfd.data.dataset import PointCloudDataset

    ds = PointCloudDataset(data, split=split, num_points=0)
    try:
        idx = list(range(len(ds))) if indices is None else [int(i) for i in indices]
        return features_to_images(ds.read(idx, None))
    finally:
        ds.close()


def batch_indices(seed: int, step: int, num_examples: int, batch_size: int) -> Any:
    """The examples of step ``step``, as nfd's trainer draws them: a permutation per epoch seeded by (seed, epoch),
    ``batch_size`` consecutive entries of it, sorted (an incomplete last batch is never used)."""
    import torch

    from nfd.training.step import step_generator

    per_epoch = max(1, num_examples // batch_size)
    epoch, pos = divmod(step, per_epoch)
    perm = torch.randperm(num_examples, generator=step_generator(seed, epoch, stream=1))
    return perm[pos * batch_size : (pos + 1) * batch_size].sort().values


# -- the budget loop ---------------------------------------------------------------------------------------------
def train_loop(
    step_fn: Callable[[int], None],
    budget: float,
    keep_every: int,
    keep: Callable[[int, float], None],
    clock: Callable[[], float] = time.perf_counter,
    max_steps: int = 0,
) -> tuple[int, float]:
    """Run ``step_fn(step)`` until the loop's clock has reached ``budget`` seconds (or ``max_steps`` steps, if > 0);
    return (steps, seconds). As nfd's trainer: the clock runs over the whole loop (``keep`` included) and is read after
    each step; the step that reaches the budget is the last; ``keep(steps_done, seconds)`` is called every
    ``keep_every`` steps (0: never) and once more at the end unless the last step was kept."""
    t0 = clock()
    step, seconds, kept = 0, 0.0, -1
    while True:
        step_fn(step)
        seconds = clock() - t0
        step += 1
        over = seconds >= budget or (max_steps > 0 and step >= max_steps)
        if keep_every > 0 and step % keep_every == 0:
            keep(step, seconds)
            kept = step
        if over:
            break
    if kept != step:
        keep(step, seconds)
    return step, seconds


def snapshot_path(run: Path, step: int) -> Path:
    return run / "snapshots" / f"step_{step:07d}.pt"


def snapshots(run: Path) -> list[Path]:
    return sorted((run / "snapshots").glob("step_*.pt"))


def save_snapshot(run: Path, fd: Any, step: int, seconds: float, seed: int) -> Path:
    """Their generator's ``state_dict`` with its step and training seconds (loads with ``weights_only=True``)."""
    import torch

    from nfd.io import atomic_path

    path = snapshot_path(run, step)
    state = {k: v.detach().clone() for k, v in fd.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"step": step, "train_seconds": float(seconds), "seed": seed, "state_dict": state}, tmp)
    return path


def child_train(args: argparse.Namespace) -> int:
    """One seed's training run in this process; writes ``RUN/snapshots`` and ``RUN/train.json``."""
    import resource

    import torch

    torch.set_num_threads(args.threads)
    run = Path(args.child_train)
    rb = reference_bench()
    ref = rb.import_reference(args.reference_src)
    config = ttq_config()
    tc = config["training"]
    images = load_images(args.data, "train")
    torch.manual_seed(args.seed)  # their models' initialisation, RFF matrix and latents: torch's global RNG
    trainer = rb.build_trainer(ref, config, SHAPE, tc["max_num_points"] or 0, torch.device("cpu"))
    fd = trainer.function_distribution
    step_seconds: list[float] = []

    def step_fn(step: int) -> None:
        t0 = time.perf_counter()
        batch = images[batch_indices(args.seed, step, len(images), tc["batch_size"])]
        trainer.train_batch((batch, None))
        step_seconds.append(time.perf_counter() - t0)
        losses = {k: trainer.logs[k][-1] for k in ("generator", "discriminator")}
        if not all(math.isfinite(v) for v in losses.values()):
            raise TtqError(f"non-finite loss at step {step}: {losses}")
        if args.verbose:
            print(f"step {step + 1}: {step_seconds[-1]:.2f} s, {losses}", flush=True)

    kept: list[int] = []

    def keep(step: int, seconds: float) -> None:
        save_snapshot(run, fd, step, seconds, args.seed)
        kept.append(step)
        print(f"reference_ttq: {run.name} step {step} at {seconds:.1f} s: snapshot kept", flush=True)

    steps, seconds = train_loop(step_fn, args.budget, args.keep_every, keep, max_steps=args.max_steps)
    write_json(
        run / "train.json",
        {
            "seed": args.seed,
            "threads": torch.get_num_threads(),
            "steps": steps,
            "train_seconds": seconds,
            "budget_s": args.budget,
            "keep_every": args.keep_every,
            "kept_steps": kept,
            "median_step_seconds": statistics.median(step_seconds),
            "step_seconds": step_seconds,
            "last_losses": {k: v[-1] for k, v in trainer.logs.items() if v},
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "torch": torch.__version__,
            "config": config,
        },
    )
    return 0


# -- sampling and scoring ----------------------------------------------------------------------------------------
def load_snapshot(ref: Any, config: dict[str, Any], path: Path) -> tuple[Any, dict[str, Any]]:
    """Their generator with a snapshot's weights, and the snapshot's step and seconds."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    fd = reference_bench().build_generator(ref, config, len(SHAPE) - 1, SHAPE[0])
    fd.load_state_dict(state["state_dict"])
    fd.eval()
    return fd, {"step": int(state["step"]), "train_seconds": float(state["train_seconds"])}


def sample_features(fd: Any, converter: Any, num: int, seed: int, chunk: int = 50) -> Any:
    """``num`` functions of their generator on the 28 x 28 grid (their ``latent_to_data``), latents N(0, I) drawn
    from ``seed`` (the same for every snapshot), as nfd sample features ``[num, 28, 28, 1]`` in [-1, 1]."""
    import numpy as np
    import torch

    z = torch.randn(num, fd.latent_dim, generator=torch.Generator().manual_seed(seed))
    out = []
    with torch.no_grad():
        for start in range(0, num, chunk):
            out.append(images_to_features(fd.latent_to_data(z[start : start + chunk], converter)))
    return np.concatenate(out), z.numpy()


def real_features(converter: Any, data: Path, num: int) -> Any:
    """``num`` real train digits (those ``baseline_fd`` draws: seed 0, sorted) sent through their converter there and
    back (image batch -> coordinates and [-1, 1] features -> their ``to_data`` image -> nfd features)."""
    import numpy as np

    from nfd.metrics.data import split_indices

    n_train = len(split_indices(data, "train"))
    pick = np.sort(np.random.default_rng(0).permutation(n_train)[: min(num, n_train)])
    images = load_images(data, "train", pick)
    coords, feats = converter.batch_to_coordinates_and_features(images)
    return images_to_features([converter.to_data(coords[i], feats[i]) for i in range(len(feats))])


def write_and_score(
    features: Any, latents: Any, path: Path, data: Path, classifier: Path, seed: int, model: str
) -> dict[str, Any]:
    """Write ``features`` as an nfd samples file, read it back with nfd's reader and score it as
    ``nfd evaluate progress`` does (classifier FD against the test split); return the record's results."""
    from nfd.io import atomic_path
    from nfd.metrics.data import load_samples
    from nfd.metrics.scoring import check_mnist_samples, score_mnist
    from nfd.sampling.samples_file import write_samples

    with atomic_path(path) as tmp:
        write_samples(
            tmp,
            features.astype("float32"),
            latents.astype("float32"),
            resolution=SHAPE[1],
            coord_dim=len(SHAPE) - 1,
            feature_dim=SHAPE[0],
            seed=seed,
            preset=f"reference:{PRESET}",
            train_resolution=SHAPE[1],
            model=model,
        )
    samples = load_samples(path)
    check_mnist_samples(samples.features, path)
    return score_mnist(samples.features, data, classifier, "test", context={"samples": str(path)})["results"]


def score_run(args: argparse.Namespace, ref: Any, config: dict[str, Any], run: Path) -> list[dict[str, Any]]:
    """Sample and score every snapshot of ``run``; rows of nfd's curves columns, by step."""
    import torch

    converter = ref.GridDataConverter(torch.device("cpu"), SHAPE, normalize_features=True)
    rows = []
    for path in snapshots(run):
        t0 = time.perf_counter()
        fd, meta = load_snapshot(ref, config, path)
        feats, z = sample_features(fd, converter, args.num_samples, args.sample_seed)
        out = run / "samples" / f"step_{meta['step']:07d}.npz"
        res = write_and_score(feats, z, out, args.data, args.classifier, args.sample_seed, str(path))
        rows.append({**meta, **{c: res[c] for c in METRIC_COLUMNS}})
        print(
            f"reference_ttq: {run.name} step {meta['step']} ({meta['train_seconds']:.0f} s): classifier FD "
            f"{res['classifier_fd']:.1f} (scored in {time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    return sorted(rows, key=lambda r: r["step"])


# -- outputs -----------------------------------------------------------------------------------------------------
def write_curves(out: Path, curves: dict[str, list[dict[str, Any]]]) -> None:
    """``OUT/curves.tsv``: nfd's curves columns (``nfd sweep``'s writer), values formatted as nfd formats them."""
    from nfd.training.loss_log import format_value
    from nfd.training.sweep import write_curves as nfd_write_curves

    cols = ("step", "train_seconds", *METRIC_COLUMNS)
    nfd_write_curves(
        out, {name: [{c: format_value(r[c]) for c in cols} for r in rows] for name, rows in curves.items()}
    )


def write_summary(out: Path, header: dict[str, Any], runs: dict[str, dict[str, Any]], real: dict[str, Any]) -> None:
    from nfd.io import atomic_path

    lines = ["# Time to quality: the authors' released code on MNIST", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    lines += ["", "## Check of the sampling and scoring path on real digits", ""]
    if real:
        lines += [
            f"{real['num']} real train digits through their GridDataConverter, an nfd samples file and nfd's scoring: "
            f"classifier FD {real['classifier_fd']:.3f} against the test split; the metric's real-data floor "
            f"(baseline_fd, the same digits read directly) {real['baseline_fd']:.3f}; confident share "
            f"{real['confident_share']:.3f}."
        ]
    lines += ["", "## Runs", "", "| run | status | steps | train s | median s/step | last classifier FD |"]
    lines += ["| --- | --- | --- | --- | --- | --- |"]
    for name, r in runs.items():
        cells = [r.get("steps"), r.get("train_seconds"), r.get("median_step_seconds"), r.get("last_fd")]
        cells = ["" if v is None else f"{v:.{d}f}" for v, d in zip(cells, (0, 1, 2, 1), strict=True)]
        lines.append(f"| {name} | {r['status']} | " + " | ".join(cells) + " |")
    lines += ["", "Curves (every kept snapshot): curves.tsv.", ""]
    with atomic_path(out / "summary.md") as tmp:
        tmp.write_text("\n".join(lines))


# -- parent ------------------------------------------------------------------------------------------------------
def child_argv(args: argparse.Namespace, run: Path, seed: int) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child-train", str(run), "--seed", str(seed)]
    argv += ["--reference-src", str(args.reference_src), "--data", str(args.data), "--classifier", str(args.classifier)]
    argv += ["--budget", str(args.budget), "--keep-every", str(args.keep_every), "--threads", str(args.threads)]
    argv += ["--max-steps", str(args.max_steps), "--out", str(args.out)]
    return argv + (["--verbose"] if args.verbose else [])


def train_all(args: argparse.Namespace, runs: dict[str, Path], seeds: dict[str, int]) -> dict[str, str]:
    """Train every run in its own child, as many at once as their threads fit in ``--cores``; status per run."""
    pending = list(runs)
    active: list[tuple[str, subprocess.Popen, Any, float]] = []
    status: dict[str, str] = {}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    while pending or active:
        while pending and ((len(active) + 1) * args.threads <= args.cores or not active):
            name = pending.pop(0)
            run = runs[name]
            for old in [*snapshots(run), run / "train.json"]:  # a fresh run: nothing of an earlier one is scored
                old.unlink(missing_ok=True)
            run.mkdir(parents=True, exist_ok=True)
            log = open(run / "log.txt", "w")
            argv = child_argv(args, run, seeds[name])
            log.write("$ " + " ".join(argv) + "\n")
            log.flush()
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
            active.append((name, proc, log, time.perf_counter()))
            print(f"reference_ttq: started {name}", flush=True)
        time.sleep(0.2)
        for item in list(active):
            name, proc, log, t0 = item
            if proc.poll() is None:
                continue
            log.close()
            active.remove(item)
            ok = proc.returncode == 0 and (runs[name] / "train.json").is_file()
            status[name] = "trained" if ok else f"training failed (exit {proc.returncode}; see {runs[name]}/log.txt)"
            print(f"reference_ttq: {name} {status[name]} in {time.perf_counter() - t0:.0f} s", flush=True)
    return status


def check_inputs(args: argparse.Namespace) -> None:
    src = args.reference_src
    if not src.is_dir():
        raise TtqError(f"reference source folder not found: {src}")
    for name in REQUIRED:
        if not (src / name).is_file():
            raise TtqError(f"{src}: not a copy of the authors' repository (no {name})")
    if not args.data.is_file():
        raise TtqError(f"data file not found: {args.data}")
    if not args.classifier.is_file():
        raise TtqError(f"classifier not found: {args.classifier}")
    if not (args.budget > 0 and math.isfinite(args.budget)):
        raise TtqError(f"--budget must be a positive number of seconds, got {args.budget}")
    for opt in ("keep_every", "max_steps"):
        if getattr(args, opt) < 0:
            raise TtqError(f"--{opt.replace('_', '-')} must be >= 0, got {getattr(args, opt)}")
    for opt in ("threads", "cores", "num_samples"):
        if getattr(args, opt) < 1:
            raise TtqError(f"--{opt.replace('_', '-')} must be >= 1, got {getattr(args, opt)}")
    if len(set(args.seeds)) != len(args.seeds):
        raise TtqError(f"--seeds must be distinct, got {args.seeds}")
    if args.out.exists() and not args.out.is_dir():
        raise TtqError(f"--out is not a folder: {args.out}")


def run_parent(args: argparse.Namespace) -> int:
    import torch

    from nfd.errors import NfdError
    from nfd.metrics.classifier_fd import load_classifier
    from nfd.report.timing import cpu_model

    check_mnist_data(args.data)
    try:
        load_classifier(args.classifier)
    except NfdError as e:
        raise TtqError(str(e)) from None
    config = ttq_config()
    nfd_side = nfd_settings()
    args.out.mkdir(parents=True, exist_ok=True)
    runs = {f"ref_s{s}_t{args.threads}": args.out / f"ref_s{s}_t{args.threads}" for s in args.seeds}
    seeds = dict(zip(runs, args.seeds, strict=True))
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    t0 = time.perf_counter()
    status = train_all(args, runs, seeds)

    torch.set_num_threads(args.threads)
    ref = reference_bench().import_reference(args.reference_src)
    converter = ref.GridDataConverter(torch.device("cpu"), SHAPE, normalize_features=True)
    real_feats = real_features(converter, args.data, args.num_samples)
    real = write_and_score(
        real_feats,
        real_feats.reshape(len(real_feats), -1)[:, :0],
        args.out / "real_train_digits.npz",
        args.data,
        args.classifier,
        0,
        "real train digits",
    )
    real = {"num": len(real_feats), **{k: real[k] for k in ("classifier_fd", "baseline_fd", "confident_share")}}
    print(
        f"reference_ttq: real-digit check: FD {real['classifier_fd']:.3f} (real-data floor {real['baseline_fd']:.3f})",
        flush=True,
    )
    curves: dict[str, list[dict[str, Any]]] = {}
    summary: dict[str, dict[str, Any]] = {}
    for name, run in runs.items():
        entry: dict[str, Any] = {"status": status[name]}
        if status[name] == "trained":
            rec = json.loads((run / "train.json").read_text())
            entry.update({k: rec[k] for k in ("steps", "train_seconds", "median_step_seconds")})
            try:
                curves[name] = score_run(args, ref, config, run)
                entry["last_fd"] = curves[name][-1]["classifier_fd"] if curves[name] else None
                entry["status"] = "ok"
            except NfdError as e:
                entry["status"] = f"scoring failed: {e}"
        summary[name] = entry
    if curves:
        write_curves(args.out, curves)
    tc = config["training"]
    header = {
        "code": f"the authors' released code (EmilienDupont/neural-function-distributions) from {args.reference_src}",
        "settings": f"nfd's {PRESET} in their config layout: generator {config['generator']}, PointConv widths "
        f"{[c['out_channels'] for c in config['discriminator']['layer_configs'] if 'out_channels' in c]}, batch "
        f"{tc['batch_size']}, points {tc['max_num_points'] or 'all 784'}, lr {tc['lr']:g} (G) / {tc['lr_disc']:g} "
        f"(D), Adam betas (0.5, 0.999) (their Trainer's default; nfd: {nfd_side['betas']}), R1 weight "
        f"{tc['r1_weight']:g}",
        "R1 difference": f"their Trainer puts R1 on D's sigmoid output (their code, unchanged); nfd's {PRESET} puts it "
        f"on the {nfd_side['r1_on']}",
        "other differences (their code)": "PyTorch's default Adam (nfd: fused), every parameter's mean gradient "
        "logged each step, latents and point subsets from torch's global RNG",
        "data": f"{args.data}, train split through their GridDataConverter, nfd's batch order (per-epoch permutation "
        "from (seed, epoch))",
        "budget": f"{args.budget:g} s of training loop per run (snapshot writes included, as nfd's trainer measures), "
        f"snapshot every {args.keep_every} steps and at the end"
        + (f", at most {args.max_steps} steps" if args.max_steps else ""),
        "scoring": f"{args.num_samples} samples per snapshot, latent seed {args.sample_seed}, classifier FD against "
        f"the test split with {args.classifier}",
        "cpu": cpu_model(),
        "threads": f"{args.threads} per run, {args.cores} cores, seeds {' '.join(map(str, args.seeds))}",
        "runtime env": ", ".join(f"{k}={os.environ.get(k)}" for k in nfd.RUNTIME_ENV),
        "torch": torch.__version__,
        "started": started,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    write_summary(args.out, header, summary, real)
    print((args.out / "summary.md").read_text())
    return 0 if all(e["status"] == "ok" for e in summary.values()) else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="reference_ttq.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--reference-src",
        type=Path,
        required=True,
        metavar="DIR",
        help="local copy of the authors' repository (main.py, models/, training/, data/); imported, never copied",
    )
    p.add_argument("--data", type=Path, required=True, help="nfd's processed MNIST HDF5 (data/processed/mnist.h5)")
    p.add_argument(
        "--classifier", type=Path, required=True, help="nfd's MNIST classifier (results/eval/mnist_classifier.pt)"
    )
    p.add_argument(
        "--budget", type=float, required=True, metavar="SECONDS", help="wall-clock seconds of training loop per run"
    )
    p.add_argument(
        "--keep-every", type=int, default=100, metavar="STEPS", help="keep a snapshot every STEPS steps (default 100)"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds, one run each (default: 0 1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of every run (default 1)")
    p.add_argument(
        "--cores",
        type=int,
        default=os.cpu_count() or 1,
        help="threads running at once, in all: runs start while their threads fit (default: the CPU count)",
    )
    p.add_argument("--num-samples", type=int, default=500, help="samples scored per snapshot (default 500)")
    p.add_argument("--sample-seed", type=int, default=1, help="latent seed of the scored samples (default 1, as nfd)")
    p.add_argument("--max-steps", type=int, default=0, help="also stop a run after this many steps (0: budget only)")
    p.add_argument("--out", type=Path, required=True, help="output folder: curves.tsv, summary.md, one folder per run")
    p.add_argument("--verbose", action="store_true", help="runs log every step's time and losses to RUN/log.txt")
    p.add_argument("--child-train", default=None, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    from nfd.errors import NfdError

    args = parser().parse_args(argv)
    try:
        check_inputs(args)
        if args.child_train:
            return child_train(args)
        return run_parent(args)
    except (TtqError, NfdError) as e:
        print(f"reference_ttq: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
