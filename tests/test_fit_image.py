"""Fig. 2: Fourier features let one MLP fit a real photograph far better than raw coordinates."""

import json

import numpy as np

from nfd.cli import main
from nfd.training.fit_image import psnr


def test_psnr_analytic():
    a = np.zeros((4, 4, 3))
    assert psnr(a, a + 0.2) == 10 * np.log10(4 / 0.04)


def test_fourier_features_fit_a_real_photo_better(tmp_path):
    for extra in ([], ["--no-fourier"]):
        assert (
            main(["fit-image", "astronaut", "--out", str(tmp_path), "--size", "24", "--iterations", "100", *extra]) == 0
        )
    rff = json.loads((tmp_path / "fourier.json").read_text())["psnr_db"]
    plain = json.loads((tmp_path / "no_fourier.json").read_text())["psnr_db"]
    assert rff > plain + 5.0, (rff, plain)
    assert (tmp_path / "fourier.png").is_file() and (tmp_path / "target.png").is_file()


def test_missing_image_is_one_line_error(tmp_path, capsys):
    assert main(["fit-image", str(tmp_path / "nope.png"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "nope.png" in err and len(err.splitlines()) == 1
