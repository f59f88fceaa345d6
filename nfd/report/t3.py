"""T3 parameter counts of every config preset: g_phi, the discriminator, one generated function f_theta."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nfd.config import Config
from nfd.data.shapes import PRESET_DATA
from nfd.presets import PRESETS
from nfd.presets import preset as config_preset
from nfd.report.table import Table


def _count(module: nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def function_weights_formula(in_dim: int, hidden: Sequence[int], out_dim: int) -> int:
    """Weights plus biases of an MLP ``in_dim -> hidden... -> out_dim``: sum over layers of (in + 1) * out."""
    widths = [in_dim, *hidden, out_dim]
    return sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:]))


def _build_models(cfg: Config, d: int, k: int) -> tuple[nn.Module, nn.Module]:
    from nfd.models.discriminators import build_discriminator
    from nfd.models.hypernetwork import FunctionDistribution

    try:  # counting needs shapes only: build on the meta device (no memory, no initialisation cost)
        with torch.device("meta"):
            return FunctionDistribution(d, k, cfg.generator), build_discriminator(d, k, cfg.discriminator)
    except Exception:  # pragma: no cover - an op without a meta kernel: build for real, without touching the RNG
        with torch.random.fork_rng(devices=[]):
            return FunctionDistribution(d, k, cfg.generator), build_discriminator(d, k, cfg.discriminator)


def table_t3(preset: str) -> Table:
    """T3: parameters of g_phi and D and the size of f_theta, for every config preset and the data it trains on."""
    rows = []
    for name in PRESETS:
        cfg = config_preset(name)
        enc = cfg.generator.encoding
        for data in PRESET_DATA[name]:
            dataset, d, k = data.dataset, data.coord_dim, data.feature_dim
            G, D = _build_models(cfg, d, k)
            in_dim = 2 * enc.num_frequencies if enc.num_frequencies else d
            shape = G.shape  # type: ignore[attr-defined]
            rows.append(
                {
                    "config_preset": name,
                    "dataset": dataset,
                    "d": d,
                    "k": k,
                    "encoding": f"RFF m={enc.num_frequencies} sigma={enc.scale:g}" if enc.num_frequencies else "none",
                    "function_mlp": "-".join(map(str, [shape.in_dim, *shape.hidden, shape.out_dim])),
                    "function_weights": int(shape.num_weights),
                    "function_weights_formula": function_weights_formula(in_dim, cfg.generator.hidden, k),
                    "hypernetwork": "-".join(
                        map(str, [cfg.generator.latent_dim, *cfg.generator.hyper_hidden, shape.num_weights])
                    ),
                    "g_params": _count(G),
                    "d_kind": cfg.discriminator.kind,
                    "d_channels": " ".join(cfg.discriminator.layers) or "-".join(map(str, cfg.discriminator.channels)),
                    "d_params": _count(D),
                }
            )
    columns = [
        "config_preset",
        "dataset",
        "d",
        "k",
        "encoding",
        "function_mlp",
        "function_weights",
        "function_weights_formula",
        "hypernetwork",
        "g_params",
        "d_kind",
        "d_channels",
        "d_params",
    ]
    notes = [
        "function_weights: the size P of one generated function f_theta (weights plus biases of the MLP "
        "function_mlp, counted by nfd.models.function.MLPShape); function_weights_formula: sum over layers of "
        "(in + 1) * out "
        "computed independently. Paper settings: 3 x 128 hidden units, RFF input of 2m = 256 for images (CelebA-HQ "
        "k=3: 66,307; MNIST k=1: 66,049) and raw 3D coordinates for the chairs (33,665).",
        "g_params: trainable parameters of the hypernetwork g_phi (latent -> hyper_hidden -> P); the Fourier matrix B "
        "is a fixed buffer, not a parameter. d_params: trainable parameters of the discriminator of the preset "
        "(PointConv: weight MLPs, linear maps and batchnorm).",
        "d = coordinate dimension, k = feature dimension: MNIST d=2 k=1, CelebA-HQ d=2 k=3, chairs d=3 k=1; the "
        "tiny preset trains on both MNIST and chairs and is listed for each.",
    ]
    return Table(
        "t3", f"Parameter counts of every config preset (requested for preset {preset}).", columns, rows, notes
    )
