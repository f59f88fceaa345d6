"""The function representation f_theta: an MLP whose weights theta come from outside (the hypernetwork).

Flat parameter layout. An example's parameters are one vector of length ``MLPShape.num_weights``; for each layer in
order it holds the weight matrix W of shape ``[out, in]`` in row-major order, then the bias b of shape ``[out]``.
A batch of B functions is a ``[B, P]`` tensor, one row per function. The hypernetwork's output layer is initialised
per slice of this layout (nfd.models.hypernetwork), so the layout is part of the contract between the two modules.

f_theta(x) = tanh(W_L leaky(... leaky(W_1 x + b_1) ...) + b_L): LeakyReLU between layers, tanh on the output so that
features lie in [-1, 1] like the data (App. A.2).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class MLPShape:
    """Widths of f_theta: ``in_dim -> hidden[0] -> ... -> hidden[-1] -> out_dim``."""

    in_dim: int
    hidden: tuple[int, ...]
    out_dim: int

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        """``(out, in)`` of every linear layer, input layer first."""
        widths = [self.in_dim, *self.hidden, self.out_dim]
        return [(o, i) for i, o in zip(widths[:-1], widths[1:])]

    @property
    def num_weights(self) -> int:
        """P, the number of weights plus biases, i.e. the length of one flat parameter vector."""
        return sum(o * i + o for o, i in self.layer_shapes)


def _layers(params: torch.Tensor, shape: MLPShape) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Views ``W [B, out, in]`` and ``b [B, out]`` of each layer in the flat ``[B, P]`` params (no copies)."""
    if params.dim() != 2 or params.shape[1] != shape.num_weights:
        raise ValueError(f"params must be [B, {shape.num_weights}], got {list(params.shape)}")
    # One split rather than a slice per tensor: the backward of a split is one concatenation of the pieces'
    # gradients, where every slice's backward would zero-fill a full [B, P] gradient and add it up (2L of them).
    n = params.shape[0]
    parts = params.split([s for o, i in shape.layer_shapes for s in (o * i, o)], dim=1)
    for k, (o, i) in enumerate(shape.layer_shapes):
        yield parts[2 * k].view(n, o, i), parts[2 * k + 1]


def _check_x(params: torch.Tensor, x: torch.Tensor, shape: MLPShape) -> None:
    if x.dim() != 3 or x.shape[-1] != shape.in_dim or x.shape[0] not in (1, params.shape[0]):
        raise ValueError(f"x must be [1 or {params.shape[0]}, N, {shape.in_dim}], got {list(x.shape)}")


def batched_mlp(params: torch.Tensor, x: torch.Tensor, shape: MLPShape, slope: float) -> torch.Tensor:
    """Evaluate B functions at once: ``params [B, P]``, ``x [B or 1, N, in] -> [B, N, out]``.

    One ``baddbmm`` per layer covers the whole batch: the cost is a few large batched matmuls rather than B small
    ones. ``x`` with batch 1 (coordinates shared by the batch) is broadcast with ``expand``, which copies nothing.
    """
    _check_x(params, x, shape)
    h = x.expand(params.shape[0], -1, -1)
    last = len(shape.layer_shapes) - 1
    for k, (W, b) in enumerate(_layers(params, shape)):
        h = torch.baddbmm(b.unsqueeze(1), h, W.transpose(1, 2))
        if k < last:
            # In place on the product's own output: autograd then keeps one [B, N, width] tensor per layer (the
            # activation, from which LeakyReLU's derivative follows for a positive slope) instead of two, half of
            # the generator's memory in the G step (1.0 GB at CelebAHQ 128's 22 x 16,384 points).
            h = F.leaky_relu(h, slope, inplace=slope > 0)
    return torch.tanh(h)


def per_example_mlp(params: torch.Tensor, x: torch.Tensor, shape: MLPShape, slope: float) -> torch.Tensor:
    """The naive reference for :func:`batched_mlp`: a Python loop over examples, ``F.linear`` per layer.

    Kept deliberately simple so that tests can check the batched version against it and a benchmark can show what
    batching buys.
    """
    _check_x(params, x, shape)
    outs = []
    for n in range(params.shape[0]):
        h = x[0] if x.shape[0] == 1 else x[n]
        layers = list(_layers(params[n : n + 1], shape))
        for k, (W, b) in enumerate(layers):
            h = F.linear(h, W[0], b[0])
            if k < len(layers) - 1:
                h = F.leaky_relu(h, slope)
        outs.append(torch.tanh(h))
    return torch.stack(outs)
