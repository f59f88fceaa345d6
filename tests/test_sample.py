"""Sampling: the same seed gives the same functions at every resolution; bad checkpoints fail cleanly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nfd.cli import main
from nfd.config import resolve
from nfd.train import Trainer


@pytest.fixture(scope="module")
def model_2d(tmp_path_factory):
    from tests.conftest import write_h5

    tmp = tmp_path_factory.mktemp("m2d")
    rng = np.random.default_rng(0)
    h5 = write_h5(tmp / "d.h5", rng.integers(0, 256, (12, 8, 8, 1), dtype=np.uint8), (8, 8))
    t = Trainer(resolve("tiny", None, ["steps=2"]), h5, tmp / "run")
    return t.fit(progress=False)


def test_same_seed_same_functions_across_resolutions(model_2d, tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert main(["sample", "--checkpoint", str(model_2d), "--num", "3", "--resolution", "33", "--seed", "5",
                 "--out", str(a)]) == 0
    assert main(["sample", "--checkpoint", str(model_2d), "--num", "5", "--resolution", "65", "--seed", "5",
                 "--out", str(b), "--chunk-points", "1000"]) == 0
    fa, fb = np.load(a)["features"], np.load(b)["features"]
    assert fa.shape == (3, 33, 33, 1) and fb.shape == (5, 65, 65, 1)
    np.testing.assert_allclose(fb[:3, ::2, ::2], fa, atol=1e-5)
    assert np.abs(fa[0] - fa[1]).max() > 1e-3  # different latents give different functions


@pytest.mark.parametrize("content, msg", [
    (b"not a checkpoint at all", "not a readable checkpoint"),
    (None, "not an nfd checkpoint"),
])
def test_bad_checkpoints(tmp_path, capsys, content, msg):
    bad = tmp_path / "bad.pt"
    if content is None:
        torch.save({"weights": torch.zeros(3)}, bad)
    else:
        bad.write_bytes(content)
    out = tmp_path / "s.npz"
    assert main(["sample", "--checkpoint", str(bad), "--num", "1", "--resolution", "4", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and str(bad) in err and len(err.splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".s.npz*"))


def test_missing_checkpoint(tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(tmp_path / "none.pt"), "--num", "1", "--resolution", "4",
                 "--out", str(tmp_path / "s.npz")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
