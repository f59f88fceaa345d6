"""Choosing which samples a figure shows, by stated automatic criteria instead of by eye.

The paper picks the batch shown in Fig. 6 and Fig. 9 as "the best of 5 batches by visual inspection" and shows
failure cases in Fig. 11. Here both choices are made by a number that the figure's title names:

- **chairs** (3D occupancy samples): a sample's score is its squared Chamfer distance to the *nearest* reference chair
  (the test split, or ``num_ref`` of it drawn as ``nfd evaluate shapes`` draws them), on 2,048 points sampled on each
  marching-cubes surface at level 0, the distance of the shape metrics (``nfd.metrics.shapes3d``). A sample with no
  surface scores ``+inf``, the worst.
- **images**: a sample's score is its pixel MSE (mean squared difference of the features in [-1, 1]) to the nearest
  test image of the same resolution: a cheap nearest-neighbour realism proxy, not a perceptual metric.

A batch's score is the mean of its samples' scores; batches are ranked by how many samples have no surface first
(fewer is better), then by that mean over the others (lower is better), ties to the first batch. Fig. 11 shows the
samples with the highest scores of all the batches drawn.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nfd.errors import NfdError

SHAPE_POINTS = 2048


@dataclass(frozen=True)
class Criterion:
    """How samples were scored: the numbers behind a figure's choice and the words its title uses for them."""

    kind: str  # "shapes" or "images"
    num_references: int
    points: int = SHAPE_POINTS

    def describe(self) -> str:
        if self.kind == "shapes":
            return (
                f"squared Chamfer distance to the nearest of {self.num_references} test chairs "
                f"({self.points} surface points, marching cubes at occupancy 0.5; no surface = worst)"
            )
        return f"pixel MSE (features in [-1, 1]) to the nearest of {self.num_references} test images"


def _shape_references(data: str | Path, num_ref: int, points: int, seed: int) -> list[np.ndarray]:
    from nfd.metrics.scoring import _check_shape_data, reference_indices, reference_point_sets

    _check_shape_data(data)
    idx = reference_indices(data, "test", num_ref, seed)
    return [r for r in reference_point_sets(data, idx, points, seed) if r is not None]


def shape_scores(
    batches: list[np.ndarray],
    data: str | Path,
    num_ref: int = 0,
    points: int = SHAPE_POINTS,
    seed: int = 0,
    workers: int = -1,
) -> tuple[list[np.ndarray], Criterion]:
    """Per-sample scores of each batch of occupancy volumes ``[num, R, R, R]`` or ``[num, R, R, R, 1]`` in [-1, 1]:
    the squared Chamfer distance to the nearest reference shape (``+inf`` without a surface)."""
    from nfd.metrics.shapes3d import chamfer_matrix, volumes_point_sets

    refs = _shape_references(data, num_ref, points, seed)
    print(
        f"selection: scoring {sum(len(b) for b in batches)} samples against {len(refs)} test chairs "
        f"({points} points each)",
        file=sys.stderr,
    )
    scores, offset = [], 0
    for vols in batches:
        vols = np.asarray(vols)
        if vols.ndim == 5:
            vols = vols[..., 0]
        if vols.ndim != 4:
            raise NfdError(f"chair scores need 3D occupancy samples [num, R, R, R, 1], got shape {list(vols.shape)}")
        sets = volumes_point_sets(vols, points, seed=seed, role=0, offset=offset)
        offset += len(vols)
        scores.append(chamfer_matrix(sets, refs, workers=workers).min(axis=1))
    return scores, Criterion("shapes", len(refs), points)


def image_scores(
    batches: list[np.ndarray], data: str | Path, num_ref: int = 0, seed: int = 0, chunk: int = 256
) -> tuple[list[np.ndarray], Criterion]:
    """Per-sample scores of each batch of images ``[num, R, R, k]`` in [-1, 1]: the mean squared difference to the
    nearest test image of ``data`` (which must have the samples' resolution and channels)."""
    from nfd.metrics.data import h5_info, read_examples
    from nfd.metrics.scoring import reference_indices

    info = h5_info(data)
    shape = tuple(np.asarray(batches[0]).shape[1:])
    if info.coord_dim != 2 or (*info.grid_shape, info.feature_dim) != shape:
        raise NfdError(
            f"{data}: images of shape {[*info.grid_shape, info.feature_dim]}, but the samples are "
            f"{list(shape)}; score images against data of their own resolution"
        )
    idx = reference_indices(data, "test", num_ref, seed)
    flat = [np.asarray(b, dtype=np.float32).reshape(len(b), -1) for b in batches]
    best = [np.full(len(b), np.inf) for b in flat]
    for start in range(0, len(idx), chunk):
        ref = read_examples(data, idx[start : start + chunk]).reshape(-1, flat[0].shape[1]).astype(np.float32)
        ref_sq = (ref * ref).sum(axis=1)
        for b, x in enumerate(flat):
            d = ((x * x).sum(axis=1)[:, None] - 2.0 * x @ ref.T + ref_sq[None, :]) / x.shape[1]
            best[b] = np.minimum(best[b], np.maximum(d, 0.0).min(axis=1))
    return best, Criterion("images", len(idx))


def batch_key(scores: np.ndarray) -> tuple[int, float]:
    """Sort key of a batch: (samples without a surface, mean score of the others); lower is better."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = scores[np.isfinite(scores)]
    return int(len(scores) - len(finite)), float(finite.mean()) if len(finite) else float("inf")


def best_batch(scores: list[np.ndarray]) -> int:
    """Index of the best batch (``batch_key``), the first one on ties."""
    if not scores:
        raise NfdError("no batches to choose from")
    keys = [batch_key(s) for s in scores]
    return min(range(len(keys)), key=lambda b: (keys[b], b))


def worst_samples(scores: list[np.ndarray], num: int) -> list[tuple[int, int, float]]:
    """The ``num`` highest-scoring samples of all batches, worst first: ``(batch, index, score)``; ties go to the
    earlier batch and index."""
    pool = [(b, i, float(s)) for b, batch in enumerate(scores) for i, s in enumerate(np.asarray(batch))]
    if num < 1:
        raise NfdError(f"the number of samples to show must be >= 1, got {num}")
    pool.sort(key=lambda t: (-t[2], t[0], t[1]))
    return pool[:num]


def format_batch_table(scores: list[np.ndarray], chosen: int) -> str:
    lines = []
    for b, s in enumerate(scores):
        empty, mean = batch_key(s)
        mark = "  <- shown" if b == chosen else ""
        what = f"mean {mean:.6g} over {len(s) - empty} samples" if empty < len(s) else "no sample has a surface"
        lines.append(f"batch {b + 1}: {what}, {empty} without a surface{mark}")
    return "\n".join(lines)


def batch_paths(inputs: dict[str, Path], key: str) -> list[Path]:
    """The inputs ``KEY_b0``, ``KEY_b1``, ... in order (one per batch), or ``[inputs[KEY]]`` for a single batch."""
    indexed = sorted(
        (int(k[len(key) + 2 :]), v)
        for k, v in inputs.items()
        if k.startswith(f"{key}_b") and k[len(key) + 2 :].isdigit()
    )
    if indexed:
        if [b for b, _ in indexed] != list(range(len(indexed))):
            raise NfdError(
                f"inputs {key}_b0, {key}_b1, ... must be numbered from 0 without gaps, got "
                f"{', '.join(f'{key}_b{b}' for b, _ in indexed)}"
            )
        if key in inputs:
            raise NfdError(f"give either {key}=PATH (one batch) or {key}_b0=PATH, ... (several), not both")
        return [v for _, v in indexed]
    if key in inputs:
        return [inputs[key]]
    raise KeyError(key)
