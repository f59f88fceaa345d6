"""Offscreen mesh rendering (paper Fig. 9/10), and the ``nfd render`` verb.

Backends (``nfd.viz.gl`` chooses one per process): pyrender on EGL, then pyrender on OSMesa, then a matplotlib
painter with the same camera and lights (Agg, flat Lambert shading, painter's algorithm: slower and without smooth
shading, but it always works).

Shading normals (``nfd render --normal-smoothing N``, ``render_mesh(normal_smoothing=N)``): marching cubes on a
near-binary field leaves one-voxel terraces whose spacing can be many voxels on gently sloped surfaces (10 and more
at 128^3); a light geometric smoothing (``nfd mesh --smooth-iterations``) rounds their edges but cannot flatten
terraces that long without flattening real shape of the same size. The renderer therefore also averages the vertex
normals it shades with over N rounds of edge neighbours (neighbours within 45 degrees only, so creases stay sharp).
The geometry, and so the silhouette, is untouched.

View (fixed, so figures are comparable): the mesh is centred on its bounding box and scaled to fit the frame; the
camera looks at the origin from the front-right and slightly above (front = +z, right = +x, up = +y), with +y up on
screen, so chairs stand upright. White background.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import trimesh
from tqdm.contrib.logging import logging_redirect_tqdm

from nfd.errors import NfdError
from nfd.io import atomic_path
from nfd.progressbar import progress_bar
from nfd.viz import gl
from nfd.viz.gl import BACKENDS, RenderUnavailableError, backend_used

MIN_SIZE, MAX_SIZE = 8, 8192
"""Image sizes ``render_mesh`` accepts (pixels, width = height)."""
MESH_SUFFIXES = (".ply", ".obj", ".off", ".stl", ".glb", ".gltf")
NORMAL_SMOOTHING = 30
"""Default rounds of shading-normal averaging of ``nfd render`` (0 = trimesh's area-weighted vertex normals); chosen
from renders of demo chairs at 128^3: 10 or 20 rounds leave the terraces visible, 100 darken thin rims."""
FEATURE_ANGLE_DEG = 45.0
"""Neighbours whose normals differ by more than this are not averaged, so creases (which marching cubes turns in
steps of about 45 degrees) keep most of their edge; on demo chairs at 128^3, 35 degrees left rims jagged and 60
rounded them."""

# Fixed view and look.
AZIMUTH_DEG = 40.0  # camera direction, degrees from +z (front) towards +x (right)
ELEVATION_DEG = 25.0  # degrees above the horizontal plane
YFOV = np.deg2rad(30.0)
FILL = 0.9  # the mesh spans at most this fraction of the frame (half-width) along x and y
BASE_COLOR = np.array([0.70, 0.74, 0.80])  # light blue-grey
AMBIENT = 0.25
GL_AMBIENT = 0.05  # pyrender only: its output is gamma-encoded, see _render_pyrender
GL_LIGHT_GAIN = 1.1
# (direction the light travels towards, in camera coordinates x right / y up / z back; intensity)
_LIGHTS_CAM = (
    (np.array([0.3, -0.5, -1.0]), 0.70),  # key: from above-left of the camera
    (np.array([-0.6, -0.2, -0.6]), 0.35),  # fill: from the right
    (np.array([0.0, -1.0, 0.2]), 0.20),  # top light
)


# ---------------------------------------------------------------------------------------------------------------------
# camera


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def camera_frame(azimuth_deg: float = AZIMUTH_DEG, elevation_deg: float = ELEVATION_DEG) -> np.ndarray:
    """Rotation ``[3, 3]`` whose columns are the camera's right, up and back axes in world coordinates."""
    az, el = np.deg2rad(azimuth_deg), np.deg2rad(elevation_deg)
    back = np.array([np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)])  # from the origin to the eye
    right = _unit(np.cross(np.array([0.0, 1.0, 0.0]), back))
    up = np.cross(back, right)
    return np.stack([right, up, back], axis=1)


def _normalised_view(mesh: trimesh.Trimesh, azimuth_deg: float, elevation_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Vertices centred on the bounding box, and the 4x4 camera pose (camera-to-world) that fits them in the frame."""
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    lo, hi = verts.min(axis=0), verts.max(axis=0)
    scale = float(np.max(hi - lo))
    if not np.isfinite(scale) or scale <= 0:
        raise NfdError("mesh has zero extent; nothing to render")
    verts = (verts - (lo + hi) / 2) * (2.0 / scale)  # centred, longest side 2
    rot = camera_frame(azimuth_deg, elevation_deg)
    cam = verts @ rot  # coordinates along right, up, back (camera at distance d along back)
    tan = np.tan(YFOV / 2) * FILL
    # a vertex projects inside the frame when |x|, |y| <= tan * (d - back); take the smallest such d
    dist = float(np.max(cam[:, 2] + np.maximum(np.abs(cam[:, 0]), np.abs(cam[:, 1])) / tan))
    dist = max(dist, float(np.max(cam[:, 2])) + 0.1)
    pose = np.eye(4)
    pose[:3, :3] = rot
    pose[:3, 3] = rot[:, 2] * dist
    return verts, pose


# ---------------------------------------------------------------------------------------------------------------------
# rendering


def _check_mesh(mesh: Any) -> trimesh.Trimesh:
    if isinstance(mesh, trimesh.Scene):
        mesh = mesh.to_mesh() if hasattr(mesh, "to_mesh") else mesh.dump(concatenate=True)
    if not isinstance(mesh, trimesh.Trimesh):
        raise NfdError(f"expected a trimesh.Trimesh, got {type(mesh).__name__}")
    if len(mesh.faces) == 0 or len(mesh.vertices) == 0:
        raise NfdError("mesh has no faces; nothing to render")
    if not np.all(np.isfinite(mesh.vertices)):
        raise NfdError("mesh has NaN or infinite vertices")
    return mesh


def _lights_world(rot: np.ndarray) -> list[tuple[np.ndarray, float]]:
    return [(rot @ _unit(d), k) for d, k in _LIGHTS_CAM]


def shading_normals(
    mesh: trimesh.Trimesh, iterations: int = 0, feature_angle_deg: float = FEATURE_ANGLE_DEG
) -> np.ndarray:
    """Unit vertex normals for shading ``[V, 3]``: area-weighted face normals, then ``iterations`` rounds of averaging
    each vertex's normal with its edge neighbours' (only neighbours within ``feature_angle_deg`` of it, so creases
    stay sharp). Changes only the shading, never the geometry."""
    normals = np.array(mesh.vertex_normals, dtype=np.float64)
    if iterations <= 0 or len(mesh.faces) == 0:
        return normals
    edges = np.asarray(mesh.edges_unique, dtype=np.int64)
    i = np.concatenate([edges[:, 0], edges[:, 1]])
    j = np.concatenate([edges[:, 1], edges[:, 0]])
    cos_limit = np.cos(np.deg2rad(feature_angle_deg))
    for _ in range(int(iterations)):
        w = (np.einsum("ij,ij->i", normals[i], normals[j]) > cos_limit).astype(np.float64)
        acc = normals + np.stack(
            [np.bincount(i, weights=w * normals[j, c], minlength=len(normals)) for c in range(3)], axis=1
        )
        length = np.linalg.norm(acc, axis=1, keepdims=True)
        normals = np.divide(acc, length, out=normals, where=length > 0)
    return normals


def _render_pyrender(
    mesh: trimesh.Trimesh, size: int, azimuth_deg: float, elevation_deg: float, normal_smoothing: int = 0
) -> np.ndarray:
    import pyrender  # noqa: PLC0415 - imported by nfd.viz.gl with the right platform

    verts, pose = _normalised_view(mesh, azimuth_deg, elevation_deg)
    tm = trimesh.Trimesh(vertices=verts, faces=np.asarray(mesh.faces), process=False)
    if normal_smoothing:
        tm.vertex_normals = shading_normals(tm, normal_smoothing)
    material = pyrender.MetallicRoughnessMaterial(
        baseColorFactor=[*(BASE_COLOR**2.2).tolist(), 1.0], metallicFactor=0.0, roughnessFactor=1.0, doubleSided=True
    )
    # pyrender shades in linear space and gamma-encodes the result (x ** (1 / 2.2)): linear base colour, a lower
    # ambient term and pi * k light intensities (its diffuse term is base / pi) keep the look close to the matplotlib
    # painter's plain Lambert shading.
    scene = pyrender.Scene(bg_color=[1.0, 1.0, 1.0, 1.0], ambient_light=[GL_AMBIENT] * 3)
    scene.add(pyrender.Mesh.from_trimesh(tm, material=material, smooth=True))
    scene.add(pyrender.PerspectiveCamera(yfov=float(YFOV), znear=0.05, zfar=100.0), pose=pose)
    rot = pose[:3, :3]
    for direction, intensity in _lights_world(rot):
        # a directional light shines along its pose's -z axis
        z = -direction
        x = _unit(np.cross([0.0, 1.0, 0.0], z)) if abs(z[1]) < 0.99 else np.array([1.0, 0.0, 0.0])
        lp = np.eye(4)
        lp[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
        scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=GL_LIGHT_GAIN * np.pi * intensity), pose=lp)
    r = gl.state.renderer
    r.viewport_width = size
    r.viewport_height = size
    color, _depth = r.render(scene)
    return np.ascontiguousarray(color[..., :3], dtype=np.uint8)


def _render_matplotlib(
    mesh: trimesh.Trimesh, size: int, azimuth_deg: float, elevation_deg: float, normal_smoothing: int = 0
) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.collections import PolyCollection  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    verts, pose = _normalised_view(mesh, azimuth_deg, elevation_deg)
    rot, eye = pose[:3, :3], pose[:3, 3]
    faces = np.asarray(mesh.faces)
    cam = (verts - eye) @ rot  # x right, y up, z back (points in front have z < 0)
    depth = -cam[:, 2]
    tan = np.tan(YFOV / 2)
    px = (cam[:, 0] / (depth * tan) + 1.0) * size / 2  # same perspective projection as pyrender's camera
    py = (1.0 - cam[:, 1] / (depth * tan)) * size / 2  # rows grow downwards

    tri = verts[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    lengths = np.linalg.norm(normals, axis=1)
    keep = lengths > 0
    normals[keep] /= lengths[keep, None]
    to_eye = eye - tri.mean(axis=1)
    facing = np.einsum("ij,ij->i", normals, to_eye) > 0
    if mesh.is_watertight:  # closed and outward: back faces are hidden anyway
        keep &= facing
    else:  # two-sided: light the side that faces the camera
        normals[~facing] *= -1
    if normal_smoothing:  # shade each face with the mean of its vertices' smoothed normals, on the side it shows
        smooth = shading_normals(trimesh.Trimesh(vertices=verts, faces=faces, process=False), normal_smoothing)
        shade_n = smooth[faces].sum(axis=1)
        n = np.linalg.norm(shade_n, axis=1)
        ok = n > 0
        shade_n[ok] /= n[ok, None]
        shade_n[~ok] = normals[~ok]
        flip = np.einsum("ij,ij->i", shade_n, normals) < 0
        shade_n[flip] *= -1
        normals = shade_n
    faces, normals = faces[keep], normals[keep]
    shade = np.full(len(faces), AMBIENT)
    for direction, intensity in _lights_world(rot):
        shade += intensity * np.clip(normals @ -direction, 0.0, None)
    colors = np.clip(BASE_COLOR[None, :] * shade[:, None], 0.0, 1.0)
    order = np.argsort(-depth[faces].mean(axis=1), kind="stable")  # far to near (painter's algorithm)
    polys = np.stack([px[faces], py[faces]], axis=-1)[order]
    colors = colors[order]

    dpi = 100
    fig = Figure(figsize=(size / dpi, size / dpi), dpi=dpi, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, size)
    ax.set_ylim(size, 0)
    ax.set_axis_off()
    ax.add_collection(PolyCollection(polys, facecolors=colors, edgecolors=colors, linewidths=0.3))
    canvas.draw()
    img = np.asarray(canvas.buffer_rgba())[..., :3]
    out = np.full((size, size, 3), 255, dtype=np.uint8)
    h, w = min(size, img.shape[0]), min(size, img.shape[1])
    out[:h, :w] = img[:h, :w]
    return out


def render_mesh(
    mesh: trimesh.Trimesh,
    size: int = 256,
    backend: str = "auto",
    *,
    azimuth_deg: float = AZIMUTH_DEG,
    elevation_deg: float = ELEVATION_DEG,
    normal_smoothing: int = 0,
) -> np.ndarray:
    """Render ``mesh`` offscreen to an RGB image ``[size, size, 3]`` uint8 on white.

    The mesh is centred and scaled to fit; the camera looks at it from the front-right, slightly above (+y up on
    screen). ``backend``: ``"auto"`` (EGL, then OSMesa, then matplotlib), or one of ``"egl"``, ``"osmesa"``,
    ``"matplotlib"`` (an explicit GL backend that cannot start raises ``RenderUnavailableError``).
    ``normal_smoothing``: rounds of shading-normal averaging (``shading_normals``; 0 = none).
    """
    size = int(size)
    if size < MIN_SIZE or size > MAX_SIZE:
        raise NfdError(f"image size must be in [{MIN_SIZE}, {MAX_SIZE}], got {size}")
    mesh = _check_mesh(mesh)
    which = gl.resolve(backend)
    if which == "matplotlib":
        return _render_matplotlib(mesh, size, azimuth_deg, elevation_deg, normal_smoothing)
    with gl.state.lock:
        return _render_pyrender(mesh, size, azimuth_deg, elevation_deg, normal_smoothing)


def render_mesh_file(
    path: str | Path,
    out_png: str | Path,
    size: int = 256,
    backend: str = "auto",
    normal_smoothing: int = 0,
    **view: float,
) -> None:
    """Load a mesh file and write its rendering to ``out_png`` (atomically)."""
    from PIL import Image  # noqa: PLC0415

    path = Path(path)
    try:
        mesh = trimesh.load(path, force="mesh")
    except Exception as e:  # noqa: BLE001 - trimesh raises many types for a bad file
        raise NfdError(f"{path}: cannot read mesh ({type(e).__name__}: {e})") from e
    try:
        img = render_mesh(mesh, size=size, backend=backend, normal_smoothing=normal_smoothing, **view)
    except RenderUnavailableError:
        raise
    except NfdError as e:
        raise NfdError(f"{path}: {e}") from e
    with atomic_path(out_png) as tmp:
        Image.fromarray(img).save(tmp, format="PNG")


def clear_renders(out: Path) -> list[str]:
    """Remove the PNGs (and temporary PNGs of a killed run) in ``out``: a reused folder must not keep the render of
    a sample that has no mesh this time, which a figure would show as if it belonged to this model."""
    removed = []
    for f in sorted(out.iterdir()) if out.is_dir() else []:
        if f.is_file() and f.name.lower().endswith(".png"):
            f.unlink()
            removed.append(f.name)
    return removed


def _check_view(args: argparse.Namespace) -> None:
    if not MIN_SIZE <= args.size <= MAX_SIZE:
        raise NfdError(f"--size must be in [{MIN_SIZE}, {MAX_SIZE}], got {args.size}")
    if not np.isfinite(args.azimuth):
        raise NfdError(f"--azimuth must be a finite number of degrees, got {args.azimuth}")
    if not (np.isfinite(args.elevation) and abs(args.elevation) < 90):
        raise NfdError(f"--elevation must be strictly between -90 and 90 degrees, got {args.elevation}")


def _cmd_render(args: argparse.Namespace) -> int:
    _check_view(args)
    src = Path(args.meshes)
    if not src.is_dir():
        raise NfdError(f"mesh folder not found: {src}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NfdError(f"output path exists and is not a folder: {out}")
    files = sorted(
        p for p in src.iterdir() if p.is_file() and p.suffix.lower() in MESH_SUFFIXES and not p.name.startswith(".")
    )
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise NfdError(f"{stems[f.stem].name} and {f.name} in {src} would both render to {f.stem}.png")
        stems[f.stem] = f
    cleared = clear_renders(out)  # also when there is nothing to render: old PNGs must not stand in for it
    if cleared:
        print(f"removed {len(cleared)} PNG file(s) of an earlier run from {out}", file=sys.stderr)
    if not files:
        hint = ""
        summary = src / "summary.json"
        if summary.is_file():  # written by `nfd mesh`: say why there is nothing to render
            try:
                info = json.loads(summary.read_text())
                hint = f" (summary.json: {len(info.get('empty', []))} of {info.get('num_samples', '?')} samples empty)"
            except (OSError, ValueError, AttributeError):
                pass
        raise NfdError(f"no mesh files ({', '.join(MESH_SUFFIXES)}) in {src}{hint}")
    t0 = time.perf_counter()
    # the backend's fallback warnings come during the first render: through the bar, so they do not break its line
    with logging_redirect_tqdm(loggers=[logging.getLogger("nfd")]):
        bar = progress_bar(files, desc="render", unit="mesh", enabled=not args.log_quiet)
        for i, f in enumerate(bar):
            render_mesh_file(
                f,
                out / f"{f.stem}.png",
                size=args.size,
                backend=args.backend,
                normal_smoothing=args.normal_smoothing,
                azimuth_deg=args.azimuth,
                elevation_deg=args.elevation,
            )
            if i == 0:
                bar.write(f"rendering with {gl.describe(backend_used() or 'matplotlib')}", file=sys.stderr)
    print(f"rendered {len(files)} meshes to {out} in {time.perf_counter() - t0:.1f}s")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from nfd.cli import int_at_least, verb_help

    _non_negative_int = int_at_least(0)
    p = subparsers.add_parser(
        "render",
        help=verb_help(__name__),
        description=(
            "Render every mesh file (" + ", ".join(MESH_SUFFIXES) + ") in --meshes to OUT/<name>.png, offscreen, "
            "with a fixed camera (front-right, slightly above; +y up, so chairs stand upright), fixed lights and a "
            "white background; each mesh is centred and scaled to fit; shading normals are averaged over "
            "--normal-smoothing rounds of neighbours (creases kept), which hides marching-cubes terraces without "
            "moving the surface. Backends: EGL, then OSMesa, then a "
            "matplotlib painter (auto); the one used is printed. PYOPENGL_PLATFORM, if set, picks the GL platform; "
            "EGL_DEVICE_ID picks the EGL device."
        ),
    )
    p.add_argument("--meshes", required=True, metavar="DIR", help="folder with mesh files (e.g. from `nfd mesh`)")
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output folder for the PNGs (created if missing); PNG files already in it are removed first",
    )
    p.add_argument(
        "--size",
        type=int_at_least(MIN_SIZE),
        default=256,
        help=f"image width and height in pixels, {MIN_SIZE} to {MAX_SIZE} (default: 256)",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="rendering backend (default: auto = egl, then osmesa, then matplotlib)",
    )
    p.add_argument(
        "--normal-smoothing",
        type=_non_negative_int,
        default=NORMAL_SMOOTHING,
        metavar="N",
        help="rounds of shading-normal averaging over edge neighbours within "
        f"{FEATURE_ANGLE_DEG:g} degrees; shading only, the geometry is not moved; 0 = off "
        f"(default: {NORMAL_SMOOTHING})",
    )
    p.add_argument(
        "--azimuth",
        type=float,
        default=AZIMUTH_DEG,
        help=f"camera azimuth in degrees from the front (+z) towards the right (+x) (default: {AZIMUTH_DEG:g})",
    )
    p.add_argument(
        "--elevation",
        type=float,
        default=ELEVATION_DEG,
        help=f"camera elevation in degrees above the horizontal (default: {ELEVATION_DEG:g})",
    )
    p.set_defaults(func=_cmd_render)
