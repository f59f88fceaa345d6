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
    assert main(["figure", "fig8", "--out", str(out), "--label", "t", "--input", f"mnist={a}",
                 "--input", f"mnist_setdisc={a}"]) == 0
    assert Image.open(out).size[0] > Image.open(out).size[1]  # columns side by side
    assert main(["figure", "fig7", "--out", str(tmp_path / "fig7.png"), "--input", f"low={a}",
                 "--input", f"high={b}"]) == 0


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
    from nfd.figures import FIGURES

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
