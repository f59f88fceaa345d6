"""T4 Lipschitz constant of the random Fourier features (App. B.3.2, C.2)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from nfd.config import Config, EncodingConfig
from nfd.data.shapes import PRESET_DATA
from nfd.presets import PRESETS
from nfd.presets import preset as config_preset
from nfd.report.table import Table

SET_DISCRIMINATOR_PRESETS = ("mnist", "demo_mnist", "tiny")
"""Config presets the pipeline also trains with the set discriminator (experiment mnist_setdisc); T4 lists its
encodings gamma_x and gamma_y for these."""


MEASURED_COLUMNS = (
    "norm_B",
    "two_pi_norm_B",
    "bound",
    "paper_printed",
    "measured_max_grad",
    "measured_over_bound",
    "within_bound",
)
"""T4's columns computed from B and the measured gradients (``no encoding`` where there is no B)."""


def jacobian_norms(enc: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Largest singular value of the Jacobian of ``enc`` at each point of ``x [N, d]``, by autograd.

    Points are independent, so with y = enc(x) ``[N, e]`` and a dummy cotangent v, g = (dy/dx)^T v is ``[N, d]``
    and differentiating g[:, j] with respect to v gives column j of every Jacobian at once: d + 1 backward passes
    for all N Jacobians ``[N, e, d]``.
    """
    x = x.detach().requires_grad_(True)
    y = enc(x)
    v = torch.zeros_like(y, requires_grad=True)
    (g,) = torch.autograd.grad(y, x, v, create_graph=True)
    cols = [torch.autograd.grad(g[:, j].sum(), v, retain_graph=True)[0] for j in range(x.shape[1])]
    J = torch.stack(cols, dim=-1)  # [N, e, d]
    return torch.linalg.matrix_norm(J, ord=2)


def _t4_row(
    name: str, component: str, enc: nn.Module | None, enc_cfg: EncodingConfig, in_dim: int, seed: int, num_points: int
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "config_preset": name,
        "component": component,
        "in_dim": in_dim,
        "m": enc_cfg.num_frequencies,
        "sigma": float(enc_cfg.scale),
        "seed": seed,
    }
    if enc is None or enc_cfg.num_frequencies == 0:
        for c in MEASURED_COLUMNS:
            row[c] = "no encoding"
        return row
    enc = enc.double()
    norm_b = enc.spectral_norm()  # type: ignore[operator]
    bound = enc.lipschitz_bound()  # type: ignore[operator]
    x = torch.rand(num_points, in_dim, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64) * 2 - 1
    measured = float(jacobian_norms(enc, x).max())
    row.update(
        norm_B=norm_b,
        two_pi_norm_B=2 * math.pi * norm_b,
        bound=bound,
        paper_printed=math.sqrt(8 * math.pi) * norm_b,
        measured_max_grad=measured,
        measured_over_bound=measured / bound,
        within_bound=measured <= bound,
    )
    return row


def set_discriminator_encodings(cfg: Config, d: int, k: int) -> tuple[nn.Module, nn.Module]:
    """gamma_x and gamma_y of the set discriminator exactly as a training run draws them: the trainer seeds the
    global RNG with train.seed, builds the generator, then the discriminator (done here inside ``fork_rng``)."""
    from nfd.models.discriminators import SetDiscriminator
    from nfd.models.hypernetwork import FunctionDistribution

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        FunctionDistribution(d, k, cfg.generator)
        D = SetDiscriminator(d, k, cfg.discriminator)
    return D.gamma_x, D.gamma_y


def table_t4(preset: str, num_points: int = 4096) -> Table:
    """T4: ||B||, the Lipschitz bound 2 sqrt(2) pi ||B|| and the measured largest Jacobian norm of gamma."""
    from nfd.models.encoding import FourierFeatures

    rows = []
    for name in PRESETS:
        cfg = config_preset(name)
        seed = cfg.train.seed
        data = PRESET_DATA[name][0]
        d, k = data.coord_dim, data.feature_dim
        ec = cfg.generator.encoding
        enc = (
            FourierFeatures(d, ec.num_frequencies, ec.scale, generator=torch.Generator().manual_seed(seed))
            if ec.num_frequencies
            else None
        )
        rows.append(_t4_row(name, "generator gamma(x)", enc, ec, d, seed, num_points))
        if name in SET_DISCRIMINATOR_PRESETS:
            dc = cfg.discriminator
            sc = EncodingConfig(num_frequencies=dc.set_num_frequencies, scale=dc.set_scale)
            gx, gy = set_discriminator_encodings(cfg, d, k)
            rows.append(_t4_row(name, "set-D gamma_x (coordinates)", gx, sc, d, seed, num_points))
            rows.append(_t4_row(name, "set-D gamma_y (features)", gy, sc, k, seed, num_points))
    columns = ["config_preset", "component", "in_dim", "m", "sigma", "seed", *MEASURED_COLUMNS]
    notes = [
        "gamma(x) = [cos 2 pi B x, sin 2 pi B x] with B ~ N(0, sigma^2) of shape [m, in_dim], drawn by "
        "nfd.models.encoding.FourierFeatures from a torch.Generator seeded with the preset's train.seed (the "
        "trainer seeds "
        "the global RNG with it before building the model, so the generator's B is drawn the same way). norm_B = "
        "||B||, the largest singular value.",
        "bound = 2 sqrt(2) pi ||B|| (App. B.3.2, Prop. 2 / App. C.2). The paper prints sqrt(8 pi) ||B||, but its own "
        "last step sqrt((2 pi ||B||)^2 + (2 pi ||B||)^2) equals sqrt(8 pi^2) ||B|| = 2 sqrt(2) pi ||B||: the square "
        "on pi was lost. paper_printed shows the printed value, which lies below the measured gradient norm and so "
        "is not a bound.",
        "measured_max_grad: the largest spectral norm of the Jacobian of gamma (autograd in float64, see "
        f"nfd.report.t4.jacobian_norms) over {num_points} points uniform in [-1, 1]^in_dim. It equals 2 pi ||B|| at "
        "every x (the Jacobian's Gram matrix is 4 pi^2 B^T B since sin^2 + cos^2 = 1), so measured/bound = "
        "1/sqrt(2) = 0.707: the bound holds and is loose by sqrt(2).",
        "The chairs presets feed raw coordinates to f_theta: no encoding. The set-D rows are the encodings gamma_x "
        "(coordinates) and gamma_y (features) of the App. B.2 set-discriminator baseline (experiment mnist_setdisc), "
        "whose Lipschitz constant App. B.3 is about, drawn exactly as a run with that seed draws them (global RNG "
        "seeded with train.seed, generator built first, then the discriminator).",
    ]
    return Table(
        "t4",
        f"Lipschitz constant of the random Fourier features (requested for preset {preset}).",
        columns,
        rows,
        notes,
    )
