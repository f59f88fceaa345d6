"""kNN backends against brute force, farthest-point sampling, neighbour plans and their cache."""

from __future__ import annotations

import math

import pytest
import torch

from nfd.grid import grid_coords
from nfd.models import neighbours as nb
from nfd.models.neighbours import PlanCache, build_plan, canonical_knn, knn, knn_naive, pool_levels, select_queries

P_VALUES = [1.0, 2.0, math.inf, 3.0]


def _dist(query: torch.Tensor, points: torch.Tensor, idx: torch.Tensor, p: float) -> torch.Tensor:
    """l_p distance from each query to each of its returned neighbours, computed independently of the backends."""
    nbrs = torch.gather(
        points.unsqueeze(-3).expand(*idx.shape[:-1], *points.shape[-2:]),
        -2,
        idx.unsqueeze(-1).expand(*idx.shape, points.shape[-1]),
    )
    diff = (nbrs - query.unsqueeze(-2)).abs()
    return diff.amax(-1) if math.isinf(p) else diff.pow(p).sum(-1).pow(1 / p)


def _check_against_naive(query: torch.Tensor, points: torch.Tensor, k: int, p: float, backend: str) -> None:
    idx = knn(query, points, k, p, backend=backend)
    ref = knn_naive(query, points, k, p)
    assert idx.shape == ref.shape == (*query.shape[:-1], k)
    assert idx.dtype == torch.int64
    # Distances, not indices: equidistant points may legitimately come in another order.
    torch.testing.assert_close(_dist(query, points, idx, p), _dist(query, points, ref, p), rtol=0, atol=1e-6)
    assert (idx.sort(-1).values.diff(dim=-1) > 0).all(), "a neighbour is repeated"


@pytest.mark.parametrize("backend", ["kdtree", "torch"])
@pytest.mark.parametrize("p", P_VALUES)
def test_knn_matches_brute_force_random(backend: str, p: float) -> None:
    g = torch.Generator().manual_seed(0)
    for d in (2, 3):
        points = torch.rand(300, d, generator=g, dtype=torch.float64) * 2 - 1
        query = torch.rand(70, d, generator=g, dtype=torch.float64) * 2 - 1
        _check_against_naive(query, points, 3**d, p, backend)
        _check_against_naive(points, points, 3**d, p, backend)


@pytest.mark.parametrize("backend", ["kdtree", "torch"])
@pytest.mark.parametrize("p", [1.0, 2.0, math.inf])
def test_knn_matches_brute_force_grid_and_batched(backend: str, p: float) -> None:
    grid = grid_coords(12, 2).double()
    _check_against_naive(grid, grid, 9, p, backend)
    g = torch.Generator().manual_seed(1)
    points = torch.rand(3, 100, 3, generator=g, dtype=torch.float64)
    query = torch.rand(3, 20, 3, generator=g, dtype=torch.float64)
    _check_against_naive(query, points, 5, p, backend)


def test_knn_torch_backend_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nb, "_CHUNK_ELEMENTS", 500)  # 500 // 200 = 2 query rows per chunk: many chunks
    g = torch.Generator().manual_seed(2)
    points = torch.rand(200, 2, generator=g, dtype=torch.float64)
    query = torch.rand(31, 2, generator=g, dtype=torch.float64)
    _check_against_naive(query, points, 7, 2.0, "torch")


def test_knn_rejects_bad_arguments() -> None:
    x = torch.rand(5, 2)
    with pytest.raises(ValueError):
        knn(x, x, 6)
    with pytest.raises(ValueError):
        knn(x, x, 2, p=0.5)
    with pytest.raises(ValueError):
        knn(x, x, 2, backend="faiss")


def test_canonical_knn_is_permutation_equivariant_on_a_grid() -> None:
    # l_inf on a grid: edge points have many equidistant candidates for their last neighbours.
    grid = grid_coords(9, 2)
    perm = torch.randperm(len(grid), generator=torch.Generator().manual_seed(3))
    a = canonical_knn(grid, grid, 9, math.inf)
    b = canonical_knn(grid[perm], grid[perm], 9, math.inf)
    torch.testing.assert_close(grid[perm][b], grid[a][perm])


def _fps_coords(points: torch.Tensor, m: int, p: float = 2.0) -> torch.Tensor:
    return points[select_queries(points, m, p)]


@pytest.mark.parametrize("p", [1.0, 2.0, math.inf])
def test_fps_permutation_invariant(p: float) -> None:
    g = torch.Generator().manual_seed(4)
    for points, m in [
        (torch.rand(400, 2, generator=g), 100),
        (grid_coords(12, 2), 36),
        (grid_coords(6, 3), 27),
        (grid_coords(28, 2), 196),
    ]:
        ref = _fps_coords(points, m, p)
        for _ in range(2):
            perm = torch.randperm(len(points), generator=g)
            torch.testing.assert_close(_fps_coords(points[perm], m, p), ref, rtol=0, atol=0)


def test_fps_spreads_points() -> None:
    g = torch.Generator().manual_seed(5)
    points = torch.rand(600, 2, generator=g)

    def min_gap(x: torch.Tensor) -> float:
        return torch.pdist(x).min().item()

    fps_gap = min_gap(_fps_coords(points, 60))
    for _ in range(20):
        assert fps_gap >= min_gap(points[torch.randperm(600, generator=g)[:60]])
    # On a grid, no two of the 1/4 kept points are grid neighbours (a random quarter almost surely has some).
    grid, h = grid_coords(16, 2), 2 / 15
    assert min_gap(_fps_coords(grid, 64)) >= math.sqrt(2) * h - 1e-6


def test_fps_selects_distinct_points_and_handles_duplicates() -> None:
    points = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    idx = select_queries(points, 4)
    assert sorted(idx.tolist()) == [0, 1, 2, 3]
    assert set(map(tuple, points[select_queries(points, 2)].tolist())) == {(0.0, 0.0), (1.0, 1.0)}
    with pytest.raises(ValueError):
        select_queries(points, 5)


def test_build_plan_shapes_and_offsets() -> None:
    coords = grid_coords(28, 2)
    plan = build_plan(coords, pool_levels(3, 9), p=2.0, keep_fraction=0.25)
    sizes = [784]
    for level in plan.levels:
        n = sizes[-1]
        m = math.ceil(n / 4)
        assert level.conv_idx.shape == (n, 9) and level.conv_offsets.shape == (n, 9, 2)
        assert level.query_idx.shape == (m,) and level.pool_idx.shape == (m, 9)
        sizes.append(m)
    assert sizes == [784, 196, 49, 13]
    # Offsets are x_i - x_q, the centre is its own nearest neighbour, and the final query is the centroid.
    lv0 = plan.levels[0]
    torch.testing.assert_close(lv0.conv_offsets, coords[lv0.conv_idx] - coords[:, None])
    assert (lv0.conv_idx[:, 0] == torch.arange(784)).all()
    last = coords
    for level in plan.levels:
        last = last[level.query_idx]
    torch.testing.assert_close(plan.final_offsets[0], last - last.mean(0))
    assert plan.final_idx.tolist() == [list(range(13))]


def test_build_plan_clips_k_and_keeps_one_point() -> None:
    plan = build_plan(torch.rand(5, 2), pool_levels(3, 9), keep_fraction=0.25)
    assert [lv.conv_idx.shape for lv in plan.levels] == [(5, 5), (2, 2), (1, 1)]
    assert plan.final_idx.shape == (1, 1)


def test_build_plan_per_example_stacks_shared_plans() -> None:
    g = torch.Generator().manual_seed(6)
    coords = torch.rand(3, 50, 2, generator=g)
    batched = build_plan(coords, pool_levels(2, 9))
    assert not batched.shared
    for b in range(3):
        single = build_plan(coords[b], pool_levels(2, 9))
        for lb, ls in zip(batched.levels, single.levels):
            assert torch.equal(lb.conv_idx[b], ls.conv_idx) and torch.equal(lb.pool_idx[b], ls.pool_idx)
            assert torch.equal(lb.query_idx[b], ls.query_idx)
        torch.testing.assert_close(batched.final_offsets[b], single.final_offsets)


def test_plan_cache_keys_on_content() -> None:
    cache = PlanCache(maxsize=2)
    a = grid_coords(10, 2)
    p1 = cache.get(a, pool_levels(2, 9))
    assert cache.get(a.clone(), pool_levels(2, 9)) is p1 and (cache.hits, cache.misses) == (1, 1)
    b = a.clone()
    b[0, 0] += 1e-3
    assert cache.get(b, pool_levels(2, 9)) is not p1
    assert cache.get(a, pool_levels(2, 4)) is not p1  # other settings, other plan
    assert cache.misses == 3
    assert cache.get(a, pool_levels(2, 9)) is not p1  # evicted (LRU of 2)


@pytest.mark.parametrize("spread", [5, 2**40])
def test_offset_group_keys_match_row_wise_unique(spread: int) -> None:
    """The packed 1-D key groups and orders rows exactly as ``unique(dim=0)`` does (the reference), both where the
    columns' ranges fit one int64 and where they do not (the fallback)."""
    torch.manual_seed(3)
    rows = torch.randint(-spread, spread, (500, 3))
    rows = torch.cat([rows, rows[:200]])[torch.randperm(700)]  # repeats, in no order
    _, ref = torch.unique(rows, dim=0, return_inverse=True)
    _, got = torch.unique(nb._row_key(rows), return_inverse=True)
    assert torch.equal(got, ref)


def test_offset_groups_of_random_grid_points_are_exact_offsets() -> None:
    """Every pair of a group has the same offset (up to rounding), and different groups have different ones."""
    torch.manual_seed(1)
    pts = grid_coords(16, 3)[torch.randperm(16**3)[:600].sort().values]
    level = build_plan(pts, pool_levels(1, 27)).levels[0]
    g = level.conv_groups()
    offs = level.conv_offsets.reshape(-1, 3)
    first = torch.stack([offs[g.pair_group == i][0] for i in range(len(g.sizes))])
    torch.testing.assert_close(offs, first[g.pair_group], rtol=0, atol=1e-6)
    assert torch.cdist(first, first).add(torch.eye(len(first))).min() > 1e-3
    assert sorted(g.sizes) == sorted(torch.bincount(g.pair_group).tolist()) and sum(g.sizes) == 600 * 27
