"""The auto-decoder baseline (App. B.1): prior, loss, and that it can fit a few examples."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from nfd.config import EncodingConfig, GeneratorConfig
from nfd.grid import grid_coords
from nfd.models.autodecoder import AutoDecoder


def _cfg() -> GeneratorConfig:
    return GeneratorConfig(
        latent_dim=8, hidden=[16, 16], hyper_hidden=[32, 32], encoding=EncodingConfig(num_frequencies=8, scale=1.0)
    )


def test_latents_start_and_sample_from_the_prior() -> None:
    torch.manual_seed(0)
    ad = AutoDecoder(2000, 2, 1, _cfg(), prior_std=0.01, points_per_example=64)
    assert ad.latents.weight.shape == (2000, 8) and ad.latent_dim == 8
    assert ad.latents.weight.std().item() == pytest.approx(0.01, rel=0.05)
    z = ad.sample_latents(4000, generator=torch.Generator().manual_seed(1))
    assert z.shape == (4000, 8) and z.std().item() == pytest.approx(0.01, rel=0.05)


def test_decoder_sees_unit_scale_latents() -> None:
    ad = AutoDecoder(3, 2, 1, _cfg(), prior_std=0.01, points_per_example=64)
    z = ad.sample_latents(4)
    coords = grid_coords(8, 2)
    assert torch.allclose(ad(z, coords), ad.decoder(z * 100, coords), atol=1e-5)
    assert torch.allclose(ad.evaluate(z, coords, chunk_points=13, chunk_batch=3), ad(z, coords).detach(), atol=1e-5)
    # Sampled functions differ from each other from the start.
    assert ad(z, coords).std(dim=0).mean() > 0.05


def test_loss_parts_against_manual_formula() -> None:
    torch.manual_seed(2)
    ad = AutoDecoder(5, 2, 3, _cfg(), prior_std=0.1, points_per_example=64)
    idx = torch.tensor([4, 1])
    coords = torch.rand(20, 2) * 2 - 1
    feats = torch.rand(2, 20, 3) * 2 - 1
    total, parts = ad.loss(idx, coords, feats)
    z = ad.latents.weight[idx]
    recon = ((ad(z, coords) - feats) ** 2).mean()
    prior = sum(z[b].pow(2).sum() / (2 * 0.1**2) for b in range(2)) / 2 / (64 * 3)
    assert parts["recon"].item() == pytest.approx(recon.item(), rel=1e-5)
    assert parts["prior"].item() == pytest.approx(prior.item(), rel=1e-5)
    assert total.item() == pytest.approx(recon.item() + prior.item(), rel=1e-5)
    assert parts["latent_norm"].item() == pytest.approx(z.norm(dim=1).mean().item(), rel=1e-5)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny ops: with the CPU shared, thread hand-offs cost more than the arithmetic (8 s vs 1 s here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_thread")
def test_training_reconstructs_four_examples() -> None:
    torch.manual_seed(3)
    coords = grid_coords(8, 2)
    r, c = coords[:, 0], coords[:, 1]
    feats = torch.stack([torch.sin(3 * r), torch.cos(2 * c), r * c, 0.8 * torch.tanh(4 * (r + c))]).unsqueeze(-1)
    ad = AutoDecoder(4, 2, 1, _cfg(), prior_std=0.01, points_per_example=64)
    opt = torch.optim.Adam(
        [{"params": ad.decoder.parameters(), "lr": 3e-3}, {"params": ad.latents.parameters(), "lr": 1e-3}]
    )
    idx = torch.arange(4)
    first = ad.loss(idx, coords, feats)[1]["recon"].item()
    for _ in range(150):
        opt.zero_grad()
        ad.loss(idx, coords, feats)[0].backward()
        opt.step()
    last = ad.loss(idx, coords, feats)[1]["recon"].item()
    assert last < first / 20, (first, last)
