"""Marching cubes (nfd.viz.mesh): geometry against analytic shapes, axes, empties, export and the ``nfd mesh`` verb."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh

from nfd.cli import main
from nfd.errors import NfdError
from nfd.viz.mesh import (
    SMOOTH_ITERATIONS,
    EmptySurfaceError,
    export_meshes,
    extract_mesh,
    point_to_surface_distance,
    smooth_mesh,
    surface_chamfer,
)

RADIUS = 0.6


def _grid(res: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel centres with the contract's axes: axis 0 = x, 1 = y, 2 = z, index i -> -1 + 2 i / (R - 1)."""
    axis = np.linspace(-1.0, 1.0, res)
    return np.meshgrid(axis, axis, axis, indexing="ij")


def _sphere_sdf(res: int, radius: float = RADIUS) -> np.ndarray:
    x, y, z = _grid(res)
    return (radius - np.sqrt(x**2 + y**2 + z**2)).astype(np.float32)  # inside positive


def _box_field(res: int, lo, hi) -> np.ndarray:
    """Inside-positive field of an axis-aligned box (min over its six half-spaces; linear near each face)."""
    x, y, z = _grid(res)
    parts = [x - lo[0], hi[0] - x, y - lo[1], hi[1] - y, z - lo[2], hi[2] - z]
    return np.minimum.reduce(parts).astype(np.float32)


@pytest.mark.parametrize("res", [32, 64])
def test_sphere_sdf_area_volume_and_radius(res):
    mesh = extract_mesh(_sphere_sdf(res))
    voxel = 2.0 / (res - 1)
    radii = np.linalg.norm(mesh.vertices, axis=1)
    assert np.all(np.abs(radii - RADIUS) < voxel)
    assert mesh.area == pytest.approx(4 * np.pi * RADIUS**2, rel=0.02)
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * RADIUS**3, rel=0.02)
    assert mesh.is_watertight


@pytest.mark.parametrize("res", [32, 64])
def test_sphere_occupancy_is_closed_and_outward(res):
    x, y, z = _grid(res)
    occ = np.where(x**2 + y**2 + z**2 < RADIUS**2, 1.0, -1.0).astype(np.float32)  # like sampled features in [-1, 1]
    mesh = extract_mesh(occ)
    voxel = 2.0 / (res - 1)
    radii = np.linalg.norm(mesh.vertices, axis=1)
    assert np.all(np.abs(radii - RADIUS) < voxel)
    assert mesh.is_watertight
    assert mesh.volume > 0  # outward winding
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * RADIUS**3, rel=0.04)
    # binary data gives a chamfered surface: its area is a little larger than the sphere's, never smaller
    assert 1.0 < mesh.area / (4 * np.pi * RADIUS**2) < 1.12
    dots = np.einsum("ij,ij->i", mesh.vertex_normals, mesh.vertices)
    assert dots.mean() > 0.9 * RADIUS and np.mean(dots > 0) > 0.99


def _normal_deviation_deg(mesh: trimesh.Trimesh) -> float:
    """Mean angle between the vertex normals and the sphere's analytic normal (the radial direction)."""
    radial = mesh.vertices / np.linalg.norm(mesh.vertices, axis=1, keepdims=True)
    cos = np.clip(np.einsum("ij,ij->i", mesh.vertex_normals, radial), -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)).mean())


@pytest.mark.parametrize("res", [32, 48])
def test_smoothing_a_voxelised_sphere_removes_terraces_and_keeps_the_shape(res):
    """A binary sphere (like near-binary sampled occupancies) meshes into one-voxel terraces; the default smoothing
    flattens them (radii and normals closer to the sphere's) while the surface moves by a small fraction of a voxel
    and the volume stays put."""
    x, y, z = _grid(res)
    occ = np.where(x**2 + y**2 + z**2 < RADIUS**2, 1.0, -1.0).astype(np.float32)
    raw = extract_mesh(occ)
    smooth = smooth_mesh(raw, SMOOTH_ITERATIONS)
    voxel = 2.0 / (res - 1)

    assert np.array_equal(smooth.faces, raw.faces) and smooth.is_watertight
    r_raw, r_smooth = (np.linalg.norm(m.vertices, axis=1) for m in (raw, smooth))
    assert r_smooth.std() < 0.7 * r_raw.std()  # terraces: spread of radii down
    assert np.abs(r_smooth - RADIUS).mean() < 0.7 * np.abs(r_raw - RADIUS).mean()
    assert _normal_deviation_deg(smooth) < 0.6 * _normal_deviation_deg(raw)  # normals closer to the analytic ones
    assert surface_chamfer(smooth, raw) < 0.25 * voxel  # the shape stays where it was
    assert smooth.volume == pytest.approx(raw.volume, rel=0.01)  # Taubin does not shrink it
    assert smooth.volume == pytest.approx(4 / 3 * np.pi * RADIUS**3, rel=0.04)


def test_smoothing_zero_iterations_is_the_identity_and_bad_parameters_raise():
    raw = extract_mesh(_sphere_sdf(24))
    same = smooth_mesh(raw, 0)
    np.testing.assert_array_equal(same.vertices, raw.vertices)
    assert same is not raw
    with pytest.raises(NfdError, match=">= 0"):
        smooth_mesh(raw, -1)
    with pytest.raises(NfdError, match="mu < -lambda"):
        smooth_mesh(raw, 2, lamb=0.5, mu=-0.4)


def test_point_to_surface_distance_is_exact_on_a_box():
    box = trimesh.creation.box(extents=(2.0, 2.0, 2.0))  # [-1, 1]^3, 12 large triangles
    rng = np.random.default_rng(0)
    pts = rng.uniform(-2.0, 2.0, size=(2000, 3))
    outside = np.linalg.norm(np.maximum(np.abs(pts) - 1.0, 0.0), axis=1)
    inside = np.min(1.0 - np.abs(pts), axis=1)
    expected = np.where(np.all(np.abs(pts) <= 1.0, axis=1), inside, outside)
    np.testing.assert_allclose(point_to_surface_distance(pts, box), expected, atol=1e-12)


def test_surface_chamfer_is_zero_for_the_same_surface_and_measures_an_offset():
    mesh = extract_mesh(_sphere_sdf(32))
    assert surface_chamfer(mesh, mesh.copy()) < 1e-12
    moved = mesh.copy()
    moved.apply_translation([0.01, 0.0, 0.0])
    # a small shift of a sphere: mean distance to the other surface = 0.01 * mean |cos| over the sphere = 0.005
    assert surface_chamfer(moved, mesh) == pytest.approx(0.005, rel=0.05)


def test_level_moves_the_surface():
    mesh = extract_mesh(_sphere_sdf(48), level=0.2)  # {r - |p| > 0.2}: a sphere of radius r - 0.2
    assert np.median(np.linalg.norm(mesh.vertices, axis=1)) == pytest.approx(RADIUS - 0.2, abs=0.01)


def test_axes_are_kept():
    """A box that sits high in y, right in x and back in z stays there: no axis swapped or flipped."""
    lo, hi = (-0.2, 0.5, -0.8), (0.6, 0.9, -0.4)
    res = 40
    mesh = extract_mesh(_box_field(res, lo, hi))
    voxel = 2.0 / (res - 1)
    np.testing.assert_allclose(mesh.vertices.min(axis=0), lo, atol=voxel / 2)
    np.testing.assert_allclose(mesh.vertices.max(axis=0), hi, atol=voxel / 2)
    top = mesh.vertices[np.argmax(mesh.vertices[:, 1])]
    assert top[1] == pytest.approx(0.9, abs=voxel / 2)


def test_index_to_coordinate_mapping_is_exact():
    """A linear field crosses its level exactly where the plane is: x = 0.3 at every vertex of that face."""
    res = 21
    x, _, _ = _grid(res)
    mesh = extract_mesh((0.3 - x).astype(np.float32))  # inside: x < 0.3
    on_plane = mesh.vertices[np.abs(mesh.vertices[:, 0] - 0.3) < 0.05]
    assert len(on_plane) > res  # the face is there
    np.testing.assert_allclose(on_plane[:, 0], 0.3, atol=1e-5)
    half_voxel = 1.0 / (res - 1)
    assert -1.0 - half_voxel - 1e-6 <= mesh.vertices[:, 0].min() < -1.0  # the boundary cap: within half a voxel


def test_shape_touching_the_boundary_is_closed():
    res = 32
    _, y, _ = _grid(res)
    occ = np.where(y > 0.0, 1.0, -1.0).astype(np.float32)  # the whole top half, touching five faces of the grid
    mesh = extract_mesh(occ)
    assert mesh.is_watertight
    half_voxel = 1.0 / (res - 1)
    # about 2 x 1 x 2, grown by up to half a voxel on the five capped sides
    assert 4.0 < mesh.volume < (2 + 2 * half_voxel) ** 2 * (1 + half_voxel) + 1e-6


@pytest.mark.parametrize("fill", [-1.0, 0.0])
def test_empty_volume_raises(fill):
    with pytest.raises(EmptySurfaceError, match="no surface"):
        extract_mesh(np.full((16, 16, 16), fill, dtype=np.float32))
    assert issubclass(EmptySurfaceError, NfdError)


@pytest.mark.parametrize(
    "bad", [np.zeros((8, 8)), np.zeros((8, 8, 8, 2)), np.full((8, 8, 8), np.nan), np.zeros((1, 8, 8))]
)
def test_bad_volume_raises(bad):
    with pytest.raises(NfdError):
        extract_mesh(bad)


def _write_samples(path, res=24, coord_dim=3):
    sphere = np.clip(_sphere_sdf(res, 0.5) * 10, -1, 1)
    box = np.where(_box_field(res, (-0.5, 0.2, -0.5), (0.5, 0.8, 0.5)) > 0, 1.0, -1.0)
    empty = np.full((res, res, res), -1.0)
    feats = np.stack([sphere, empty, box])[..., None].astype(np.float32)
    np.savez(
        path,
        features=feats,
        latents=np.zeros((3, 4), np.float32),
        resolution=res,
        coord_dim=coord_dim,
        feature_dim=1,
        seed=7,
        preset="test",
    )


@pytest.mark.parametrize("fmt", ["ply", "obj"])
def test_export_meshes_writes_files_and_summary(tmp_path, fmt):
    samples = tmp_path / "samples.npz"
    _write_samples(samples)
    out = tmp_path / "meshes"
    out.mkdir()
    (out / "sample_001.ply").write_text("stale")  # an earlier run's mesh for what is now an empty sample
    (out / "sample_009.ply").write_text("stale")  # beyond this run's samples
    (out / "sample_001.obj").write_text("stale")  # another format: render would show it as well
    (out / ".sample_003.ply.k2j4.ply").write_text("partial")  # a killed run's temporary file
    (out / "notes.txt").write_text("keep me")
    cleared: list[str] = []
    summary = export_meshes(samples, out, fmt=fmt, cleared=cleared)

    files = sorted(p.name for p in out.iterdir())
    # every mesh of the earlier run is gone, whatever its format; files that are not ours stay
    assert files == sorted([f"sample_000.{fmt}", f"sample_002.{fmt}", "summary.json", "notes.txt"])
    assert cleared == [".sample_003.ply.k2j4.ply", "sample_001.obj", "sample_001.ply", "sample_009.ply"]

    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary
    assert summary["empty"] == [1]
    assert summary["num_samples"] == 3 and summary["num_meshes"] == 2 and summary["resolution"] == 24
    assert summary["format"] == fmt and summary["level"] == 0.0 and summary["seed"] == 7
    for rec in summary["samples"]:
        if rec["empty"]:
            assert rec["file"] is None and rec["faces"] == 0
            continue
        mesh = trimesh.load(out / rec["file"], force="mesh", process=False)
        assert len(mesh.faces) == rec["faces"] > 0
        assert rec["watertight"]
    box = trimesh.load(out / f"sample_002.{fmt}", force="mesh")
    assert box.vertices[:, 1].min() > 0.1  # axes survive the round trip through the file


def test_export_meshes_smoothing_is_recorded_with_its_chamfer_distance(tmp_path):
    samples = tmp_path / "samples.npz"
    _write_samples(samples)
    raw = export_meshes(samples, tmp_path / "raw")
    assert raw["smoothing"]["iterations"] == 0 and raw["smoothing"]["chamfer_to_unsmoothed"] is None
    assert all("chamfer_to_unsmoothed" not in r for r in raw["samples"])

    summary = export_meshes(samples, tmp_path / "smooth", smooth_iterations=SMOOTH_ITERATIONS)
    sm = summary["smoothing"]
    assert sm["method"] == "taubin" and sm["iterations"] == SMOOTH_ITERATIONS
    assert sm["lambda"] > 0 > sm["mu"]
    meshed = [r for r in summary["samples"] if not r["empty"]]
    per_mesh = [r["chamfer_to_unsmoothed"] for r in meshed]
    assert len(per_mesh) == 2 and all(0 < c < 0.01 for c in per_mesh)
    assert sm["chamfer_to_unsmoothed"]["mean"] == pytest.approx(np.mean(per_mesh))
    assert sm["chamfer_to_unsmoothed"]["max"] == pytest.approx(max(per_mesh))
    assert 0 < sm["chamfer_to_unsmoothed"]["max_voxels"] < 0.5
    assert "bounding-box diagonal" in sm["chamfer_to_unsmoothed"]["definition"]
    for rec in meshed:  # same triangles, moved vertices, still closed
        a = trimesh.load(tmp_path / "raw" / rec["file"], force="mesh", process=False)
        b = trimesh.load(tmp_path / "smooth" / rec["file"], force="mesh", process=False)
        assert np.array_equal(a.faces, b.faces) and not np.allclose(a.vertices, b.vertices) and rec["watertight"]
    assert json.loads((tmp_path / "smooth" / "summary.json").read_text()) == summary


def test_cli_mesh_smooths_by_default_and_prints_the_chamfer_distance(tmp_path, capsys):
    samples = tmp_path / "samples.npz"
    _write_samples(samples)
    assert main(["mesh", "--samples", str(samples), "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert f"Taubin smoothing, {SMOOTH_ITERATIONS} iterations" in out and "Chamfer distance" in out
    assert "bounding-box diagonal" in out and "voxels" in out
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["smoothing"]["iterations"] == SMOOTH_ITERATIONS
    assert main(["mesh", "--samples", str(samples), "--out", str(tmp_path / "b"), "--smooth-iterations", "0"]) == 0
    assert "no smoothing" in capsys.readouterr().out
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["smoothing"]["method"] == "none"
    with pytest.raises(SystemExit) as exc:
        main(["mesh", "--samples", str(samples), "--out", str(tmp_path / "c"), "--smooth-iterations", "-1"])
    assert exc.value.code == 2 and ">= 0" in capsys.readouterr().err


def test_export_is_atomic(tmp_path, monkeypatch):
    """A crash while writing a mesh leaves neither a partial file nor a temporary one."""
    samples = tmp_path / "samples.npz"
    _write_samples(samples)
    out = tmp_path / "meshes"

    def broken_export(self, file_obj=None, file_type=None, **kw):
        with open(file_obj, "w") as f:
            f.write("partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(trimesh.Trimesh, "export", broken_export)
    with pytest.raises(RuntimeError, match="disk full"):
        export_meshes(samples, out)
    assert list(out.iterdir()) == []


def test_cli_mesh(tmp_path, capsys):
    samples = tmp_path / "samples.npz"
    _write_samples(samples)
    out = tmp_path / "m"
    assert main(["mesh", "--samples", str(samples), "--out", str(out), "--format", "obj", "--level", "0.0"]) == 0
    assert (out / "sample_000.obj").is_file() and (out / "summary.json").is_file()
    assert "1 sample(s) had no surface" in capsys.readouterr().out


def test_cli_mesh_into_a_reused_folder_keeps_nothing_of_the_earlier_run(tmp_path, capsys):
    """A folder meshed from another model's samples (all 3 have a surface there) and now from samples whose second
    is empty: its old mesh must not survive to be rendered in that slot."""
    out = tmp_path / "m"
    full = tmp_path / "full.npz"
    np.savez(
        full,
        features=np.stack([np.clip(_sphere_sdf(24, 0.5) * 10, -1, 1)] * 3)[..., None].astype(np.float32),
        coord_dim=3,
    )
    assert main(["mesh", "--samples", str(full), "--out", str(out), "--smooth-iterations", "0"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "sample_000.ply",
        "sample_001.ply",
        "sample_002.ply",
        "summary.json",
    ]
    capsys.readouterr()
    samples = tmp_path / "samples.npz"
    _write_samples(samples)  # sample 1 is empty
    assert (
        main(["mesh", "--samples", str(samples), "--out", str(out), "--format", "obj", "--smooth-iterations", "0"]) == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["sample_000.obj", "sample_002.obj", "summary.json"]
    assert "first removed 4 file(s) of an earlier run" in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["empty"] == [1]


def test_cli_mesh_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["mesh", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--samples", "--out", "--level", "--format", "--smooth-iterations", "summary.json"):
        assert flag in text


def _errors_of(argv, capsys):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    return rc, err


def test_cli_mesh_errors(tmp_path, capsys):
    rc, err = _errors_of(["mesh", "--samples", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "not found" in err and "nope.npz" in err and len(err.splitlines()) == 1

    flat = tmp_path / "images.npz"  # 2D image samples
    np.savez(flat, features=np.zeros((2, 8, 8, 3), np.float32), coord_dim=2)
    rc, err = _errors_of(["mesh", "--samples", str(flat), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "3D" in err and len(err.splitlines()) == 1

    nokey = tmp_path / "other.npz"
    np.savez(nokey, x=np.zeros(3))
    rc, err = _errors_of(["mesh", "--samples", str(nokey), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "'features'" in err and len(err.splitlines()) == 1

    junk = tmp_path / "junk.npz"
    junk.write_text("not a zip")
    rc, err = _errors_of(["mesh", "--samples", str(junk), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "junk.npz" in err and len(err.splitlines()) == 1

    good = tmp_path / "good.npz"
    _write_samples(good)
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "sample_000.ply").write_text("an earlier run")
    rc, err = _errors_of(["mesh", "--samples", str(good), "--out", str(kept), "--level", "nan"], capsys)
    assert rc == 2 and "--level must be a finite number" in err and len(err.splitlines()) == 1
    assert (kept / "sample_000.ply").read_text() == "an earlier run"  # a bad value deletes nothing
    rc, err = _errors_of(["mesh", "--samples", str(good), "--out", str(good)], capsys)
    assert rc == 2 and "not a folder" in err and len(err.splitlines()) == 1
