"""The processed-data format ``nfd-pointcloud`` version 1 (docs/contracts.md): writer, splits and format checks.

Layout of one file::

    /coords            float32 [N, d]     grid_coords(R, d), stored once, shared by every example
    /features          uint8   [E, N, k]  chunks of one example, gzip; read as v / 255 * 2 - 1 in [-1, 1]
    /labels            int64   [E]        optional (MNIST)
    /splits/train|val|test  int64         sorted example indices, fixed by split_seed
    attributes on /    format, format_version, nfd_version, dataset, source, source_sha256, resolution,
                       grid_shape, coord_dim, feature_dim, split_seed (+ num_examples, feature_kind, ...)

Every file is written through :func:`nfd.io.atomic_path`: a failed prepare never leaves a partial file, and a
failed write (disk full, read-only folder) is one :class:`~nfd.errors.NfdError` line naming the output.

Integrity. A processed file feeds training and evaluation for days, so damage must surface, not be averaged in:

* every dataset is chunked with HDF5's Fletcher32 checksum filter, and the file uses the HDF5 1.10 object formats
  (``libver="v110"``: checksummed object headers, chunk indices and attribute storage; readable by HDF5 >= 1.10);
* string attributes and ``/model_ids`` are fixed-length UTF-8 bytes, stored inside the checksummed headers and
  chunks (variable-length strings would live in HDF5's unchecksummed global heap);
* :func:`open_checked` re-derives ``/coords`` from ``grid_shape`` (:func:`expected_axis`, the writer's convention)
  and compares, checks ``prod(grid_shape) == N``, and returns a file whose reads turn a checksum or gzip failure
  into one :class:`DataFormatError` line naming the file and the dataset.

Files written before checksums existed (no Fletcher32) still load: their ``/coords``, shapes and splits are
checked like any other, but damage inside a chunk of ``/features`` can only be caught where gzip notices it.
``nfd data info`` says which kind a file is (``"checksums"``); re-running ``nfd data prepare`` upgrades it.
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


def damaged(path: str | Path, name: str, error: BaseException) -> DataFormatError:
    """The one-line error for a dataset whose stored bytes cannot be read back intact."""
    text = str(error)
    low = text.lower()
    if "filter" in low or "checksum" in low or "inflate" in low or "decompress" in low:
        why = "checksum/filter failure while reading"
    else:
        why = f"read failed: {os_error_reason(error)}"
    return DataFormatError(f"{path}: dataset /{name.lstrip('/')} is damaged ({why}); re-run `nfd data prepare`")


class CheckedDataset(h5py.Dataset):
    """An h5py dataset whose reads raise :class:`DataFormatError` (file and dataset named) instead of HDF5's bare
    ``OSError: ... filter returned failure during read``, so every reader of a processed file fails in one line."""

    nfd_path: Path

    def __getitem__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__getitem__(*args, **kwargs)
        except OSError as e:
            raise damaged(self.nfd_path, self.name, e) from None

    def read_direct(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().read_direct(*args, **kwargs)
        except OSError as e:
            raise damaged(self.nfd_path, self.name, e) from None

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        try:
            return super().__array__(*args, **kwargs)
        except OSError as e:
            raise damaged(self.nfd_path, self.name, e) from None


class _CheckedGroupMixin:
    """``group[name]`` returns checked datasets and groups, and a damaged object header becomes a one-liner."""

    nfd_path: Path

    def __getitem__(self, name: Any) -> Any:
        try:
            obj = super().__getitem__(name)  # type: ignore[misc]
        except KeyError as e:
            if "doesn't exist" in str(e) or "does not exist" in str(e):
                raise  # a missing name, not damage
            raise damaged(self.nfd_path, str(name), e) from None
        except OSError as e:
            raise damaged(self.nfd_path, str(name), e) from None
        if isinstance(obj, h5py.Dataset):
            out: Any = CheckedDataset(obj.id)
        elif isinstance(obj, h5py.Group):
            out = CheckedGroup(obj.id)
        else:
            return obj
        out.nfd_path = self.nfd_path
        return out


class CheckedGroup(_CheckedGroupMixin, h5py.Group):
    """A group of a :class:`CheckedFile`."""


class CheckedFile(_CheckedGroupMixin, h5py.File):
    """A read-only processed file whose datasets are :class:`CheckedDataset` (see :func:`open_checked`)."""

    nfd_datasets: dict[str, bool]
    """Every dataset's name -> whether it has a Fletcher32 checksum (filled by :func:`open_checked`)."""

    def __init__(self, path: str | Path) -> None:
        self.nfd_path = Path(path)
        try:
            super().__init__(self.nfd_path, "r")
        except OSError as e:
            raise DataFormatError(
                f"{self.nfd_path}: cannot open as HDF5 ({os_error_reason(e)}); re-run `nfd data prepare`"
            ) from None


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
    try:
        ok = h5py.is_hdf5(out)
        if ok:
            with h5py.File(out, "r") as f:
                ok = _text(f.attrs.get("format")) == FORMAT
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


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def expected_axis(resolution: int) -> np.ndarray:
    """The grid's per-axis coordinates as the writer makes them (:func:`nfd.grid.grid_coords`: ``linspace(-1, 1,
    R)``, or 0 for ``R = 1``), recomputed in numpy so checking a file does not need torch."""
    if resolution == 1:
        return np.zeros(1)
    return np.linspace(-1.0, 1.0, resolution)


def check_coords(path: str | Path, coords: np.ndarray, grid_shape: tuple[int, ...]) -> None:
    """Raise unless ``coords [N, d]`` is the C-order grid ``grid_shape`` over [-1, 1]^d (within COORD_TOLERANCE).

    Compared axis by axis through broadcasting, so no second ``[N, d]`` grid is built."""
    d = len(grid_shape)
    grid = coords.reshape(*grid_shape, d)
    for j, r in enumerate(grid_shape):
        shape = [1] * d
        shape[j] = r
        err = np.abs(grid[..., j].astype(np.float64) - expected_axis(r).reshape(shape))
        bad = ~(err <= COORD_TOLERANCE)  # nan counts as bad
        if bad.any():
            flat = int(np.flatnonzero(bad.reshape(-1))[0])
            raise DataFormatError(
                f"{path}: /coords point {flat} ({', '.join(f'{c:.6g}' for c in coords[flat])}) is not the "
                f"{'x'.join(map(str, grid_shape))} grid over [-1, 1]^{d} that grid_shape describes; the file is "
                "damaged, re-run `nfd data prepare`"
            )


def open_checked(path: str | Path) -> CheckedFile:
    """Open a processed file read-only after checking it is ``nfd-pointcloud`` version 1 and self-consistent:
    attributes, shapes, ``prod(grid_shape) == N``, and ``/coords`` equal to the grid ``grid_shape`` describes.

    Reads from the returned file are verified (checksums where the file has them, gzip always): a damaged chunk
    is a :class:`DataFormatError` naming the file and the dataset, never a bare ``OSError`` or silent garbage.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such processed data file (run `nfd data prepare ...`)")
    try:
        is_h5 = h5py.is_hdf5(path)
    except OSError as e:
        raise DataFormatError(f"{path}: cannot read ({os_error_reason(e)})") from None
    if not is_h5:
        raise DataFormatError(f"{path}: not an HDF5 file")
    f = CheckedFile(path)
    try:
        try:
            # touch every attribute and every object header now, so damaged metadata surfaces here, in one line
            attrs = dict(f.attrs.items())
            f.nfd_datasets = _datasets(f)
            _check_layout(path, f, attrs)
        except (OSError, KeyError, RuntimeError, ValueError, TypeError) as e:
            raise DataFormatError(
                f"{path}: metadata is damaged or unreadable ({os_error_reason(e)}); re-run `nfd data prepare`"
            ) from None
    except BaseException:
        f.close()
        raise
    return f


def _check_layout(path: Path, f: h5py.File, attrs: dict[str, Any]) -> None:
    """Format, version, attributes, shapes and the grid of an open file (see :func:`open_checked`)."""
    fmt = _text(attrs.get("format"))
    if fmt != FORMAT:
        raise DataFormatError(f"{path}: format is {fmt!r}, expected {FORMAT!r} (re-run `nfd data prepare`)")
    version = attrs.get("format_version")
    if version is None or int(version) != FORMAT_VERSION:
        raise DataFormatError(
            f"{path}: {FORMAT} format_version {version}, this nfd reads version {FORMAT_VERSION} "
            "(re-run `nfd data prepare`)"
        )
    missing = [a for a in REQUIRED_ATTRS if a not in attrs]
    missing += [d for d in ("coords", "features", *(f"splits/{s}" for s in SPLITS)) if d not in f]
    if missing:
        raise DataFormatError(f"{path}: missing {', '.join(missing)}")
    coords, feats = f["coords"], f["features"]
    d, k = int(attrs["coord_dim"]), int(attrs["feature_dim"])
    if coords.ndim != 2 or coords.shape[1] != d or feats.ndim != 3 or feats.shape[1:] != (coords.shape[0], k):
        raise DataFormatError(
            f"{path}: inconsistent shapes: coords {coords.shape}, features {feats.shape}, d={d}, k={k}"
        )
    if feats.dtype != np.uint8:
        raise DataFormatError(f"{path}: /features dtype {feats.dtype}, expected uint8")
    grid_shape = tuple(int(s) for s in np.atleast_1d(attrs["grid_shape"]))
    resolution = int(attrs["resolution"])
    if len(grid_shape) != d or any(s != resolution for s in grid_shape) or math.prod(grid_shape) != coords.shape[0]:
        raise DataFormatError(
            f"{path}: grid_shape {list(grid_shape)} (resolution {resolution}, coord_dim {d}) does not describe "
            f"the {coords.shape[0]} points of /coords; the file is damaged, re-run `nfd data prepare`"
        )
    if coords.dtype != np.float32:
        raise DataFormatError(f"{path}: /coords dtype {coords.dtype}, expected float32")
    check_coords(path, coords[...], grid_shape)


def _datasets(f: h5py.File) -> dict[str, bool]:
    """Name -> Fletcher32 of every dataset, opening every object header (so damaged metadata raises here)."""
    found: dict[str, bool] = {}

    def visit(name: str, obj: Any) -> None:  # must return None: any other value stops h5py's visit
        if isinstance(obj, h5py.Dataset):
            _ = obj.shape, obj.dtype, obj.chunks
            found[name] = bool(obj.fletcher32)

    f.visititems(visit)
    return found


def checksummed(f: CheckedFile) -> bool:
    """Whether every dataset of a file from :func:`open_checked` has a Fletcher32 checksum (this writer's files)."""
    return bool(f.nfd_datasets) and all(f.nfd_datasets.values())


def verify_all(path: str | Path, block_bytes: int = 64 << 20) -> int:
    """Read every dataset of a processed file in bounded blocks so each chunk's checksum (or gzip) is verified;
    returns the number of bytes read. Raises :class:`DataFormatError` naming the first damaged dataset."""
    total = 0
    with open_checked(path) as f:
        for name in f.nfd_datasets:
            dset = f[name]
            if dset.shape is None or dset.size == 0:
                continue
            row = max(1, dset.dtype.itemsize * math.prod(dset.shape[1:]))
            step = max(1, block_bytes // row)
            for a in range(0, dset.shape[0], step):
                total += dset[a : a + step].nbytes
    return total


def read_attrs(path: str | Path, verify: bool = False) -> dict[str, Any]:
    """All root attributes of a checked processed file, as plain Python values, plus dataset shapes and whether
    the file is checksummed; ``verify`` also reads every stored byte (see :func:`verify_all`)."""
    verified = verify_all(path) if verify else None
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
        out["checksums"] = (
            "fletcher32" if checksummed(f)
            else "none (written before checksums; re-run `nfd data prepare` to add them)"
        )
        if verified is not None:
            out["verified_bytes"] = verified
    return out
