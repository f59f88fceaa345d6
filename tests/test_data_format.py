"""The nfd-pointcloud HDF5 format, splits, and PointCloudDataset (lazy, K-point sampling, batch reads)."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch

from nfd.data.dataset import PointCloudDataset
from nfd.data.h5format import (
    FORMAT,
    DataFormatError,
    check_overwritable,
    features_to_uint8,
    make_splits,
    uint8_to_features,
    write_pointcloud,
)
from nfd.data.h5read import read_attrs
from nfd.errors import NfdError
from nfd.grid import grid_coords


def make_file(path, num=20, res=6, dim=2, k=3, seed=0, labels=True, **kw):
    rng = np.random.default_rng(seed)
    feats = rng.integers(0, 256, size=(num, res**dim, k), dtype=np.uint8)
    summary = write_pointcloud(
        path,
        iter(feats),
        grid_shape=(res,) * dim,
        feature_dim=k,
        dataset="toy",
        source="test",
        source_sha256="0" * 64,
        labels=np.arange(num) % 10 if labels else None,
        **kw,
    )
    return feats, summary


def test_layout_and_attributes(tmp_path):
    path = tmp_path / "toy.h5"
    feats, summary = make_file(path, split_seed=3)
    assert summary["num_examples"] == 20 and summary["splits"] == {"train": 18, "val": 1, "test": 1}
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["coords"][...], grid_coords(6, 2).numpy())
        assert f["coords"].dtype == np.float32 and f["features"].dtype == np.uint8
        assert f["features"].chunks == (1, 36, 3)
        np.testing.assert_array_equal(f["features"][...], feats)
        assert f["labels"].dtype == np.int64
        a = f.attrs
        # strings are fixed-length UTF-8 bytes: they live in the checksummed object header, not the global heap
        assert a["format"] == FORMAT.encode() and a["format_version"] == 1 and a["resolution"] == 6
        assert list(a["grid_shape"]) == [6, 6] and a["coord_dim"] == 2 and a["feature_dim"] == 3
        assert a["split_seed"] == 3 and a["dataset"] == b"toy" and a["nfd_version"]
        assert all(f[n].fletcher32 for n in ("coords", "features", "labels", "splits/train", "splits/val"))
        parts = [f[f"splits/{s}"][...] for s in ("train", "val", "test")]
    allidx = np.sort(np.concatenate(parts))
    np.testing.assert_array_equal(allidx, np.arange(20))  # disjoint and covering
    info = read_attrs(path)
    assert info["split_sizes"] == {"train": 18, "val": 1, "test": 1} and info["has_labels"]


def test_feature_mapping():
    v = np.arange(256, dtype=np.uint8)
    y = uint8_to_features(v)
    assert y[0] == -1.0 and y[255] == 1.0 and y.dtype == np.float32
    np.testing.assert_array_equal(features_to_uint8(y), v)
    np.testing.assert_allclose(y, v / 255 * 2 - 1, atol=1e-6)


def test_split_determinism():
    a, b = make_splits(1000, 7), make_splits(1000, 7)
    c = make_splits(1000, 8)
    for s in ("train", "val", "test"):
        np.testing.assert_array_equal(a[s], b[s])
    assert not np.array_equal(a["val"], c["val"])
    assert len(a["val"]) == 50 and len(a["test"]) == 50 and len(a["train"]) == 900
    fixed = make_splits(100, 0, val_frac=0.1, fixed_test=np.arange(80, 100))
    np.testing.assert_array_equal(fixed["test"], np.arange(80, 100))
    assert len(fixed["val"]) == 8 and fixed["val"].max() < 80
    with pytest.raises(NfdError):
        make_splits(10, 0, val_frac=0.6, test_frac=0.5)


def test_split_determinism_through_files(tmp_path):
    make_file(tmp_path / "a.h5", num=200, split_seed=1)
    make_file(tmp_path / "b.h5", num=200, split_seed=1)
    make_file(tmp_path / "c.h5", num=200, split_seed=2)
    ids = {n: PointCloudDataset(tmp_path / f"{n}.h5", "val").example_indices for n in "abc"}
    np.testing.assert_array_equal(ids["a"], ids["b"])
    assert not np.array_equal(ids["a"], ids["c"])


def test_dataset_items_and_read(tmp_path):
    path = tmp_path / "toy.h5"
    feats, _ = make_file(path)
    ds = PointCloudDataset(path, split="all")
    assert len(ds) == 20 and ds.coord_dim == 2 and ds.feature_dim == 3 and ds.grid_shape == (6, 6)
    assert ds._h5 is None  # lazy: nothing open until an example is read
    coords, y = ds[4]
    assert coords.shape == (36, 2) and y.shape == (36, 3) and y.dtype == torch.float32
    torch.testing.assert_close(y, torch.from_numpy(feats[4].astype(np.float32) / 255 * 2 - 1))
    # batch read: unsorted, repeated indices, shared point subset
    pts = np.array([35, 0, 7, 7])
    out = ds.read([5, 2, 5], pts)
    assert out.shape == (3, 4, 3)
    torch.testing.assert_close(out, torch.from_numpy(uint8_to_features(feats[[5, 2, 5]][:, pts])))
    torch.testing.assert_close(ds.read([1])[0], torch.from_numpy(uint8_to_features(feats[1])))
    assert ds.full_grid(3).shape == (6, 6, 3)
    # a split's items map to the file's examples
    val = PointCloudDataset(path, split="val")
    torch.testing.assert_close(val[0][1], torch.from_numpy(uint8_to_features(feats[val.example_indices[0]])))
    assert val.labels is not None and val.labels[0] == val.example_indices[0] % 10
    with pytest.raises(IndexError):
        ds[20]


def test_k_point_sampling_is_uniform_without_replacement(tmp_path):
    path = tmp_path / "toy.h5"
    make_file(path, num=2, res=8, dim=2, k=1)
    # features = the point's own index, so each sample tells which points were drawn
    with h5py.File(path, "r+") as f:
        f["features"][0, :, 0] = np.arange(64, dtype=np.uint8)
    ds = PointCloudDataset(path, split="all", num_points=16)
    torch.manual_seed(0)
    counts = np.zeros(64)
    coords_all = ds.coords
    for _ in range(1000):
        c, y = ds[0]
        idx = np.rint((y[:, 0].numpy() + 1) / 2 * 255).astype(int)
        assert len(set(idx.tolist())) == 16  # without replacement
        torch.testing.assert_close(c, coords_all[idx])  # coords match features
        counts[idx] += 1
    expected = 1000 * 16 / 64
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 120  # dof 63: mean 63, sd ~11; a biased sampler blows far past this
    assert counts.min() > 0.7 * expected and counts.max() < 1.3 * expected


def test_pickle_and_dataloader_workers(tmp_path):
    path = tmp_path / "toy.h5"
    feats, _ = make_file(path, num=8)
    ds = PointCloudDataset(path, split="all", num_points=5)
    ds[0]  # open a handle in this process
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._h5 is None
    assert clone[1][1].shape == (5, 3)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    batches = list(loader)
    assert len(batches) == 2 and batches[0][0].shape == (4, 5, 2) and batches[0][1].shape == (4, 5, 3)


def test_num_points_out_of_range(tmp_path):
    path = tmp_path / "toy.h5"
    make_file(path)
    with pytest.raises(DataFormatError, match="num_points"):
        PointCloudDataset(path, num_points=37)
    with pytest.raises(DataFormatError, match="unknown split"):
        PointCloudDataset(path, split="training")


def test_other_format_or_version_is_refused(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(DataFormatError, match=r"other\.h5: format is None, expected 'nfd-pointcloud'"):
        PointCloudDataset(other)
    v2 = tmp_path / "v2.h5"
    make_file(v2)
    with h5py.File(v2, "r+") as f:
        f.attrs["format_version"] = 2
    with pytest.raises(DataFormatError, match=r"v2\.h5: nfd-pointcloud format_version 2, this nfd reads version 1"):
        PointCloudDataset(v2)
    broken = tmp_path / "broken.h5"
    make_file(broken)
    with h5py.File(broken, "r+") as f:
        del f["splits/val"]
    with pytest.raises(DataFormatError, match=r"broken\.h5: missing splits/val"):
        PointCloudDataset(broken)
    text = tmp_path / "text.h5"
    text.write_text("hello")
    with pytest.raises(DataFormatError, match=r"text\.h5: not an HDF5 file"):
        PointCloudDataset(text)
    with pytest.raises(DataFormatError, match="no such processed data file"):
        PointCloudDataset(tmp_path / "missing.h5")


def test_overwrite_policy(tmp_path):
    foreign = tmp_path / "foreign.h5"
    foreign.write_text("precious")
    with pytest.raises(NfdError, match="refusing to overwrite"):
        check_overwritable(foreign)
    check_overwritable(foreign, force=True)
    ours = tmp_path / "ours.h5"
    make_file(ours)
    check_overwritable(ours)  # an nfd-pointcloud file (any version) is replaced atomically


def test_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "out.h5"

    def examples():
        yield np.zeros((36, 3), np.uint8)
        raise NfdError("bad input halfway")

    with pytest.raises(NfdError, match="halfway"):
        write_pointcloud(out, examples(), grid_shape=(6, 6), feature_dim=3, dataset="t", source="s", source_sha256="")
    assert list(tmp_path.iterdir()) == []
    # and an existing good file survives a failed rewrite untouched
    make_file(out)
    before = out.read_bytes()
    with pytest.raises(NfdError):
        write_pointcloud(out, examples(), grid_shape=(6, 6), feature_dim=3, dataset="t", source="s", source_sha256="")
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]
