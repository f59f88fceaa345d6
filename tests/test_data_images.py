"""Images: LANCZOS resize against Pillow, load_image, and `prepare celebahq` from folder / zip / tar + bad input."""

from __future__ import annotations

import io
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from nfd.cli import main
from nfd.data.celebahq import ImageSourceError, prepare_celebahq
from nfd.data.dataset import PointCloudDataset
from nfd.data.images import ImageError, center_crop_resize, load_image


def photo(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, w * h * 3).reshape(h, w, 3)
    return Image.fromarray(np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8), "RGB")


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def expected_pixels(img: Image.Image, size: int) -> np.ndarray:
    """Reference: crop the centred square and resize with Pillow LANCZOS, directly."""
    w, h = img.size
    s = min(w, h)
    sq = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return np.asarray(sq.resize((size, size), Image.LANCZOS))


def test_center_crop_resize_matches_pillow():
    img = photo(40, 30, 0)
    out = np.asarray(center_crop_resize(img, 16))
    np.testing.assert_array_equal(out, expected_pixels(img, 16))
    assert np.asarray(center_crop_resize(photo(20, 20, 1), 20)).shape == (20, 20, 3)


def test_load_image_builtin_and_path(tmp_path):
    a = load_image("astronaut", 64)
    assert a.shape == (64, 64, 3) and a.dtype == np.float32 and -1 <= a.min() < -0.9 and 0.9 < a.max() <= 1
    c = load_image("camera", 32)  # greyscale -> RGB
    assert c.shape == (32, 32, 3) and np.array_equal(c[..., 0], c[..., 2])
    p = tmp_path / "x.png"
    img = photo(50, 40, 2)
    img.save(p)
    np.testing.assert_allclose(load_image(p, 24), expected_pixels(img, 24) / 127.5 - 1, atol=1e-6)
    with pytest.raises(ImageError, match="no such image file"):
        load_image(tmp_path / "nope.png", 8)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(ImageError, match=r"bad\.png: cannot decode image"):
        load_image(bad, 8)


@pytest.fixture
def faces(tmp_path):
    """Three images of different shapes in a folder, a zip and a tar."""
    imgs = {"f/00000.png": photo(40, 30, 0), "f/00001.jpg": photo(30, 44, 1), "f/00002.png": photo(32, 32, 2)}
    folder = tmp_path / "folder"
    for name, img in imgs.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        img.save(folder / name, quality=95)
    data = {name: (folder / name).read_bytes() for name in imgs}
    z = tmp_path / "faces.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for name, b in data.items():
            zf.writestr(name, b)
    t = tmp_path / "faces.tar"
    with tarfile.open(t, "w") as tf:
        for name, b in data.items():
            info = tarfile.TarInfo(name)
            info.size = len(b)
            tf.addfile(info, io.BytesIO(b))
    decoded = [Image.open(io.BytesIO(data[n])).convert("RGB") for n in sorted(data)]
    return folder, z, t, decoded


def test_prepare_celebahq_folder_zip_tar(tmp_path, faces):
    folder, z, t, decoded = faces
    for src in (folder, z, t):
        out = tmp_path / f"{src.name}.h5"
        s = prepare_celebahq(src, out, resolution=16, val_frac=0.0, test_frac=0.0)
        assert s["num_examples"] == 3
        ds = PointCloudDataset(out, split="all")
        assert ds.grid_shape == (16, 16) and ds.feature_dim == 3 and ds.attrs["dataset"] == "celebahq"
        for i, img in enumerate(decoded):
            got = np.rint((ds.full_grid(i).numpy() + 1) * 127.5).astype(np.uint8)
            np.testing.assert_array_equal(got, expected_pixels(img, 16))  # row-major, row = axis 0
        assert len(ds.attrs["source_sha256"]) == 64


def test_prepare_celebahq_parallel_workers(tmp_path, faces):
    folder, *_ = faces
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    prepare_celebahq(folder, a, resolution=8)
    prepare_celebahq(folder, b, resolution=8, workers=2)
    ra, rb = PointCloudDataset(a, "all").read([0, 1, 2]), PointCloudDataset(b, "all").read([0, 1, 2])
    np.testing.assert_array_equal(ra, rb)


def test_bad_image_sources(tmp_path, faces, capsys):
    folder, *_ = faces
    out = tmp_path / "out.h5"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageSourceError, match=r"empty: no images"):
        prepare_celebahq(empty, out)
    only_text = tmp_path / "text"
    only_text.mkdir()
    (only_text / "readme.txt").write_text("hi")
    with pytest.raises(ImageSourceError, match=r"no images .* found only non-image files: readme\.txt"):
        prepare_celebahq(only_text, out)
    (folder / "f" / "notes.csv").write_text("a,b")
    (folder / ".DS_Store").write_text("ignored")
    with pytest.raises(ImageSourceError, match=r"contains non-image files: f/notes\.csv \(1 file\)"):
        prepare_celebahq(folder, out)
    (folder / "f" / "00003.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    (folder / "f" / "notes.csv").unlink()
    with pytest.raises(ImageError, match=r"f/00003\.png: cannot decode image"):
        prepare_celebahq(folder, out)
    assert not out.exists() and not list(tmp_path.glob(".out.h5*"))
    # via the CLI: one line, exit 2, no output
    argv = ["data", "prepare", "celebahq", "--source", str(folder), "--out", str(out), "--resolution", "8", "--quiet"]
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "00003.png: cannot decode image" in err[0] and not out.exists()
    # --skip-bad keeps going and records what was skipped
    s = prepare_celebahq(folder, out, resolution=8, skip_bad=True)
    assert s["num_examples"] == 3 and len(s["skipped"]) == 1 and "00003.png" in s["skipped"][0]
    assert "00003.png" in PointCloudDataset(out, "all").attrs["skipped"]
