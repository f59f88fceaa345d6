"""3D shape metrics: squared Chamfer (KD-tree vs naive, known values), COV, MMD, 1-NNA, failures, the JSONL record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nfd.metrics.registry import append_jsonl, evaluate
from nfd.metrics.shapes3d import (
    chamfer_kdtree,
    chamfer_matrix,
    chamfer_naive,
    coverage,
    minimum_matching_distance,
    one_nna,
    shape_metrics,
    volume_point_set,
    volumes_point_sets,
)


def sphere(rng: np.random.Generator, radius: float, n: int = 256, jitter: float = 0.01) -> np.ndarray:
    p = rng.normal(size=(n, 3))
    p = p / np.linalg.norm(p, axis=1, keepdims=True) * radius
    return p + rng.normal(scale=jitter, size=p.shape)


def thin_box(rng: np.random.Generator, size: tuple[float, float, float], n: int = 256) -> np.ndarray:
    """Points uniformly inside a thin box (a plate): no sphere is close to it in Chamfer distance."""
    return (rng.uniform(-1, 1, size=(n, 3)) * np.asarray(size)) / 2


def test_chamfer_kdtree_equals_naive() -> None:
    rng = np.random.default_rng(0)
    for na, nb in [(50, 50), (120, 37), (1, 9)]:
        a, b = rng.normal(size=(na, 3)), rng.normal(size=(nb, 3)) + 0.3
        assert chamfer_kdtree(a, b) == pytest.approx(chamfer_naive(a, b), rel=1e-12, abs=1e-12)
        assert chamfer_kdtree(a, b) == pytest.approx(chamfer_kdtree(b, a), rel=1e-12)


def test_chamfer_matrix_equals_naive_with_failures() -> None:
    rng = np.random.default_rng(1)
    sets = [rng.normal(size=(40 + 7 * i, 3)) * (1 + 0.2 * i) for i in range(5)]
    sets.insert(2, None)
    naive = np.array([[chamfer_naive(x, y) if x is not None and y is not None else np.inf for y in sets] for x in sets])
    sym = chamfer_matrix(sets, workers=1)
    ok = [0, 1, 3, 4, 5]
    np.testing.assert_allclose(sym[np.ix_(ok, ok)], naive[np.ix_(ok, ok)], rtol=1e-12, atol=1e-12)
    assert np.isinf(sym[2]).all() and np.isinf(sym[:, 2]).all()  # a failure is at +inf, even from itself
    rect = chamfer_matrix(sets, sets[3:], workers=1)
    np.testing.assert_allclose(rect[np.ix_(ok, [0, 1, 2])], naive[np.ix_(ok, [3, 4, 5])], rtol=1e-12)
    assert np.isinf(rect[2]).all()


def test_chamfer_known_values() -> None:
    g = np.arange(6.0)
    grid = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)  # spacing 1: neighbours are translates
    t = np.array([0.2, -0.1, 0.15])
    assert chamfer_kdtree(grid, grid) == 0.0
    assert chamfer_kdtree(grid, grid + t) == pytest.approx(2 * float(t @ t), rel=1e-12)
    assert chamfer_naive(grid, grid + t) == pytest.approx(2 * float(t @ t), rel=1e-12)
    d = chamfer_matrix([grid, grid + t], workers=1)
    np.testing.assert_allclose(d, [[0, 2 * t @ t], [2 * t @ t, 0]], rtol=1e-12)


def test_one_nna_same_distribution_near_half_and_disjoint_near_one() -> None:
    rng = np.random.default_rng(2)
    n = 30
    a = [sphere(rng, r) for r in rng.uniform(0.3, 0.9, n)]
    b = [sphere(rng, r) for r in rng.uniform(0.3, 0.9, n)]
    same = shape_metrics(a, b, workers=1)["results"]
    assert 0.35 <= same["1nna"] <= 0.65, same
    boxes = [thin_box(rng, (rng.uniform(1.2, 1.8), 0.05, rng.uniform(0.8, 1.4))) for _ in range(n)]
    disjoint = shape_metrics(a, boxes, workers=1)["results"]
    assert disjoint["1nna"] >= 0.95, disjoint
    assert disjoint["mmd"] > 5 * same["mmd"]


def test_identical_sets_full_coverage_zero_mmd() -> None:
    rng = np.random.default_rng(3)
    refs = [sphere(rng, r, n=128) for r in rng.uniform(0.3, 0.9, 12)]
    out = shape_metrics([r.copy() for r in refs], refs, workers=1)
    res = out["results"]
    assert res["cov"] == 1.0
    assert res["mmd"] == 0.0
    assert res["1nna"] == 0.0  # every shape's nearest neighbour is its copy in the other set: memorisation scores 0%
    assert res["num_failed"] == 0
    assert out["protocol"]["num_samples"] == out["protocol"]["num_references"] == 12
    assert out["protocol"]["points_per_shape"] == 128


def test_empty_samples_are_counted_failures() -> None:
    rng = np.random.default_rng(4)
    refs = [sphere(rng, r, n=128) for r in (0.3, 0.5, 0.7, 0.9)]
    samples = [refs[0].copy(), refs[1].copy(), None, None]
    out = shape_metrics(samples, refs, workers=1)
    res = out["results"]
    assert res["num_failed"] == 2 and res["failure_rate"] == 0.5
    assert res["cov"] == 0.5  # the failures cover nothing
    d = chamfer_matrix(samples[:2], refs, workers=1)
    assert res["mmd"] == pytest.approx(d.min(axis=0).mean())  # failures are never a match
    # the failures are misclassified; the two copies too (nearest = their twin reference)
    assert res["1nna_samples"] == 0.0
    # all samples failed: coverage 0, MMD +inf -> null in JSON with the reason listed
    rec = evaluate("shapes3d", samples=[None, None], references=refs, workers=1)
    assert rec["results"]["cov"] == 0.0 and rec["results"]["num_failed"] == 2
    assert rec["results"]["mmd"] is None and rec["nonfinite"] == {"results.mmd": "inf"}
    assert rec["results"]["1nna_samples"] == 0.0


def test_metric_helpers_on_small_matrices() -> None:
    d_sr = np.array([[1.0, 5.0, 9.0], [2.0, 0.5, 7.0]])
    assert coverage(d_sr) == pytest.approx(2 / 3)
    assert minimum_matching_distance(d_sr) == pytest.approx((1.0 + 0.5 + 7.0) / 3)
    d = np.array([[0, 1, 5, 6], [1, 0, 5, 6], [5, 5, 0, 1], [6, 6, 1, 0]], dtype=float)
    assert one_nna(d, 2)["acc"] == 1.0  # two separated pairs
    d2 = np.array([[0, 5, 1, 6], [5, 0, 6, 1], [1, 6, 0, 5], [6, 1, 5, 0]], dtype=float)
    assert one_nna(d2, 2)["acc"] == 0.0  # each sample's nearest is a reference


def _ball(res: int, radius: float) -> np.ndarray:
    g = np.linspace(-1, 1, res)
    x, y, z = np.meshgrid(g, g, g, indexing="ij")
    return np.where(x**2 + y**2 + z**2 < radius**2, 1.0, -1.0).astype(np.float32)


def test_volumes_to_point_sets() -> None:
    p = volume_point_set(_ball(24, 0.6), num_points=512, seed=0)
    assert p.shape == (512, 3)
    assert np.linalg.norm(p, axis=1).mean() == pytest.approx(0.6, abs=0.05)
    again = volume_point_set(_ball(24, 0.6), num_points=512, seed=0)
    np.testing.assert_array_equal(p, again)  # seeded
    assert volume_point_set(-np.ones((12, 12, 12), np.float32), 64, 0) is None  # no surface: a failure
    sets = volumes_point_sets([_ball(16, 0.5), -np.ones((16, 16, 16), np.float32)], 64, seed=0)
    assert sets[0].shape == (64, 3) and sets[1] is None


def test_record_and_jsonl(tmp_path) -> None:
    rng = np.random.default_rng(5)
    refs = [sphere(rng, r, n=64) for r in (0.4, 0.6, 0.8)]
    rec = evaluate("shapes3d", context={"samples": "x.npz"}, samples=refs[:2] + [None], references=refs, workers=1)
    assert rec["metric"] == "shapes3d" and rec["status"] == "computed"
    assert rec["results"]["num_failed"] == 1
    assert rec["protocol"]["num_samples"] == 3 and rec["protocol"]["points_per_shape"] == 64
    assert rec["inputs"]["samples"] == {"type": "list[ndarray]", "len": 3, "num_none": 1, "rows": [64, 64]}
    assert rec["context"] == {"samples": "x.npz"}
    assert isinstance(rec["timestamp"], float) and rec["time_utc"].endswith("+00:00")
    log = tmp_path / "sub" / "metrics.jsonl"
    append_jsonl(log, rec)
    append_jsonl(log, rec)
    lines = log.read_text().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0]) == json.loads(json.dumps(rec))
