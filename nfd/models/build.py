"""Builds the models of a config for given data dimensions, and picks the device."""

from __future__ import annotations

import torch
from torch import nn

from nfd.config import Config
from nfd.errors import NfdError


def pick_device(name: str = "auto") -> torch.device:
    """'auto' takes CUDA when present; an explicit CUDA request without CUDA is an error, not a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise NfdError(f"device '{name}' requested but CUDA is not available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise NfdError(f"unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from None


def build_generator(
    cfg: Config, coord_dim: int, feature_dim: int, num_examples: int = 0, points_per_example: int = 0
) -> nn.Module:
    """The NFD (GAN runs) or the auto-decoder (which also holds one latent per training example and needs the
    number of points of a full example to weigh its prior term)."""
    if cfg.train.model == "autodecoder":
        from nfd.models.autodecoder import AutoDecoder

        return AutoDecoder(
            num_examples,
            coord_dim,
            feature_dim,
            cfg.generator,
            prior_std=cfg.train.autodecoder_prior_std,
            points_per_example=points_per_example,
        )
    from nfd.models.hypernetwork import FunctionDistribution

    return FunctionDistribution(coord_dim, feature_dim, cfg.generator)


def build_discriminator_for(cfg: Config, coord_dim: int, feature_dim: int) -> nn.Module:
    from nfd.models.discriminators import build_discriminator

    return build_discriminator(coord_dim, feature_dim, cfg.discriminator)
