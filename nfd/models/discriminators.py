"""Discriminators on sets of (coordinate, feature) pairs: the PointConv point-cloud discriminator (paper Sec. 3.4,
App. A.2) and the PointNet/DeepSet set-discriminator baseline (App. B.2).

Both return logits ``[B]``; the sigmoid is applied by the loss, and the trainer's R1 penalty differentiates the
sigmoid (or the logit, ``train.r1_on``).
Both accept coordinates shared by the batch ``[N, d]`` or per-example ``[B, N, d]`` with features ``[B, N, k]``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from nfd.config import ConfigError, DiscriminatorConfig, EncodingConfig, parse_layers
from nfd.models.encoding import make_encoding
from nfd.models.neighbours import NeighbourPlan, build_plan, plan_cache
from nfd.models.pointconv import PointConv, avg_pool, avg_pool_points_major, pointconv_naive

Tensor = torch.Tensor


class PointConvDiscriminator(nn.Module):
    """DCGAN-like PointConv discriminator over the layers of ``cfg.layers`` (or ``cfg.channels``): per layer a
    PointConv (at every point, or at the farthest-point queries if strided), BatchNorm, LeakyReLU and, for 'pool'
    layers, average pooling onto 1/2^d of the points; finally a PointConv to one channel from all remaining points
    onto their centroid. Permutation invariant and translation invariant by construction.
    """

    def __init__(self, coord_dim: int, feature_dim: int, cfg: DiscriminatorConfig) -> None:
        super().__init__()
        self.coord_dim = coord_dim
        default_k = cfg.neighbours or 3**coord_dim
        layers = parse_layers(cfg)
        self.level_specs = tuple((mode, k or default_k) for mode, _, k in layers)
        """(mode, neighbours) of every level, the plan's settings."""
        self.keep_fraction = 1.0 / 2**coord_dim
        self.p = cfg.norm_p
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        width = feature_dim
        for _, c, _ in layers:
            self.convs.append(
                PointConv(coord_dim, width, c, cfg.weight_hidden, cfg.weightnet_batchnorm, cfg.leaky_slope)
            )
            self.norms.append(nn.BatchNorm1d(c) if cfg.batchnorm else nn.Identity())
            width = c
        self.act = nn.LeakyReLU(cfg.leaky_slope)
        self.final = PointConv(coord_dim, width, 1, cfg.weight_hidden, cfg.weightnet_batchnorm, cfg.leaky_slope)

    def plan(self, coords: Tensor) -> NeighbourPlan:
        """The neighbour plan for these coordinates, from the process-wide content-keyed cache."""
        return plan_cache.get(coords, self.level_specs, self.p, self.keep_fraction)

    def forward(
        self, coords: Tensor, features: Tensor, plan: NeighbourPlan | None = None, naive: bool = False
    ) -> Tensor:
        """Logits ``[B]``. ``naive=True`` re-plans with brute-force kNN and uses :func:`pointconv_naive`: the
        reference path of the benchmark."""
        if naive:
            plan = build_plan(coords, self.level_specs, self.p, self.keep_fraction, backend="naive")
        elif plan is None:
            plan = self.plan(coords)
        if plan.shared and not naive:
            return self._forward_shared(features, plan)
        h = features
        for conv, norm, level in zip(self.convs, self.norms, plan.levels):
            h = _apply(conv, h, level.conv_idx, level.conv_offsets, naive)
            h = self.act(norm(h.reshape(-1, h.shape[-1])).view_as(h))
            if level.pool_idx is not None:
                h = avg_pool(h, level.pool_idx)
        return _apply(self.final, h, plan.final_idx, plan.final_offsets, naive).reshape(-1)

    def _forward_shared(self, features: Tensor, plan: NeighbourPlan) -> Tensor:
        """The fast path for coordinates shared by the batch: activations stay points-major ``[N, B, C]`` (see
        nfd.models.pointconv), each PointConv takes the cheapest of its forms, pooling is one sparse product."""
        h, points_major = features, False
        for conv, norm, level in zip(self.convs, self.norms, plan.levels):
            h = conv.forward_shared(h, level.conv_idx, level.conv_offsets, points_major, level.conv_groups)  # [M, B, C]
            # In place on BatchNorm's output (a positive slope): autograd keeps the activation only, not both.
            slope = self.act.negative_slope
            h, points_major = F.leaky_relu(norm(h.view(-1, h.shape[-1])), slope, inplace=slope > 0).view_as(h), True
            if level.pool_idx is not None:
                h = avg_pool_points_major(h, level.pool_idx)
        return self.final.forward_shared(h, plan.final_idx, plan.final_offsets, points_major).reshape(-1)


def _apply(conv: PointConv, features: Tensor, nbr_idx: Tensor, offsets: Tensor, naive: bool) -> Tensor:
    return pointconv_naive(conv, features, nbr_idx, offsets) if naive else conv(features, nbr_idx, offsets)


def _mlp(widths: list[int], slope: float, last_act: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers.append(nn.Linear(a, b))
        if last_act or i < len(widths) - 2:
            layers.append(nn.LeakyReLU(slope))
    return nn.Sequential(*layers)


class SetDiscriminator(nn.Module):
    """App. B.2: D(s) = rho(n^{-1/2} sum_i phi(gamma_x(x_i), gamma_y(y_i))), RFF encodings gamma_x, gamma_y.

    The 1/sqrt(n) normalisation makes the Lipschitz constant independent of n (App. B.3.1). Ignores the metric on
    the coordinates, which is why the paper finds it inadequate (Sec. 3.6); kept as the baseline.
    """

    def __init__(self, coord_dim: int, feature_dim: int, cfg: DiscriminatorConfig) -> None:
        super().__init__()
        if not cfg.set_hidden:
            raise ConfigError("discriminator.set_hidden must not be empty for the set discriminator")
        enc = EncodingConfig(num_frequencies=cfg.set_num_frequencies, scale=cfg.set_scale)
        self.gamma_x = make_encoding(coord_dim, enc)
        self.gamma_y = make_encoding(feature_dim, enc)
        self.phi = _mlp([self.gamma_x.out_dim + self.gamma_y.out_dim, *cfg.set_hidden], cfg.leaky_slope, last_act=True)
        self.rho = _mlp([cfg.set_hidden[-1], *cfg.set_hidden, 1], cfg.leaky_slope, last_act=False)

    def plan(self, coords: Tensor) -> None:
        """No neighbourhoods: the set discriminator has nothing to plan (same interface as the PointConv one)."""
        return None

    def pool(self, coords: Tensor, features: Tensor) -> Tensor:
        """The set embedding n^{-1/2} sum_i phi(...) ``[B, H]``."""
        if coords.dim() == 2:
            coords = coords.expand(features.shape[0], -1, -1)
        e = torch.cat([self.gamma_x(coords.to(features.dtype)), self.gamma_y(features)], dim=-1)
        return self.phi(e).sum(dim=1) / math.sqrt(features.shape[1])

    def forward(
        self, coords: Tensor, features: Tensor, plan: NeighbourPlan | None = None, naive: bool = False
    ) -> Tensor:
        """Logits ``[B]``; ``plan`` and ``naive`` are accepted for interface parity and ignored."""
        return self.rho(self.pool(coords, features)).reshape(-1)


def build_discriminator(coord_dim: int, feature_dim: int, cfg: DiscriminatorConfig) -> nn.Module:
    """The discriminator ``cfg.kind`` asks for: 'pointconv' (the paper's) or 'set' (App. B.2 baseline)."""
    if cfg.kind == "pointconv":
        return PointConvDiscriminator(coord_dim, feature_dim, cfg)
    if cfg.kind == "set":
        return SetDiscriminator(coord_dim, feature_dim, cfg)
    raise ConfigError(f"discriminator.kind must be 'pointconv' or 'set', got '{cfg.kind}'")
