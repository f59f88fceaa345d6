"""Voxel grids to triangle meshes (marching cubes), and the ``nfd mesh`` verb.

Paper, Sec. 4.2 / Fig. 9-10: a sampled function is evaluated on a 128^3 grid, thresholded at occupancy 0.5 and turned
into a mesh with marching cubes. Our sampled features are occupancies in [-1, 1] (docs/contracts.md), so occupancy 0.5
is the level 0.0; "inside" is where the value is *above* the level.

Conventions (docs/contracts.md): voxel axis 0 = x, axis 1 = y (up), axis 2 = z; voxel index ``i`` of a grid of
resolution ``R`` sits at ``-1 + 2 i / (R - 1)``, exactly like ``nfd.grid.grid_coords``. Mesh vertices use the same
coordinates and the same axis order, so a chair that stands along +y in the grid stands along +y as a mesh.

Smoothing (``nfd mesh --smooth-iterations N``): where a sampled field jumps from about +1 to about -1 between two
neighbouring voxels, marching cubes puts the vertex at the middle of that grid edge, so a gently curved surface comes
out as one-voxel terraces, which smooth shading shows as rings. A few iterations of Taubin's lambda/mu filter (a
shrinking Laplacian step followed by an inflating one) round the terraces' edges and the voxel-scale jaggedness while
leaving the shape where it was: the level-0 surface is extracted exactly as before and only its vertices move, by a
small fraction of a voxel. Terraces many voxels apart are longer than the filter's pass band (about 14 edges) and
survive it; ``nfd render`` hides those by smoothing its shading normals (``nfd.viz.render.shading_normals``).
``nfd mesh`` measures how far the vertices moved, as the symmetric Chamfer distance between the smoothed and the
unsmoothed mesh, and writes it to its summary and its log. The shape metrics (``nfd evaluate shapes``) always use the
unsmoothed surface.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import trimesh
from scipy import sparse
from scipy.spatial import cKDTree
from skimage.measure import marching_cubes

from nfd.errors import NfdError
from nfd.io import atomic_path
from nfd.progressbar import progress_bar
from nfd.sampling.samples_file import read_samples

MESH_FORMATS = ("ply", "obj")
SUMMARY_NAME = "summary.json"
SMOOTH_ITERATIONS = 10
"""Default Taubin iterations of ``nfd mesh`` (0 = the raw marching-cubes surface). On demo chairs at 128^3, 10 took out
the voxel-scale jaggedness of seats, legs and silhouettes; 30 or 100 looked the same (the long terraces left are the
renderer's business) while moving the surface 2-4 times as far."""
TAUBIN_LAMBDA = 0.5
TAUBIN_MU = -0.53
"""Taubin's classic pair: pass-band frequency 1/lambda + 1/mu = 0.113 (features longer than about 14 edges are kept)."""
CHAMFER_POINTS = 10_000
"""Surface points per mesh for the smoothed-vs-unsmoothed Chamfer distance."""


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


def _umbrella_operator(mesh: trimesh.Trimesh) -> sparse.csr_matrix:
    """``A`` with ``(A @ v)[i]`` = mean of the neighbours of vertex ``i`` (uniform weights over the mesh's edges)."""
    n = len(mesh.vertices)
    edges = np.asarray(mesh.edges_unique, dtype=np.int64)
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    adj = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    degree = np.asarray(adj.sum(axis=1)).ravel()
    inv = np.divide(1.0, degree, out=np.zeros(n), where=degree > 0)  # isolated vertices stay where they are
    return sparse.diags(inv) @ adj


def smooth_mesh(
    mesh: trimesh.Trimesh, iterations: int = SMOOTH_ITERATIONS, lamb: float = TAUBIN_LAMBDA, mu: float = TAUBIN_MU
) -> trimesh.Trimesh:
    """Taubin lambda/mu smoothing: ``iterations`` times, ``v += lamb * L v`` then ``v += mu * L v``.

    ``L v`` is the umbrella Laplacian (mean of a vertex's neighbours minus the vertex). The shrinking step
    (``lamb > 0``) removes high-frequency detail such as marching-cubes terraces; the inflating one (``mu < -lamb``)
    undoes the shrinkage of everything longer than the pass band, so the shape and its volume are kept. Returns a
    new mesh with the same faces; ``iterations=0`` returns an unchanged copy.
    """
    iterations = int(iterations)
    if iterations < 0:
        raise NfdError(f"smoothing iterations must be >= 0, got {iterations}")
    if not (0.0 < lamb < 1.0 and mu < -lamb):
        raise NfdError(f"Taubin smoothing needs 0 < lambda < 1 and mu < -lambda, got lambda={lamb}, mu={mu}")
    verts = np.array(mesh.vertices, dtype=np.float64)
    if iterations and len(mesh.faces):
        avg = _umbrella_operator(mesh)
        has_neighbours = np.asarray(avg.sum(axis=1)).ravel() > 0
        for _ in range(iterations):
            for factor in (lamb, mu):
                lap = avg @ verts - verts
                lap[~has_neighbours] = 0.0
                verts += factor * lap
    return trimesh.Trimesh(vertices=verts, faces=np.array(mesh.faces), process=False)


def _closest_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Closest point of triangle ``(a[i], b[i], c[i])`` to ``p[i]`` (all ``[n, 3]``), by the Voronoi regions of the
    triangle's vertices, edges and face (Ericson, Real-Time Collision Detection, 5.1.5), vectorised."""
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = np.einsum("ij,ij->i", ab, ap), np.einsum("ij,ij->i", ac, ap)
    bp = p - b
    d3, d4 = np.einsum("ij,ij->i", ab, bp), np.einsum("ij,ij->i", ac, bp)
    cp = p - c
    d5, d6 = np.einsum("ij,ij->i", ab, cp), np.einsum("ij,ij->i", ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    tiny = 1e-300
    # default: inside the face
    denom = va + vb + vc
    denom = np.where(np.abs(denom) < tiny, tiny, denom)
    out = a + ab * (vb / denom)[:, None] + ac * (vc / denom)[:, None]
    # edge bc
    t_bc = (d4 - d3) / np.maximum((d4 - d3) + (d5 - d6), tiny)
    m = (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0)
    out[m] = (b + (c - b) * t_bc[:, None])[m]
    # edge ac
    t_ac = d2 / np.where(np.abs(d2 - d6) < tiny, tiny, d2 - d6)
    m = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
    out[m] = (a + ac * t_ac[:, None])[m]
    # vertex c, edge ab, vertex b, vertex a: assigned last to first, so that on a region's border the region Ericson
    # tests first wins, as in his sequential version
    m = (d6 >= 0) & (d5 <= d6)
    out[m] = c[m]
    t_ab = d1 / np.where(np.abs(d1 - d3) < tiny, tiny, d1 - d3)
    m = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
    out[m] = (a + ab * t_ab[:, None])[m]
    m = (d3 >= 0) & (d4 <= d3)
    out[m] = b[m]
    m = (d1 <= 0) & (d2 <= 0)
    out[m] = a[m]
    return out


def point_to_surface_distance(points: np.ndarray, mesh: trimesh.Trimesh, candidates: int = 16) -> np.ndarray:
    """Distance from each point ``[n, 3]`` to the surface of ``mesh`` (the nearest point on any of its triangles).

    The exact point-triangle distance is taken over the ``candidates`` triangles whose centroids are nearest to the
    point; for marching-cubes meshes (small triangles of similar size) that contains the nearest triangle, and if it
    ever did not, the result could only be too large, never too small.
    """
    points = np.asarray(points, dtype=np.float64)
    tris = np.asarray(mesh.triangles, dtype=np.float64)
    k = int(min(candidates, len(tris)))
    _, idx = cKDTree(tris.mean(axis=1)).query(points, k=k)
    idx = np.asarray(idx).reshape(len(points), k)
    best = np.full(len(points), np.inf)
    for j in range(k):
        t = tris[idx[:, j]]
        q = _closest_on_triangles(points, t[:, 0], t[:, 1], t[:, 2])
        best = np.minimum(best, np.linalg.norm(points - q, axis=1))
    return best


def surface_chamfer(a: trimesh.Trimesh, b: trimesh.Trimesh, points: int = CHAMFER_POINTS, seed: int = 0) -> float:
    """Symmetric Chamfer distance between two surfaces, in the meshes' units.

    ``points`` points are drawn uniformly on each surface; the result is the mean, over both sets, of each point's
    distance to the other surface (not squared). Measuring to the surface rather than to the other mesh's sampled
    points keeps the sampling spacing out of the number: a surface is at distance 0 from itself.
    """
    rng = np.random.default_rng(seed)
    pa, _ = trimesh.sample.sample_surface(a, int(points), seed=rng)
    pb, _ = trimesh.sample.sample_surface(b, int(points), seed=rng)
    d = np.concatenate([point_to_surface_distance(pa, b), point_to_surface_distance(pb, a)])
    return float(d.mean())


def bbox_diagonal(mesh: trimesh.Trimesh) -> float:
    return float(np.linalg.norm(np.ptp(np.asarray(mesh.vertices), axis=0)))


def _load_samples(samples_npz: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """The volumes ``[num, R, R, R]`` of a 3D samples file (``[num, R, R, R, 1]``, or already without the channel),
    and its scalars."""
    samples = read_samples(samples_npz)
    path, features, meta = samples.path, samples.features, samples.meta
    coord_dim = meta.get("coord_dim")
    if coord_dim is not None and coord_dim != 3:
        raise NfdError(f"{path}: samples are {coord_dim}D (coord_dim={coord_dim}); meshes need 3D samples")
    if features.ndim == 5:
        if features.shape[-1] != 1:
            raise NfdError(
                f"{path}: features have {features.shape[-1]} channels; meshes need 1 (occupancy), "
                f"shape {tuple(features.shape)}"
            )
        features = features[..., 0]
    if features.ndim != 4 or len(set(features.shape[1:])) != 1:
        raise NfdError(
            f"{path}: 'features' has shape {tuple(features.shape)}; expected 3D samples "
            "[num, R, R, R, 1] (or [num, R, R, R])"
        )
    return features, meta


_SAMPLE_RE = re.compile(r"^sample_(\d{3,})\.(ply|obj)$")
_TEMP_RE = re.compile(r"^\.(sample_\d{3,}\.(ply|obj)|summary\.json)\..+")
"""Temporary files of ``nfd.io.atomic_path`` (``.NAME.XXXX.ext``) that a killed ``nfd mesh`` left behind."""


def clear_outputs(out: Path) -> list[str]:
    """Remove what an earlier ``nfd mesh`` wrote into ``out`` (meshes of either format, summary.json, temporary
    files); returns the names removed. Only our own names, so a folder shared with other files keeps them."""
    removed = []
    for f in sorted(out.iterdir()):
        if f.is_file() and (_SAMPLE_RE.match(f.name) or f.name == SUMMARY_NAME or _TEMP_RE.match(f.name)):
            f.unlink()
            removed.append(f.name)
    return removed


def export_meshes(
    samples_npz: str | Path,
    out_dir: str | Path,
    level: float = 0.0,
    fmt: str = "ply",
    smooth_iterations: int = 0,
    cleared: list[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Mesh every sample of a ``nfd sample`` .npz into ``out_dir/sample_000.<fmt>``, ... plus ``summary.json``.

    ``smooth_iterations`` > 0 applies that many Taubin iterations (``smooth_mesh``) to each marching-cubes surface
    and records, per sample and summarised, the symmetric Chamfer distance between the smoothed and the unsmoothed
    surface relative to the latter's bounding-box diagonal (``surface_chamfer``).

    Every file is written atomically. The files an earlier run left in ``out_dir`` (meshes of either format, the
    summary, temporary files of a killed run) are removed first, so a reused folder never mixes in shapes of another
    model: a sample with no surface gets no mesh file and is listed under ``"empty"`` in the summary. Other files in
    the folder are left alone; the names removed are appended to ``cleared`` when given. ``progress``: a bar of the
    samples meshed (``nfd.progressbar``). Returns the summary dict::

        {"source", "level", "format", "resolution", "num_samples", "num_meshes", "empty": [indices],
         "smoothing": {"method", "iterations", "lambda", "mu", "chamfer_to_unsmoothed": {"mean", "max", "units",
                       "mean_voxels"} | None},
         "samples": [{"index", "file" | None, "vertices", "faces", "watertight", "empty",
                      "chamfer_to_unsmoothed" (when smoothed)}]}
    """
    fmt = fmt.lower()
    if fmt not in MESH_FORMATS:
        raise NfdError(f"unknown mesh format {fmt!r}; choose one of {', '.join(MESH_FORMATS)}")
    smooth_iterations = int(smooth_iterations)
    if smooth_iterations < 0:
        raise NfdError(f"--smooth-iterations must be >= 0, got {smooth_iterations}")
    level = float(level)
    if not np.isfinite(level):
        raise NfdError(f"--level must be a finite number, got {level}")
    features, meta = _load_samples(samples_npz)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NfdError(f"output path exists and is not a folder: {out}")
    out.mkdir(parents=True, exist_ok=True)
    removed = clear_outputs(out)
    if cleared is not None:
        cleared.extend(removed)

    records: list[dict[str, Any]] = []
    empty: list[int] = []
    written: set[str] = set()
    chamfers: list[tuple[float, float]] = []  # (relative to the bounding-box diagonal, in voxels) per mesh
    voxel = 2.0 / (features.shape[1] - 1)  # grid spacing in mesh units
    for i, vol in enumerate(progress_bar(features, desc="mesh", unit="sample", enabled=progress)):
        name = f"sample_{i:03d}.{fmt}"
        try:
            mesh = extract_mesh(vol, level=level)
        except EmptySurfaceError:
            empty.append(i)
            records.append({"index": i, "file": None, "vertices": 0, "faces": 0, "watertight": False, "empty": True})
            continue
        record: dict[str, Any] = {}
        if smooth_iterations:
            raw, mesh = mesh, smooth_mesh(mesh, smooth_iterations)
            dist = surface_chamfer(mesh, raw, seed=i)
            record["chamfer_to_unsmoothed"] = dist / max(bbox_diagonal(raw), 1e-12)
            record["chamfer_to_unsmoothed_voxels"] = dist / voxel
            chamfers.append((record["chamfer_to_unsmoothed"], record["chamfer_to_unsmoothed_voxels"]))
        with atomic_path(out / name) as tmp:
            mesh.export(tmp, file_type=fmt)
        written.add(name)
        records.append(
            {
                "index": i,
                "file": name,
                "vertices": int(len(mesh.vertices)),
                "faces": int(len(mesh.faces)),
                "watertight": bool(mesh.is_watertight),
                "empty": False,
                **record,
            }
        )

    resolution = int(features.shape[1])
    chamfer = None
    if chamfers:
        rel, vox = np.array(chamfers).T
        chamfer = {
            "mean": float(rel.mean()),
            "max": float(rel.max()),
            "mean_voxels": float(vox.mean()),
            "max_voxels": float(vox.max()),
            "definition": "symmetric Chamfer distance: mean distance of points sampled on each surface to the "
            f"other surface ({CHAMFER_POINTS} per mesh), relative to the unsmoothed mesh's "
            "bounding-box diagonal (mean, max over meshes); also in voxels of the grid",
        }
    summary = {
        "source": str(samples_npz),
        "level": float(level),
        "format": fmt,
        "resolution": resolution,
        "num_samples": int(features.shape[0]),
        "num_meshes": len(written),
        "empty": empty,
        "smoothing": {
            "method": "taubin" if smooth_iterations else "none",
            "iterations": smooth_iterations,
            "lambda": TAUBIN_LAMBDA,
            "mu": TAUBIN_MU,
            "chamfer_to_unsmoothed": chamfer,
        },
        "samples": records,
        **{k: v for k, v in meta.items() if k in ("seed", "preset")},
    }
    with atomic_path(out / SUMMARY_NAME) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _cmd_mesh(args: argparse.Namespace) -> int:
    cleared: list[str] = []
    summary = export_meshes(
        args.samples,
        args.out,
        level=args.level,
        fmt=args.format,
        smooth_iterations=args.smooth_iterations,
        cleared=cleared,
        progress=not args.log_quiet,
    )
    n_empty = len(summary["empty"])
    msg = f"wrote {summary['num_meshes']} {summary['format']} meshes to {args.out}"
    if cleared:
        msg += f" (first removed {len(cleared)} file(s) of an earlier run)"
    if n_empty:
        msg += f"; {n_empty} sample(s) had no surface at level {args.level:g}: {summary['empty']}"
    print(msg)
    smoothing = summary["smoothing"]
    if smoothing["iterations"]:
        c = smoothing["chamfer_to_unsmoothed"]
        how = f"Taubin smoothing, {smoothing['iterations']} iterations (lambda {TAUBIN_LAMBDA}, mu {TAUBIN_MU})"
        if c is None:
            print(f"{how}: no mesh to compare")
        else:
            print(
                f"{how}: symmetric Chamfer distance to the unsmoothed surface {c['mean']:.2e} of the bounding-box "
                f"diagonal on average (max {c['max']:.2e}), {c['mean_voxels']:.3f} voxels (max "
                f"{c['max_voxels']:.3f})"
            )
    else:
        print("no smoothing: the raw marching-cubes surface")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from nfd.cli import int_at_least, verb_help

    _non_negative_int = int_at_least(0)
    p = subparsers.add_parser(
        "mesh",
        help=verb_help(__name__),
        description=(
            "Turn every sample of a 3D samples file (from `nfd sample`) into a triangle mesh with marching cubes "
            "(paper Fig. 9/10). Inside is where the occupancy is above --level (0.0 = probability 0.5). Vertices are "
            "in [-1, 1]^3 with the grid's axes (x, y up, z); shapes touching the grid boundary are closed. Writes "
            "OUT/sample_000.<format>, ... and OUT/summary.json (vertices/faces per sample, samples with no surface). "
            "A sample with no surface gets no mesh file and is listed under 'empty' in the summary. "
            "By default each surface is smoothed with a few Taubin lambda/mu iterations, which round off the "
            "one-voxel terraces and jagged edges that a near-binary field leaves and keep the shape and the level; "
            "the symmetric Chamfer distance between the smoothed and the unsmoothed surface is printed and written "
            "to summary.json."
        ),
    )
    p.add_argument(
        "--samples",
        required=True,
        metavar="FILE.npz",
        help="samples file from `nfd sample` with 3D features [num, R, R, R, 1]",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output folder (created if missing); the meshes and summary.json of an earlier run in it "
        "are removed first",
    )
    p.add_argument(
        "--level",
        type=float,
        default=0.0,
        help="iso level in feature units, inside = above it (default: 0.0, occupancy probability 0.5)",
    )
    p.add_argument("--format", choices=MESH_FORMATS, default="ply", help="mesh file format (default: ply)")
    p.add_argument(
        "--smooth-iterations",
        type=_non_negative_int,
        default=SMOOTH_ITERATIONS,
        metavar="N",
        help=f"Taubin smoothing iterations (lambda {TAUBIN_LAMBDA}, mu {TAUBIN_MU}) applied to each "
        f"marching-cubes surface; 0 = off (default: {SMOOTH_ITERATIONS})",
    )
    p.set_defaults(func=_cmd_mesh)
