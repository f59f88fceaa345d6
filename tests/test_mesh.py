"""Marching cubes (nfd.mesh): geometry against analytic shapes, axes, empties, export and the ``nfd mesh`` verb."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh

from nfd.cli import main
from nfd.errors import NfdError
from nfd.mesh import EmptySurfaceError, export_meshes, extract_mesh

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


@pytest.mark.parametrize("bad", [np.zeros((8, 8)), np.zeros((8, 8, 8, 2)), np.full((8, 8, 8), np.nan), np.zeros((1, 8, 8))])
def test_bad_volume_raises(bad):
    with pytest.raises(NfdError):
        extract_mesh(bad)


def _write_samples(path, res=24, coord_dim=3):
    sphere = np.clip(_sphere_sdf(res, 0.5) * 10, -1, 1)
    box = np.where(_box_field(res, (-0.5, 0.2, -0.5), (0.5, 0.8, 0.5)) > 0, 1.0, -1.0)
    empty = np.full((res, res, res), -1.0)
    feats = np.stack([sphere, empty, box])[..., None].astype(np.float32)
    np.savez(path, features=feats, latents=np.zeros((3, 4), np.float32), resolution=res, coord_dim=coord_dim,
             feature_dim=1, seed=7, preset="test")


@pytest.mark.parametrize("fmt", ["ply", "obj"])
def test_export_meshes_writes_files_and_summary(tmp_path, fmt):
    samples = tmp_path / "samples.npz"
    _write_samples(samples)
    out = tmp_path / "meshes"
    out.mkdir()
    (out / "sample_001.ply").write_text("stale")  # an earlier run's mesh for what is now an empty sample
    (out / "sample_009.ply").write_text("stale")  # beyond this run's samples
    (out / "sample_001.obj").write_text("stale")
    (out / "notes.txt").write_text("keep me")
    summary = export_meshes(samples, out, fmt=fmt)

    files = sorted(p.name for p in out.iterdir())
    expected = {f"sample_000.{fmt}", f"sample_002.{fmt}", "summary.json", "notes.txt"}
    other = "obj" if fmt == "ply" else "ply"
    assert expected <= set(files)
    assert f"sample_001.{fmt}" not in files  # stale mesh of an empty sample removed
    assert ("sample_009.ply" in files) == (fmt != "ply")  # stale mesh beyond this run removed (same format only)
    assert f"sample_001.{other}" in files  # the other format's files are left alone
    assert not [f for f in files if f.startswith(".")]  # no temporary files left behind

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


def test_cli_mesh_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["mesh", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--samples", "--out", "--level", "--format", "summary.json"):
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
