"""Figures compose what the pipeline produced; missing or wrong inputs fail with one line and no file."""

import numpy as np
from PIL import Image

from nfd.cli import main


def _npz(path, shape):
    np.savez(path, features=np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32))
    return path


def test_sample_columns_and_superresolution(tmp_path):
    a = _npz(tmp_path / "a.npz", (4, 8, 8, 1))
    b = _npz(tmp_path / "b.npz", (4, 32, 32, 1))
    out = tmp_path / "fig8.png"
    assert (
        main(
            [
                "figure",
                "fig8",
                "--out",
                str(out),
                "--label",
                "t",
                "--input",
                f"mnist={a}",
                "--input",
                f"mnist_setdisc={a}",
            ]
        )
        == 0
    )
    assert Image.open(out).size[0] > Image.open(out).size[1]  # columns side by side
    assert (
        main(["figure", "fig7", "--out", str(tmp_path / "fig7.png"), "--input", f"low={a}", "--input", f"high={b}"])
        == 0
    )


def test_bad_inputs(tmp_path, capsys):
    out = tmp_path / "fig9.png"
    assert main(["figure", "fig9", "--out", str(out), "--input", f"renders={tmp_path / 'none'}"]) == 2
    assert "not found" in capsys.readouterr().err
    vol = _npz(tmp_path / "v.npz", (2, 4, 4, 4, 1))
    assert main(["figure", "fig14", "--out", str(out), "--input", f"mnist={vol}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "expected 2D samples" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_title_fits_a_one_column_figure(tmp_path):
    """The preset's long label must stay inside the figure (it used to run off both sides of fig12/13/14)."""
    from nfd.viz.figures import FIGURES

    label = "fig13: demo preset (CPU, minutes of training, not the paper results): MNIST 28^2 samples"
    fig = FIGURES["fig13"]({"mnist_setdisc": _npz(tmp_path / "s.npz", (16, 28, 28, 1))}, label)
    fig.canvas.draw()
    box = fig._suptitle.get_window_extent()
    width = fig.get_figwidth() * fig.dpi
    assert 0 <= box.x0 and box.x1 <= width
    assert fig._suptitle.get_text().replace("\n", " ") == label


def test_help_names_fig11_and_the_selection_flags(capsys):
    import pytest

    with pytest.raises(SystemExit) as exc:
        main(["figure", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for word in ("fig11", "--worst", "--num-ref", "--points", "KEY_b0", "Chamfer"):
        assert word in text


def _png(path, size=16, color="white"):
    Image.new("RGB", (size, size), color).save(path)
    return path


def test_fig9_ignores_hidden_temporary_pngs(tmp_path):
    """A killed writer leaves `.NAME.png.XXXX.png` beside the renders; it is neither read nor shown."""
    renders = tmp_path / "renders"
    renders.mkdir()
    _png(renders / "sample_000.png", color="blue")
    _png(renders / "sample_001.png", color="blue")
    (renders / ".sample_002.png.tmp123.png").write_bytes(b"\x89PNG truncated")
    _png(renders / ".sample_003.png.tmp456.png", size=64, color="red")  # complete, but still not a render
    out = tmp_path / "fig9.png"
    assert main(["figure", "fig9", "--out", str(out), "--input", f"renders={renders}"]) == 0
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert ((img[..., 2] > 200) & (img[..., 0] < 50)).any()  # the blue renders are there
    assert not ((img[..., 0] > 200) & (img[..., 1] < 50)).any()  # the hidden red one is not

    from nfd.viz.figures import load_renders

    assert len(load_renders(renders)) == 2


def test_unreadable_or_mixed_renders_fail_in_one_line(tmp_path, capsys):
    renders = tmp_path / "renders"
    renders.mkdir()
    _png(renders / "sample_000.png")
    (renders / "sample_001.png").write_bytes(b"not a png")
    out = tmp_path / "fig9.png"
    argv = ["figure", "fig9", "--out", str(out), "--input", f"renders={renders}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "sample_001.png: cannot read image" in err and len(err.splitlines()) == 1
    _png(renders / "sample_001.png", size=32)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "different sizes (16x16, 32x32)" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_bad_values_fail_in_one_line(tmp_path, capsys):
    import pytest

    a = _npz(tmp_path / "a.npz", (4, 8, 8, 1))
    np.savez(tmp_path / "none.npz", features=np.zeros((0, 8, 8, 1), np.float32))
    np.savez(tmp_path / "nan.npz", features=np.full((2, 8, 8, 1), np.nan, np.float32))
    (tmp_path / "zip.npz").write_bytes(b"PK\x03\x04 broken")
    (tmp_path / "fit").mkdir()
    out = tmp_path / "f.png"
    cases = [
        (["fig14", "--input", f"mnist={tmp_path / 'none.npz'}"], "no samples"),
        (["fig14", "--input", f"mnist={tmp_path / 'nan.npz'}"], "not all finite"),
        (["fig14", "--input", f"mnist={tmp_path / 'zip.npz'}"], "not an nfd samples file"),
        (["fig14"], "needs its inputs as --input NAME=PATH"),
        (
            ["fig2", "--input", f"rff={tmp_path / 'fit'}", "--input", f"plain={tmp_path / 'fit'}"],
            "target.png: cannot read image",
        ),
        (["fig10", "--input", f"rx={tmp_path / 'fit'}"], "fig10 inputs are named rR"),
        (["fig14", "--input", f"mnist={a}", "--dpi", "0"], "argument --dpi: expected an integer >= 1, got 0"),
    ]
    for args, message in cases:
        try:
            rc = main(["figure", *args, "--out", str(out)])
        except SystemExit as e:
            rc = e.code
        err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert rc == 2 and len(err) == 1 and message in err[0], (args, err)
    assert not out.exists()
    assert main(["figure", "fig14", "--input", f"mnist={a}", "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["figure", "fig14", "--input", f"mnist={a}", "--out", str(out), "--dpi", "-3"])
