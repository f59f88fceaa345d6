"""Shared fixtures: tiny processed data sets written straight from the HDF5 contract (docs/contracts.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import h5py
import numpy as np
import pytest

from nfd.grid import grid_coords


def write_h5(
    path: Path, features_u8: np.ndarray, grid_shape: tuple[int, ...], labels: np.ndarray | None = None, seed: int = 0
) -> Path:
    """Write a processed data set following docs/contracts.md (independently of nfd.data)."""
    e = features_u8.shape[0]
    d = len(grid_shape)
    rng = np.random.default_rng(seed)
    order = rng.permutation(e)
    n_test = max(1, e // 10)
    with h5py.File(path, "w") as f:
        f.create_dataset("coords", data=grid_coords(grid_shape[0], d).numpy())
        f.create_dataset(
            "features",
            data=features_u8.reshape(e, -1, features_u8.shape[-1]),
            chunks=(1, int(np.prod(grid_shape)), features_u8.shape[-1]),
        )
        if labels is not None:
            f.create_dataset("labels", data=labels.astype(np.int64))
        f.create_dataset("splits/train", data=np.sort(order[2 * n_test :]))
        f.create_dataset("splits/val", data=np.sort(order[:n_test]))
        f.create_dataset("splits/test", data=np.sort(order[n_test : 2 * n_test]))
        f.attrs.update(
            {
                "format": "nfd-pointcloud",
                "format_version": 1,
                "nfd_version": "test",
                "dataset": "test",
                "source": "conftest",
                "source_sha256": "",
                "resolution": grid_shape[0],
                "grid_shape": list(grid_shape),
                "coord_dim": d,
                "feature_dim": features_u8.shape[-1],
                "split_seed": seed,
            }
        )
    return path


def write_contract_h5(path: Path, data: np.ndarray, labels: np.ndarray | None, splits: dict[str, np.ndarray]) -> Path:
    """A processed data file exactly as docs/contracts.md describes it (data/volumes ``[E, *grid, k]`` in [-1, 1])."""
    grid = data.shape[1:-1]
    e, k = data.shape[0], data.shape[-1]
    n = int(np.prod(grid))
    u8 = np.clip(np.rint((data + 1.0) / 2.0 * 255.0), 0, 255).astype(np.uint8).reshape(e, n, k)
    with h5py.File(path, "w") as f:
        f.create_dataset("coords", data=grid_coords(grid[0], len(grid)).numpy())
        f.create_dataset("features", data=u8, chunks=(1, n, k))
        if labels is not None:
            f.create_dataset("labels", data=np.asarray(labels, dtype=np.int64))
        for name, idx in splits.items():
            f.create_dataset(f"splits/{name}", data=np.asarray(idx, dtype=np.int64))
        f.attrs.update(
            {
                "format": "nfd-pointcloud",
                "format_version": 1,
                "nfd_version": "test",
                "dataset": "synthetic",
                "source": "tests",
                "source_sha256": "",
                "resolution": grid[0],
                "grid_shape": list(grid),
                "coord_dim": len(grid),
                "feature_dim": k,
                "split_seed": 0,
            }
        )
    return path


@pytest.fixture
def images_h5(tmp_path: Path) -> Path:
    """40 8x8 grey images: bright discs of random centre and radius on black (an easy set)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:8, 0:8]
    imgs = []
    for _ in range(40):
        cy, cx, r = rng.uniform(2, 6), rng.uniform(2, 6), rng.uniform(1.5, 3)
        imgs.append(((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.uint8) * 255)
    feats = np.stack(imgs)[..., None]
    return write_h5(tmp_path / "images.h5", feats, (8, 8), labels=np.arange(40) % 10)


@pytest.fixture
def voxels_h5(tmp_path: Path) -> Path:
    """24 8^3 occupancy grids: boxes of random extent."""
    rng = np.random.default_rng(1)
    vols = []
    for _ in range(24):
        v = np.zeros((8, 8, 8), np.uint8)
        lo = rng.integers(0, 3, 3)
        hi = lo + rng.integers(3, 6, 3)
        v[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 255
        vols.append(v)
    return write_h5(tmp_path / "voxels.h5", np.stack(vols)[..., None], (8, 8, 8))


@pytest.fixture
def bench_script():
    """Load a script of ``benchmarks/`` as a module (they are scripts, not part of the package)."""

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load
