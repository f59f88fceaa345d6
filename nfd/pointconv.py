"""PointConv layers (Wu et al., 2019) as used by the point-cloud discriminator (paper Sec. 3.4.1).

f_out(x) = sum_{x_i in N_x} W(x_i - x) f_i, with W: R^d -> R^{Cout x Cin} given by an MLP. Materialising W for every
neighbour costs M * k * Cout * Cin; the efficient form factors W(u) = L . h(u), with h the weight MLP (width "mid")
and L one linear map, so that sum_i W(x_i - x) f_i = L vec(sum_i f_i h(x_i - x)^T): one contraction over the
neighbours and one Linear.
"""

from __future__ import annotations

import torch
from torch import nn

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


class PointConv(nn.Module):
    """Efficient PointConv: ``forward(features [B, N, Cin], nbr_idx, offsets) -> [B, M, Cout]``.

    With shared neighbourhoods (``nbr_idx [M, k]``, ``offsets [M, k, d]``) the weight MLP runs once for the whole
    batch; per-example ones (``[B, M, k]``, ``[B, M, k, d]``) are also accepted.
    """

    def __init__(self, coord_dim: int, in_ch: int, out_ch: int, weight_hidden: list[int], batchnorm: bool = True,
                 slope: float = 0.2) -> None:
        super().__init__()
        self.in_ch, self.out_ch = in_ch, out_ch
        self.weight_net = WeightNet(coord_dim, weight_hidden, batchnorm, slope)
        self.mid = self.weight_net.out_dim
        # Column c * mid + j couples input channel c with weight-MLP output j.
        self.linear = nn.Linear(in_ch * self.mid, out_ch)

    def forward(self, features: Tensor, nbr_idx: Tensor, offsets: Tensor) -> Tensor:
        b = features.shape[0]
        m = nbr_idx.shape[-2]
        h = self.weight_net(offsets.to(features.dtype))            # [(B,) M, k, mid]
        g = gather_neighbours(features, nbr_idx)                   # [B, M, k, Cin]
        # Sum over the k neighbours of f_i h_i^T -> [B, M, Cin, mid]; einsum avoids materialising h per example.
        z = torch.einsum("bmkc,mkj->bmcj" if h.dim() == 3 else "bmkc,bmkj->bmcj", g, h)
        return self.linear(z.reshape(b, m, self.in_ch * self.mid))


def pointconv_naive(conv: PointConv, features: Tensor, nbr_idx: Tensor, offsets: Tensor) -> Tensor:
    """Reference for :class:`PointConv` with its parameters: materialise W(x_i - x) in R^{Cout x Cin} for every
    neighbour and sum W f_i, one example at a time.

    The weight MLP sees all offsets in one call, as in the efficient form, so BatchNorm statistics agree.
    """
    b = features.shape[0]
    h = conv.weight_net(offsets.to(features.dtype))                          # [(B,) M, k, mid]
    lin = conv.linear.weight.view(conv.out_ch, conv.in_ch, conv.mid)
    w = torch.einsum("ocj,...j->...oc", lin, h)                             # [(B,) M, k, Cout, Cin]
    outs = []
    for i in range(b):
        idx = nbr_idx if nbr_idx.dim() == 2 else nbr_idx[i]
        wi = w if w.dim() == 4 else w[i]
        f = features[i][idx]                                                 # [M, k, Cin]
        outs.append((wi @ f.unsqueeze(-1)).squeeze(-1).sum(dim=1) + conv.linear.bias)
    return torch.stack(outs)
