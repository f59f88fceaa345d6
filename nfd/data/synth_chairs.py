"""Procedural chairs: the offline default for the 3D experiments (``nfd data synth-chairs``).

Each chair is a union of axis-aligned boxes in chair units, **y up** (the floor is y = 0), seat centred on x = z = 0,
facing **+z** (the backrest is at the -z side): a seat; a base of 4 legs (optionally with stretchers, optionally
back legs rising into the backrest), a pedestal (column on a cross or plate), or two side panels; a backrest that is
solid, vertically slatted or horizontally slatted; optional armrests; varied proportions. Chair ``i`` of seed ``s``
depends only on ``(s, i)`` (its own ``numpy`` SeedSequence), so the set is deterministic and prefixes agree.

Outputs in ``DIR``:
  ``meshes/<id>.ply``        the box meshes (each box closed, so the mesh is watertight) -> ``prepare meshes``
  ``ShapeNetVox32.tgz``      ``ShapeNetVox32/03001627/<id>/model.binvox`` at 32^3 -> ``prepare shapenet``
  ``manifest.json``          seed, count and each chair's part choices

The binvox voxels are computed analytically from the boxes with the same fit as :func:`nfd.data.meshes.fit_vertices`
(bounding box centred, longest side = the grid) and the same rule as the mesh path's surface voxelisation (a cell
is set if the box touches it: cells ``floor(lo) .. floor(hi)``), so both paths give (nearly) the same voxels.
The archive is byte-for-byte deterministic (fixed mtimes, owners, gzip header).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nfd import __version__
from nfd.data.binvox import encode_binvox
from nfd.data.fsutil import set_default_mode
from nfd.data.meshes import fit_vertices
from nfd.data.shapenet import CHAIRS_SYNSET
from nfd.io import atomic_path

Box = tuple[np.ndarray, np.ndarray]
"""``(lo [3], hi [3])`` corners of an axis-aligned box, chair units."""


@dataclass
class Chair:
    id: str
    boxes: list[Box]
    parts: dict[str, Any] = field(default_factory=dict)


def _box(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float) -> Box:
    lo = np.array([min(x0, x1), min(y0, y1), min(z0, z1)], dtype=np.float64)
    hi = np.array([max(x0, x1), max(y0, y1), max(z0, z1)], dtype=np.float64)
    return lo, hi


def chair_id(seed: int, i: int) -> str:
    return f"synth_s{seed}_{i:06d}"


def generate_chair(seed: int, i: int) -> Chair:
    """The ``i``-th chair of ``seed`` (see module doc)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(i), 0xC4A1]))
    u = rng.uniform
    wide = u() < 0.1  # an occasional bench / armchair-like wide seat
    W = u(1.3, 1.8) if wide else u(0.75, 1.25)  # seat width (x)
    D = u(0.75, 1.2)  # seat depth (z)
    H = u(0.65, 1.05)  # height of the seat's underside
    T = u(0.07, 0.18)  # seat thickness
    x0, x1, z0, z1 = -W / 2, W / 2, -D / 2, D / 2
    top = H + T
    boxes: list[Box] = [_box(x0, x1, H, top, z0, z1)]
    parts: dict[str, Any] = {"wide": bool(wide)}

    back_h = u(0.55, 1.3) * (0.8 if wide else 1.0)
    back_t = u(0.06, 0.14)
    back_w = W * u(0.8, 1.0)
    bx0, bx1 = -back_w / 2, back_w / 2
    bz0, bz1 = z0, z0 + back_t
    back_top = top + back_h

    base = rng.choice(["legs4", "pedestal", "panels"], p=[0.62, 0.2, 0.18])
    parts["base"] = str(base)
    if base == "legs4":
        lt = u(0.05, 0.13)
        inset = u(0.0, 0.1) * min(W, D)
        lx0, lx1, lz0, lz1 = x0 + inset, x1 - inset - lt, z0 + inset, z1 - inset - lt
        back_rise = u() < 0.35 and inset < back_t  # back legs continue up as the backrest's posts
        parts["back_legs_rise"] = bool(back_rise)
        for lx in (lx0, lx1):
            for lz in (lz0, lz1):
                y1 = back_top if (back_rise and lz == lz0) else H
                boxes.append(_box(lx, lx + lt, 0.0, y1, lz, lz + lt))
        if u() < 0.4:
            sy = u(0.12, 0.4) * H
            st = lt * u(0.5, 0.9)
            parts["stretchers"] = True
            boxes.append(_box(lx0, lx1 + lt, sy, sy + st, lz0, lz0 + lt))  # back
            boxes.append(_box(lx0, lx1 + lt, sy, sy + st, lz1, lz1 + lt))  # front
            for lx in (lx0, lx1):
                boxes.append(_box(lx, lx + lt, sy, sy + st, lz0, lz1 + lt))  # sides
    elif base == "pedestal":
        cw = u(0.1, 0.22)
        bt = u(0.05, 0.11)
        boxes.append(_box(-cw / 2, cw / 2, bt, H, -cw / 2, cw / 2))
        if u() < 0.6:
            parts["pedestal_base"] = "cross"
            bw = u(0.06, 0.12)
            lx, lz = u(0.8, 1.0) * W / 2, u(0.8, 1.0) * D / 2
            boxes.append(_box(-lx, lx, 0.0, bt, -bw / 2, bw / 2))
            boxes.append(_box(-bw / 2, bw / 2, 0.0, bt, -lz, lz))
        else:
            parts["pedestal_base"] = "plate"
            pw, pd = u(0.5, 0.9) * W / 2, u(0.5, 0.9) * D / 2
            boxes.append(_box(-pw, pw, 0.0, bt, -pd, pd))
    else:  # two side panels (sled / cantilever-like sides)
        pt = u(0.05, 0.12)
        front_gap = u(0.0, 0.25) * D
        for px in (x0, x1 - pt):
            boxes.append(_box(px, px + pt, 0.0, H, z0, z1 - front_gap))
        if u() < 0.5:  # a back panel between the sides
            boxes.append(_box(x0, x1, u(0.2, 0.5) * H, H, z0, z0 + pt))

    style = rng.choice(["solid", "vslats", "hslats"], p=[0.45, 0.3, 0.25])
    parts["back"] = str(style)
    if style == "solid":
        boxes.append(_box(bx0, bx1, top, back_top, bz0, bz1))
    else:
        post = u(0.05, 0.11)
        boxes.append(_box(bx0, bx0 + post, top, back_top, bz0, bz1))
        boxes.append(_box(bx1 - post, bx1, top, back_top, bz0, bz1))
        rail = u(0.08, 0.2) * back_h
        boxes.append(_box(bx0, bx1, back_top - rail, back_top, bz0, bz1))
        if style == "vslats":
            n = int(rng.integers(2, 6))
            sw = u(0.04, 0.1)
            inner0, inner1 = bx0 + post, bx1 - post
            for k in range(n):
                cx = inner0 + (k + 1) * (inner1 - inner0) / (n + 1)
                boxes.append(_box(cx - sw / 2, cx + sw / 2, top, back_top - rail, bz0, bz1))
            parts["slats"] = n
        else:
            n = int(rng.integers(1, 4))
            rh = u(0.05, 0.12)
            span = back_h - rail
            for k in range(n):
                cy = top + (k + 1) * span / (n + 1)
                boxes.append(_box(bx0, bx1, cy - rh / 2, cy + rh / 2, bz0, bz1))
            parts["slats"] = n

    if u() < 0.3:
        parts["arms"] = True
        ah = min(u(0.18, 0.38), back_h * 0.8)
        aw = u(0.06, 0.14)
        at = u(0.04, 0.09)
        front = z1 - u(0.0, 0.15) * D
        for ax in (x0, x1 - aw):
            boxes.append(_box(ax, ax + aw, top + ah - at, top + ah, z0, front))  # rail
            boxes.append(_box(ax, ax + aw, top, top + ah - at, front - aw, front))  # front support
    else:
        parts["arms"] = False
    # Grow every box by a tiny random amount (~1e-5 chair units): touching parts then overlap instead of sharing
    # vertices exactly, so the mesh stays a set of closed boxes (watertight after trimesh merges vertices).
    eps = rng.uniform(1e-5, 3e-5, size=(len(boxes), 2, 3))
    boxes = [(lo - eps[k, 0], hi + eps[k, 1]) for k, (lo, hi) in enumerate(boxes)]
    return Chair(id=chair_id(seed, i), boxes=boxes, parts=parts)


def voxelize_boxes(boxes: list[Box], resolution: int = 32) -> np.ndarray:
    """Analytic ``[x, y, z]`` voxels of a union of boxes, fitted like :func:`nfd.data.meshes.fit_vertices`."""
    corners = np.concatenate([np.stack(b) for b in boxes])  # [2B, 3]: the bbox of all boxes = of the mesh
    fitted = fit_vertices(corners, resolution).reshape(-1, 2, 3)
    vox = np.zeros((resolution,) * 3, dtype=bool)
    lo = np.clip(np.floor(fitted[:, 0]).astype(np.int64), 0, resolution - 1)
    hi = np.clip(np.floor(fitted[:, 1]).astype(np.int64), 0, resolution - 1)
    for a, b in zip(lo, hi):
        vox[a[0] : b[0] + 1, a[1] : b[1] + 1, a[2] : b[2] + 1] = True
    return vox


_BOX_TEMPLATE: tuple[np.ndarray, np.ndarray] | None = None


def chair_mesh(chair: Chair):
    """A trimesh of the chair: one closed box per part (outward faces), chair units, y up."""
    import trimesh

    global _BOX_TEMPLATE
    if _BOX_TEMPLATE is None:
        unit = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
        _BOX_TEMPLATE = (np.asarray(unit.vertices) + 0.5, np.asarray(unit.faces))
    tv, tf = _BOX_TEMPLATE
    verts = np.concatenate([lo + tv * (hi - lo) for lo, hi in chair.boxes])
    faces = np.concatenate([tf + 8 * k for k in range(len(chair.boxes))])
    return trimesh.Trimesh(vertices=verts, faces=faces, process=False)


def _tar_add(tf: tarfile.TarFile, name: str, data: bytes | None) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if data is None:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tf.addfile(info)
    else:
        info.size = len(data)
        info.mode = 0o644
        tf.addfile(info, io.BytesIO(data))


def synth_chairs(
    num: int, seed: int, out_dir: str | Path, *, resolution: int = 32, write_meshes: bool = True, progress: bool = False
) -> dict[str, Any]:
    """Generate ``num`` chairs into ``out_dir`` (meshes/, ShapeNetVox32.tgz, manifest.json); returns a summary."""
    from tqdm import tqdm

    if num < 1:
        raise ValueError(f"--num must be >= 1, got {num}")
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tgz = out_dir / "ShapeNetVox32.tgz"
    manifest: list[dict[str, Any]] = []
    mesh_tmp = Path(tempfile.mkdtemp(prefix=".meshes-", dir=out_dir)) if write_meshes else None
    try:
        with atomic_path(tgz) as tmp:
            with (
                open(tmp, "wb") as raw,
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
            ):
                with tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tf:
                    _tar_add(tf, "ShapeNetVox32", None)
                    _tar_add(tf, f"ShapeNetVox32/{CHAIRS_SYNSET}", None)
                    for i in tqdm(range(num), disable=not progress, desc="chairs", unit="chair"):
                        chair = generate_chair(seed, i)
                        vox = voxelize_boxes(chair.boxes, resolution)
                        _tar_add(tf, f"ShapeNetVox32/{CHAIRS_SYNSET}/{chair.id}", None)
                        _tar_add(tf, f"ShapeNetVox32/{CHAIRS_SYNSET}/{chair.id}/model.binvox", encode_binvox(vox))
                        if mesh_tmp is not None:
                            chair_mesh(chair).export(mesh_tmp / f"{chair.id}.ply", file_type="ply", encoding="binary")
                        manifest.append({"id": chair.id, "boxes": len(chair.boxes), **chair.parts})
        if mesh_tmp is not None:
            set_default_mode(mesh_tmp)
            final = out_dir / "meshes"
            if final.exists():
                shutil.rmtree(final)
            os.replace(mesh_tmp, final)
            mesh_tmp = None
    finally:
        if mesh_tmp is not None:
            shutil.rmtree(mesh_tmp, ignore_errors=True)
    info = {
        "generator": "nfd.data.synth_chairs",
        "nfd_version": __version__,
        "seed": int(seed),
        "num": int(num),
        "resolution": int(resolution),
        "synset": CHAIRS_SYNSET,
        "axes": "x, y (up), z; chairs face +z (backrest at -z)",
        "chairs": manifest,
    }
    with atomic_path(out_dir / "manifest.json") as tmp:
        tmp.write_text(json.dumps(info, indent=1) + "\n")
    return {
        "out_dir": str(out_dir),
        "num": num,
        "tgz": str(tgz),
        "tgz_bytes": tgz.stat().st_size,
        "meshes": str(out_dir / "meshes") if write_meshes else None,
        "seconds": time.perf_counter() - t0,
    }
