"""Neural function distributions (paper Sec. 3.1): z ~ N(0, I), theta = g_phi(z), features y = f_theta(gamma(x)).

Initialisation. ``generator.init = 'pytorch'`` (the default) keeps PyTorch's default Linear init for every layer of
g_phi, as the authors' released code does. ``'hyperfan_in'`` is the alternative described here. With PyTorch's
default init, the hypernetwork's outputs, i.e. the weights of
f_theta, have no relation to the fan-in of the layers they feed (for the chairs model each initial function is
nearly constant: pre-tanh std about 0.05 over x). We instead choose g_phi's initialisation so that every layer of
f_theta receives weights scaled to its own fan-in and input scale, as a He init would scale them:

* Hidden layers of g_phi: Kaiming-normal for LeakyReLU(slope), zero biases. For z ~ N(0, I) every hidden
  activation then has mean square 1, so the output layer's input h has E[h_k^2] = 1.
* Output layer of g_phi: zero bias (all of theta depends on z, so functions differ at init) and weights of std
  ``sqrt(v_j / D)`` in the row producing parameter j (D = width of h), which gives theta_j variance v_j over z.
* v_j per layer of f_theta with fan-in n, whose input has mean square m: the bias is treated as the weight of an
  extra input equal to 1, and the n + 1 terms share the variance equally, so Var(W) = 1 / ((n + 1) m) and
  Var(b) = 1 / (n + 1), giving every pre-activation of f_theta mean square 1. m is the encoding's
  ``out_mean_square`` for the first layer (1/2 for RFF, 1/3 for raw coordinates) and (1 + slope^2) / 2, the mean
  square of LeakyReLU(u) for u ~ N(0, 1), for later layers.

So f_theta's pre-tanh output starts with std about 1 over z and x: outputs span [-1, 1] without saturating. The
bias share keeps each function from being positively homogeneous in x (with zero biases and no encoding,
f(c x) = c f(x) pre-tanh, and f(0) = 0 for every z).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nfd.config import GeneratorConfig
from nfd.models.encoding import make_encoding
from nfd.models.function import MLPShape, batched_mlp, per_example_mlp


def hyperfan_in_variances(shape: MLPShape, slope: float, in_mean_square: float) -> torch.Tensor:
    """Target variance over z of every entry of theta (flat layout of nfd.models.function), see the module docstring."""
    parts = []
    for k, (o, i) in enumerate(shape.layer_shapes):
        m = in_mean_square if k == 0 else (1.0 + slope**2) / 2.0
        parts.append(torch.full((o * i,), 1.0 / ((i + 1) * m)))
        parts.append(torch.full((o,), 1.0 / (i + 1)))
    return torch.cat(parts)


class HyperNetwork(nn.Module):
    """g_phi: an MLP ``z [n, latent_dim] -> theta [n, P]`` with LeakyReLU hidden layers (App. A.2: 256, 512)."""

    def __init__(
        self,
        latent_dim: int,
        hidden: Sequence[int],
        shape: MLPShape,
        slope: float,
        in_mean_square: float,
        init: str = "pytorch",
    ) -> None:
        super().__init__()
        if init not in ("pytorch", "hyperfan_in"):
            raise ValueError(f"unknown hypernetwork init '{init}' (known: pytorch, hyperfan_in)")
        layers: list[nn.Module] = []
        width = latent_dim
        for h in hidden:
            lin = nn.Linear(width, h)
            if init == "hyperfan_in":
                nn.init.kaiming_normal_(lin.weight, a=slope, nonlinearity="leaky_relu")
                nn.init.zeros_(lin.bias)
            layers += [lin, nn.LeakyReLU(slope)]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, shape.num_weights)
        if init == "pytorch":
            return
        std = (hyperfan_in_variances(shape, slope, in_mean_square) / width).sqrt()
        with torch.no_grad():
            self.head.weight.normal_().mul_(std.unsqueeze(1))
            self.head.bias.zero_()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(z))


class FunctionDistribution(nn.Module):
    """The generator: latent z -> weights theta = g_phi(z) -> function f_theta evaluated at encoded coordinates."""

    def __init__(self, coord_dim: int, feature_dim: int, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.encoding = make_encoding(coord_dim, cfg.encoding)
        self.shape = MLPShape(self.encoding.out_dim, tuple(cfg.hidden), feature_dim)
        self.latent_dim = cfg.latent_dim
        self.slope = cfg.leaky_slope
        self.hypernet = HyperNetwork(
            cfg.latent_dim, cfg.hyper_hidden, self.shape, cfg.leaky_slope, self.encoding.out_mean_square, cfg.init
        )

    def _device(self) -> torch.device:
        return self.hypernet.head.weight.device

    def sample_latents(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """n draws of z ~ N(0, I), on ``device`` (default: the model's); drawn on the generator's own device."""
        device = device if device is not None else self._device()
        src = generator.device if generator is not None else device
        return torch.randn(n, self.latent_dim, generator=generator, device=src).to(device)

    def weights(self, z: torch.Tensor) -> torch.Tensor:
        """theta = g_phi(z), ``[n, P]`` in the flat layout of nfd.models.function."""
        return self.hypernet(z)

    def _encode(self, coords: torch.Tensor, batch: int) -> torch.Tensor:
        """Encode ``[N, d]`` once as ``[1, N, e]`` (broadcast later) or ``[B, N, d]`` per example."""
        if coords.dim() == 2:
            coords = coords.unsqueeze(0)
        if coords.dim() != 3 or coords.shape[0] not in (1, batch) or coords.shape[-1] != self.encoding.in_dim:
            raise ValueError(
                f"coords must be [N, {self.encoding.in_dim}] or [{batch}, N, {self.encoding.in_dim}], "
                f"got {list(coords.shape)}"
            )
        return self.encoding(coords)

    def forward(self, z: torch.Tensor, coords: torch.Tensor, naive: bool = False) -> torch.Tensor:
        """Features ``[B, N, k]`` of the functions of ``z [B, latent_dim]`` at ``coords`` ``[N, d]`` or ``[B, N, d]``.

        Shared ``[N, d]`` coordinates are encoded once and broadcast over the batch. ``naive`` evaluates with the
        per-example loop (for benchmarks and tests).
        """
        params = self.weights(z)
        x = self._encode(coords, z.shape[0])
        mlp = per_example_mlp if naive else batched_mlp
        return mlp(params, x, self.shape, self.slope)

    @torch.no_grad()
    def evaluate(
        self, z: torch.Tensor, coords: torch.Tensor, chunk_points: int = 65536, chunk_batch: int = 16
    ) -> torch.Tensor:
        """:meth:`forward` for large grids: a float32 CPU tensor ``[B, N, k]``, computed in chunks.

        Memory on the model's device is bounded by ``chunk_batch x chunk_points`` hidden activations (16 x 65536 x
        128 floats = 0.5 GB per layer), whatever the grid size; the result is written into one preallocated CPU
        tensor (16 chairs at 256^3 need 1.1 GB there).
        """
        if chunk_points < 1 or chunk_batch < 1:
            raise ValueError(f"chunk sizes must be >= 1, got {chunk_points}, {chunk_batch}")
        device = self._device()
        batch = z.shape[0]
        shared = coords.dim() == 2
        out = torch.empty(batch, coords.shape[-2], self.shape.out_dim, dtype=torch.float32)
        for b0 in range(0, batch, chunk_batch):
            b1 = min(b0 + chunk_batch, batch)
            params = self.weights(z[b0:b1].to(device))
            for p0 in range(0, coords.shape[-2], chunk_points):
                p1 = min(p0 + chunk_points, coords.shape[-2])
                part = coords[p0:p1] if shared else coords[b0:b1, p0:p1]
                x = self._encode(part.to(device), b1 - b0)
                out[b0:b1, p0:p1] = batched_mlp(params, x, self.shape, self.slope).float().cpu()
        return out
