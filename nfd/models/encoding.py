"""Coordinate encodings applied before the function MLP f_theta (paper Sec. 2.3).

Plain coordinate MLPs are biased towards low frequencies; random Fourier features (RFF) let f_theta represent
high-frequency detail. The 3D chairs use no encoding (:class:`IdentityEncoding`).

Each encoding also states ``out_mean_square``, the mean of its squared outputs over the data domain [-1, 1]^d: the
hypernetwork's initialisation needs it to give the first layer of f_theta the right scale.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nfd.config import EncodingConfig


class FourierFeatures(nn.Module):
    """gamma(x) = [cos 2 pi B x, sin 2 pi B x] with B ~ N(0, scale^2) of shape [m, d].

    B is a buffer (saved in the state dict, so a checkpoint restores the same encoding) unless ``learnable``, in
    which case it is a Parameter (App. A.2.5 found learning it no better and slower).
    """

    out_mean_square = 0.5
    """cos^2 + sin^2 = 1 for every frequency, so the 2m outputs have mean square exactly 1/2 at every x."""

    def __init__(
        self,
        in_dim: int,
        num_frequencies: int,
        scale: float,
        learnable: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if in_dim < 1 or num_frequencies < 1:
            raise ValueError(
                f"FourierFeatures needs in_dim >= 1 and num_frequencies >= 1, got {in_dim}, {num_frequencies}"
            )
        if scale <= 0:
            raise ValueError(f"FourierFeatures needs scale > 0, got {scale}")
        device = generator.device if generator is not None else None
        B = torch.randn(num_frequencies, in_dim, generator=generator, device=device) * scale
        self.in_dim = in_dim
        self.out_dim = 2 * num_frequencies
        self.B: torch.Tensor
        if learnable:
            self.B = nn.Parameter(B)
        else:
            self.register_buffer("B", B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., d] -> [..., 2m]``: all cosines first, then all sines."""
        proj = 2.0 * math.pi * torch.matmul(x, self.B.t())
        return torch.cat([torch.cos(proj), torch.sin(proj)], dim=-1)

    def spectral_norm(self) -> float:
        """||B||, the largest singular value of B."""
        return float(torch.linalg.matrix_norm(self.B.detach(), ord=2))

    def lipschitz_bound(self) -> float:
        """Prop. 2 / App. C.2: Lip(gamma) <= 2 sqrt(2) pi ||B||.

        The paper prints sqrt(8 pi) ||B||, but its own last step is sqrt((2 pi ||B||)^2 + (2 pi ||B||)^2)
        = sqrt(8 pi^2) ||B|| = 2 sqrt(2) pi ||B||: the square on pi was lost. This bound is still not tight: the
        Jacobian is 2 pi [-diag(sin 2 pi Bx) B; diag(cos 2 pi Bx) B], whose Gram matrix is 4 pi^2 B^T B because
        sin^2 + cos^2 = 1, so its spectral norm is exactly 2 pi ||B|| at every x (tests check both facts).
        """
        return 2.0 * math.sqrt(2.0) * math.pi * self.spectral_norm()


class IdentityEncoding(nn.Module):
    """gamma(x) = x, for data where f_theta takes raw coordinates (the chairs, App. A.2.4)."""

    out_mean_square = 1.0 / 3.0
    """Mean square of a coordinate uniform on [-1, 1], the domain every grid uses (docs/contracts.md)."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def make_encoding(
    in_dim: int, cfg: EncodingConfig, generator: torch.Generator | None = None
) -> FourierFeatures | IdentityEncoding:
    """The encoding a config asks for: identity when ``cfg.num_frequencies == 0``, RFF otherwise."""
    if cfg.num_frequencies < 0:
        raise ValueError(f"encoding.num_frequencies must be >= 0, got {cfg.num_frequencies}")
    if cfg.num_frequencies == 0:
        return IdentityEncoding(in_dim)
    return FourierFeatures(in_dim, cfg.num_frequencies, cfg.scale, cfg.learnable, generator)
