"""Scoring arrays of samples against a processed data set: shared by ``nfd evaluate mnist|shapes`` (samples files)
and ``nfd evaluate progress`` (samples drawn from each snapshot of a run), so both give the same numbers."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from nfd.errors import NfdError


def check_mnist_samples(features: np.ndarray, where: str | Path) -> None:
    """28 x 28 grey images ``[num, 28, 28, 1]``, or a one-line error naming ``where``."""
    from nfd.metrics.classifier_fd import IMAGE_SHAPE

    if features.ndim != 4 or features.shape[-1] != 1:
        raise NfdError(f"{where}: MNIST samples must be 2D grey images [num, 28, 28, 1], got {list(features.shape)}")
    if tuple(features.shape[1:3]) != IMAGE_SHAPE:
        raise NfdError(
            f"{where}: resolution {features.shape[1]}, but the classifier takes 28 x 28 images only (no "
            f"resizing); sample with 'nfd sample --resolution 28'"
        )


def check_shape_samples(features: np.ndarray, where: str | Path, data: str | Path) -> None:
    """3D occupancy samples ``[num, R, R, R, 1]`` for 3D occupancy ``data``, or a one-line error naming the file."""
    _check_shape_data(data)
    if features.ndim != 5 or features.shape[-1] != 1:
        raise NfdError(
            f"{where}: shape metrics need 3D occupancy samples [num, R, R, R, 1], got "
            f"{list(features.shape)} (data {data} is 3D)"
        )


def _check_shape_data(data: str | Path) -> Any:
    from nfd.metrics.data import h5_info

    info = h5_info(data)
    if info.coord_dim != 3 or info.feature_dim != 1:
        raise NfdError(
            f"{data}: shape metrics need 3D occupancy data (coord_dim 3, feature_dim 1), got "
            f"coord_dim {info.coord_dim}, feature_dim {info.feature_dim}"
        )
    return info


def score_mnist(
    features: np.ndarray,
    data: str | Path,
    classifier: str | Path,
    ref_split: str = "test",
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``classifier_fd`` record of MNIST samples ``[num, 28, 28, 1]`` against ``ref_split`` of ``data``."""
    from nfd.metrics.classifier_fd import IMAGE_SHAPE, load_classifier, load_mnist_split
    from nfd.metrics.data import h5_info
    from nfd.metrics.registry import evaluate

    info = h5_info(data)
    if info.grid_shape != IMAGE_SHAPE or info.feature_dim != 1:
        raise NfdError(
            f"{data}: not 28 x 28 grey images (grid_shape {list(info.grid_shape)}, feature_dim {info.feature_dim})"
        )
    clf, meta = load_classifier(classifier)
    reference, _ = load_mnist_split(data, ref_split)
    baseline = None
    if ref_split not in ("train", "all") and info.splits.get("train"):
        baseline, _ = load_mnist_split(data, "train")
    return evaluate(
        "classifier_fd",
        context={
            **(context or {}),
            "data": str(data),
            "ref_split": ref_split,
            "classifier": str(classifier),
            "classifier_test_accuracy": meta.get("test_accuracy"),
            "classifier_data_sha256": meta.get("data_sha256"),
            "baseline": "classifier FD between as many train images as samples and the reference (real-data floor)"
            if baseline is not None
            else None,
        },
        samples=features,
        reference=reference,
        clf=clf,
        baseline=baseline,
    )


def reference_indices(data: str | Path, ref_split: str = "test", num_ref: int = 0, seed: int = 0) -> np.ndarray:
    """The reference examples of ``ref_split``: all of them, or ``num_ref`` drawn (sorted) with ``seed``, as
    ``nfd evaluate shapes`` draws them."""
    from nfd.metrics.data import split_indices

    idx = split_indices(data, ref_split)
    if num_ref:
        if num_ref > len(idx):
            raise NfdError(f"{data}: --num-ref {num_ref} but split {ref_split!r} has {len(idx)} shapes")
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=num_ref, replace=False))
    return idx


def reference_point_sets(
    data: str | Path,
    idx: np.ndarray,
    points: int = 2048,
    seed: int = 0,
    ref_split: str = "test",
    progress: bool = False,
) -> list[np.ndarray | None]:
    """Surface point sets of the reference shapes ``idx`` of 3D occupancy ``data`` (marching cubes at level 0);
    ``progress``: a bar of the references done, chunk by chunk (``nfd.progressbar``)."""
    from nfd.metrics.data import read_examples
    from nfd.metrics.shapes3d import volumes_point_sets
    from nfd.progressbar import progress_bar

    ref_sets: list[np.ndarray | None] = []
    with progress_bar(desc="reference surface points", unit="shape", total=len(idx), enabled=progress) as bar:
        for start in range(0, len(idx), 256):  # read references in chunks to bound memory
            chunk = read_examples(data, idx[start : start + 256])[..., 0]
            ref_sets += volumes_point_sets(chunk, points, seed=seed, role=1, offset=start)
            bar.update(len(chunk))
    if all(r is None for r in ref_sets):
        raise NfdError(f"{data}: no reference shape of split {ref_split!r} has a surface at level 0")
    return ref_sets


def score_shapes(
    volumes: np.ndarray,
    data: str | Path,
    ref_split: str = "test",
    num_ref: int = 0,
    points: int = 2048,
    seed: int = 0,
    workers: int = -1,
    context: dict[str, Any] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """The ``shapes3d`` record (COV, MMD, 1-NNA) of occupancy volumes ``[num, R, R, R]`` in [-1, 1] against
    ``num_ref`` shapes of ``ref_split`` of ``data`` (all of them when 0); ``progress``: bars of the surface points
    of the samples and of the references."""
    from nfd.metrics.registry import evaluate
    from nfd.metrics.shapes3d import volumes_point_sets

    info = _check_shape_data(data)
    idx = reference_indices(data, ref_split, num_ref, seed)
    print(
        f"shapes: meshing {len(volumes)} samples ({volumes.shape[1]}^3) and {len(idx)} references "
        f"({'x'.join(map(str, info.grid_shape))}), {points} points each",
        file=sys.stderr,
    )
    sample_sets = volumes_point_sets(volumes, points, seed=seed, role=0, progress=progress)
    ref_sets = reference_point_sets(data, idx, points, seed, ref_split, progress=progress)
    print(
        f"shapes: {sum(s is None for s in sample_sets)} of {len(sample_sets)} samples have no surface; computing "
        f"{len(sample_sets) + len(ref_sets)}^2 Chamfer distances",
        file=sys.stderr,
    )
    return evaluate(
        "shapes3d",
        context={
            **(context or {}),
            "data": str(data),
            "ref_split": ref_split,
            "ref_indices": [int(i) for i in idx],
            "sample_resolution": int(volumes.shape[1]),
            "data_grid_shape": list(info.grid_shape),
            "points": points,
            "seed": seed,
            "surface_level": 0.0,
        },
        samples=sample_sets,
        references=ref_sets,
        workers=workers,
    )
