"""Inception FID/KID: the structured "not computed" results (the computed path needs torch-fidelity + weights)."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

from nfd.metrics import fid
from nfd.metrics.registry import evaluate


def _images(n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, size=(n, 8, 8, 1)).astype(np.float32)


def _assert_not_computed(out: dict, message: str) -> None:
    assert out["status"] == "not computed"
    assert out["message"] == message
    assert out["results"] == {"fid": None, "kid_mean": None, "kid_std": None}  # never a substitute number


@pytest.fixture
def fake_fidelity(monkeypatch):
    """Pretend torch-fidelity imports, to reach the weights check (it is never called to compute anything here)."""
    monkeypatch.setattr(fid, "_import_torch_fidelity", lambda: (types.SimpleNamespace(__version__="fake"), None))


def test_not_installed_message(monkeypatch) -> None:
    monkeypatch.setattr(fid, "_import_torch_fidelity", lambda: (None, "ModuleNotFoundError: No module named 'x'"))
    out = fid.fid_kid(_images(), _images(), weights="/does/not/matter.pth")
    _assert_not_computed(out, "not computed: torch-fidelity not installed")
    assert "ModuleNotFoundError" in out["protocol"]["detail"]


def test_not_installed_in_this_environment() -> None:
    if fid._import_torch_fidelity()[0] is not None:
        pytest.skip("torch-fidelity is importable here")
    rec = evaluate("fid", samples=_images(), reference=_images())
    assert rec["metric"] == "fid"
    _assert_not_computed(rec, fid.MSG_NOT_INSTALLED)


def test_weights_not_found_at_configured_path(fake_fidelity, tmp_path) -> None:
    missing = tmp_path / "inception.pth"
    out = fid.fid_kid(_images(), _images(), weights=missing)
    _assert_not_computed(out, f"not computed: Inception weights not found at {missing}")


def test_weights_not_found_from_env(fake_fidelity, tmp_path, monkeypatch) -> None:
    missing = tmp_path / "env" / "w.pth"
    monkeypatch.setenv(fid.WEIGHTS_ENV, str(missing))
    _assert_not_computed(fid.fid_kid(_images(), _images()), f"not computed: Inception weights not found at {missing}")


def test_weights_not_found_in_torch_hub_cache(fake_fidelity, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(fid.WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    expected = tmp_path / "torch_home" / "hub" / "checkpoints" / fid.WEIGHTS_FILENAME
    assert fid.default_weights_path() == expected
    rec = evaluate("fid", samples=_images(), reference=_images())
    _assert_not_computed(rec, f"not computed: Inception weights not found at {expected}")
    assert rec["protocol"]["weights"] == str(expected)


def test_to_uint8_rgb() -> None:
    x = np.array([[[[-1.0], [1.0]], [[0.0], [0.5]]]], dtype=np.float32)  # [1, 2, 2, 1]
    u8 = fid.to_uint8_rgb(x)
    assert u8.shape == (1, 3, 2, 2) and u8.dtype == np.uint8
    np.testing.assert_array_equal(u8[0, 0], [[0, 255], [128, 191]])
    np.testing.assert_array_equal(u8[0, 0], u8[0, 2])


def test_computed_path_when_available(tmp_path) -> None:
    """The computed path: FID of a set against itself is ~0.

    It cannot run in the CPU test environment: torch-fidelity needs torchvision (not installable here without a CUDA
    torch build) and the Inception weights are not present, so it is skipped there rather than faked.
    """
    if fid._import_torch_fidelity()[0] is None:
        pytest.skip("torch-fidelity not installed")
    if not fid.weights_path().is_file():
        pytest.skip(f"Inception weights not found at {fid.weights_path()}")
    x = np.random.default_rng(0).uniform(-1, 1, size=(64, 28, 28, 1)).astype(np.float32)
    out = fid.fid_kid(x, x, kid_subset_size=32)
    assert out["status"] == "computed"
    assert abs(out["results"]["fid"]) < 1e-2
    assert Path(out["protocol"]["weights"]).is_file()
