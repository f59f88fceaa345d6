"""3D data: synthetic chairs (deterministic, upright, varied), `prepare shapenet` (R2N2 layout) and `prepare meshes`."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import torch

from nfd.cli import main
from nfd.data.archive import ArchiveError, safe_extract
from nfd.data.binvox import BinvoxError, encode_binvox
from nfd.data.dataset import PointCloudDataset
from nfd.data.meshes import MeshError, prepare_meshes
from nfd.data.shapenet import ShapeNetError, prepare_shapenet
from nfd.data.synth_chairs import generate_chair, synth_chairs, voxelize_boxes
from nfd.grid import grid_coords

R = 32


def spec_binvox(vox: np.ndarray) -> bytes:
    """Minimal independent encoder (binvox spec: index = x*D*D + z*D + y)."""
    d = vox.shape[0]
    seq = [1 if vox[x, y, z] else 0 for x in range(d) for z in range(d) for y in range(d)]
    body, i = bytearray(), 0
    while i < len(seq):
        n = 1
        while i + n < len(seq) and seq[i + n] == seq[i] and n < 255:
            n += 1
        body += bytes([seq[i], n])
        i += n
    return b"#binvox 1\ndim %d %d %d\ntranslate 0 0 0\nscale 1\ndata\n" % (d, d, d) + bytes(body)


def upright_report(vox: np.ndarray) -> dict:
    """Facts that hold for an upright chair facing +z (backrest at -z), grid axes x, y (up), z."""
    layers = vox.sum(axis=(0, 2))  # occupied cells per y layer
    ys = np.flatnonzero(layers)
    ymin, ymax = ys[0], ys[-1]
    seat_y = int(np.argmax(layers))
    top_z = np.nonzero(vox[:, ymax, :])[1]
    floor_z = np.nonzero(vox[:, ymin, :])[1]
    return {
        "seat_low": seat_y < ymin + 0.75 * (ymax - ymin),  # the seat (widest layer) is in the lower part
        "back_on_top": top_z.max() < R / 2,  # the highest layer is the backrest, all at the back (-z side)
        "stands_on_floor": floor_z.min() < R / 2 <= floor_z.max(),  # legs/base touch the floor front and back
        "narrow_base": layers[ymin] < layers[seat_y],  # ... and are narrower than the seat
    }


@pytest.fixture(scope="module")
def chairs_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    synth_chairs(10, 5, d)
    return d


def test_synth_deterministic_by_seed(tmp_path, chairs_dir):
    synth_chairs(10, 5, tmp_path / "again")
    assert (tmp_path / "again/ShapeNetVox32.tgz").read_bytes() == (chairs_dir / "ShapeNetVox32.tgz").read_bytes()
    a = sorted(p.name for p in (chairs_dir / "meshes").iterdir())
    assert a == sorted(p.name for p in (tmp_path / "again/meshes").iterdir()) and len(a) == 10
    assert (chairs_dir / "meshes" / a[3]).read_bytes() == (tmp_path / "again/meshes" / a[3]).read_bytes()
    synth_chairs(10, 6, tmp_path / "other", write_meshes=False)
    assert (tmp_path / "other/ShapeNetVox32.tgz").read_bytes() != (chairs_dir / "ShapeNetVox32.tgz").read_bytes()
    # chair i depends on (seed, i) only
    a, b = voxelize_boxes(generate_chair(5, 3).boxes), voxelize_boxes(generate_chair(5, 3).boxes)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(voxelize_boxes(generate_chair(5, 3).boxes), voxelize_boxes(generate_chair(6, 3).boxes))


def test_synth_chairs_upright_and_varied():
    parts, voxels = [], []
    for i in range(60):
        chair = generate_chair(0, i)
        vox = voxelize_boxes(chair.boxes)
        assert vox.shape == (R, R, R) and vox.any()
        rep = upright_report(vox)
        assert all(rep.values()), (chair.id, chair.parts, rep)
        if not chair.parts["wide"]:  # height is the longest side: fills the grid from floor to top
            ys = np.flatnonzero(vox.any(axis=(0, 2)))
            assert ys[0] == 0 and ys[-1] == R - 1
        flipped = upright_report(vox[:, ::-1, :])  # an upside-down chair fails the test
        assert not all(flipped.values())
        parts.append(chair.parts)
        voxels.append(vox)
    assert {p["base"] for p in parts} == {"legs4", "pedestal", "panels"}
    assert {p["back"] for p in parts} == {"solid", "vslats", "hslats"}
    assert any(p["arms"] for p in parts) and not all(p["arms"] for p in parts)
    flat = np.stack(voxels).reshape(60, -1)
    assert len({row.tobytes() for row in flat}) == 60  # all different
    fill = flat.mean(axis=1)
    assert 0.02 < fill.min() and fill.max() < 0.4


def test_prepare_shapenet_from_synth_tgz_and_folder(tmp_path, chairs_dir):
    out = tmp_path / "chairs.h5"
    rc = main(
        [
            "data",
            "prepare",
            "shapenet",
            "--source",
            str(chairs_dir / "ShapeNetVox32.tgz"),
            "--out",
            str(out),
            "--quiet",
            "--val-frac",
            "0",
            "--test-frac",
            "0",
        ]
    )
    assert rc == 0
    ds = PointCloudDataset(out, split="train", num_points=4096)
    assert len(ds) == 10 and ds.grid_shape == (R, R, R) and ds.coord_dim == 3 and ds.feature_dim == 1
    torch.testing.assert_close(ds.coords, grid_coords(R, 3))
    for i in range(10):
        expected = voxelize_boxes(generate_chair(5, i).boxes)
        np.testing.assert_array_equal(ds.full_grid(i).numpy()[..., 0] > 0, expected)
    c, y = ds[0]
    assert c.shape == (4096, 3) and set(np.unique(y.numpy()).tolist()) <= {-1.0, 1.0}
    # the extracted folder gives the same features
    safe_extract(chairs_dir / "ShapeNetVox32.tgz", tmp_path / "raw")
    out2 = tmp_path / "chairs2.h5"
    prepare_shapenet(tmp_path / "raw", out2, val_frac=0, test_frac=0)
    torch.testing.assert_close(PointCloudDataset(out2, "all").read(range(10)), ds.read(range(10)))


def test_prepare_meshes_matches_binvox_path(tmp_path, chairs_dir):
    meshes = tmp_path / "m"
    meshes.mkdir()
    names = sorted(p.name for p in (chairs_dir / "meshes").iterdir())[:3]
    for n in names:
        (meshes / n).write_bytes((chairs_dir / "meshes" / n).read_bytes())
    out = tmp_path / "meshes.h5"
    s = prepare_meshes(meshes, out, val_frac=0, test_frac=0)
    assert s["num_examples"] == 3 and s["skipped"] == [] and s["not_watertight"] == []
    ds = PointCloudDataset(out, "all")
    for i in range(3):
        got = ds.full_grid(i).numpy()[..., 0] > 0
        expected = voxelize_boxes(generate_chair(5, i).boxes)
        iou = (got & expected).sum() / (got | expected).sum()
        assert iou > 0.97, iou


def test_axis_order_through_prepare(tmp_path):
    """An asymmetric binvox (spec encoder) lands on the grid as (x, y, z) with y = axis 1."""
    vox = np.zeros((R, R, R), bool)
    vox[3, 0:20, 7] = True  # a post along y
    vox[3:9, 0, 7] = True  # a foot along x
    vox[3, 0, 7:12] = True  # a foot along z (shorter)
    d = tmp_path / "ShapeNetVox32" / "03001627" / "m1"
    d.mkdir(parents=True)
    (d / "model.binvox").write_bytes(spec_binvox(vox))
    out = tmp_path / "a.h5"
    prepare_shapenet(tmp_path, out, val_frac=0, test_frac=0)
    ds = PointCloudDataset(out, "all")
    occ = ds.read([0])[0, :, 0].numpy() > 0
    pts = ds.coords.numpy()[occ]
    lin = np.linspace(-1, 1, R)
    # extents per axis: x spans 6 cells, y 20 cells, z 5 cells
    for axis, n in ((0, 6), (1, 20), (2, 5)):
        np.testing.assert_allclose(np.unique(pts[:, axis]), lin[[3, 0, 7][axis] + np.arange(n)], atol=1e-6)
    assert np.array_equal(ds.full_grid(0).numpy()[..., 0] > 0, vox)


def test_bad_shapenet_inputs(tmp_path, capsys):
    root = tmp_path / "ShapeNetVox32" / "03001627"
    (root / "good").mkdir(parents=True)
    (root / "good" / "model.binvox").write_bytes(encode_binvox(np.ones((R, R, R), bool)))
    (root / "small").mkdir()
    (root / "small" / "model.binvox").write_bytes(encode_binvox(np.ones((16, 16, 16), bool)))
    out = tmp_path / "out.h5"
    with pytest.raises(BinvoxError, match=r"small/model\.binvox: wrong size: binvox is 16\^3, expected 32\^3"):
        prepare_shapenet(tmp_path, out)
    assert not out.exists()
    (root / "small" / "model.binvox").write_bytes(b"#binvax 1\n")
    rc = main(["data", "prepare", "shapenet", "--source", str(tmp_path), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "small/model.binvox: bad binvox header" in err[0] and not out.exists()
    s = prepare_shapenet(tmp_path, out, skip_bad=True, val_frac=0, test_frac=0)
    assert s["num_examples"] == 1 and "small/model.binvox" in s["skipped"][0]
    with pytest.raises(ShapeNetError, match="no 02691156/<model_id>/model.binvox files"):
        prepare_shapenet(tmp_path, tmp_path / "planes.h5", synset="02691156")
    # archives: unsafe member, truncation
    evil = tmp_path / "evil.tgz"
    with tarfile.open(evil, "w:gz") as tf:
        for name in ("ShapeNetVox32/03001627/a/model.binvox", "../../escape/model.binvox"):
            data = encode_binvox(np.zeros((R, R, R), bool))
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with pytest.raises(ArchiveError, match=r"evil\.tgz: unsafe member '\.\./\.\./escape/model\.binvox'"):
        prepare_shapenet(evil, tmp_path / "e.h5")
    good = tmp_path / "ok.tgz"
    synth_chairs(3, 0, tmp_path / "s", write_meshes=False)
    data = (tmp_path / "s" / "ShapeNetVox32.tgz").read_bytes()
    good.write_bytes(data[: len(data) - 40])
    with pytest.raises(ArchiveError, match=r"ok\.tgz: truncated or corrupt archive"):
        prepare_shapenet(good, tmp_path / "t.h5")
    assert not (tmp_path / "e.h5").exists() and not (tmp_path / "t.h5").exists()


def test_bad_meshes_skipped_and_reported(tmp_path, capsys):
    import trimesh

    src = tmp_path / "meshes"
    (src / "a").mkdir(parents=True)
    tall = trimesh.creation.box(extents=(0.2, 0.2, 1.0))  # tall along z: a z-up post
    tall.export(src / "a" / "model.obj")
    (src / "empty.obj").write_text("# nothing here\n")
    (src / "garbage.off").write_text("OFF\n3 1 0\n0 0 0\n")
    open_box = trimesh.creation.box(extents=(1.0, 0.5, 0.5))
    open_box = trimesh.Trimesh(open_box.vertices, open_box.faces[2:])  # one side missing: not watertight
    open_box.export(src / "open.ply")
    out = tmp_path / "m.h5"
    rc = main(
        [
            "data",
            "prepare",
            "meshes",
            "--source",
            str(src),
            "--out",
            str(out),
            "--quiet",
            "--up-axis",
            "z",
            "--val-frac",
            "0",
            "--test-frac",
            "0",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0 and "skipped 2" in err and "empty.obj" in err and "garbage.off" in err and "open.ply" in err
    ds = PointCloudDataset(out, "all")
    assert len(ds) == 2 and ds.attrs["num_skipped"] == 2 and ds.attrs["num_not_watertight"] == 1
    post = ds.full_grid(0).numpy()[..., 0] > 0  # a/model.obj, z-up -> stands along y
    ext = [np.ptp(np.nonzero(post)[a]) + 1 for a in range(3)]
    assert ext[1] == R and ext[0] < 10 and ext[2] < 10
    assert post.sum() == np.prod(ext)  # solid fill
    bad_only = tmp_path / "bad"
    bad_only.mkdir()
    (bad_only / "e.obj").write_text("")
    with pytest.raises(MeshError, match=r"bad: no mesh could be voxelised \(1 skipped, e.g. e\.obj: "):
        prepare_meshes(bad_only, tmp_path / "b.h5")
    no_meshes = tmp_path / "no_meshes"
    no_meshes.mkdir()
    (no_meshes / "readme.txt").write_text("not a mesh")
    with pytest.raises(MeshError, match=r"no_meshes: no mesh files"):
        prepare_meshes(no_meshes, tmp_path / "c.h5")
    assert not (tmp_path / "b.h5").exists() and not (tmp_path / "c.h5").exists()


def test_synth_chairs_cli(tmp_path, capsys):
    out = tmp_path / "sc"
    assert main(["data", "synth-chairs", "--num", "4", "--seed", "1", "--out", str(out), "--quiet"]) == 0
    assert "wrote 4 chairs" in capsys.readouterr().out
    assert (out / "manifest.json").is_file() and len(list((out / "meshes").glob("*.ply"))) == 4
    assert main(["data", "synth-chairs", "--num", "0", "--out", str(out)]) == 2


def test_prepare_from_file_url_and_output_mode(tmp_path, chairs_dir, monkeypatch):
    import os

    monkeypatch.chdir(tmp_path)  # URL sources are cached under ./data/raw/downloads
    url = (chairs_dir / "ShapeNetVox32.tgz").as_uri()
    out = tmp_path / "u.h5"
    assert main(["data", "prepare", "shapenet", "--source", url, "--out", str(out), "--quiet"]) == 0
    assert (tmp_path / "data/raw/downloads/ShapeNetVox32.tgz").is_file() and len(PointCloudDataset(out, "all")) == 10
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
