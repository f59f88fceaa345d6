"""The neural function distribution: structure, initial output scale, shared/chunked evaluation, resolution."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nfd.config import EncodingConfig, GeneratorConfig
from nfd.grid import grid_coords
from nfd.models.encoding import FourierFeatures, IdentityEncoding
from nfd.models.function import MLPShape
from nfd.models.hypernetwork import FunctionDistribution, HyperNetwork, hyperfan_in_variances
from nfd.presets import preset


def _tiny(num_frequencies: int = 8) -> GeneratorConfig:
    """A small generator whose initial functions vary over x (hyperfan-in init), so comparisons mean something."""
    return GeneratorConfig(
        latent_dim=8,
        hidden=[16, 16],
        hyper_hidden=[32, 32],
        init="hyperfan_in",
        encoding=EncodingConfig(num_frequencies=num_frequencies, scale=1.0),
    )


def _pre_tanh(params: torch.Tensor, x: torch.Tensor, shape: MLPShape, slope: float) -> torch.Tensor:
    """f_theta without its final tanh, unpacking the flat layout independently of nfd.models.function."""
    out = []
    for row in params:
        h, pos = x, 0
        for k, (o, i) in enumerate(shape.layer_shapes):
            W = row[pos : pos + o * i].reshape(o, i)
            b = row[pos + o * i : pos + o * i + o]
            pos += o * i + o
            h = h @ W.T + b
            if k < len(shape.layer_shapes) - 1:
                h = F.leaky_relu(h, slope)
        out.append(h)
    return torch.stack(out)


def test_paper_models_have_the_paper_sizes() -> None:
    chairs = FunctionDistribution(3, 1, preset("shapenet_chairs").generator)
    assert isinstance(chairs.encoding, IdentityEncoding)
    assert chairs.shape.num_weights == 33_665 and chairs.latent_dim == 64
    assert chairs.hypernet.head.out_features == 33_665 and chairs.hypernet.head.in_features == 512
    faces = FunctionDistribution(2, 3, preset("celebahq64").generator)
    assert isinstance(faces.encoding, FourierFeatures) and faces.encoding.out_dim == 256
    assert faces.shape.num_weights == 66_307
    assert [m.out_features for m in faces.hypernet.body if isinstance(m, torch.nn.Linear)] == [256, 512]


def test_hyperfan_in_variances_by_hand() -> None:
    shape = MLPShape(3, (4,), 2)
    v = hyperfan_in_variances(shape, slope=0.5, in_mean_square=0.25)
    m1 = (1 + 0.5**2) / 2
    want = [1 / (4 * 0.25)] * 12 + [1 / 4] * 4 + [1 / (5 * m1)] * 8 + [1 / 5] * 2
    assert torch.allclose(v, torch.tensor(want))


def test_generated_weights_have_the_target_variance_per_layer() -> None:
    torch.manual_seed(0)
    shape = MLPShape(16, (32, 32), 2)
    net = HyperNetwork(8, [64, 128], shape, slope=0.2, in_mean_square=0.5, init="hyperfan_in")
    with torch.no_grad():
        theta = net(torch.randn(4000, 8))
    target = hyperfan_in_variances(shape, 0.2, 0.5)
    pos = 0
    for o, i in shape.layer_shapes:
        for n in (o * i, o):
            got = theta[:, pos : pos + n].pow(2).mean().item()
            assert got == pytest.approx(target[pos].item(), rel=0.3)
            pos += n


@pytest.mark.parametrize("name, coord_dim, feature_dim", [("shapenet_chairs", 3, 1), ("celebahq64", 2, 3)])
def test_hyperfan_in_initial_functions_are_well_scaled(name: str, coord_dim: int, feature_dim: int) -> None:
    torch.manual_seed(0)
    cfg = preset(name).generator
    cfg.init = "hyperfan_in"
    fd = FunctionDistribution(coord_dim, feature_dim, cfg)
    with torch.no_grad():
        params = fd.weights(fd.sample_latents(24))
        u = _pre_tanh(params, fd.encoding(torch.rand(512, coord_dim) * 2 - 1), fd.shape, cfg.leaky_slope)
    assert 0.5 < u.std().item() < 2.0
    assert (torch.tanh(u).abs() > 0.99).float().mean().item() < 0.1
    # Each function varies over x, not just between functions.
    assert u.std(dim=1).median().item() > 0.2


def test_pytorch_init_is_torch_default_linear_init() -> None:
    """The default init ('pytorch', the authors' choice) is nn.Linear's own: the same draws as freshly built
    nn.Linear layers of the same shapes, in the same order, from the same seed."""
    cfg = preset("shapenet_chairs").generator
    torch.manual_seed(3)
    fd = FunctionDistribution(3, 1, cfg)
    torch.manual_seed(3)
    widths = [cfg.latent_dim, *cfg.hyper_hidden, fd.shape.num_weights]
    ref = [torch.nn.Linear(a, b) for a, b in zip(widths, widths[1:])]
    ours = [m for m in fd.hypernet.modules() if isinstance(m, torch.nn.Linear)]
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    # ...which gives the chairs model nearly constant initial functions, unlike hyperfan-in (the check can fail).
    with torch.no_grad():
        u = _pre_tanh(fd.weights(fd.sample_latents(24)), torch.rand(512, 3) * 2 - 1, fd.shape, cfg.leaky_slope)
    assert u.std(dim=1).median().item() < 0.2


def test_forward_matches_independent_reference_and_naive_path() -> None:
    torch.manual_seed(1)
    fd = FunctionDistribution(2, 3, _tiny())
    z = fd.sample_latents(5)
    coords = torch.rand(50, 2) * 2 - 1
    y = fd(z, coords)
    assert y.shape == (5, 50, 3)
    want = torch.tanh(_pre_tanh(fd.weights(z), fd.encoding(coords), fd.shape, fd.slope))
    assert torch.allclose(y, want, atol=1e-5)
    assert torch.allclose(fd(z, coords, naive=True), y, atol=1e-5)


def test_shared_coords_equal_per_example_coords() -> None:
    torch.manual_seed(2)
    fd = FunctionDistribution(2, 1, _tiny())
    z = fd.sample_latents(4)
    coords = torch.rand(30, 2) * 2 - 1
    assert torch.allclose(fd(z, coords), fd(z, coords.expand(4, -1, -1).clone()), atol=1e-5)
    per = torch.rand(4, 30, 2) * 2 - 1
    y = fd(z, per)
    for b in range(4):
        assert torch.allclose(y[b], fd(z[b : b + 1], per[b])[0], atol=1e-5)


@pytest.mark.parametrize("shared", [True, False])
def test_chunked_evaluate_equals_forward(shared: bool) -> None:
    torch.manual_seed(3)
    fd = FunctionDistribution(3, 2, _tiny(num_frequencies=0))
    z = fd.sample_latents(7)
    coords = torch.rand(203, 3) * 2 - 1 if shared else torch.rand(7, 203, 3) * 2 - 1
    want = fd(z, coords).detach()
    got = fd.evaluate(z, coords, chunk_points=37, chunk_batch=3)
    assert got.dtype == torch.float32 and got.device.type == "cpu" and not got.requires_grad
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("dim, num_frequencies", [(2, 8), (3, 0)])
def test_same_function_at_two_resolutions(dim: int, num_frequencies: int) -> None:
    torch.manual_seed(4)
    fd = FunctionDistribution(dim, 1, _tiny(num_frequencies))
    z = fd.sample_latents(2)
    coarse = fd.evaluate(z, grid_coords(33, dim)).reshape(2, *[33] * dim)
    fine = fd.evaluate(z, grid_coords(65, dim)).reshape(2, *[65] * dim)
    assert torch.allclose(fine[(slice(None), *[slice(None, None, 2)] * dim)], coarse, atol=1e-5)
    assert coarse.std().item() > 0.05  # a non-trivial function, so the comparison means something


def test_sample_latents_are_standard_normal_and_seeded() -> None:
    fd = FunctionDistribution(2, 1, _tiny())
    z = fd.sample_latents(4000, generator=torch.Generator().manual_seed(0))
    assert z.shape == (4000, 8)
    assert z.std().item() == pytest.approx(1.0, rel=0.03) and abs(z.mean().item()) < 0.03
    again = fd.sample_latents(4000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(z, again)


def test_gradients_reach_the_hypernetwork_and_a_learnable_encoding() -> None:
    cfg = _tiny()
    cfg.encoding.learnable = True
    fd = FunctionDistribution(2, 1, cfg)
    fd(fd.sample_latents(3), torch.rand(20, 2)).pow(2).sum().backward()
    for name, p in fd.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_coords_are_rejected() -> None:
    fd = FunctionDistribution(2, 1, _tiny())
    z = fd.sample_latents(3)
    with pytest.raises(ValueError):
        fd(z, torch.rand(10, 3))
    with pytest.raises(ValueError):
        fd(z, torch.rand(2, 10, 2))


def test_unit_pre_activation_target_is_consistent_with_leaky_mean_square() -> None:
    """E[leaky(u)^2] = (1 + a^2) / 2 for u ~ N(0, 1), the mean square the init assumes for hidden layers."""
    u = torch.randn(1_000_000, generator=torch.Generator().manual_seed(0))
    assert F.leaky_relu(u, 0.2).pow(2).mean().item() == pytest.approx((1 + 0.2**2) / 2, rel=0.01)
    assert math.isclose(hyperfan_in_variances(MLPShape(1, (4,), 1), 0.2, 1.0)[-2].item(), 1 / (5 * 0.52), rel_tol=1e-6)
