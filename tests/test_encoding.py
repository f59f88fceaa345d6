"""Random Fourier features against hand-written formulas and their Lipschitz analysis (App. B.3, C.2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nfd.config import EncodingConfig
from nfd.grid import grid_coords
from nfd.models.encoding import FourierFeatures, IdentityEncoding, make_encoding


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_gamma_matches_hand_formula() -> None:
    enc = FourierFeatures(3, 5, scale=1.7, generator=_gen(0))
    B = enc.B.numpy().astype(np.float64)
    x = torch.rand(4, 6, 3) * 2 - 1
    got = enc(x).numpy()
    assert got.shape == (4, 6, 10) and enc.out_dim == 10
    xn = x.numpy().astype(np.float64)
    for a in range(4):
        for p in range(6):
            for i in range(5):
                phase = 2 * math.pi * sum(B[i, j] * xn[a, p, j] for j in range(3))
                assert got[a, p, i] == pytest.approx(math.cos(phase), abs=1e-5)
                assert got[a, p, 5 + i] == pytest.approx(math.sin(phase), abs=1e-5)


def test_frequencies_are_gaussian_with_the_given_scale_and_seeded() -> None:
    enc = FourierFeatures(2, 4096, scale=3.0, generator=_gen(1))
    assert enc.B.shape == (4096, 2)
    assert enc.B.std().item() == pytest.approx(3.0, rel=0.05)
    assert abs(enc.B.mean().item()) < 0.15

    def b(seed: int) -> torch.Tensor:
        return FourierFeatures(2, 16, 1.0, generator=_gen(seed)).B

    assert torch.equal(b(7), b(7)) and not torch.equal(b(7), b(8))


def test_fixed_b_is_a_saved_buffer_and_learnable_b_a_parameter() -> None:
    fixed = FourierFeatures(2, 8, 1.0, generator=_gen(0))
    assert "B" in dict(fixed.named_buffers()) and not list(fixed.parameters())
    assert "B" in fixed.state_dict()
    learned = FourierFeatures(2, 8, 1.0, learnable=True, generator=_gen(0))
    assert [n for n, _ in learned.named_parameters()] == ["B"]
    learned(torch.rand(5, 2)).sum().backward()
    assert learned.B.grad is not None and learned.B.grad.abs().sum() > 0


def test_spectral_norm_and_bound_against_numpy() -> None:
    enc = FourierFeatures(3, 32, 2.0, generator=_gen(2))
    sigma_max = np.linalg.svd(enc.B.numpy().astype(np.float64), compute_uv=False)[0]
    assert enc.spectral_norm() == pytest.approx(sigma_max, rel=1e-5)
    assert enc.lipschitz_bound() == pytest.approx(2 * math.sqrt(2) * math.pi * sigma_max, rel=1e-5)


def test_jacobian_norm_is_2pi_norm_b_and_below_the_bound() -> None:
    enc = FourierFeatures(3, 16, 1.5, generator=_gen(3)).double()
    two_pi_b = 2 * math.pi * enc.spectral_norm()
    for x in torch.rand(20, 3, dtype=torch.float64, generator=_gen(4)) * 4 - 2:
        J = torch.autograd.functional.jacobian(enc, x)
        assert J.shape == (32, 3)
        norm = torch.linalg.matrix_norm(J, ord=2).item()
        assert norm <= enc.lipschitz_bound()
        assert norm == pytest.approx(two_pi_b, rel=1e-9)


def test_rff_outputs_have_mean_square_one_half_everywhere() -> None:
    enc = FourierFeatures(2, 64, 2.0, generator=_gen(5))
    ms = enc(torch.rand(100, 2) * 2 - 1).pow(2).mean(dim=-1)
    assert torch.allclose(ms, torch.full_like(ms, FourierFeatures.out_mean_square), atol=1e-5)


def test_identity_encoding_and_its_mean_square_on_a_grid() -> None:
    enc = IdentityEncoding(3)
    x = torch.rand(7, 3)
    assert enc.out_dim == 3 and torch.equal(enc(x), x)
    assert grid_coords(201, 2).pow(2).mean().item() == pytest.approx(IdentityEncoding.out_mean_square, rel=0.02)


def test_make_encoding_follows_the_config() -> None:
    assert isinstance(make_encoding(3, EncodingConfig(num_frequencies=0, scale=0.0)), IdentityEncoding)
    enc = make_encoding(2, EncodingConfig(num_frequencies=12, scale=2.0, learnable=True), generator=_gen(0))
    assert isinstance(enc, FourierFeatures) and enc.out_dim == 24 and enc.B.requires_grad
    assert torch.equal(enc.B.detach(), FourierFeatures(2, 12, 2.0, generator=_gen(0)).B)
    with pytest.raises(ValueError):
        make_encoding(2, EncodingConfig(num_frequencies=-1))
