"""Gather, multiply by a per-group matrix, scatter: the grouped PointConv's product, differentiable to any order.

The grouped PointConv form (:meth:`nfd.models.pointconv.PointConv.forward_grouped`) sends each (query, neighbour)
pair ``p`` of offset group ``g`` through ``out[dst_p] += x[src_p] @ W_g``. Written with autograd primitives (one
gather of every pair, a product per group on slices of it, one scatter), R1's double backward turns each group's
piece into a zero-filled gradient the size of the level's whole input and keeps the gathered pairs (``k`` times the
input) alive: at the second level of the 64^2 discriminator that is 74 zeroed ``[1,024, 64 * 64]`` tensors per
step. Here the two maps the form needs,

    gather_mm_scatter(x, W)[dst_p] += x[src_p] @ W_g       x [N, B * Cin] -> [M, B * Cout]
    gather_outer(a, d)_g = sum_p a[ia_p]^T d[id_p]           a [Na, B * Cin], d [Nd, B * Cout] -> [G, Cin, Cout]

(rows of B examples each, points-major) are autograd Functions whose backward passes are again these two maps with
the roles of the index lists swapped: the set is closed under differentiation, so every order of derivative costs one
gather, one product and one scatter per group, on group-sized temporaries only.
"""

from __future__ import annotations

from typing import Any

import torch

Tensor = torch.Tensor
Bounds = tuple[int, ...]
"""Pair offsets of the groups: group g is pairs ``bounds[g]:bounds[g + 1]`` of the index lists."""


def _gms(x: Tensor, w: Tensor, src: Tensor, dst: Tensor, bounds: Bounds, n_out: int) -> Tensor:
    cin, cout = w.shape[1], w.shape[2]
    b = x.shape[1] // cin
    out = x.new_zeros(n_out, b * cout)
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        for g in range(len(bounds) - 1):
            lo, hi = bounds[g], bounds[g + 1]
            if hi > lo:
                prod = torch.mm(x.index_select(0, src[lo:hi]).view(-1, cin), w[g])
                out.index_add_(0, dst[lo:hi], prod.view(hi - lo, b * cout))
    return out


def _outer(a: Tensor, d: Tensor, ia: Tensor, id_: Tensor, bounds: Bounds, cin: int) -> Tensor:
    b = a.shape[1] // cin
    cout = d.shape[1] // b
    out = a.new_empty(len(bounds) - 1, cin, cout)
    with torch.no_grad(), torch.autocast(a.device.type, enabled=False):
        for g in range(len(bounds) - 1):
            lo, hi = bounds[g], bounds[g + 1]
            if hi > lo:
                ag = a.index_select(0, ia[lo:hi]).view(-1, cin)
                torch.mm(ag.t(), d.index_select(0, id_[lo:hi]).view(-1, cout), out=out[g])
            else:
                out[g].zero_()
    return out


def _wanted(ctx: Any, i: int, t: Tensor) -> bool:
    """Whether the running backward pass needs the gradient of input ``i`` (``t``). A Function's
    ``needs_input_grad`` only says whether the input requires grad: R1's ``autograd.grad`` with respect to the
    features would otherwise pay for the weights' gradient too, which it discards. The engine knows which nodes it
    will run (the check ``torch.autograd.graph.register_multi_grad_hook`` relies on); without that check, or for
    leaves, the gradient is computed."""
    if not ctx.needs_input_grad[i]:
        return False
    will_run = getattr(torch._C, "_will_engine_execute_node", None)
    if will_run is None or t.grad_fn is None:
        return True
    return bool(will_run(t.grad_fn))


class _GatherMMScatter(torch.autograd.Function):
    @staticmethod
    def forward(x: Tensor, w: Tensor, src: Tensor, dst: Tensor, bounds: Bounds, n_out: int) -> Tensor:
        return _gms(x, w, src, dst, bounds, n_out)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        x, w, src, dst, bounds, _ = inputs
        ctx.save_for_backward(x, w, src, dst)
        ctx.bounds = bounds

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, w, src, dst = ctx.saved_tensors
        gx = gw = None
        if _wanted(ctx, 0, x):
            gx = gather_mm_scatter(grad, w.transpose(1, 2), dst, src, ctx.bounds, x.shape[0])
        if _wanted(ctx, 1, w):
            gw = gather_outer(x, grad, src, dst, ctx.bounds, w.shape[1])
        return gx, gw, None, None, None, None


class _GatherOuter(torch.autograd.Function):
    @staticmethod
    def forward(a: Tensor, d: Tensor, ia: Tensor, id_: Tensor, bounds: Bounds, cin: int) -> Tensor:
        return _outer(a, d, ia, id_, bounds, cin)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        a, d, ia, id_, bounds, _ = inputs
        ctx.save_for_backward(a, d, ia, id_)
        ctx.bounds = bounds

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        a, d, ia, id_ = ctx.saved_tensors
        ga = gd = None
        if _wanted(ctx, 0, a):
            ga = gather_mm_scatter(d, grad.transpose(1, 2), id_, ia, ctx.bounds, a.shape[0])
        if _wanted(ctx, 1, d):
            gd = gather_mm_scatter(a, grad, ia, id_, ctx.bounds, d.shape[0])
        return ga, gd, None, None, None, None


def _check(x: Tensor, channels: int, index: Tensor, bounds: Bounds, what: str) -> None:
    if x.dim() != 2 or x.shape[1] % channels:
        raise ValueError(f"{what}: rows must be [N, B * {channels}], got {tuple(x.shape)}")
    if index.dim() != 1 or len(bounds) < 1 or bounds[0] != 0 or bounds[-1] != index.shape[0]:
        raise ValueError(f"{what}: group bounds must run from 0 to the {index.shape[0]} pairs, got {bounds[:1]}..")


def gather_mm_scatter(x: Tensor, w: Tensor, src: Tensor, dst: Tensor, bounds: Bounds, n_out: int) -> Tensor:
    """``out [n_out, B * Cout]`` with ``out[dst_p] += x[src_p] @ w[g]`` for the pairs ``p`` of each group ``g``
    (``bounds``), rows of ``x [N, B * Cin]`` read as B rows of Cin channels."""
    if w.dim() != 3 or len(bounds) != w.shape[0] + 1:
        raise ValueError(f"gather_mm_scatter: weights must be [{len(bounds) - 1}, Cin, Cout], got {tuple(w.shape)}")
    _check(x, w.shape[1], src, bounds, "gather_mm_scatter")
    dtype = torch.promote_types(x.dtype, w.dtype)
    return _GatherMMScatter.apply(x.to(dtype), w.to(dtype), src, dst, bounds, n_out)


def gather_outer(a: Tensor, d: Tensor, ia: Tensor, id_: Tensor, bounds: Bounds, cin: int) -> Tensor:
    """``[G, Cin, Cout]``: for each group ``g`` (``bounds``), the sum over its pairs ``p`` of
    ``a[ia_p]^T @ d[id_p]``, rows of ``a [Na, B * Cin]`` and ``d [Nd, B * Cout]`` read as B rows each."""
    _check(a, cin, ia, bounds, "gather_outer")
    dtype = torch.promote_types(a.dtype, d.dtype)
    return _GatherOuter.apply(a.to(dtype), d.to(dtype), ia, id_, bounds, cin)


def group_bounds(sizes: list[int]) -> Bounds:
    """Pair offsets of consecutive groups of ``sizes`` pairs."""
    out = [0]
    for s in sizes:
        out.append(out[-1] + s)
    return tuple(out)
