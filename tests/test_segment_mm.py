"""The grouped PointConv's gather-multiply-scatter Functions against a per-pair loop of autograd primitives."""

from __future__ import annotations

import pytest
import torch

from nfd.models.segment_mm import gather_mm_scatter, gather_outer, group_bounds

SIZES = [3, 0, 5, 1, 4]
"""Pairs per group, with an empty group."""


def _case(seed: int = 0, n: int = 7, m: int = 5, b: int = 3, cin: int = 4, cout: int = 2):
    g = torch.Generator().manual_seed(seed)
    pairs = sum(SIZES)
    src = torch.randint(0, n, (pairs,), generator=g)
    dst = torch.randint(0, m, (pairs,), generator=g)  # repeated queries within and across groups
    x = torch.randn(n, b * cin, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(len(SIZES), cin, cout, generator=g, dtype=torch.float64, requires_grad=True)
    return x, w, src, dst, m


def _naive(x: torch.Tensor, w: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, m: int) -> torch.Tensor:
    """One pair at a time: out[dst_p] += x[src_p] (as B rows of Cin) @ W of p's group."""
    cin, cout = w.shape[1:]
    b = x.shape[1] // cin
    group = torch.repeat_interleave(torch.arange(len(SIZES)), torch.tensor(SIZES))
    rows = [torch.zeros(b * cout, dtype=x.dtype) for _ in range(m)]
    for p in range(src.shape[0]):
        rows[int(dst[p])] = rows[int(dst[p])] + (x[src[p]].view(b, cin) @ w[group[p]]).reshape(-1)
    return torch.stack(rows)


def test_values_gradients_and_r1_terms_match_the_per_pair_loop() -> None:
    x, w, src, dst, m = _case()
    out = gather_mm_scatter(x, w, src, dst, group_bounds(SIZES), m)
    ref = _naive(x, w, src, dst, m)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    probe = torch.randn_like(out)

    def r1_like(y: torch.Tensor) -> torch.Tensor:
        # As R1: the gradient with respect to the inputs only, kept in the graph, then backpropagated to everything.
        (gx,) = torch.autograd.grad((y * probe).sum(), x, create_graph=True)
        return (y * probe).sum() + gx.pow(2).sum()

    fast = torch.autograd.grad(r1_like(out), (x, w))
    slow = torch.autograd.grad(r1_like(ref), (x, w))
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_both_functions_pass_gradcheck_to_second_order() -> None:
    x, w, src, dst, m = _case(seed=1)
    bounds = group_bounds(SIZES)
    d = torch.randn(m, x.shape[1] // w.shape[1] * w.shape[2], dtype=torch.float64, requires_grad=True)
    scatter = lambda x_, w_: gather_mm_scatter(x_, w_, src, dst, bounds, m)  # noqa: E731
    outer = lambda x_, d_: gather_outer(x_, d_, src, dst, bounds, w.shape[1])  # noqa: E731
    assert torch.autograd.gradgradcheck(scatter, (x, w)) and torch.autograd.gradcheck(scatter, (x, w))
    assert torch.autograd.gradgradcheck(outer, (x, d)) and torch.autograd.gradcheck(outer, (x, d))


def test_outer_is_the_gradient_of_the_weights() -> None:
    """gather_outer(x, g) is, per group, sum_p x[src_p]^T g[dst_p]: checked against autograd of the loop."""
    x, w, src, dst, m = _case(seed=2)
    ref = _naive(x, w, src, dst, m)
    g = torch.randn_like(ref)
    (gw,) = torch.autograd.grad((ref * g).sum(), w)
    torch.testing.assert_close(gather_outer(x, g, src, dst, group_bounds(SIZES), w.shape[1]), gw)


def test_bad_bounds_are_refused() -> None:
    x, w, src, dst, m = _case()
    with pytest.raises(ValueError, match="bounds"):
        gather_mm_scatter(x, w, src, dst, (0, 3, 3, 8, 9, 12), m)
    with pytest.raises(ValueError, match="weights"):
        gather_mm_scatter(x, w[:2], src, dst, group_bounds(SIZES), m)
