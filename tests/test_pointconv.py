"""Efficient PointConv against the naive per-neighbour-matrix reference; pooling; translation equivariance."""

from __future__ import annotations

import pytest
import torch

from nfd.models.neighbours import canonical_knn
from nfd.models.pointconv import PointConv, WeightNet, avg_pool, form_cost_terms, gather_neighbours, pointconv_naive


def _setup(
    per_example: bool, seed: int = 0, b: int = 3, n: int = 40, d: int = 2, cin: int = 5, k: int = 9
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random double coordinates, their k-neighbourhoods and offsets (shared or per-example), and features."""
    g = torch.Generator().manual_seed(seed)
    coords = torch.rand(b, n, d, generator=g, dtype=torch.float64) * 2 - 1
    if not per_example:
        coords = coords[0]
    idx = canonical_knn(coords, coords, k) if not per_example else torch.stack([canonical_knn(c, c, k) for c in coords])
    offsets = torch.gather(
        coords.unsqueeze(-3).expand(*idx.shape[:-1], n, d), -2, idx.unsqueeze(-1).expand(*idx.shape, d)
    ) - coords.unsqueeze(-2)
    feats = torch.randn(b, n, cin, generator=g, dtype=torch.float64, requires_grad=True)
    return coords, idx, offsets, feats


@pytest.mark.parametrize("per_example", [False, True])
@pytest.mark.parametrize("batchnorm", [True, False])
def test_efficient_matches_naive_values_and_gradients(per_example: bool, batchnorm: bool) -> None:
    torch.manual_seed(0)
    conv = PointConv(2, 5, 7, [16, 16, 16, 16], batchnorm=batchnorm).double().train()
    _, idx, offsets, feats = _setup(per_example)
    out = conv(feats, idx, offsets)
    ref = pointconv_naive(conv, feats, idx, offsets)
    assert out.shape == (3, 40, 7)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    w = torch.randn_like(out)
    params = [feats, *conv.parameters()]
    g_fast = torch.autograd.grad((out * w).sum(), params)
    g_ref = torch.autograd.grad((ref * w).sum(), params)
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    assert all(g.abs().sum() > 0 for g in g_fast)


def test_naive_reference_is_the_paper_formula() -> None:
    """f_out(x) = sum_i W(x_i - x) f_i + bias, with W(u)[o, c] = sum_j L[o, c*mid + j] h_j(u), one term at a time."""
    torch.manual_seed(1)
    conv = PointConv(2, 3, 4, [8, 6], batchnorm=False).double()
    _, idx, offsets, feats = _setup(False, n=12, cin=3, k=5)
    lin = conv.linear.weight.detach()
    out = pointconv_naive(conv, feats, idx, offsets).detach()
    b, q = 1, 7
    acc = conv.linear.bias.detach().clone()
    for i in range(5):
        h = conv.weight_net(offsets[q, i][None])[0].detach()
        w = torch.stack([torch.stack([(lin[o, c * 6 : (c + 1) * 6] * h).sum() for c in range(3)]) for o in range(4)])
        acc += w @ feats[b, idx[q, i]].detach()
    torch.testing.assert_close(out[b, q], acc)


def test_shared_offsets_equal_repeated_per_example_offsets() -> None:
    torch.manual_seed(2)
    conv = PointConv(2, 5, 7, [16, 16]).double().train()
    _, idx, offsets, feats = _setup(False)
    shared = conv(feats, idx, offsets)
    repeated = conv(feats, idx.expand(3, -1, -1), offsets.expand(3, -1, -1, -1))
    torch.testing.assert_close(shared, repeated)


def test_weight_net_runs_once_on_unbatched_offsets() -> None:
    conv = PointConv(2, 5, 7, [16, 16]).double()
    calls: list[tuple[int, ...]] = []
    conv.weight_net.register_forward_hook(lambda mod, inp, out: calls.append(tuple(inp[0].shape)))
    _, idx, offsets, feats = _setup(False, b=6)
    conv(feats, idx, offsets)
    assert calls == [(40, 9, 2)]


@pytest.mark.parametrize("per_example", [False, True])
def test_gather_and_avg_pool_match_loops(per_example: bool) -> None:
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(2, 10, 4, generator=g)
    idx = torch.randint(0, 10, (2, 6, 3) if per_example else (6, 3), generator=g)
    pooled = avg_pool(feats, idx)
    gathered = gather_neighbours(feats, idx)
    for b in range(2):
        ib = idx[b] if per_example else idx
        for m in range(6):
            torch.testing.assert_close(gathered[b, m], feats[b, ib[m]])
            torch.testing.assert_close(pooled[b, m], feats[b, ib[m]].mean(0))


def test_pointconv_is_translation_equivariant() -> None:
    torch.manual_seed(4)
    conv = PointConv(3, 5, 7, [16, 16, 16]).double().eval()
    g = torch.Generator().manual_seed(4)
    coords = torch.rand(60, 3, generator=g, dtype=torch.float64)
    feats = torch.randn(2, 60, 5, generator=g, dtype=torch.float64)
    queries = torch.rand(15, 3, generator=g, dtype=torch.float64)

    def run(shift: torch.Tensor) -> torch.Tensor:
        c, q = coords + shift, queries + shift
        idx = canonical_knn(q, c, 27)
        return conv(feats, idx, c[idx] - q[:, None])

    torch.testing.assert_close(
        run(torch.tensor([0.7, -3.0, 12.5], dtype=torch.float64)),
        run(torch.zeros(3, dtype=torch.float64)),
        rtol=1e-9,
        atol=1e-9,
    )


def test_weight_net_layers() -> None:
    net = WeightNet(3, [16, 8], batchnorm=True, slope=0.1)
    kinds = [type(m).__name__ for m in net.net]
    assert kinds == ["Linear", "BatchNorm1d", "LeakyReLU", "Linear", "BatchNorm1d", "LeakyReLU"]
    assert net(torch.randn(4, 5, 3)).shape == (4, 5, 8) and net.out_dim == 8


@pytest.mark.parametrize("strategy", ["factored", "weights", "grouped"])
def test_shared_strategies_match_naive_through_double_backward(strategy: str) -> None:
    """Every form of the shared-neighbourhood PointConv equals the naive reference on a grid (where offsets recur,
    so 'grouped' merges pairs) in values, gradients and the second-order terms R1's penalty backpropagates."""
    from nfd.grid import grid_coords
    from nfd.models.neighbours import build_plan, pool_levels

    torch.manual_seed(4)
    coords = grid_coords(9, 2).double()
    level = build_plan(coords, pool_levels(1, 9)).levels[0]
    groups = level.conv_groups()
    assert len(groups.sizes) < 30 and sum(groups.sizes) == 81 * 9  # 25 offsets up to rounding
    conv = PointConv(2, 16, 6, [16, 16]).double().train()
    conv.strategy = strategy
    feats = torch.randn(3, 81, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 81, 6, dtype=torch.float64)

    def penalty(out: torch.Tensor) -> torch.Tensor:
        (g,) = torch.autograd.grad((out * w).sum(), feats, create_graph=True)
        return (out * w).sum() + g.pow(2).sum()

    out = conv.forward_shared(feats, level.conv_idx, level.conv_offsets, False, level.conv_groups).transpose(0, 1)
    ref = pointconv_naive(conv, feats, level.conv_idx, level.conv_offsets)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    params = [feats, *conv.parameters()]
    for a, b in zip(torch.autograd.grad(penalty(out), params), torch.autograd.grad(penalty(ref), params)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_auto_strategy_follows_the_cost_model_and_groups_only_where_grouped_may_win() -> None:
    from nfd.grid import grid_coords
    from nfd.models.neighbours import build_plan, pool_levels

    plan = build_plan(grid_coords(64, 2), pool_levels(2, 9))
    wide, narrow = PointConv(2, 64, 128, [16]), PointConv(2, 3, 64, [16])
    assert wide.shared_strategy(64, 1024, 9, plan.levels[1].conv_groups) == "grouped"  # 74 offsets, 9,216 pairs
    assert narrow.shared_strategy(64, 4096, 9, plan.levels[0].conv_groups) == "weights"  # 3 input channels
    assert plan.levels[0]._groups is None  # ...so its groups were never computed
    assert wide.shared_strategy(64, 1024, 9, None) in ("weights", "factored")
    # The last level of the 128^2 discriminator: 'weights' has the fewest multiply-adds, but its [64, 9 * 512, 1024]
    # tensor (1.2 GB) and gradient made it 3-4x slower than the factored form.
    last = PointConv(2, 512, 1024, [16, 16, 16, 16])
    macs = {f: sum(form_cost_terms(f, 22, 64, 9, 512, 1024, 16, 0)[:2]) for f in ("weights", "factored")}
    assert macs["weights"] < macs["factored"] and last.shared_strategy(22, 64, 9, None) == "factored"
    # Random points of a 3D grid: the grouped form cannot win even with the fewest possible groups (k), so the
    # offsets of these fresh points are not grouped at all.
    torch.manual_seed(0)
    pts = grid_coords(32, 3)[torch.randperm(32**3)[:4096].sort().values]
    level = build_plan(pts, pool_levels(1, 27)).levels[0]
    assert PointConv(3, 32, 64, [16] * 4).shared_strategy(26, 4096, 27, level.conv_groups) == "factored"
    assert level._groups is None
    with pytest.raises(ValueError, match="unknown PointConv form"):
        form_cost_terms("dense", 1, 1, 1, 1, 1, 1, 1)


@pytest.mark.parametrize("form", ["factored", "weights", "grouped"])
def test_form_cost_terms_count_the_multiply_adds_each_form_does(form: str) -> None:
    """The cost model's multiply-adds are those torch's FLOP counter sees in the form's products (less the weight
    MLP's, which every form shares)."""
    from torch.utils.flop_counter import FlopCounterMode

    from nfd.grid import grid_coords
    from nfd.models.neighbours import build_plan, pool_levels

    level = build_plan(grid_coords(12, 2), pool_levels(1, 9)).levels[0]
    conv = PointConv(2, 16, 24, [8, 8])
    conv.strategy = form
    x = torch.randn(5, 144, 16)

    def flops(fn) -> int:
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops()

    total = flops(lambda: conv.forward_shared(x, level.conv_idx, level.conv_offsets, False, level.conv_groups))
    mlp = flops(lambda: conv.weight_net(level.conv_offsets))
    terms = form_cost_terms(form, 5, 144, 9, 16, 24, 8, len(level.conv_groups().sizes))
    assert total - mlp == 2 * (terms[0] + terms[1])
