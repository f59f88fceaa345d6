"""Meshes (a ShapeNetCore-style folder of .obj/.off/.ply/.stl) -> solid ``R**3`` occupancy voxels -> point clouds.

Voxelisation (``voxelize_mesh``), all in voxel units where cell ``i`` spans ``[i, i + 1)``:
  1. fit to the cube: translate the mesh's bounding-box centre to ``(R/2, R/2, R/2)`` and scale uniformly so its
     longest side spans the whole grid (``R``, minus a hair so the far faces stay in the last cell);
  2. surface: subdivide faces (trimesh) until every edge is shorter than half a voxel, mark every cell holding
     a vertex (``floor``);
  3. solid fill: fill every empty region not connected (6-neighbourhood) to the grid's border
     (``scipy.ndimage.binary_fill_holes``).
Mesh coordinates map to grid axes unchanged (x -> 0, y -> 1, z -> 2): meshes are taken as y-up like ShapeNet's,
``up_axis="z"`` rotates z-up meshes first ((x, y, z) -> (x, z, -y)).

Bad meshes do not stop the run: unreadable or empty ones are skipped, non-watertight ones are voxelised anyway
(their interior is filled only where the voxel shell is closed); both are reported (``skipped`` and
``not_watertight`` attributes and the summary). Only a folder with no usable mesh at all is an error.
"""

from __future__ import annotations

import json
import multiprocessing as mp
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from nfd.data.archive import sha256_files
from nfd.data.h5format import check_overwritable, write_pointcloud
from nfd.data.shapenet import voxels_to_features
from nfd.errors import NfdError

MESH_SUFFIXES = (".obj", ".off", ".ply", ".stl")


class MeshError(NfdError):
    """A mesh source without any usable mesh."""


def fit_vertices(vertices: np.ndarray, resolution: int, up_axis: str = "y") -> np.ndarray:
    """Vertices in voxel units: bounding box centred in ``[0, R]^3``, longest side = ``R`` (minus 1e-4 voxel)."""
    v = np.asarray(vertices, dtype=np.float64)
    if up_axis == "z":
        v = np.stack([v[:, 0], v[:, 2], -v[:, 1]], axis=1)
    elif up_axis != "y":
        raise ValueError(f"up_axis must be 'y' or 'z', got {up_axis!r}")
    lo, hi = v.min(axis=0), v.max(axis=0)
    extent = float((hi - lo).max())
    if not np.isfinite(extent) or extent <= 0:
        raise ValueError("mesh has zero extent")
    scale = (resolution - 1e-4) / extent
    return (v - (lo + hi) / 2.0) * scale + resolution / 2.0


def voxelize_mesh(mesh, resolution: int = 32, up_axis: str = "y") -> np.ndarray:
    """Solid bool voxels ``[R, R, R]`` indexed ``[x, y, z]`` of a trimesh mesh (see module doc)."""
    import scipy.ndimage as ndi
    import trimesh.remesh

    verts = fit_vertices(mesh.vertices, resolution, up_axis)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    verts, faces = trimesh.remesh.subdivide_to_size(verts, faces, max_edge=0.5, max_iter=30)
    idx = np.clip(np.floor(verts).astype(np.int64), 0, resolution - 1)
    vox = np.zeros((resolution,) * 3, dtype=bool)
    vox[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    return ndi.binary_fill_holes(vox)


def load_mesh(path: str | Path):
    """A single trimesh.Trimesh from a mesh file (scenes are concatenated); raises ValueError with the reason."""
    import trimesh

    try:
        mesh = trimesh.load(str(path), force="mesh", skip_materials=True)
    except Exception as e:  # trimesh raises many types for malformed files
        raise ValueError(f"cannot load ({type(e).__name__}: {e})") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0 or len(mesh.vertices) == 0:
        raise ValueError("empty mesh (no faces)")
    return mesh


def _voxelize_file(item: tuple[str, str, int, str]) -> tuple[str, np.ndarray | None, str | None, bool]:
    rel, path, resolution, up_axis = item
    try:
        mesh = load_mesh(path)
        vox = voxelize_mesh(mesh, resolution, up_axis)
    except ValueError as e:
        return rel, None, str(e), False
    if not vox.any():
        return rel, None, "voxelised to nothing", False
    return rel, np.packbits(vox.reshape(-1)), None, bool(mesh.is_watertight)


def find_meshes(source: Path) -> list[Path]:
    if not source.is_dir():
        raise MeshError(f"{source}: not a folder of meshes ({', '.join(MESH_SUFFIXES)})")
    return sorted(
        p
        for p in source.rglob("*")
        if p.is_file()
        and p.suffix.lower() in MESH_SUFFIXES
        and not any(q.startswith(".") for q in p.relative_to(source).parts)
    )


def prepare_meshes(
    source: str | Path,
    out: str | Path,
    *,
    resolution: int = 32,
    up_axis: str = "y",
    split_seed: int = 0,
    val_frac: float = 0.05,
    test_frac: float = 0.05,
    workers: int = 1,
    force: bool = False,
    progress: bool = False,
    dataset: str = "meshes",
) -> dict[str, Any]:
    """Voxelise every mesh under ``source`` to ``resolution**3`` and write the occupancy point clouds."""
    from tqdm import tqdm

    source = Path(source)
    check_overwritable(out, force)
    files = find_meshes(source)
    if not files:
        raise MeshError(f"{source}: no mesh files ({', '.join(MESH_SUFFIXES)}) found")
    items = [(p.relative_to(source).as_posix(), str(p), resolution, up_axis) for p in files]
    packed: dict[str, np.ndarray] = {}
    skipped: list[str] = []
    open_meshes: list[str] = []
    pool = mp.get_context("spawn").Pool(workers) if workers > 1 and len(items) > 1 else None
    try:
        it = pool.imap(_voxelize_file, items, chunksize=4) if pool else map(_voxelize_file, items)
        for rel, bits, err, watertight in tqdm(it, total=len(items), disable=not progress, desc="meshes", unit="mesh"):
            if bits is None:
                skipped.append(f"{rel}: {err}")
                continue
            packed[rel] = bits
            if not watertight:
                open_meshes.append(rel)
    finally:
        if pool:
            pool.terminate()
    if not packed:
        raise MeshError(f"{source}: no mesh could be voxelised ({len(skipped)} skipped, e.g. {skipped[0]})")
    ids = sorted(packed)
    n = resolution**3

    def examples() -> Iterator[np.ndarray]:
        for rel in ids:
            yield voxels_to_features(np.unpackbits(packed[rel], count=n).astype(bool))

    summary = write_pointcloud(
        out,
        examples(),
        grid_shape=(resolution,) * 3,
        feature_dim=1,
        dataset=dataset,
        source=str(source),
        source_sha256=sha256_files(source, files),
        split_seed=split_seed,
        val_frac=val_frac,
        test_frac=test_frac,
        num_examples=len(ids),
        extra_attrs={
            "feature_kind": "occupancy",
            "axes": "x, y (up), z",
            "up_axis_of_source": up_axis,
            "voxelisation": "fit bbox to cube, surface (subdivide < 0.5 voxel) + binary_fill_holes",
            "skipped": lambda: json.dumps(skipped[:200]),
            "num_skipped": lambda: len(skipped),
            "num_not_watertight": len(open_meshes),
        },
        extra_datasets={"model_ids": ids},
    )
    summary["skipped"] = skipped
    summary["not_watertight"] = open_meshes
    return summary
