"""binvox reader/writer: round trips against an independent minimal encoder, axis order, bad files."""

from __future__ import annotations

import io

import numpy as np
import pytest

from nfd.data.binvox import BinvoxError, encode_binvox, read_binvox


def naive_binvox(vox: np.ndarray, header: bytes | None = None) -> bytes:
    """Independent encoder written from the spec: y fastest, then z, then x; (value, count<=255) byte pairs."""
    d = vox.shape[0]
    seq = [1 if vox[x, y, z] else 0 for x in range(d) for z in range(d) for y in range(d)]
    body = bytearray()
    i = 0
    while i < len(seq):
        v, n = seq[i], 1
        while i + n < len(seq) and seq[i + n] == v and n < 255:
            n += 1
        body += bytes([v, n])
        i += n
    if header is None:
        header = b"#binvox 1\ndim %d %d %d\ntranslate 0.5 -1 2\nscale 3.5\ndata\n" % (d, d, d)
    return header + bytes(body)


def asymmetric(d: int = 8) -> np.ndarray:
    """A shape whose three axes are distinguishable: an L in x-y plus a single voxel far along z."""
    v = np.zeros((d, d, d), dtype=bool)
    v[0:5, 0, 0] = True  # 5 along x
    v[0, 0:3, 0] = True  # 3 along y
    v[1, 2, d - 1] = True  # one voxel at x=1, y=2, z=d-1
    return v


def test_reader_matches_independent_encoder_asymmetric():
    vox = asymmetric(8)
    bv = read_binvox(naive_binvox(vox), name="asym.binvox")
    assert bv.voxels.shape == (8, 8, 8)
    np.testing.assert_array_equal(bv.voxels, vox)
    # the axis order, spelled out: index x*D*D + z*D + y holds voxel (x, y, z)
    assert bv.voxels[1, 2, 7] and not bv.voxels[1, 7, 2] and not bv.voxels[7, 2, 1]
    assert bv.voxels[4, 0, 0] and not bv.voxels[0, 4, 0] and not bv.voxels[0, 0, 4]
    assert bv.translate == (0.5, -1.0, 2.0) and bv.scale == 3.5


def test_reader_random_32_and_long_runs():
    rng = np.random.default_rng(0)
    vox = rng.random((32, 32, 32)) < 0.3
    vox[:, :, :10] = True  # runs longer than 255 are split into several pairs
    np.testing.assert_array_equal(read_binvox(naive_binvox(vox)).voxels, vox)


def test_writer_roundtrip_and_agrees_with_naive_and_trimesh(tmp_path):
    rng = np.random.default_rng(1)
    vox = rng.random((16, 16, 16)) < 0.2
    vox[:, 3:9, 2] = True
    data = encode_binvox(vox)
    assert data.split(b"data\n", 1)[1] == naive_binvox(vox).split(b"data\n", 1)[1]  # identical RLE body
    np.testing.assert_array_equal(read_binvox(data).voxels, vox)
    # trimesh's binvox loader (an independent implementation, xzy -> xyz) agrees
    from trimesh.exchange.binvox import load_binvox

    grid = load_binvox(io.BytesIO(data))
    np.testing.assert_array_equal(np.asarray(grid.encoding.dense, dtype=bool), vox)


def test_empty_and_full():
    for vox in (np.zeros((4, 4, 4), bool), np.ones((4, 4, 4), bool)):
        np.testing.assert_array_equal(read_binvox(encode_binvox(vox)).voxels, vox)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"PLY\nformat ascii\n", "bad binvox header"),
        (b"#binvox 1\ntranslate 0 0 0\ndata\n" + bytes([0, 64]), "no 'dim' line"),
        (b"#binvox 1\ndim 4 4 4\n" + bytes([0, 64]), "bad binvox header"),
        (b"#binvox 1\ndim 4 4\ndata\n" + bytes([0, 64]), "malformed line"),
        (b"#binvox 1\ndim 4 4 8\ndata\n" + bytes([0, 64]), "unsupported dims"),
        (b"#binvox 1\ndim 4 4 4\nfoo 1\ndata\n" + bytes([0, 64]), "unknown line"),
        (b"#binvox 9\ndim 4 4 4\ndata\n" + bytes([0, 64]), "unsupported binvox version"),
        (b"#binvox 1\ndim 4 4 4\ndata\n" + bytes([0, 63]), "wrong size"),
        (b"#binvox 1\ndim 4 4 4\ndata\n" + bytes([0, 64, 1, 1]), "wrong size"),
        (b"#binvox 1\ndim 4 4 4\ndata\n" + bytes([0, 64, 1]), "odd number"),
        (b"#binvox 1\ndim 4 4 4\ndata\n" + bytes([0, 0, 0, 64]), "run of length 0"),
        (b"#binvox 1\ndim 4 4 4\ndata\n" + bytes([7, 64]), "value 7"),
    ],
)
def test_bad_files_raise_one_line_naming_the_file(data, message):
    with pytest.raises(BinvoxError) as e:
        read_binvox(data, name="chairs/abc/model.binvox")
    text = str(e.value)
    assert "chairs/abc/model.binvox" in text and message in text and "\n" not in text


def test_expected_dim(tmp_path):
    p = tmp_path / "m.binvox"
    p.write_bytes(encode_binvox(np.zeros((16, 16, 16), bool)))
    with pytest.raises(BinvoxError, match=r"m\.binvox: wrong size: binvox is 16\^3, expected 32\^3"):
        read_binvox(p, expected_dim=32)
    assert read_binvox(p, expected_dim=16).voxels.shape == (16, 16, 16)


def test_missing_file(tmp_path):
    with pytest.raises(BinvoxError, match="cannot read"):
        read_binvox(tmp_path / "nope.binvox")
