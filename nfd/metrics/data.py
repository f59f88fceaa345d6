"""Reading what the metrics compare: processed HDF5 files (``nfd-pointcloud`` v1) and samples ``.npz`` files.

Formats are those of ``docs/contracts.md``; samples files are read with ``nfd.sampling.samples_file`` (the format's
one reader) and checked here for what the metrics need. Every problem (missing file, missing key, wrong format, shapes
that do not fit) is an ``NfdError`` whose one-line message names the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nfd.data.h5read import open_checked
from nfd.errors import NfdError
from nfd.sampling.samples_file import read_samples

SPLITS = ("train", "val", "test")


@dataclass
class H5Info:
    """The attributes of a processed HDF5 file that the metrics need."""

    path: Path
    dataset: str
    grid_shape: tuple[int, ...]
    coord_dim: int
    feature_dim: int
    num_examples: int
    has_labels: bool
    splits: dict[str, int]


def _require_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise NfdError(f"{what} not found: {path}")
    return path


def h5_info(path: str | Path) -> H5Info:
    """Check the format of a processed HDF5 file and return its attributes."""
    path = _require_file(path, "data file")
    with open_checked(path) as f:  # the data package's format and version checks
        for key in ("grid_shape", "coord_dim", "feature_dim"):
            if key not in f.attrs:
                raise NfdError(f"{path}: missing attribute {key!r}")
        if "features" not in f:
            raise NfdError(f"{path}: missing dataset '/features'")
        feats = f["features"]
        grid_shape = tuple(int(s) for s in np.atleast_1d(f.attrs["grid_shape"]))
        coord_dim = int(f.attrs["coord_dim"])
        feature_dim = int(f.attrs["feature_dim"])
        if feats.ndim != 3 or feats.shape[1] != int(np.prod(grid_shape)) or feats.shape[2] != feature_dim:
            raise NfdError(
                f"{path}: '/features' has shape {feats.shape}, expected [E, {int(np.prod(grid_shape))}, {feature_dim}] "
                f"for grid_shape {list(grid_shape)}"
            )
        if len(grid_shape) != coord_dim:
            raise NfdError(f"{path}: grid_shape {list(grid_shape)} does not match coord_dim {coord_dim}")
        splits = {s: int(f["splits"][s].shape[0]) for s in SPLITS if "splits" in f and s in f["splits"]}
        dataset = f.attrs.get("dataset", "")
        if isinstance(dataset, bytes):
            dataset = dataset.decode()
        num = int(feats.shape[0])
        return H5Info(path, str(dataset), grid_shape, coord_dim, feature_dim, num, "labels" in f, splits)


def split_indices(path: str | Path, split: str) -> np.ndarray:
    """Example indices of ``split`` ("train", "val", "test", or "all")."""
    path = _require_file(path, "data file")
    with open_checked(path) as f:
        if split == "all":
            return np.arange(f["features"].shape[0], dtype=np.int64)
        if "splits" not in f or split not in f["splits"]:
            raise NfdError(f"{path}: missing dataset '/splits/{split}'")
        idx = np.asarray(f["splits"][split][()], dtype=np.int64)
    if idx.size == 0:
        raise NfdError(f"{path}: '/splits/{split}' is empty")
    return idx


def read_examples(path: str | Path, indices: np.ndarray, labels: bool = False):
    """Features of examples ``indices`` as float32 ``[B, *grid_shape, k]`` in [-1, 1] (``v / 255 * 2 - 1``), in the
    order given; with ``labels=True`` also their int64 labels."""
    info = h5_info(path)
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= info.num_examples):
        raise NfdError(f"{info.path}: example index out of range [0, {info.num_examples})")
    order = np.argsort(indices, kind="stable")
    uniq, inverse = np.unique(indices[order], return_inverse=True)
    with open_checked(info.path) as f:
        raw = f["features"][uniq] if uniq.size else np.zeros((0, *f["features"].shape[1:]), np.uint8)
        lab = None
        if labels:
            if "labels" not in f:
                raise NfdError(f"{info.path}: missing dataset '/labels'")
            lab = np.asarray(f["labels"][()], dtype=np.int64)[indices]
    feats = np.empty((len(indices), *raw.shape[1:]), dtype=np.uint8)
    feats[order] = raw[inverse]
    x = feats.astype(np.float32) / 255.0 * 2.0 - 1.0
    x = x.reshape(len(indices), *info.grid_shape, info.feature_dim)
    return (x, lab) if labels else x


@dataclass
class Samples:
    """A samples file: ``features`` float32 ``[num, R, ..., R, k]`` and its scalars."""

    path: Path
    features: np.ndarray
    resolution: int
    coord_dim: int
    feature_dim: int


def load_samples(path: str | Path) -> Samples:
    """Load and check a samples ``.npz`` (``docs/contracts.md``): finite values in [-1, 1], consistent shape."""
    stored = read_samples(path)
    path, feats = stored.path, np.asarray(stored.features, dtype=np.float32)
    meta = {k: stored.meta[k] for k in ("resolution", "coord_dim", "feature_dim") if k in stored.meta}
    if feats.ndim < 3:
        raise NfdError(f"{path}: 'features' has shape {list(feats.shape)}, expected [num, R, ..., R, k]")
    coord_dim = feats.ndim - 2
    grid = feats.shape[1:-1]
    if len(set(grid)) != 1:
        raise NfdError(f"{path}: 'features' grid {list(grid)} is not R x ... x R")
    res = int(grid[0])
    for key, val in (("resolution", res), ("coord_dim", coord_dim), ("feature_dim", int(feats.shape[-1]))):
        if key in meta and meta[key] != val:
            raise NfdError(f"{path}: '{key}' is {meta[key]} but 'features' has shape {list(feats.shape)}")
    if feats.shape[0] == 0:
        raise NfdError(f"{path}: 'features' holds no samples")
    if not np.isfinite(feats).all():
        raise NfdError(f"{path}: 'features' has non-finite values")
    lo, hi = float(feats.min()), float(feats.max())
    if lo < -1.0 - 1e-4 or hi > 1.0 + 1e-4:
        raise NfdError(f"{path}: 'features' must lie in [-1, 1], found [{lo:.4g}, {hi:.4g}]")
    return Samples(path, np.clip(feats, -1.0, 1.0), res, coord_dim, int(feats.shape[-1]))
