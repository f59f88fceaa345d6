"""The processed-data format ``nfd-pointcloud`` version 1 (docs/contracts.md): writer, splits and format checks.

Layout of one file::

    /coords            float32 [N, d]     grid_coords(R, d), stored once, shared by every example
    /features          uint8   [E, N, k]  chunks of one example, gzip; read as v / 255 * 2 - 1 in [-1, 1]
    /labels            int64   [E]        optional (MNIST)
    /splits/train|val|test  int64         sorted example indices, fixed by split_seed
    attributes on /    format, format_version, nfd_version, dataset, source, source_sha256, resolution,
                       grid_shape, coord_dim, feature_dim, split_seed (+ num_examples, feature_kind, ...)

Every file is written through :func:`nfd.io.atomic_path`: a failed prepare never leaves a partial file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nfd import __version__
from nfd.errors import NfdError
from nfd.data.fsutil import set_default_mode
from nfd.io import atomic_path

FORMAT = "nfd-pointcloud"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
REQUIRED_ATTRS = (
    "format",
    "format_version",
    "nfd_version",
    "dataset",
    "source",
    "source_sha256",
    "resolution",
    "grid_shape",
    "coord_dim",
    "feature_dim",
    "split_seed",
)


class DataFormatError(NfdError):
    """A processed file that is missing, not HDF5, of another format or version, or inconsistent."""


def features_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map features in [-1, 1] to the stored uint8 (-1 -> 0, +1 -> 255), rounding to nearest."""
    v = (np.clip(np.asarray(values, dtype=np.float32), -1.0, 1.0) + 1.0) * 127.5
    return np.rint(v).astype(np.uint8)


def uint8_to_features(stored: np.ndarray) -> np.ndarray:
    """The contract's read mapping ``y = v / 255 * 2 - 1`` (float32 in [-1, 1])."""
    return np.asarray(stored, dtype=np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)


def make_splits(
    num_examples: int,
    seed: int,
    val_frac: float = 0.05,
    test_frac: float = 0.05,
    fixed_test: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Train/val/test example indices (sorted int64), a pure function of ``(num_examples, seed, fractions)``.

    ``fixed_test`` (e.g. the official MNIST test set) is used as the test split as is; ``val_frac`` is then a
    fraction of the remaining examples and ``test_frac`` is ignored.
    """
    if num_examples < 0:
        raise ValueError("num_examples must be >= 0")
    for name, frac in (("val_frac", val_frac), ("test_frac", test_frac)):
        if not 0.0 <= frac < 1.0:
            raise NfdError(f"{name} must be in [0, 1), got {frac}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x6E6664]))
    all_idx = np.arange(num_examples, dtype=np.int64)
    if fixed_test is not None:
        test = np.unique(np.asarray(fixed_test, dtype=np.int64))
        rest = np.setdiff1d(all_idx, test)
        perm = rng.permutation(rest)
        n_val = int(round(val_frac * len(rest)))
        val, train = perm[:n_val], perm[n_val:]
    else:
        if val_frac + test_frac >= 1.0:
            raise NfdError(f"val_frac + test_frac must be < 1, got {val_frac} + {test_frac}")
        perm = rng.permutation(all_idx)
        n_val = int(round(val_frac * num_examples))
        n_test = int(round(test_frac * num_examples))
        val, test, train = perm[:n_val], perm[n_val : n_val + n_test], perm[n_val + n_test :]
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def check_overwritable(out: str | Path, force: bool = False) -> None:
    """Refuse to replace an existing file that is not an ``nfd-pointcloud`` HDF5 (any version) unless ``force``."""
    out = Path(out)
    if force or not out.exists():
        return
    if out.is_dir():
        raise NfdError(f"{out}: output path is a directory")
    import h5py

    try:
        ok = h5py.is_hdf5(out)
        if ok:
            with h5py.File(out, "r") as f:
                ok = f.attrs.get("format") == FORMAT
    except OSError:
        ok = False
    if not ok:
        raise NfdError(f"{out}: exists and is not an {FORMAT} HDF5 file; refusing to overwrite it (pass --force)")


def write_pointcloud(
    out: str | Path,
    examples: Iterable[np.ndarray],
    *,
    grid_shape: tuple[int, ...],
    feature_dim: int,
    dataset: str,
    source: str,
    source_sha256: str,
    labels: np.ndarray | None = None,
    split_seed: int = 0,
    val_frac: float = 0.05,
    test_frac: float = 0.05,
    fixed_test: np.ndarray | None = None,
    num_examples: int | None = None,
    compression: str | None = "gzip",
    extra_attrs: Mapping[str, Any] | None = None,
    extra_datasets: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write an ``nfd-pointcloud`` file atomically from a stream of uint8 examples, each ``[N, k]`` (or ``[B, N, k]``).

    ``N = prod(grid_shape)`` in C order of the grid (contract), ``k = feature_dim``. Examples are consumed one at a
    time, so arbitrarily large datasets never sit in memory. ``num_examples`` (if known) preallocates.
    ``extra_attrs`` values may be callables, evaluated after the examples are consumed (e.g. a list of skipped
    inputs). ``extra_datasets`` (name -> array, or a callable returning one, called after the examples are
    consumed) adds datasets beside the contract's, e.g. ``/model_ids``; strings are stored as UTF-8.
    Returns a summary dict (path, num_examples, split sizes, bytes).
    """
    import h5py

    from nfd.grid import grid_coords

    grid_shape = tuple(int(s) for s in grid_shape)
    if len(set(grid_shape)) != 1:
        raise ValueError(f"grids are cubic (R**d), got grid_shape {grid_shape}")
    resolution, dim = grid_shape[0], len(grid_shape)
    n_points = math.prod(grid_shape)
    coords = grid_coords(resolution, dim).numpy().astype(np.float32)
    chunk = (1, n_points, feature_dim)
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            f.create_dataset("coords", data=coords, track_times=False)
            feats = f.create_dataset(
                "features",
                shape=(num_examples or 0, n_points, feature_dim),
                maxshape=(None, n_points, feature_dim),
                dtype=np.uint8,
                chunks=chunk,
                compression=compression,
                compression_opts=4 if compression == "gzip" else None,
                track_times=False,
            )
            count = 0
            for ex in examples:
                ex = np.asarray(ex)
                if ex.dtype != np.uint8:
                    raise TypeError(f"examples must be uint8, got {ex.dtype}")
                if ex.ndim == 2:
                    ex = ex[None]
                if ex.shape[1:] != (n_points, feature_dim):
                    raise ValueError(f"example shape {ex.shape[1:]} != {(n_points, feature_dim)}")
                if count + len(ex) > feats.shape[0]:
                    feats.resize(max(count + len(ex), 2 * feats.shape[0]), axis=0)
                feats[count : count + len(ex)] = ex
                count += len(ex)
            if feats.shape[0] != count:
                feats.resize(count, axis=0)
            if count == 0:
                raise NfdError(f"{source}: no examples to write")
            if labels is not None:
                labels = np.asarray(labels, dtype=np.int64)
                if labels.shape != (count,):
                    raise ValueError(f"labels shape {labels.shape} != ({count},)")
                f.create_dataset("labels", data=labels, track_times=False)
            for name, value in (extra_datasets or {}).items():
                value = value() if callable(value) else value
                if isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
                    value = np.asarray(value, dtype=h5py.string_dtype("utf-8"))
                f.create_dataset(name, data=value, track_times=False)
            splits = make_splits(count, split_seed, val_frac, test_frac, fixed_test)
            grp = f.create_group("splits")
            for name in SPLITS:
                grp.create_dataset(name, data=splits[name].astype(np.int64), track_times=False)
            attrs = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "nfd_version": __version__,
                "dataset": dataset,
                "source": str(source),
                "source_sha256": source_sha256,
                "resolution": resolution,
                "grid_shape": np.asarray(grid_shape, dtype=np.int64),
                "coord_dim": dim,
                "feature_dim": int(feature_dim),
                "split_seed": int(split_seed),
                "num_examples": count,
                "split_fractions": json.dumps(
                    {"val": val_frac, "test": test_frac, "fixed_test": fixed_test is not None}
                ),
            }
            attrs.update(extra_attrs or {})
            for key, value in attrs.items():
                value = value() if callable(value) else value
                f.attrs[key] = value
        size = tmp.stat().st_size
        set_default_mode(tmp)
    return {
        "path": str(out),
        "num_examples": count,
        "splits": {k: int(len(v)) for k, v in splits.items()},
        "bytes": size,
    }


def open_checked(path: str | Path):
    """Open a processed file read-only after checking it is ``nfd-pointcloud`` version 1 and self-consistent."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such processed data file (run `nfd data prepare ...`)")
    try:
        if not h5py.is_hdf5(path):
            raise DataFormatError(f"{path}: not an HDF5 file")
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataFormatError(f"{path}: cannot open as HDF5 ({e})") from None
    try:
        fmt = f.attrs.get("format")
        if isinstance(fmt, bytes):
            fmt = fmt.decode()
        if fmt != FORMAT:
            raise DataFormatError(f"{path}: format is {fmt!r}, expected {FORMAT!r} (re-run `nfd data prepare`)")
        version = f.attrs.get("format_version")
        if version is None or int(version) != FORMAT_VERSION:
            raise DataFormatError(
                f"{path}: {FORMAT} format_version {version}, this nfd reads version {FORMAT_VERSION} "
                "(re-run `nfd data prepare`)"
            )
        missing = [a for a in REQUIRED_ATTRS if a not in f.attrs]
        missing += [d for d in ("coords", "features", *(f"splits/{s}" for s in SPLITS)) if d not in f]
        if missing:
            raise DataFormatError(f"{path}: missing {', '.join(missing)}")
        coords, feats = f["coords"], f["features"]
        d, k = int(f.attrs["coord_dim"]), int(f.attrs["feature_dim"])
        if coords.ndim != 2 or coords.shape[1] != d or feats.ndim != 3 or feats.shape[1:] != (coords.shape[0], k):
            raise DataFormatError(
                f"{path}: inconsistent shapes: coords {coords.shape}, features {feats.shape}, d={d}, k={k}"
            )
        if feats.dtype != np.uint8:
            raise DataFormatError(f"{path}: /features dtype {feats.dtype}, expected uint8")
    except BaseException:
        f.close()
        raise
    return f


def read_attrs(path: str | Path) -> dict[str, Any]:
    """All root attributes of a checked processed file, as plain Python values, plus dataset shapes."""
    with open_checked(path) as f:
        out: dict[str, Any] = {}
        for key, value in f.attrs.items():
            if isinstance(value, np.ndarray):
                value = value.tolist()
            elif isinstance(value, np.generic):
                value = value.item()
            elif isinstance(value, bytes):
                value = value.decode()
            out[key] = value
        out["shape_features"] = list(f["features"].shape)
        out["split_sizes"] = {s: int(f[f"splits/{s}"].shape[0]) for s in SPLITS}
        out["has_labels"] = "labels" in f
    return out
