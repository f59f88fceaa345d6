"""ShapeNet voxels in the 3D-R2N2 layout -> ``nfd-pointcloud`` occupancy point clouds (all 32^3 points, k = 1).

Source: ``ShapeNetVox32.tgz`` (or .tar/.zip, read without extracting) or an extracted folder -- the folder holding
``ShapeNetVox32/``, ``ShapeNetVox32/`` itself, or the synset folder. Files: ``<synset>/<model_id>/model.binvox``
(default synset 03001627 = chairs). Each is decoded by :mod:`nfd.data.binvox` to ``[x, y, z]`` (y up), flattened in
C order (= ``grid_coords(32, 3)`` order), and stored as 0 (empty, read as -1) or 255 (occupied, read as +1).
Examples are sorted by model id; ``/model_ids`` lists them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from nfd.data.archive import archive_kind, iter_archive_files, sha256_file, sha256_files
from nfd.data.binvox import BinvoxError, read_binvox
from nfd.data.h5format import check_overwritable, write_pointcloud
from nfd.errors import NfdError

CHAIRS_SYNSET = "03001627"


class ShapeNetError(NfdError):
    """A ShapeNet source without models of the requested synset, or with a bad model file."""


def _model_id(name: str, synset: str) -> str | None:
    parts = [p for p in name.replace("\\", "/").split("/") if p and p != "."]
    if len(parts) >= 3 and parts[-1] == "model.binvox" and parts[-3] == synset:
        return parts[-2]
    return None


def iter_binvox_files(source: Path, synset: str) -> Iterator[tuple[str, str, bytes]]:
    """``(model_id, label for errors, bytes)`` of every ``<synset>/<id>/model.binvox`` in a folder or archive."""
    if source.is_dir():
        found = sorted(
            (mid, p) for p in source.rglob("model.binvox") if (mid := _model_id(p.as_posix(), synset)) is not None
        )
        if not found and source.name == synset:  # the synset folder itself: <id>/model.binvox
            found = sorted((p.parent.name, p) for p in source.glob("*/model.binvox"))
        for mid, p in found:
            yield mid, str(p), p.read_bytes()
    elif source.is_file():
        if archive_kind(source) is None:
            raise ShapeNetError(f"{source}: not a tar/zip archive or folder of ShapeNet binvox files")
        for name, data in iter_archive_files(source, lambda n: _model_id(n, synset) is not None):
            mid = _model_id(name, synset)
            assert mid is not None
            yield mid, f"{source}:{name}", data
    else:
        raise ShapeNetError(f"{source}: no such file or folder")


def source_digest(source: Path) -> str:
    if source.is_file():
        return sha256_file(source)
    return sha256_files(source, [p for p in source.rglob("*.binvox") if p.is_file()])


def voxels_to_features(voxels: np.ndarray) -> np.ndarray:
    """bool ``[R, R, R]`` (x, y, z) -> stored uint8 ``[R**3, 1]`` (0 empty, 255 occupied), grid C order."""
    return (np.asarray(voxels, dtype=bool).reshape(-1, 1).astype(np.uint8) * np.uint8(255)).astype(np.uint8)


def prepare_shapenet(
    source: str | Path,
    out: str | Path,
    *,
    synset: str = CHAIRS_SYNSET,
    resolution: int = 32,
    split_seed: int = 0,
    val_frac: float = 0.05,
    test_frac: float = 0.05,
    skip_bad: bool = False,
    force: bool = False,
    progress: bool = False,
    dataset: str | None = None,
) -> dict[str, Any]:
    """Write every ``<synset>/<id>/model.binvox`` of ``source`` as a ``resolution**3`` occupancy point cloud."""
    from tqdm import tqdm

    source = Path(source)
    check_overwritable(out, force)
    packed: dict[str, np.ndarray] = {}
    skipped: list[str] = []
    for mid, label, data in tqdm(iter_binvox_files(source, synset), disable=not progress, desc="binvox", unit="model"):
        try:
            vox = read_binvox(data, name=label, expected_dim=resolution).voxels
        except BinvoxError as e:
            if not skip_bad:
                raise
            skipped.append(str(e))
            continue
        if mid in packed:
            raise ShapeNetError(f"{label}: duplicate model id {mid!r}")
        packed[mid] = np.packbits(vox.reshape(-1))
    if not packed:
        raise ShapeNetError(
            f"{source}: no {synset}/<model_id>/model.binvox files found"
            + (f" ({len(skipped)} skipped as bad)" if skipped else "")
        )
    ids = sorted(packed)
    n = resolution**3

    def examples() -> Iterator[np.ndarray]:
        for mid in ids:
            vox = np.unpackbits(packed[mid], count=n).astype(bool)
            yield voxels_to_features(vox)

    summary = write_pointcloud(
        out,
        examples(),
        grid_shape=(resolution,) * 3,
        feature_dim=1,
        dataset=dataset or (f"shapenet_{synset}" if synset != CHAIRS_SYNSET else "shapenet_chairs"),
        source=str(source),
        source_sha256=source_digest(source),
        split_seed=split_seed,
        val_frac=val_frac,
        test_frac=test_frac,
        num_examples=len(ids),
        extra_attrs={
            "feature_kind": "occupancy",
            "synset": synset,
            "axes": "x, y (up), z",
            "skipped": lambda: json.dumps(skipped[:200]),
            "num_skipped": lambda: len(skipped),
        },
        extra_datasets={"model_ids": ids},
    )
    summary["skipped"] = skipped
    return summary
