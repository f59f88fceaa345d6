"""PointConv layers (Wu et al., 2019) as used by the point-cloud discriminator (paper Sec. 3.4.1).

f_out(x) = sum_{x_i in N_x} W(x_i - x) f_i, with W: R^d -> R^{Cout x Cin} given by an MLP. Materialising W for every
neighbour costs M * k * Cout * Cin; the efficient form factors W(u) = L . h(u), with h the weight MLP (width "mid")
and L one linear map, so that sum_i W(x_i - x) f_i = L vec(sum_i f_i h(x_i - x)^T): one contraction over the
neighbours and one Linear.

Shared neighbourhoods (every example of the batch on the same coordinates, as in every paper configuration) allow more
savings, used by :meth:`PointConv.forward_shared` and the discriminator's fast path:

* Materialised weights. With shared offsets, W(x_i - x) = L . h(x_i - x) is the same for the whole batch, so it can
  be built once, ``[M, k * Cin, Cout]``, and applied as one batched matrix product over the M queries. Per query
  this costs ``B k Cin Cout + k Cin Cout mid`` multiply-adds against ``B (k Cin mid + Cin mid Cout)`` for the
  factored form, but the tensor and its gradient are large and used by products with only B rows.
* Weights per distinct offset. On grids the same offsets recur across a level
  (:class:`nfd.models.neighbours.OffsetGroups`), so W(u) is needed once per distinct offset u, and each group's pairs
  form one tall product ``[pairs * B, Cin] @ W(u)`` (:meth:`PointConv.forward_grouped`): the multiply-adds of the
  materialised form without its ``[M, k * Cin, Cout]`` tensor, for one product and one accumulation per group
  (:func:`nfd.models.segment_mm.gather_mm_scatter`, whose derivatives of every order keep that shape).
* Points-major activations ``[N, B, C]``: gathering neighbours is then a row gather of ``[N, B * C]`` (contiguous
  blocks), the factored contraction is one ``bmm`` over the queries with no permuted copies, and average pooling is
  one sparse matrix product (:func:`avg_pool_points_major`).

:meth:`PointConv.shared_strategy` picks the form per layer by a cost model fitted to measurements
(:func:`form_cost_terms`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from nfd.models.neighbours import OffsetGroups
from nfd.models.segment_mm import gather_mm_scatter, group_bounds

Tensor = torch.Tensor


def gather_neighbours(features: Tensor, nbr_idx: Tensor) -> Tensor:
    """Features ``[B, N, C]`` at shared ``[M, k]`` or per-example ``[B, M, k]`` indices -> ``[B, M, k, C]``."""
    b, n, c = features.shape
    if nbr_idx.dim() == 2:
        return features.index_select(1, nbr_idx.reshape(-1)).view(b, *nbr_idx.shape, c)
    base = torch.arange(b, device=nbr_idx.device).view(b, 1, 1) * n
    return features.reshape(b * n, c).index_select(0, (nbr_idx + base).reshape(-1)).view(*nbr_idx.shape, c)


def avg_pool(features: Tensor, nbr_idx: Tensor) -> Tensor:
    """Average of ``features`` ``[B, N, C]`` over each query's neighbours ``[(B,) M, k]`` -> ``[B, M, C]``."""
    return gather_neighbours(features, nbr_idx).mean(dim=2)


def pooling_matrix(nbr_idx: Tensor, num_points: int, dtype: torch.dtype) -> Tensor:
    """The sparse ``[M, N]`` matrix (COO, coalesced) averaging each query's ``k`` neighbours ``nbr_idx [M, k]``."""
    m, k = nbr_idx.shape
    rows = torch.arange(m, device=nbr_idx.device).repeat_interleave(k)
    values = torch.full((m * k,), 1.0 / k, dtype=dtype, device=nbr_idx.device)
    return torch.sparse_coo_tensor(
        torch.stack([rows, nbr_idx.reshape(-1)]), values, (m, num_points), check_invariants=False
    ).coalesce()


def avg_pool_points_major(features: Tensor, nbr_idx: Tensor) -> Tensor:
    """:func:`avg_pool` for points-major ``features [N, B, C]`` and shared ``nbr_idx [M, k]`` -> ``[M, B, C]``.

    On CPU this is one sparse-dense product (differentiable to any order, so R1's double backward goes through it)
    and never materialises the ``[M, k, B, C]`` neighbour features; elsewhere a row gather and a mean.
    """
    n, b, c = features.shape
    m, k = nbr_idx.shape
    flat = features.reshape(n, b * c)
    if features.device.type == "cpu" and features.dtype in (torch.float32, torch.float64):
        out = torch.sparse.mm(pooling_matrix(nbr_idx, n, features.dtype), flat)
    else:
        out = flat.index_select(0, nbr_idx.reshape(-1)).view(m, k, b * c).mean(dim=1)
    return out.view(m, b, c)


class WeightNet(nn.Module):
    """The MLP h(x_i - x): offsets ``[..., d]`` -> ``[..., mid]``, every layer Linear (+ BatchNorm) + LeakyReLU.

    BatchNorm statistics are taken over all offsets passed in one call (App. A.2.5: needed for stable training).
    """

    def __init__(self, coord_dim: int, hidden: list[int], batchnorm: bool = True, slope: float = 0.2) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("WeightNet needs at least one hidden layer")
        layers: list[nn.Module] = []
        width = coord_dim
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if batchnorm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.LeakyReLU(slope))
            width = h
        self.net = nn.Sequential(*layers)
        self.out_dim = width

    def forward(self, offsets: Tensor) -> Tensor:
        lead = offsets.shape[:-1]
        return self.net(offsets.reshape(-1, offsets.shape[-1])).view(*lead, self.out_dim)


def form_cost_terms(
    form: str, batch: int, queries: int, k: int, cin: int, cout: int, mid: int, num_groups: int
) -> tuple[float, ...]:
    """The cost terms of one form of :meth:`PointConv.forward_shared` (one forward pass; the backward passes scale
    with it): efficient multiply-adds (products with long inner dimensions), multiply-adds in products whose inner
    dimension is only ``k`` or ``mid``, floats of the large intermediates, offset groups (one product and one
    accumulation each; ``num_groups`` matters for 'grouped' only) and queries of the factored form's batched
    product. Weighted by :attr:`PointConv.COST_WEIGHTS`."""
    b, m, c, o, j = batch, queries, cin, cout, mid
    if form == "factored":  # bmm [M, B * Cin, k] @ [M, k, mid], then [M * B, Cin * mid] @ [Cin * mid, Cout]
        return (m * b * c * j * o, m * b * c * j * k, m * k * b * c + m * b * c * j, 0, m)
    if form == "weights":  # W = h @ L: [M * k, mid] @ [mid, Cin * Cout], then bmm [M, B, k * Cin] @ W
        return (m * k * c * o * b, m * k * j * c * o, m * k * c * o + m * b * k * c, 0, 0)
    if form == "grouped":  # per offset group: [pairs * B, Cin] @ W(u), accumulated into [M, B * Cout]
        floats = m * k * b * (c + o) + num_groups * c * o  # the pairs' rows and products, and W(u) [G, Cin, Cout]
        return (m * k * b * c * o + num_groups * j * c * o, 0, floats, num_groups, 0)
    raise ValueError(f"unknown PointConv form '{form}' (known: factored, weights, grouped)")


def _cost(terms: tuple[float, ...]) -> float:
    return sum(t * w for t, w in zip(terms, PointConv.COST_WEIGHTS))


class PointConv(nn.Module):
    """Efficient PointConv: ``forward(features [B, N, Cin], nbr_idx, offsets) -> [B, M, Cout]``.

    With shared neighbourhoods (``nbr_idx [M, k]``, ``offsets [M, k, d]``) the weight MLP runs once for the whole
    batch and :meth:`forward_shared` is used; per-example ones (``[B, M, k]``, ``[B, M, k, d]``) are also accepted.
    """

    def __init__(
        self,
        coord_dim: int,
        in_ch: int,
        out_ch: int,
        weight_hidden: list[int],
        batchnorm: bool = True,
        slope: float = 0.2,
    ) -> None:
        super().__init__()
        self.in_ch, self.out_ch = in_ch, out_ch
        self.weight_net = WeightNet(coord_dim, weight_hidden, batchnorm, slope)
        self.mid = self.weight_net.out_dim
        # Column c * mid + j couples input channel c with weight-MLP output j.
        self.linear = nn.Linear(in_ch * self.mid, out_ch)

    strategy: str = "auto"
    """Shared-neighbourhood form: 'auto' (see :meth:`shared_strategy`), 'factored', 'weights' or 'grouped'."""

    GROUPED_MIN_IN_CH = 64
    """Narrower inputs never take the grouped form: its products would have Cin columns (Cin 3: 0.39 s -> 1.36 s;
    ``demo_mnist``'s 32 -> 64 level, which the cost model fitted to the paper presets would give it: its bf16 step at
    2 threads 0.28 s -> 0.34 s, alternating in one process). Every grouped level of the paper presets has 64 or more."""

    COST_WEIGHTS = (1.0, 14.0, 230.0, 1.2e6, 0.0)
    """Weights of :func:`form_cost_terms` in multiply-add equivalents: (efficient multiply-adds, multiply-adds of
    products with an inner dimension of ``k`` or ``mid``, floats materialised, offset groups, queries of the factored
    form's batched product). Fitted by non-negative least squares to every level of every paper preset, each form
    timed through forward, R1's gradient and the backward of both (``benchmarks/bench_pointconv_forms.py --fit``,
    2 threads, 2-core AMD EPYC with AVX-512, 2026-12-03, with nfd's runtime tuning: freed memory kept by malloc,
    which made the large intermediates of the 'weights' form several times cheaper than in the earlier fit); with
    them the chosen forms took 8.53 s of the levels' 8.15 s best, against 9.08 s for the previous weights."""

    def shared_strategy(
        self, batch: int, queries: int, k: int, groups: Callable[[], OffsetGroups] | None = None
    ) -> str:
        """The form of :meth:`forward_shared` for ``batch`` examples, ``queries`` query points and ``k`` shared
        neighbours, unless :attr:`strategy` says: the one of least modelled cost (:func:`form_cost_terms` weighted
        by :attr:`COST_WEIGHTS`). Multiply-adds alone mislead: the 'weights' form has the fewest at small batches
        but materialises ``[M, k * Cin, Cout]`` (1.2 GB at the last level of the 128^2 discriminator) and its
        gradient, and took 6.2-8.6 s there against 2.0-2.8 s for the others. ``groups`` returns the offset groups
        (e.g. :meth:`nfd.models.neighbours.PlanLevel.conv_groups`); it is called only when the grouped form could
        win even with the fewest groups possible (``k``), so fresh point sets that never take it do not pay for
        grouping (~0.2 s for a 4,096-point 3D level).
        """
        if self.strategy != "auto":
            if self.strategy == "grouped" and groups is None:
                raise ValueError("PointConv.strategy 'grouped' needs the offset groups of a shared plan")
            return self.strategy
        shape = (batch, queries, k, self.in_ch, self.out_ch, self.mid)
        costs = {form: _cost(form_cost_terms(form, *shape, k)) for form in ("factored", "weights")}
        best = min(costs, key=costs.__getitem__)
        if groups is None or self.in_ch < self.GROUPED_MIN_IN_CH:
            return best
        if _cost(form_cost_terms("grouped", *shape, k)) >= costs[best]:  # a lower bound: at least k offsets
            return best
        if _cost(form_cost_terms("grouped", *shape, len(groups().sizes))) < costs[best]:
            return "grouped"
        return best

    def forward_shared(
        self,
        features: Tensor,
        nbr_idx: Tensor,
        offsets: Tensor,
        points_major: bool,
        groups: Callable[[], OffsetGroups] | None = None,
    ) -> Tensor:
        """PointConv on neighbourhoods shared by the batch: ``nbr_idx [M, k]``, ``offsets [M, k, d]`` (and a
        function returning their offset ``groups``, if known); features ``[N, B, Cin]`` if ``points_major`` else
        ``[B, N, Cin]``. Returns points-major ``[M, B, Cout]``.

        Same numbers as :meth:`forward` up to rounding, by every strategy (module docstring). Inputs in the other
        layout are transposed first (cheap where used: the pooled activations, or the raw features).
        """
        m, k = nbr_idx.shape
        b = features.shape[1] if points_major else features.shape[0]
        c, o, j = self.in_ch, self.out_ch, self.mid
        strategy = self.shared_strategy(b, m, k, groups)
        h = self.weight_net(offsets.to(features.dtype))  # [M, k, mid], once for the batch
        if strategy == "grouped":
            assert groups is not None
            return self.forward_grouped(features if points_major else features.transpose(0, 1), h, m, groups())
        if strategy == "weights":
            x = features.transpose(0, 1).contiguous() if points_major else features  # [B, N, Cin]
            # W[m, (k, c), o] = sum_j L[o, c * mid + j] h[m, k, j]: one product, shared by the batch.
            lin = self.linear.weight.view(o, c, j).permute(2, 1, 0).reshape(j, c * o)
            w = torch.mm(h.reshape(m * k, j), lin).view(m, k * c, o)
            g = x.index_select(1, nbr_idx.reshape(-1)).view(b, m, k * c)  # [B, M, k * Cin]
            return torch.baddbmm(self.linear.bias.view(1, 1, o), g.transpose(0, 1), w)  # [M, B, Cout]
        x = features if points_major else features.transpose(0, 1)
        n = x.shape[0]
        g = x.reshape(n, b * c).index_select(0, nbr_idx.reshape(-1)).view(m, k, b * c)  # [M, k, B * Cin]
        z = torch.bmm(g.transpose(1, 2), h)  # [M, B * Cin, mid] = [M * B, Cin * mid] rows
        return nn.functional.linear(z.view(m * b, c * j), self.linear.weight, self.linear.bias).view(m, b, o)

    def forward_grouped(self, x: Tensor, h: Tensor, m: int, groups: OffsetGroups) -> Tensor:
        """The 'grouped' form: points-major ``x [N, B, Cin]``, the weight MLP's output ``h [M, k, mid]`` for the pairs,
        ``m`` queries -> ``[M, B, Cout]``. W(u) = L . (mean of h over u's pairs): the pairs of a group have the same
        offset up to rounding, and the mean lets each of them receive its share of the gradient."""
        n, b, c = x.shape
        o, j = self.out_ch, self.mid
        h_group = h.new_zeros(len(groups.sizes), j).index_add(0, groups.pair_group, h.reshape(-1, j))
        h_group = h_group / groups.counts.to(h.dtype).unsqueeze(1)
        lin = self.linear.weight.view(o, c, j).permute(2, 1, 0).reshape(j, c * o)
        weights = torch.mm(h_group, lin).view(-1, c, o)  # W(u) [G, Cin, Cout]; bf16 under autocast
        rows = x.reshape(n, b * c).to(weights.dtype)
        out = gather_mm_scatter(rows, weights, groups.src, groups.rows, group_bounds(groups.sizes), m)
        return out.view(m, b, o) + self.linear.bias.to(out.dtype)

    def forward(self, features: Tensor, nbr_idx: Tensor, offsets: Tensor) -> Tensor:
        if nbr_idx.dim() == 2 and offsets.dim() == 3:
            return self.forward_shared(features, nbr_idx, offsets, points_major=False).transpose(0, 1)
        b = features.shape[0]
        m = nbr_idx.shape[-2]
        h = self.weight_net(offsets.to(features.dtype))  # [(B,) M, k, mid]
        g = gather_neighbours(features, nbr_idx)  # [B, M, k, Cin]
        # Sum over the k neighbours of f_i h_i^T -> [B, M, Cin, mid]; einsum avoids materialising h per example.
        z = torch.einsum("bmkc,mkj->bmcj" if h.dim() == 3 else "bmkc,bmkj->bmcj", g, h)
        return self.linear(z.reshape(b, m, self.in_ch * self.mid))


def pointconv_naive(conv: PointConv, features: Tensor, nbr_idx: Tensor, offsets: Tensor) -> Tensor:
    """Reference for :class:`PointConv` with its parameters: materialise W(x_i - x) in R^{Cout x Cin} for every
    neighbour and sum W f_i, one example at a time.

    The weight MLP sees all offsets in one call, as in the efficient form, so BatchNorm statistics agree.
    """
    b = features.shape[0]
    m, k = nbr_idx.shape[-2:]
    h = conv.weight_net(offsets.to(features.dtype))  # [(B,) M, k, mid]
    lin = conv.linear.weight.view(conv.out_ch, conv.in_ch, conv.mid)
    w = torch.einsum("ocj,...j->...oc", lin, h)  # [(B,) M, k, Cout, Cin]
    # Laid out once as [(B,) M, Cout, k * Cin], so that each example's sum over its neighbours is one batched product
    # whose backward uses W transposed in place: a per-example copy of W, kept by R1's double backward, would make
    # this reference's memory grow by |W| per example.
    w = w.transpose(-3, -2).reshape(*w.shape[:-4], m, conv.out_ch, k * conv.in_ch)
    outs = []
    for i in range(b):
        idx = nbr_idx if nbr_idx.dim() == 2 else nbr_idx[i]
        wi = w if w.dim() == 3 else w[i]
        f = features[i][idx].reshape(m, k * conv.in_ch, 1)  # [M, k * Cin, 1]
        outs.append(torch.bmm(wi, f).squeeze(-1) + conv.linear.bias)
    return torch.stack(outs)
