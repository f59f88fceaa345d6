"""Reading ``nfd-pointcloud`` files (:mod:`nfd.data.h5format`) with their integrity checks.

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

import math
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from nfd.data.h5format import (
    COORD_TOLERANCE,
    FORMAT,
    FORMAT_VERSION,
    REQUIRED_ATTRS,
    SPLITS,
    DataFormatError,
    attr_text,
)
from nfd.io import os_error_reason


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
    fmt = attr_text(attrs.get("format"))
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
            "fletcher32" if checksummed(f) else "none (written before checksums; re-run `nfd data prepare` to add them)"
        )
        if verified is not None:
            out["verified_bytes"] = verified
    return out
