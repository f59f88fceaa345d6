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

Polygon faces (quads, pentagons, mixed) are fan-triangulated. OFF files are read here (trimesh's OFF reader
fails on mixed polygon sizes under numpy 2: "The 'out' kwarg is necessary when using the string multiply
ufunc"), and so are PLY files trimesh rejects (binary PLY with faces of several sizes: "PLY is unexpected
length"); OBJ and the rest go through trimesh. A file that cannot be read is skipped with a one-line reason.

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


def fan_triangulate(polygons: list[list[int]]) -> np.ndarray:
    """Triangles ``[T, 3]`` of polygons as fans around their first vertex (exact for convex planar polygons)."""
    tris = [(f[0], f[i], f[i + 1]) for f in polygons for i in range(1, len(f) - 1)]
    return np.asarray(tris, dtype=np.int64).reshape(-1, 3)


def _check_faces(faces: np.ndarray, num_vertices: int) -> None:
    if len(faces) and (faces.min() < 0 or faces.max() >= num_vertices):
        bad = int(faces.max() if faces.max() >= num_vertices else faces.min())
        raise ValueError(f"a face uses vertex {bad}, the file has {num_vertices} vertices")


def read_off(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``[V, 3]`` and fan-triangulated faces of an ASCII OFF file (also COFF/NOFF/CNOFF: extra columns
    such as colours and normals are ignored). Raises ValueError with a plain reason."""
    lines = []
    for raw in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.split("#", 1)[0].split()
        if line:
            lines.append(line)
    if not lines or not lines[0][0].upper().endswith("OFF"):
        raise ValueError("not an OFF file (no OFF header)")
    head = lines[0][1:] if len(lines[0]) > 1 else (lines[1] if len(lines) > 1 else [])
    body = lines[1:] if len(lines[0]) > 1 else lines[2:]
    try:
        nv, nf = int(head[0]), int(head[1])
    except (IndexError, ValueError):
        raise ValueError("OFF header has no vertex and face counts") from None
    if nv < 0 or nf < 0:
        raise ValueError(f"OFF header has negative counts ({nv} vertices, {nf} faces)")
    if len(body) < nv + nf:
        have_v = min(len(body), nv)
        raise ValueError(f"OFF file ends early: {have_v} of {nv} vertices, {max(0, len(body) - nv)} of {nf} faces")
    try:
        vertices = np.asarray([[float(t) for t in row[:3]] for row in body[:nv]], dtype=np.float64).reshape(nv, 3)
    except ValueError:
        raise ValueError("OFF vertex lines need three numbers") from None
    polygons = []
    for i, row in enumerate(body[nv : nv + nf]):
        try:
            n = int(row[0])
            polygons.append([int(t) for t in row[1 : n + 1]])
        except ValueError:
            raise ValueError(f"OFF face {i} is not a list of vertex indices") from None
        if n < 3 or len(polygons[-1]) != n:
            raise ValueError(f"OFF face {i} has {len(polygons[-1])} of its {n} vertex indices (need >= 3)")
    faces = fan_triangulate(polygons)
    _check_faces(faces, nv)
    return vertices, faces


_PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}


def _ply_rows(fmt: str, body: Any, pos: int, count: int, props: list, order: str) -> tuple[list[list[Any]], int]:
    """``count`` rows of one PLY element from ``pos`` (a token index for ascii, a byte offset for binary)."""
    tokens = body
    rows: list[list[Any]] = []
    for _ in range(count):
        row: list[Any] = []
        for _pname, count_type, item in props:
            if fmt == "ascii":
                if count_type is None:
                    row.append(float(tokens[pos]))
                    pos += 1
                else:
                    n = int(tokens[pos])
                    row.append([float(v) for v in tokens[pos + 1 : pos + 1 + n]])
                    pos += 1 + n
            else:
                if count_type is None:
                    dt = np.dtype(order + item)
                    row.append(np.frombuffer(body, dt, 1, pos)[0].item())
                    pos += dt.itemsize
                else:
                    ct, dt = np.dtype(order + count_type), np.dtype(order + item)
                    n = int(np.frombuffer(body, ct, 1, pos)[0])
                    row.append(np.frombuffer(body, dt, n, pos + ct.itemsize).tolist())
                    pos += ct.itemsize + n * dt.itemsize
        rows.append(row)
    return rows, pos


def read_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and fan-triangulated faces of a PLY file (ascii or binary, faces of any sizes, other elements
    skipped): the fallback for PLY files trimesh's reader rejects. Raises ValueError with a plain reason."""
    data = Path(path).read_bytes()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise ValueError("not a PLY file (no ply header)")
    nl = data.find(b"\n", end)
    body = data[nl + 1 :] if nl >= 0 else b""
    fmt, elements = "", []
    for line in data[:end].decode("ascii", "replace").splitlines():
        t = line.split()
        if not t or t[0] in ("comment", "obj_info"):
            continue
        if t[0] == "format":
            fmt = t[1]
        elif t[0] == "element":
            elements.append((t[1], int(t[2]), []))
        elif t[0] == "property" and elements:
            props = elements[-1][2]
            if t[1] == "list":
                props.append((t[4], _PLY_TYPES.get(t[2]), _PLY_TYPES.get(t[3])))
            else:
                props.append((t[2], None, _PLY_TYPES.get(t[1])))
    if any(item is None for _, _, props in elements for _, _, item in props):
        raise ValueError("PLY header uses an unknown property type")
    vertices = faces = None
    tokens, order, pos = [], "", 0
    if fmt == "ascii":
        tokens = body.split()
    elif fmt in ("binary_little_endian", "binary_big_endian"):
        order = "<" if fmt == "binary_little_endian" else ">"
    else:
        raise ValueError(f"PLY format {fmt!r} is not ascii or binary")
    for name, count, props in elements:
        try:
            rows_pos = _ply_rows(fmt, tokens if fmt == "ascii" else body, pos, count, props, order)
        except (IndexError, ValueError):
            raise ValueError(f"PLY file ends early or is malformed in its {count} {name!r} rows") from None
        rows, pos = rows_pos
        names = [p[0] for p in props]
        if name == "vertex":
            try:
                cols = [names.index(c) for c in ("x", "y", "z")]
            except ValueError:
                raise ValueError("PLY vertices have no x, y, z") from None
            vertices = np.asarray([[r[c] for c in cols] for r in rows], dtype=np.float64).reshape(-1, 3)
        elif name == "face":
            lists = [i for i, p in enumerate(props) if p[1] is not None]
            if not lists:
                raise ValueError("PLY faces have no vertex index list")
            polygons = [[int(v) for v in r[lists[0]]] for r in rows]
            if any(len(f) < 3 for f in polygons):
                raise ValueError("a PLY face has fewer than 3 vertices")
            faces = fan_triangulate(polygons)
    if vertices is None or faces is None:
        raise ValueError("PLY file has no vertex or no face element")
    _check_faces(faces, len(vertices))
    return vertices, faces


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def load_mesh(path: str | Path):
    """A single trimesh.Trimesh from a mesh file (scenes concatenated, polygons triangulated); raises ValueError
    with a plain one-line reason (the caller names the file)."""
    import trimesh

    path = Path(path)
    suffix = path.suffix.lower()
    kind = suffix.lstrip(".").upper() or "mesh"
    try:
        if suffix == ".off":
            vertices, faces = read_off(path)
            mesh = trimesh.Trimesh(vertices, faces)
        else:
            try:
                mesh = trimesh.load(str(path), force="mesh", skip_materials=True)
            except Exception:
                if suffix != ".ply":
                    raise
                vertices, faces = read_ply(path)  # e.g. binary faces of mixed sizes, which trimesh rejects
                mesh = trimesh.Trimesh(vertices, faces)
    except Exception as e:  # trimesh (and a truncated file) raise many types for malformed input
        raise ValueError(f"cannot read as {kind}: {_one_line(e)}") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0 or len(mesh.vertices) == 0:
        raise ValueError("empty mesh (no faces)")
    if not np.isfinite(mesh.vertices).all():
        raise ValueError("vertices are not all finite numbers")
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
