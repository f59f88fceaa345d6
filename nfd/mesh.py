"""Voxel grids to triangle meshes (marching cubes), and the ``nfd mesh`` verb.

Paper, Sec. 4.2 / Fig. 9-10: a sampled function is evaluated on a 128^3 grid, thresholded at occupancy 0.5 and turned
into a mesh with marching cubes. Our sampled features are occupancies in [-1, 1] (docs/contracts.md), so occupancy 0.5
is the level 0.0; "inside" is where the value is *above* the level.

Conventions (docs/contracts.md): voxel axis 0 = x, axis 1 = y (up), axis 2 = z; voxel index ``i`` of a grid of
resolution ``R`` sits at ``-1 + 2 i / (R - 1)``, exactly like ``nfd.grid.grid_coords``. Mesh vertices use the same
coordinates and the same axis order, so a chair that stands along +y in the grid stands along +y as a mesh.
"""

from __future__ import annotations

import argparse
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import trimesh
from skimage.measure import marching_cubes

from nfd.errors import NfdError
from nfd.io import atomic_path

MESH_FORMATS = ("ply", "obj")
SUMMARY_NAME = "summary.json"


class EmptySurfaceError(NfdError):
    """The volume has no surface at the requested level (nothing is inside): no mesh can be extracted.

    Metrics count such a sample as a failure rather than crashing on it.
    """


def _as_volume(volume: Any) -> np.ndarray:
    arr = np.asarray(volume)
    if arr.ndim == 4 and arr.shape[-1] == 1:  # [R, R, R, 1]: one feature channel, as in the samples file
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise NfdError(f"expected a 3D volume [R, R, R], got shape {tuple(arr.shape)}")
    if min(arr.shape) < 2:
        raise NfdError(f"volume needs at least 2 voxels along every axis, got shape {tuple(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise NfdError(f"volume must be real-valued, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise NfdError("volume contains NaN or infinite values")
    return arr


def extract_mesh(volume: np.ndarray, level: float = 0.0) -> trimesh.Trimesh:
    """Marching cubes on an occupancy-like volume ``[R, R, R]`` (inside where ``volume > level``).

    Returns a ``trimesh.Trimesh`` with vertices in [-1, 1]^3 (voxel index ``i`` -> ``-1 + 2 i / (R - 1)``), axes kept
    as (x, y up, z), faces wound so that normals point outward (``mesh.volume > 0`` for a closed shape).

    The volume is padded with one layer of "outside" voxels, so a shape that touches the grid boundary is closed by a
    cap instead of being left open; such caps lie within half a voxel outside [-1, 1]. Raises ``EmptySurfaceError``
    when no voxel is above ``level`` (no surface), ``NfdError`` for a volume that is not 3D or not finite.
    """
    vol = _as_volume(volume)
    level = float(level)
    if not np.isfinite(level):
        raise NfdError(f"level must be finite, got {level}")
    if not np.any(vol > level):
        raise EmptySurfaceError(f"no surface at level {level:g}: no voxel is above it (max {float(vol.max()):.4g})")
    # 'outside' border: as far below the level as the largest value is above it (at least 1), so a boundary cap
    # crosses at most half a voxel outside the grid. For occupancies in [-1, 1] at level 0 this is simply -1.
    outside = level - max(float(vol.max()) - level, 1.0)
    padded = np.pad(vol, 1, mode="constant", constant_values=outside)
    verts, faces, _normals, _values = marching_cubes(padded, level=level, gradient_direction="ascent")
    if len(faces) == 0:  # pragma: no cover - guarded above; kept for odd skimage versions
        raise EmptySurfaceError(f"no surface at level {level:g}")
    shape = np.asarray(vol.shape, dtype=np.float64)
    # padded index p = original index i + 1;  i -> -1 + 2 i / (R - 1)
    verts = -1.0 + 2.0 * (verts.astype(np.float64) - 1.0) / (shape - 1.0)
    # process=False keeps marching cubes' shared vertices as they are (already indexed); normals come from the
    # winding (outward with gradient_direction='ascent'), computed lazily by trimesh.
    return trimesh.Trimesh(vertices=verts, faces=faces.astype(np.int64), process=False)


def _load_samples(samples_npz: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    path = Path(samples_npz)
    if not path.is_file():
        raise NfdError(f"samples file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "features" not in data.files:
                raise NfdError(f"{path}: no 'features' array (keys: {', '.join(data.files) or 'none'}); "
                               "expected a samples file from `nfd sample`")
            features = data["features"]
            meta = {}
            for key in ("resolution", "coord_dim", "feature_dim", "seed", "preset"):
                if key in data.files:
                    value = data[key]
                    meta[key] = value.item() if value.ndim == 0 else value.tolist()
    except NfdError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise NfdError(f"{path}: not a readable .npz file ({e})") from e
    coord_dim = meta.get("coord_dim")
    if coord_dim is not None and int(coord_dim) != 3:
        raise NfdError(f"{path}: samples are {coord_dim}D (coord_dim={coord_dim}); meshes need 3D samples")
    if features.ndim == 5:
        if features.shape[-1] != 1:
            raise NfdError(f"{path}: features have {features.shape[-1]} channels; meshes need 1 (occupancy), "
                           f"shape {tuple(features.shape)}")
        features = features[..., 0]
    if features.ndim != 4 or len(set(features.shape[1:])) != 1:
        raise NfdError(f"{path}: 'features' has shape {tuple(features.shape)}; expected 3D samples "
                       "[num, R, R, R, 1] (or [num, R, R, R])")
    return features, meta


_SAMPLE_RE = re.compile(r"^sample_(\d{3,})\.(ply|obj)$")


def export_meshes(samples_npz: str | Path, out_dir: str | Path, level: float = 0.0, fmt: str = "ply") -> dict[str, Any]:
    """Mesh every sample of a ``nfd sample`` .npz into ``out_dir/sample_000.<fmt>``, ... plus ``summary.json``.

    Every file is written atomically. A sample with no surface gets no mesh file (a stale one from an earlier run is
    removed) and is listed under ``"empty"`` in the summary; mesh files of this format from an earlier run with more
    samples are removed too. Returns the summary dict::

        {"source", "level", "format", "resolution", "num_samples", "num_meshes", "empty": [indices],
         "samples": [{"index", "file" | None, "vertices", "faces", "watertight", "empty"}]}
    """
    fmt = fmt.lower()
    if fmt not in MESH_FORMATS:
        raise NfdError(f"unknown mesh format {fmt!r}; choose one of {', '.join(MESH_FORMATS)}")
    features, meta = _load_samples(samples_npz)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NfdError(f"output path exists and is not a folder: {out}")
    out.mkdir(parents=True, exist_ok=True)

    records: list[dict[str, Any]] = []
    empty: list[int] = []
    written: set[str] = set()
    for i, vol in enumerate(features):
        name = f"sample_{i:03d}.{fmt}"
        try:
            mesh = extract_mesh(vol, level=level)
        except EmptySurfaceError:
            empty.append(i)
            records.append({"index": i, "file": None, "vertices": 0, "faces": 0, "watertight": False, "empty": True})
            continue
        with atomic_path(out / name) as tmp:
            mesh.export(tmp, file_type=fmt)
        written.add(name)
        records.append({"index": i, "file": name, "vertices": int(len(mesh.vertices)), "faces": int(len(mesh.faces)),
                        "watertight": bool(mesh.is_watertight), "empty": False})
    for stale in out.iterdir():  # mesh files of ours that this run did not (re)write: empties, or beyond num
        m = _SAMPLE_RE.match(stale.name)
        if m and m.group(2) == fmt and stale.name not in written:
            stale.unlink()

    summary = {
        "source": str(samples_npz),
        "level": float(level),
        "format": fmt,
        "resolution": int(features.shape[1]),
        "num_samples": int(features.shape[0]),
        "num_meshes": len(written),
        "empty": empty,
        "samples": records,
        **{k: v for k, v in meta.items() if k in ("seed", "preset")},
    }
    with atomic_path(out / SUMMARY_NAME) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _cmd_mesh(args: argparse.Namespace) -> int:
    summary = export_meshes(args.samples, args.out, level=args.level, fmt=args.format)
    n_empty = len(summary["empty"])
    msg = f"wrote {summary['num_meshes']} {summary['format']} meshes to {args.out}"
    if n_empty:
        msg += f"; {n_empty} sample(s) had no surface at level {args.level:g}: {summary['empty']}"
    print(msg)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "mesh",
        help="mesh 3D occupancy samples with marching cubes",
        description=(
            "Turn every sample of a 3D samples file (from `nfd sample`) into a triangle mesh with marching cubes "
            "(paper Fig. 9/10). Inside is where the occupancy is above --level (0.0 = probability 0.5). Vertices are "
            "in [-1, 1]^3 with the grid's axes (x, y up, z); shapes touching the grid boundary are closed. Writes "
            "OUT/sample_000.<format>, ... and OUT/summary.json (vertices/faces per sample, samples with no surface). "
            "A sample with no surface gets no mesh file and is listed under 'empty' in the summary."
        ),
    )
    p.add_argument("--samples", required=True, metavar="FILE.npz",
                   help="samples file from `nfd sample` with 3D features [num, R, R, R, 1]")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--level", type=float, default=0.0,
                   help="iso level in feature units, inside = above it (default: 0.0, occupancy probability 0.5)")
    p.add_argument("--format", choices=MESH_FORMATS, default="ply", help="mesh file format (default: ply)")
    p.set_defaults(func=_cmd_mesh)
