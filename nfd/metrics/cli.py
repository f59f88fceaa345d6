"""``nfd evaluate``: train the MNIST classifier and score samples (MNIST classifier metrics, 3D shapes, Inception FID).

Each scoring verb writes one JSON record (``--out``, atomically) and can append the same record as one line to a
``.jsonl`` log (``--jsonl``). Bad input (missing file, a 2D samples file against 3D data, a resolution the classifier
cannot take) is a one-line ``NfdError`` and nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from nfd.cli import int_at_least, verb_help
from nfd.errors import NfdError

SPLIT_CHOICES = ["train", "val", "test", "all"]


def _add_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, metavar="FILE.json", help="the JSON record to write (atomically)")
    p.add_argument(
        "--jsonl", type=Path, default=None, metavar="FILE", help="also append the record as one line to this log"
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` verb group to the ``nfd`` parser."""
    p = sub.add_parser(
        "evaluate",
        help=verb_help(__name__),
        description=(
            "Score generated samples against held-out real data. Each METRIC verb writes one JSON record (--out) and "
            "can append it as one line to a .jsonl log (--jsonl). Run 'nfd evaluate METRIC --help' for details."
        ),
    )
    vs = p.add_subparsers(dest="evaluate_verb", metavar="METRIC")
    vs.required = True

    t = vs.add_parser(
        "train-classifier",
        help="train the small MNIST classifier used by 'nfd evaluate mnist'",
        description=(
            "Train a small conv net (2 strided conv layers, 128 penultimate features) on the train split of a "
            "processed MNIST HDF5 file (28 x 28, with /labels) and save it as a weights-only checkpoint. Prints its "
            "test accuracy."
        ),
    )
    t.add_argument("--data", required=True, type=Path, metavar="FILE.h5", help="processed MNIST HDF5 (with /labels)")
    t.add_argument("--out", required=True, type=Path, metavar="FILE.pt", help="checkpoint to write (atomically)")
    t.add_argument("--epochs", type=int_at_least(1), default=8, help="training epochs")
    t.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the batch order")
    t.add_argument("--batch-size", type=int_at_least(1), default=64, help="batch size")
    t.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (cosine decay to 0)")
    t.add_argument("--threads", type=int_at_least(1), default=1, help="torch CPU threads while training")
    t.set_defaults(func=cmd_train_classifier)

    m = vs.add_parser(
        "mnist",
        help="classifier FD, confident share and class spread of MNIST samples",
        description=(
            "Score 28 x 28 MNIST samples with the small classifier: classifier FD (not comparable with Inception FID) "
            "between penultimate features of the samples and of real images of --ref-split, the share of samples "
            "classified with confidence > 0.9, and the spread over the 10 classes (entropy of the predicted-class "
            "histogram / log 10, and the counts). Samples at another resolution are an error (no resizing)."
        ),
    )
    m.add_argument("--samples", required=True, type=Path, metavar="FILE.npz", help="samples from 'nfd sample'")
    m.add_argument("--data", required=True, type=Path, metavar="FILE.h5", help="processed MNIST HDF5")
    m.add_argument("--classifier", required=True, type=Path, metavar="FILE.pt", help="from 'evaluate train-classifier'")
    m.add_argument("--ref-split", choices=SPLIT_CHOICES, default="test", help="split of the real reference images")
    _add_output(m)
    m.set_defaults(func=cmd_mnist)

    s = vs.add_parser(
        "shapes",
        help="COV, MMD and 1-NNA (squared Chamfer) of 3D occupancy samples",
        description=(
            "Mesh every sample (marching cubes at occupancy level 0) and every reference voxel grid of --ref-split, "
            "sample --points points uniformly on each surface (seeded), and compute Coverage, Minimum Matching "
            "Distance and 1-NN accuracy with the squared Chamfer distance. Samples without a surface count as "
            "failures (reported as num_failed; they cover nothing, match nothing and are misclassified by 1-NNA). "
            "Samples and data may have different grid resolutions (both live on [-1, 1]^3)."
        ),
    )
    s.add_argument("--samples", required=True, type=Path, metavar="FILE.npz", help="samples from 'nfd sample'")
    s.add_argument("--data", required=True, type=Path, metavar="FILE.h5", help="processed 3D occupancy HDF5")
    s.add_argument("--ref-split", choices=SPLIT_CHOICES, default="test", help="split of the reference shapes")
    s.add_argument(
        "--num-ref",
        type=int_at_least(0),
        default=0,
        metavar="N",
        help="use N references drawn (seeded) from the split; 0 = the whole split",
    )
    s.add_argument(
        "--num-samples", type=int_at_least(0), default=0, metavar="N", help="use the first N samples; 0 = all"
    )
    s.add_argument("--points", type=int_at_least(1), default=2048, help="points sampled on each surface")
    s.add_argument("--seed", type=int, default=0, help="seed of the reference subset and the surface sampling")
    s.add_argument("--workers", type=int, default=-1, help="threads for the KD-tree queries (-1: all cores)")
    _add_output(s)
    s.set_defaults(func=cmd_shapes)

    f = vs.add_parser(
        "fid",
        help="Inception FID/KID via torch-fidelity (or a 'not computed' record)",
        description=(
            "Inception FID and KID of 2D image samples against real images of --ref-split, through torch-fidelity. "
            "Computed only when torch-fidelity is installed and the Inception weights file exists (--weights, else "
            "$NFD_INCEPTION_WEIGHTS, else torch-fidelity's torch hub cache); nothing is downloaded. Otherwise the "
            "record says 'not computed: ...' with fid = null (exit status 0, or 2 with --strict)."
        ),
    )
    f.add_argument("--samples", required=True, type=Path, metavar="FILE.npz", help="samples from 'nfd sample'")
    f.add_argument("--data", required=True, type=Path, metavar="FILE.h5", help="processed image HDF5")
    f.add_argument("--ref-split", choices=SPLIT_CHOICES, default="test", help="split of the real reference images")
    f.add_argument("--weights", type=Path, default=None, metavar="FILE.pth", help="Inception weights (torch-fidelity)")
    f.add_argument("--strict", action="store_true", help="fail (write nothing) when FID cannot be computed")
    f.add_argument("--cpu", action="store_true", help="run Inception on the CPU even when CUDA is available")
    _add_output(f)
    f.set_defaults(func=cmd_fid)

    g = vs.add_parser(
        "progress",
        help="sample quality at every snapshot of a training run (a TSV that 'dvc plots' draws)",
        description=(
            "For every generator snapshot of a run (RUN/snapshots/step_*.pt, written every train.keep_every steps) and "
            "its final RUN/model.pt, sample --num-samples functions (seed --seed) at the data resolution and score "
            "them "
            "with the metric of the data: the MNIST classifier metrics for 28 x 28 grey images (needs --classifier), "
            "COV/MMD/1-NNA for 3D occupancy. Writes one TSV row per snapshot (x: step) and, with --jsonl, one JSON "
            "line per evaluation."
        ),
    )
    g.add_argument("--run", required=True, type=Path, metavar="DIR", help="training run folder (nfd train --out)")
    g.add_argument("--data", required=True, type=Path, metavar="FILE.h5", help="the processed data set of the run")
    g.add_argument("--classifier", type=Path, default=None, metavar="FILE.pt", help="MNIST only: the classifier")
    g.add_argument("--num-samples", type=int_at_least(1), default=500, metavar="N", help="samples per snapshot")
    g.add_argument("--ref-split", choices=SPLIT_CHOICES, default="test", help="split of the real references")
    g.add_argument(
        "--num-ref",
        type=int_at_least(0),
        default=0,
        metavar="N",
        help="3D only: N references drawn (seeded) from the split; 0 = the whole split",
    )
    g.add_argument("--points", type=int_at_least(1), default=2048, help="3D only: points sampled on each surface")
    g.add_argument("--seed", type=int, default=1, help="latent seed of the samples (the same at every snapshot)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (sampling)")
    g.add_argument("--out", required=True, type=Path, metavar="FILE.tsv", help="the TSV to write (atomically)")
    g.add_argument(
        "--jsonl", type=Path, default=None, metavar="FILE", help="also append every evaluation as one JSON line here"
    )
    g.set_defaults(func=cmd_progress)


# ---------------------------------------------------------------------------------------------------------------------


def _write(args: argparse.Namespace, record: dict[str, Any]) -> None:
    from nfd.metrics.registry import append_jsonl, write_json

    write_json(args.out, record)
    if args.jsonl is not None:
        append_jsonl(args.jsonl, record)


def _summary(record: dict[str, Any]) -> str:
    parts = []
    for k, v in record["results"].items():
        if isinstance(v, float):
            parts.append(f"{k}={v:.4g}")
        elif isinstance(v, int) or v is None:
            parts.append(f"{k}={v}")
    return f"{record['metric']}: " + ", ".join(parts)


def cmd_train_classifier(args: argparse.Namespace) -> int:
    from nfd.metrics.classifier_fd import train_classifier

    meta = train_classifier(
        args.data,
        args.out,
        epochs=args.epochs,
        seed=args.seed,
        batch_size=args.batch_size,
        lr=args.lr,
        threads=args.threads,
    )
    val = f", val accuracy {meta['val_accuracy']:.4f}" if meta["val_accuracy"] is not None else ""
    print(
        f"classifier: test accuracy {meta['test_accuracy']:.4f}{val} ({meta['num_train']} train / {meta['num_test']} "
        f"test images, {meta['epochs']} epochs, {meta['train_seconds']:.1f} s) -> {args.out}"
    )
    return 0


def cmd_mnist(args: argparse.Namespace) -> int:
    from nfd.metrics.data import load_samples
    from nfd.metrics.scoring import check_mnist_samples, score_mnist

    samples = load_samples(args.samples)
    check_mnist_samples(samples.features, args.samples)
    record = score_mnist(
        samples.features, args.data, args.classifier, args.ref_split, context={"samples": str(args.samples)}
    )
    _write(args, record)
    print(_summary(record))
    return 0


def cmd_shapes(args: argparse.Namespace) -> int:
    from nfd.metrics.data import load_samples
    from nfd.metrics.scoring import check_shape_samples, score_shapes

    samples = load_samples(args.samples)
    check_shape_samples(samples.features, args.samples, args.data)
    vols = samples.features[..., 0]
    if args.num_samples:
        if args.num_samples > len(vols):
            raise NfdError(f"{args.samples}: --num-samples {args.num_samples} but the file has {len(vols)} samples")
        vols = vols[: args.num_samples]
    record = score_shapes(
        vols,
        args.data,
        args.ref_split,
        args.num_ref,
        args.points,
        args.seed,
        args.workers,
        context={"samples": str(args.samples)},
        progress=not args.log_quiet,
    )
    _write(args, record)
    print(_summary(record))
    return 0


def cmd_progress(args: argparse.Namespace) -> int:
    from nfd.metrics.progress import evaluate_progress

    evaluate_progress(
        args.run,
        args.data,
        args.out,
        classifier=args.classifier,
        num_samples=args.num_samples,
        ref_split=args.ref_split,
        num_ref=args.num_ref,
        points=args.points,
        seed=args.seed,
        jsonl=args.jsonl,
        device=args.device,
    )
    return 0


def cmd_fid(args: argparse.Namespace) -> int:
    from nfd.metrics.data import h5_info, load_samples, read_examples, split_indices
    from nfd.metrics.registry import evaluate

    samples = load_samples(args.samples)
    info = h5_info(args.data)
    if info.coord_dim != 2 or samples.coord_dim != 2:
        raise NfdError(
            f"FID needs 2D images: samples {args.samples} are {samples.coord_dim}D, data {args.data} is "
            f"{info.coord_dim}D"
        )
    if samples.feature_dim != info.feature_dim or tuple(samples.features.shape[1:3]) != info.grid_shape:
        raise NfdError(
            f"{args.samples}: samples {list(samples.features.shape[1:])} do not match data {args.data} "
            f"({list(info.grid_shape)} x {info.feature_dim}); sample at the data resolution"
        )
    reference = read_examples(args.data, split_indices(args.data, args.ref_split))
    record = evaluate(
        "fid",
        context={"samples": str(args.samples), "data": str(args.data), "ref_split": args.ref_split},
        samples=samples.features,
        reference=reference,
        weights=args.weights,
        cuda=False if args.cpu else None,
    )
    if record["status"] != "computed":
        if args.strict:
            raise NfdError(record["message"])
        _write(args, record)
        print(f"nfd evaluate fid: {record['message']} (record written to {args.out})", file=sys.stderr)
        return 0
    _write(args, record)
    print(_summary(record))
    return 0
