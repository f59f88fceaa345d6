"""Classifier FD: the Frechet distance against analytic Gaussian cases; the MNIST classifier on a tiny synthetic set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nfd.errors import NfdError
from nfd.metrics.classifier_fd import (
    LABEL,
    classifier_metrics,
    frechet_distance,
    frechet_distance_features,
    load_classifier,
    train_classifier,
)
from nfd.metrics.registry import evaluate
from tests.conftest import write_contract_h5


def synthetic_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """28 x 28 images in [-1, 1]: class c is a bright 7 x 7 square at one of 10 places, shifted by up to 2 px, noisy."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    imgs = np.full((n, 28, 28), -1.0, dtype=np.float32)
    for i, c in enumerate(labels):
        r0 = 3 + 11 * (c // 5) + rng.integers(-2, 3)
        c0 = 1 + 5 * (c % 5) + rng.integers(-1, 2)
        imgs[i, r0 : r0 + 7, c0 : c0 + 4] = 1.0
    imgs += rng.normal(scale=0.2, size=imgs.shape).astype(np.float32)
    return np.clip(imgs, -1, 1)[..., None], labels


@pytest.fixture(scope="module")
def digits_h5(tmp_path_factory) -> Path:
    x, y = synthetic_digits(500)
    idx = np.random.default_rng(1).permutation(500)
    path = tmp_path_factory.mktemp("digits") / "digits.h5"
    return write_contract_h5(
        path, x, y, {"train": np.sort(idx[:400]), "val": np.sort(idx[400:450]), "test": np.sort(idx[450:])}
    )


@pytest.fixture(scope="module")
def trained(digits_h5, tmp_path_factory):
    out = tmp_path_factory.mktemp("clf") / "clf.pt"
    meta = train_classifier(digits_h5, out, epochs=6, seed=0)
    return out, meta


# --- Frechet distance ------------------------------------------------------------------------------------------------


def test_frechet_1d_and_diagonal() -> None:
    # N(0, 1) vs N(1, 4): (0 - 1)^2 + 1 + 4 - 2 * sqrt(1 * 4) = 2
    assert frechet_distance(np.array([0.0]), np.array([[1.0]]), np.array([1.0]), np.array([[4.0]])) == pytest.approx(2)
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)  # = 5 + 4 + 1 + 0
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    assert expected == pytest.approx(10.0)


def test_frechet_rotated_and_scaled_covariances() -> None:
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T  # commuting: W2^2 = sum (sqrt a - sqrt b)^2
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    # a general SPD sigma and c^2 sigma: trace term = (1 - c)^2 tr(sigma)
    m = rng.normal(size=(6, 6))
    sigma = m @ m.T + 0.1 * np.eye(6)
    assert frechet_distance(mu1, sigma, mu1, 9.0 * sigma) == pytest.approx(4.0 * np.trace(sigma), rel=1e-9)
    assert frechet_distance(mu1, sigma, mu1, sigma) == pytest.approx(0.0, abs=1e-8)


def test_frechet_from_samples_matches_analytic() -> None:
    rng = np.random.default_rng(1)
    d, n = 4, 40000
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    a, b = np.array([1.0, 2.0, 0.5, 1.5]), np.array([2.0, 1.0, 0.5, 3.0])
    f1 = rng.normal(size=(n, d)) * np.sqrt(a) + mu1
    f2 = rng.normal(size=(n, d)) * np.sqrt(b) + mu2
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance_features(f1, f2) == pytest.approx(expected, abs=0.05)


# --- the classifier --------------------------------------------------------------------------------------------------


def test_classifier_learns_and_checkpoint_is_weights_only(trained) -> None:
    path, meta = trained
    assert meta["test_accuracy"] > 0.9, meta
    assert meta["num_train"] == 400 and meta["num_test"] == 50 and meta["val_accuracy"] is not None
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # plain data + tensors only
    assert set(ckpt) == {"state_dict", "meta"} and ckpt["meta"]["label"] == LABEL
    model, meta2 = load_classifier(path)
    assert meta2["test_accuracy"] == meta["test_accuracy"]
    assert not model.training


def test_classifier_metrics_known_cases(trained, digits_h5) -> None:
    model, _ = load_classifier(trained[0])
    real, labels = synthetic_digits(200, seed=7)
    ref, _ = synthetic_digits(200, seed=8)
    out = classifier_metrics(real, ref, model)
    res = out["results"]
    assert out["protocol"]["label"] == LABEL
    assert sum(res["class_counts"]) == 200
    assert res["confident_share"] > 0.8
    assert res["class_entropy"] > 0.95  # balanced classes
    same = classifier_metrics(ref, ref, model)["results"]
    assert same["classifier_fd"] == pytest.approx(0.0, abs=1e-4)
    ones = real[labels == 3]
    one_class = classifier_metrics(ones, ref, model)["results"]
    assert one_class["class_entropy"] < 0.2 and max(one_class["class_counts"]) >= 0.9 * len(ones)
    noise = np.random.default_rng(0).uniform(-1, 1, size=(200, 28, 28)).astype(np.float32)
    assert classifier_metrics(noise, ref, model)["results"]["classifier_fd"] > 10 * res["classifier_fd"]
    rec = evaluate("classifier_fd", samples=real, reference=ref, clf=model, baseline=real)
    assert rec["metric"] == "classifier_fd" and rec["inputs"]["samples"]["shape"] == [200, 28, 28, 1]
    assert rec["results"]["baseline_fd"] == pytest.approx(res["classifier_fd"], rel=1e-6)


def test_classifier_rejects_other_resolutions(trained) -> None:
    model, _ = load_classifier(trained[0])
    with pytest.raises(NfdError, match=r"\[N, 28, 28\] images \(no resizing\)"):
        classifier_metrics(np.zeros((4, 32, 32)), np.zeros((4, 28, 28)), model)


def test_load_classifier_errors(tmp_path) -> None:
    with pytest.raises(NfdError, match="not found"):
        load_classifier(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": {}, "meta": {"format": "something-else"}}, bad)
    with pytest.raises(NfdError, match="not an nfd-mnist-classifier checkpoint"):
        load_classifier(bad)
