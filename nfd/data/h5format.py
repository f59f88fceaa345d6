"""The processed-data format ``nfd-pointcloud`` version 1 (docs/contracts.md): its layout, codecs, splits and writer.

Layout of one file::

    /coords            float32 [N, d]     grid_coords(R, d), stored once, shared by every example
    /features          uint8   [E, N, k]  chunks of one example, gzip; read as v / 255 * 2 - 1 in [-1, 1]
    /labels            int64   [E]        optional (MNIST)
    /splits/train|val|test  int64         sorted example indices, fixed by split_seed
    attributes on /    format, format_version, nfd_version, dataset, source, source_sha256, resolution,
                       grid_shape, coord_dim, feature_dim, split_seed (+ num_examples, feature_kind, ...)

Every file is written through :func:`nfd.io.atomic_path`: a failed prepare never leaves a partial file, and a
failed write (disk full, read-only folder) is one :class:`~nfd.errors.NfdError` line naming the output.

Reading it, with its integrity checks, is :mod:`nfd.data.h5read`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from nfd import __version__
from nfd.errors import NfdError
from nfd.io import atomic_path, os_error_reason

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


LIBVER = ("v110", "v110")
"""HDF5 object formats of written files: checksummed metadata, still readable by HDF5 1.10 and later."""
COORD_TOLERANCE = 1e-6
"""Largest |stored - derived| coordinate accepted: float32 grids from other linspace implementations differ by
an ulp or two (~1e-7), a damaged value by far more (and a checksummed file catches even a flipped low bit)."""


class DataFormatError(NfdError):
    """A processed file that is missing, not HDF5, of another format or version, or inconsistent."""


def _to_stored(value: Any) -> Any:
    """Strings as fixed-length UTF-8 bytes (kept in checksummed storage); everything else unchanged."""
    if isinstance(value, str):
        return np.bytes_(value.encode("utf-8"))
    return value


def _create(f: h5py.Group, name: str, data: Any = None, **kwargs: Any) -> h5py.Dataset:
    """``create_dataset`` with the options every dataset of the format has: chunked, Fletcher32, no times."""
    if isinstance(data, (list, tuple)) and data and isinstance(data[0], str):
        data = np.asarray([v.encode("utf-8") for v in data])
    kwargs.setdefault("chunks", True)
    return f.create_dataset(name, data=data, fletcher32=True, track_times=False, **kwargs)


@contextlib.contextmanager
def _h5_for_writing(tmp: Path) -> Iterator[h5py.File]:
    """A new HDF5 file that is really closed even when writing or closing it fails.

    When a write fails (disk full), HDF5 keeps the file open with its dirty metadata and flushes it again at exit,
    which crashes the interpreter (segfault, measured with HDF5 2.0 on a full tmpfs). So on failure the file is
    truncated through HDF5's own descriptor -- freeing the space the failed write needed -- and closed for real;
    the caller (atomic_path) then deletes it. No raw-data chunk cache (``rdcc_nbytes=0``): every example is one
    whole chunk written once, and a cache full of dirty chunks would not fit back on the freed disk at close."""
    f = h5py.File(tmp, "w", track_order=True, libver=LIBVER, rdcc_nbytes=0)
    try:
        yield f
    except BaseException:
        _abandon(f)
        raise
    try:
        f.close()
    except BaseException:
        _abandon(f)
        raise


def _abandon(f: h5py.File) -> None:
    with contextlib.suppress(Exception):
        os.ftruncate(f.id.get_vfd_handle(), 0)
    with contextlib.suppress(Exception):
        f.close()


class _SourceError(Exception):
    """Carries an ``OSError`` raised while *producing* examples, so it is not reported as a write failure."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


def _pull(examples: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    it = iter(examples)
    while True:
        try:
            ex = next(it)
        except StopIteration:
            return
        except OSError as e:
            raise _SourceError(e) from e
        yield ex


def features_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map features in [-1, 1] to the stored uint8 (-1 -> 0, +1 -> 255), rounding to nearest."""
    v = (np.clip(np.asarray(values, dtype=np.float32), -1.0, 1.0) + 1.0) * 127.5
    return np.rint(v).astype(np.uint8)


def uint8_to_features(stored: np.ndarray) -> np.ndarray:
    """The contract's read mapping ``y = v / 255 * 2 - 1`` (float32 in [-1, 1])."""
    return np.asarray(stored, dtype=np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)


def make_splits(
    num_examples: int, seed: int, val_frac: float = 0.05, test_frac: float = 0.05, fixed_test: np.ndarray | None = None
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
    try:
        ok = h5py.is_hdf5(out)
        if ok:
            with h5py.File(out, "r") as f:
                ok = attr_text(f.attrs.get("format")) == FORMAT
    except OSError:
        ok = False
    if not ok:
        raise NfdError(f"{out}: exists and is not an {FORMAT} HDF5 file; refusing to overwrite it (pass --force)")


def _one_line_write_errors(write: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Wrap a writer so a failing input keeps its own error and a failing write (disk full, read-only folder, ...)
    is one line naming the output; the partial file is already gone (atomic_path)."""

    @functools.wraps(write)
    def wrapper(out: str | Path, examples: Iterable[np.ndarray], **options: Any) -> dict[str, Any]:
        try:
            return write(out, _pull(examples), **options)
        except _SourceError as e:  # reading the inputs failed: not a write failure, keep the producer's error
            raise e.error from None
        except OSError as e:
            raise NfdError(f"cannot write {out}: {os_error_reason(e)}") from None

    return wrapper


@_one_line_write_errors
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
    from nfd.grid import grid_coords

    grid_shape = tuple(int(s) for s in grid_shape)
    if len(set(grid_shape)) != 1:
        raise ValueError(f"grids are cubic (R**d), got grid_shape {grid_shape}")
    resolution, dim = grid_shape[0], len(grid_shape)
    n_points = math.prod(grid_shape)
    coords = grid_coords(resolution, dim).numpy().astype(np.float32)
    chunk = (1, n_points, feature_dim)
    with atomic_path(out) as tmp:
        with _h5_for_writing(tmp) as f:
            _create(f, "coords", coords, chunks=(min(n_points, 1 << 16), dim))
            feats = _create(
                f,
                "features",
                shape=(num_examples or 0, n_points, feature_dim),
                maxshape=(None, n_points, feature_dim),
                dtype=np.uint8,
                chunks=chunk,
                compression=compression,
                compression_opts=4 if compression == "gzip" else None,
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
                _create(f, "labels", labels)
            for name, value in (extra_datasets or {}).items():
                _create(f, name, value() if callable(value) else value)
            splits = make_splits(count, split_seed, val_frac, test_frac, fixed_test)
            grp = f.create_group("splits")
            for name in SPLITS:
                _create(grp, name, splits[name].astype(np.int64))
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
                f.attrs[key] = _to_stored(value)
        size = tmp.stat().st_size
    return {
        "path": str(out),
        "num_examples": count,
        "splits": {k: int(len(v)) for k, v in splits.items()},
        "bytes": size,
    }


def attr_text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
