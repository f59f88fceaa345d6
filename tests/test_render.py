"""Offscreen rendering (nfd.viz.render) and the ``nfd render`` verb.

Backend that actually ran on the development machine (no GPU, no display): pyrender on **EGL** through Mesa llvmpipe
(``EGL_EXT_platform_device``, renderer "llvmpipe (LLVM 15.0.6, 256 bits)", Mesa 22.3.6); ``backend="auto"`` picks it.
OSMesa (Debian ``libosmesa6``) was checked by hand and works too. Where neither GL platform works, ``auto`` falls back
to the matplotlib painter, the GL-only tests skip with the reason, and the rest still run.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from nfd.cli import main
from nfd.errors import NfdError
from nfd.viz import gl, render
from nfd.viz.render import RenderUnavailableError, backend_used, render_mesh

REPO = Path(__file__).resolve().parents[1]
SIZE = 96


def _gl_or_skip() -> str:
    """Render once with auto; skip when no GL platform works here (the reason is in the skip message)."""
    img = render_mesh(trimesh.creation.box(), size=16)
    assert img.shape == (16, 16, 3)
    if backend_used() not in ("egl", "osmesa"):
        pytest.skip(f"no GL offscreen platform here ({gl.state.failed or 'see warnings'}); auto used matplotlib")
    return backend_used()


def _mask(img: np.ndarray) -> np.ndarray:
    return np.any(img < 250, axis=-1)


def _t_shape() -> trimesh.Trimesh:
    """A wide flat slab at the bottom and a thin pole rising along +y: upright, it is wide below and narrow above."""
    slab = trimesh.creation.box(
        extents=(1.6, 0.2, 1.6), transform=trimesh.transformations.translation_matrix((0, -0.9, 0))
    )
    pole = trimesh.creation.box(
        extents=(0.2, 1.8, 0.2), transform=trimesh.transformations.translation_matrix((0, 0.1, 0))
    )
    return trimesh.util.concatenate([slab, pole])


def _big_at_plus_x() -> trimesh.Trimesh:
    big = trimesh.creation.box(
        extents=(0.8, 0.8, 0.8), transform=trimesh.transformations.translation_matrix((0.6, 0, 0))
    )
    small = trimesh.creation.box(
        extents=(0.2, 0.2, 0.2), transform=trimesh.transformations.translation_matrix((-0.8, 0, 0))
    )
    return trimesh.util.concatenate([big, small])


def _check_object_centred_on_white(img: np.ndarray, size: int) -> None:
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
    c = size // 2
    centre = img[c - size // 8 : c + size // 8, c - size // 8 : c + size // 8]
    assert _mask(centre).mean() > 0.95  # the object covers the centre
    k = size // 10
    for corner in (img[:k, :k], img[:k, -k:], img[-k:, :k], img[-k:, -k:]):
        assert np.all(corner == 255)  # white background
    shaded = img[_mask(img)]
    assert shaded.std(axis=0).max() > 5  # lit, not a flat silhouette


@pytest.mark.parametrize("backend", ["auto", "matplotlib"])
def test_sphere_renders_centred_on_white(backend):
    img = render_mesh(trimesh.creation.icosphere(subdivisions=3), size=SIZE, backend=backend)
    _check_object_centred_on_white(img, SIZE)
    assert backend_used() in (("egl", "osmesa", "matplotlib") if backend == "auto" else ("matplotlib",))


def test_gl_cube_renders_and_is_fast():
    """A real GL offscreen render (EGL here) of a cube at 256^2."""
    import time

    used = _gl_or_skip()
    t0 = time.perf_counter()
    img = render_mesh(trimesh.creation.box(extents=(1, 1, 1)), size=256)
    elapsed = time.perf_counter() - t0
    assert backend_used() == used
    _check_object_centred_on_white(img, 256)
    assert elapsed < 5.0  # ~0.01-0.1 s on llvmpipe once the context exists


@pytest.mark.parametrize("backend", ["auto", "matplotlib"])
def test_upright_and_not_mirrored(backend):
    """+y is up on screen (the slab is below the pole) and +x is on the right (front-right view)."""
    img = render_mesh(_t_shape(), size=SIZE, backend=backend)
    mask = _mask(img)
    rows = np.nonzero(mask.any(axis=1))[0]
    top, bottom = rows.min(), rows.max()
    quarter = (bottom - top) // 4
    width_top = mask[top : top + quarter].sum(axis=1).max()
    width_bottom = mask[bottom - quarter : bottom + 1].sum(axis=1).max()
    assert width_bottom > 3 * width_top
    # the pole (tall, thin) reaches the upper half of the image
    upper = mask[: SIZE // 2]
    assert upper.sum() > 0.02 * SIZE * SIZE and upper.sum(axis=1).max() < 0.3 * SIZE

    img = render_mesh(_big_at_plus_x(), size=SIZE, backend=backend)
    mask = _mask(img)
    assert mask[:, SIZE // 2 :].sum() > 3 * mask[:, : SIZE // 2].sum()


def test_matplotlib_fallback_matches_gl():
    """The matplotlib painter uses the same camera: its silhouette matches the GL one (IoU)."""
    _gl_or_skip()
    mesh = _t_shape()
    gl = _mask(render_mesh(mesh, size=SIZE, backend="auto"))
    mpl = _mask(render_mesh(mesh, size=SIZE, backend="matplotlib"))
    iou = (gl & mpl).sum() / (gl | mpl).sum()
    assert iou > 0.9


def test_backend_is_remembered_and_reported():
    render_mesh(trimesh.creation.box(), size=16, backend="matplotlib")
    assert backend_used() == "matplotlib"
    render_mesh(trimesh.creation.box(), size=16)
    assert backend_used() in ("egl", "osmesa", "matplotlib")
    with pytest.raises(NfdError, match="unknown render backend"):
        render_mesh(trimesh.creation.box(), backend="vulkan")


def test_auto_falls_back_when_gl_fails(monkeypatch, caplog):
    def no_gl(platform):
        raise RenderUnavailableError(f"pretend {platform} is missing")

    gl._reset_backend()
    monkeypatch.setattr(gl, "_open_gl", no_gl)
    try:
        with caplog.at_level(logging.WARNING, logger="nfd.viz.render"):
            img = render_mesh(trimesh.creation.icosphere(), size=SIZE)
        fallback = r"EGL unavailable \(pretend egl is missing\), falling back to"
        assert sum(bool(re.match(fallback, r.getMessage())) for r in caplog.records) == 1
        assert backend_used() == "matplotlib"
        _check_object_centred_on_white(img, SIZE)
        with pytest.raises(RenderUnavailableError, match="EGL unavailable"):
            render_mesh(trimesh.creation.icosphere(), size=SIZE, backend="egl")
    finally:
        gl._reset_backend()


def test_fallback_chain_in_a_fresh_process(tmp_path):
    """EGL made to fail for real (EGL_DEVICE_ID out of range): the next platform (OSMesa, else matplotlib) renders."""
    code = (
        "import trimesh, numpy as np\n"
        "from nfd.viz import render\n"
        "img = render.render_mesh(trimesh.creation.icosphere(), size=64)\n"
        "assert img.shape == (64, 64, 3) and (img < 250).any() and (img[0, 0] == 255).all()\n"
        "print('BACKEND', render.backend_used())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYOPENGL_PLATFORM"}
    env["EGL_DEVICE_ID"] = "99"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "EGL unavailable (" in proc.stderr and "falling back to" in proc.stderr
    backend = proc.stdout.split("BACKEND")[-1].strip()
    assert backend in ("osmesa", "matplotlib")
    if backend == "matplotlib":
        assert "OSMesa unavailable (" in proc.stderr


def _terraced_sphere(res: int = 40, radius: float = 0.6) -> trimesh.Trimesh:
    from nfd.viz.mesh import extract_mesh

    axis = np.linspace(-1.0, 1.0, res)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    return extract_mesh(np.where(x**2 + y**2 + z**2 < radius**2, 1.0, -1.0).astype(np.float32))


def test_shading_normals_smooth_terraces_keep_creases_and_never_move_the_surface():
    sphere = _terraced_sphere()
    before = sphere.vertices.copy()
    radial = sphere.vertices / np.linalg.norm(sphere.vertices, axis=1, keepdims=True)

    def deviation(normals):
        return np.degrees(np.arccos(np.clip(np.einsum("ij,ij->i", normals, radial), -1, 1))).mean()

    raw = render.shading_normals(sphere, 0)
    smooth = render.shading_normals(sphere, render.NORMAL_SMOOTHING)
    np.testing.assert_allclose(np.linalg.norm(smooth, axis=1), 1.0)
    assert deviation(smooth) < 0.4 * deviation(raw)  # the voxel terraces' normals pulled towards the sphere's
    np.testing.assert_array_equal(sphere.vertices, before)

    # a cube's corners: neighbouring normals 70 degrees apart, beyond the feature angle, so nothing is averaged
    cube = trimesh.creation.box()
    np.testing.assert_allclose(render.shading_normals(cube, 50), cube.vertex_normals)


@pytest.mark.parametrize("backend", ["auto", "matplotlib"])
def test_normal_smoothing_changes_the_shading_not_the_silhouette(backend):
    sphere = _terraced_sphere()
    plain = render_mesh(sphere, size=SIZE, backend=backend)
    smooth = render_mesh(sphere, size=SIZE, backend=backend, normal_smoothing=render.NORMAL_SMOOTHING)
    touched = [np.any(img < 255, axis=-1) for img in (plain, smooth)]  # any coverage, antialiased edges included
    assert np.mean(touched[0] != touched[1]) < 0.002
    assert not np.array_equal(plain, smooth)
    inside = _mask(plain) & _mask(smooth)

    # terraces show as ripples of brightness: the smoothed shading varies less between neighbouring pixels
    def ripple(img):
        g = img.astype(float).mean(axis=-1)
        both = inside[:, 1:] & inside[:, :-1]
        return np.abs(np.diff(g, axis=1))[both].mean()

    assert ripple(smooth) < ripple(plain)


def test_bad_meshes_raise():
    with pytest.raises(NfdError, match="no faces"):
        render_mesh(trimesh.Trimesh())
    with pytest.raises(NfdError, match="size"):
        render_mesh(trimesh.creation.box(), size=2)


def test_cli_render(tmp_path, capsys):
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    trimesh.creation.icosphere().export(meshes / "sample_000.ply")
    _t_shape().export(meshes / "sample_001.obj")
    (meshes / "summary.json").write_text("{}")
    out = tmp_path / "png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["render", "--meshes", str(meshes), "--out", str(out), "--size", "64"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["sample_000.png", "sample_001.png"]  # no temporaries
    for p in out.iterdir():
        img = np.asarray(Image.open(p))
        assert img.shape == (64, 64, 3) and (img < 250).any() and (img[0, 0] == 255).all()
    captured = capsys.readouterr()
    assert "rendering with" in captured.err and "rendered 2 meshes" in captured.out


def test_cli_render_help_and_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["render", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--meshes", "--out", "--size", "--backend", "--normal-smoothing"):
        assert flag in text

    assert main(["render", "--meshes", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not found" in err and len(err.splitlines()) == 1

    (tmp_path / "empty").mkdir()
    assert main(["render", "--meshes", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no mesh files" in capsys.readouterr().err
    (tmp_path / "empty" / "summary.json").write_text('{"num_samples": 4, "empty": [0, 1, 2, 3]}')
    assert main(["render", "--meshes", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "4 of 4 samples empty" in capsys.readouterr().err

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.ply").write_text("ply\nformat nonsense\n")
    assert main(["render", "--meshes", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "broken.ply" in err and len(err.splitlines()) == 1


def test_png_write_is_atomic(tmp_path, monkeypatch):
    """A crash while writing a PNG leaves neither a partial image nor a temporary file."""
    src = tmp_path / "cube.ply"
    trimesh.creation.box().export(src)
    out = tmp_path / "png"
    out.mkdir()

    def broken_save(self, fp, format=None, **kw):
        Path(fp).write_bytes(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        render.render_mesh_file(src, out / "cube.png", size=32, backend="matplotlib")
    assert list(out.iterdir()) == []


def test_cli_render_into_a_reused_folder_keeps_no_old_png(tmp_path, capsys):
    """A render folder reused for a new set of meshes: the PNG of a sample that has no mesh now (and a killed run's
    temporary PNG) must go, or a figure shows an old model's chair in that slot."""
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    trimesh.creation.icosphere().export(meshes / "sample_000.ply")
    out = tmp_path / "png"
    out.mkdir()
    Image.new("RGB", (32, 32), "red").save(out / "sample_000.png")
    Image.new("RGB", (32, 32), "red").save(out / "sample_001.png")  # an earlier run's chair, empty this time
    (out / ".sample_002.png.x8k1.png").write_bytes(b"\x89PNG partial")
    (out / "notes.txt").write_text("keep me")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert (
            main(["render", "--meshes", str(meshes), "--out", str(out), "--size", "32", "--backend", "matplotlib"]) == 0
        )
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "sample_000.png"]
    assert not (np.asarray(Image.open(out / "sample_000.png")) == [255, 0, 0]).all(axis=-1).any()  # re-rendered
    assert "removed 3 PNG file(s) of an earlier run" in capsys.readouterr().err

    # nothing to render at all (every sample empty): the old PNGs go too, and the run fails in one line
    for p in meshes.iterdir():
        p.unlink()
    (meshes / "summary.json").write_text('{"num_samples": 2, "empty": [0, 1]}')
    assert main(["render", "--meshes", str(meshes), "--out", str(out), "--size", "32"]) == 2
    assert "2 of 2 samples empty" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--size", "0"], "argument --size: expected an integer >= 8, got 0"),
        (["--size", "-4"], "argument --size: expected an integer >= 8, got -4"),
        (["--size", "9000"], "--size must be in [8, 8192], got 9000"),
        (["--elevation", "90"], "--elevation must be strictly between -90 and 90 degrees"),
        (["--azimuth", "nan"], "--azimuth must be a finite number of degrees"),
        (["--normal-smoothing", "-1"], "argument --normal-smoothing: expected an integer >= 0"),
    ],
)
def test_cli_render_bad_values_are_one_line_and_delete_nothing(tmp_path, capsys, args, message):
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    trimesh.creation.box().export(meshes / "sample_000.ply")
    out = tmp_path / "png"
    out.mkdir()
    Image.new("RGB", (16, 16)).save(out / "sample_000.png")
    argv = ["render", "--meshes", str(meshes), "--out", str(out), *args]
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own check of the value
        rc = e.code
    assert rc == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and message in err[0], err
    assert (out / "sample_000.png").is_file()


def test_cli_render_refuses_two_meshes_for_one_png(tmp_path, capsys):
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    trimesh.creation.box().export(meshes / "sample_000.ply")
    trimesh.creation.box().export(meshes / "sample_000.obj")
    assert main(["render", "--meshes", str(meshes), "--out", str(tmp_path / "png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "sample_000.obj and sample_000.ply" in err and len(err.splitlines()) == 1
