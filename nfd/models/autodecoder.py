"""The auto-decoder baseline of App. B.1 (Park et al., 2019), with the same decoder as the NFD.

Every training example i owns a learnable latent z_i; the decoder maps z_i to the weights of f_theta exactly as
the GAN's generator does (hypernetwork, then function MLP). Training maximises
sum_i log p(s_i | z_i) + log p(z_i) over the decoder and the z_i. New functions are then sampled by drawing
z ~ N(0, prior_std^2) from the prior: the paper's point is that nothing in the objective makes the trained z_i
follow that prior (the prior term only shrinks their norms), so these samples are poor unless prior_std is so
small that the z_i barely leave their initial N(0, prior_std^2) draws.

Latents are stored in prior units, z ~ N(0, prior_std^2), so optimiser steps act on them as in the paper. The
decoder sees z / prior_std, a fixed rescaling: its input then has unit variance, which is what its initialisation
assumes (nfd.models.hypernetwork); without it, prior_std = 0.01 would shrink every initial function to a constant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nfd.config import GeneratorConfig
from nfd.models.hypernetwork import FunctionDistribution


class AutoDecoder(nn.Module):
    """Per-example latents (``latents``, an ``nn.Embedding``) and a :class:`FunctionDistribution` ``decoder``."""

    def __init__(
        self,
        num_examples: int,
        coord_dim: int,
        feature_dim: int,
        cfg: GeneratorConfig,
        prior_std: float,
        points_per_example: int,
    ) -> None:
        super().__init__()
        if prior_std <= 0 or num_examples < 1 or points_per_example < 1:
            raise ValueError(
                f"AutoDecoder needs prior_std > 0, num_examples >= 1 and points_per_example >= 1, "
                f"got {prior_std}, {num_examples}, {points_per_example}"
            )
        self.num_examples = num_examples
        self.prior_std = prior_std
        self.points_per_example = points_per_example
        self.decoder = FunctionDistribution(coord_dim, feature_dim, cfg)
        self.latent_dim = self.decoder.latent_dim
        self.latents = nn.Embedding(num_examples, self.latent_dim)
        nn.init.normal_(self.latents.weight, std=prior_std)

    def sample_latents(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """n draws of z ~ N(0, prior_std^2), the prior that sampling new functions relies on."""
        return self.decoder.sample_latents(n, generator, device) * self.prior_std

    def forward(self, z: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """Features ``[B, N, k]`` of the functions of latents ``z`` (prior units) at ``coords``."""
        return self.decoder(z / self.prior_std, coords)

    def evaluate(
        self, z: torch.Tensor, coords: torch.Tensor, chunk_points: int = 65536, chunk_batch: int = 16
    ) -> torch.Tensor:
        """Chunked, gradient-free :meth:`forward` into a float32 CPU tensor (FunctionDistribution.evaluate)."""
        return self.decoder.evaluate(z / self.prior_std, coords, chunk_points, chunk_batch)

    def loss(
        self, example_idx: torch.Tensor, coords: torch.Tensor, features: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """MAP loss of App. B.1 for examples ``example_idx [B]`` observed at ``coords`` with ``features [B, K, k]``.

        With a Gaussian likelihood of variance 1/2, -log p(s|z) - log p(z) for one example of n points and k
        features is sum ||f(x_i) - y_i||^2 + ||z||^2 / (2 prior_std^2) + const. Dividing by the n k scalars of the
        example gives ``recon`` = the MSE (estimated without bias from the K <= n points given) plus
        ``prior`` = ||z||^2 / (2 prior_std^2 n k), with n = ``points_per_example`` (the full example, so the
        balance does not depend on how many points a step samples); both are averaged over the batch.
        Returns the total and detached parts ``recon``, ``prior`` and ``latent_norm`` (mean ||z||).
        """
        z = self.latents(example_idx)
        recon = F.mse_loss(self(z, coords), features)
        sq = z.pow(2).sum(dim=1)
        prior = (sq / (2.0 * self.prior_std**2 * self.points_per_example * features.shape[-1])).mean()
        parts = {"recon": recon.detach(), "prior": prior.detach(), "latent_norm": sq.sqrt().mean().detach()}
        return recon + prior, parts
