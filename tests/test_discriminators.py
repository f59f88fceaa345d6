"""PointConv and set discriminators: paper presets, symmetries, shared plans, naive path and R1 double backward."""

from __future__ import annotations

import math

import pytest
import torch

from nfd.config import ConfigError, DiscriminatorConfig
from nfd.grid import grid_coords
from nfd.models.discriminators import PointConvDiscriminator, SetDiscriminator, build_discriminator
from nfd.presets import preset


def _small_cfg(**kw: object) -> DiscriminatorConfig:
    cfg = DiscriminatorConfig(channels=[6, 8], weight_hidden=[8, 8])
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def _pointconv(d: int, k: int, seed: int = 0, **kw: object) -> PointConvDiscriminator:
    torch.manual_seed(seed)
    return PointConvDiscriminator(d, k, _small_cfg(**kw)).double()


def _perturb_bn_stats(model: torch.nn.Module) -> None:
    """Non-trivial running statistics, so that eval mode is not just the identity on BatchNorm."""
    g = torch.Generator().manual_seed(99)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


# Per preset: the levels (mode, out channels, neighbours), the points after each level, and the parameter count.
# The counts of the three released configs were read off the authors' own PointConvDiscriminator built from their
# configs/config_*.json (EmilienDupont/neural-function-distributions); MNIST has no released config, so it follows the
# paper text (64, 128, 256, conv then pool, 3^d neighbours).
PAPER_DISCRIMINATORS = {
    "mnist": (28, 2, 1, 0, [("pool", 64, 9), ("pool", 128, 9), ("pool", 256, 9)], [784, 196, 49, 13], 665_793),
    "celebahq64": (
        64,
        2,
        3,
        0,
        [("pool", 64, 9), ("pool", 128, 9), ("pool", 256, 9), ("pool", 512, 9)],
        [4096, 1024, 256, 64, 16],
        2_771_617,
    ),
    "celebahq128": (
        128,
        2,
        3,
        0,
        [("strided", 64, 9), ("pool", 128, 9), ("pool", 256, 9), ("pool", 512, 9), ("pool", 1024, 9)],
        [16384, 4096, 1024, 256, 64, 16],
        11_172_481,
    ),
    "shapenet_chairs": (
        32,
        3,
        1,
        4096,
        [("conv", 32, 8), ("pool", 64, 27), ("pool", 128, 27), ("pool", 256, 27)],
        [4096, 4096, 512, 64, 8],
        699_217,
    ),
}


@pytest.mark.parametrize("name", sorted(PAPER_DISCRIMINATORS))
def test_paper_presets_pin_the_released_layers(name: str) -> None:
    res, d, k, num_points, layers, sizes, params = PAPER_DISCRIMINATORS[name]
    cfg = preset(name).discriminator
    torch.manual_seed(0)
    D = build_discriminator(d, k, cfg).eval()
    assert sum(p.numel() for p in D.parameters()) == params
    assert [(mode, conv.out_ch, kk) for (mode, kk), conv in zip(D.level_specs, D.convs)] == layers
    coords = grid_coords(res, d)
    if num_points:
        coords = coords[torch.randperm(len(coords))[:num_points]]
    plan = D.plan(coords)
    n = [len(coords)]
    for (mode, _, kk), lv in zip(layers, plan.levels):
        # A strided level convolves at its queries only; the others at every point of the level.
        assert lv.conv_idx.shape == ((len(lv.query_idx) if mode == "strided" else n[-1]), kk)
        assert (lv.pool_idx is not None) == (mode == "pool")
        n.append(n[-1] if lv.query_idx is None else len(lv.query_idx))
    assert n == sizes
    with torch.no_grad():
        out = D(coords, torch.rand(2, len(coords), k) * 2 - 1, plan=plan)
    assert out.shape == (2,) and torch.isfinite(out).all()


def test_layers_config_parses_and_rejects_bad_entries() -> None:
    cfg = DiscriminatorConfig(layers=["conv:4:8", "strided:6", "pool:8:5"], weight_hidden=[8])
    D = PointConvDiscriminator(2, 1, cfg)
    assert D.level_specs == (("conv", 8), ("strided", 9), ("pool", 5))
    assert [c.out_ch for c in D.convs] == [4, 6, 8]
    for bad in (["pool"], ["max:8"], ["pool:0"], ["conv:8:x"], ["pool:8:3:1"]):
        with pytest.raises(ConfigError, match="discriminator.layers"):
            PointConvDiscriminator(2, 1, DiscriminatorConfig(layers=bad))


def test_plan_is_cached_per_coordinate_content() -> None:
    D = _pointconv(2, 1)
    coords = grid_coords(10, 2).double()
    assert D.plan(coords) is D.plan(coords.clone())


@pytest.mark.parametrize("case", ["random2d", "grid2d", "grid3d_linf", "random3d"])
def test_pointconv_discriminator_is_permutation_invariant(case: str) -> None:
    g = torch.Generator().manual_seed(1)
    if case == "random2d":
        D, coords = _pointconv(2, 3), torch.rand(150, 2, generator=g, dtype=torch.float64)
    elif case == "grid2d":
        D, coords = _pointconv(2, 3), grid_coords(14, 2).double()
    elif case == "grid3d_linf":
        D, coords = _pointconv(3, 3, norm_p=math.inf), grid_coords(6, 3).double()
    else:
        D, coords = _pointconv(3, 3, norm_p=1.0), torch.rand(120, 3, generator=g, dtype=torch.float64)
    _perturb_bn_stats(D)
    D.eval()
    feats = torch.randn(4, len(coords), 3, generator=g, dtype=torch.float64)
    ref = D(coords, feats)
    for _ in range(2):
        perm = torch.randperm(len(coords), generator=g)
        torch.testing.assert_close(D(coords[perm], feats[:, perm]), ref, rtol=1e-9, atol=1e-9)


def test_pointconv_discriminator_is_translation_invariant() -> None:
    g = torch.Generator().manual_seed(2)
    D = _pointconv(2, 1).eval()
    coords = torch.rand(100, 2, generator=g, dtype=torch.float64)
    feats = torch.randn(3, 100, 1, generator=g, dtype=torch.float64)
    shifted = coords + torch.tensor([0.37, -1.25], dtype=torch.float64)
    torch.testing.assert_close(D(shifted, feats), D(coords, feats), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("train", [True, False])
def test_shared_coords_equal_per_example_coords(train: bool) -> None:
    g = torch.Generator().manual_seed(3)
    D = _pointconv(2, 3)
    _perturb_bn_stats(D)
    D.train(train)
    coords = torch.rand(80, 2, generator=g, dtype=torch.float64)
    feats = torch.randn(3, 80, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(D(coords, feats), D(coords.expand(3, -1, -1).clone(), feats))


def test_per_example_coords_are_planned_per_example() -> None:
    g = torch.Generator().manual_seed(4)
    D = _pointconv(2, 1).eval()
    coords = torch.rand(2, 60, 2, generator=g, dtype=torch.float64)
    feats = torch.randn(2, 60, 1, generator=g, dtype=torch.float64)
    batched = D(coords, feats)
    singles = torch.cat([D(coords[b], feats[b : b + 1]) for b in range(2)])
    torch.testing.assert_close(batched, singles)


MIXED_LAYERS = ["conv:4:5", "strided:6", "pool:8"]
"""Every layer mode in one list (the released configs' building blocks)."""


@pytest.mark.parametrize("layers", [[], MIXED_LAYERS])
def test_naive_path_matches_fast_path(layers: list[str]) -> None:
    g = torch.Generator().manual_seed(5)
    D = _pointconv(2, 3, layers=layers).train()
    coords = torch.rand(90, 2, generator=g, dtype=torch.float64)
    feats = torch.randn(3, 90, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(D(coords, feats, naive=True), D(coords, feats), rtol=1e-9, atol=1e-9)
    # Per-example coordinates (each planned on its own) give the same numbers as the shared plan.
    torch.testing.assert_close(D(coords.expand(3, -1, -1).clone(), feats), D(coords, feats))


@pytest.mark.parametrize("batchnorm", [True, False])
@pytest.mark.parametrize("layers", [[], MIXED_LAYERS])
def test_fast_path_matches_naive_through_r1_double_backward(layers: list[str], batchnorm: bool) -> None:
    """The whole discriminator's fast path (shared plan, in-place activations, every PointConv form the cost model
    picks) against the naive one: R1's gradient with respect to the features, and the penalty's gradients with
    respect to every parameter (the second-order terms the D step backpropagates). Without BatchNorm the in-place
    activation acts on the PointConv's own output."""
    g = torch.Generator().manual_seed(11)
    D = _pointconv(2, 3, layers=layers, batchnorm=batchnorm).train()
    coords = torch.rand(90, 2, generator=g, dtype=torch.float64)
    feats = torch.randn(3, 90, 3, generator=g, dtype=torch.float64)
    params = [p for p in D.parameters() if p.requires_grad]

    def r1_and_grads(naive: bool) -> list[torch.Tensor]:
        f = feats.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(D(coords, f, naive=naive).sum(), f, create_graph=True)
        penalty = 0.5 * grad.pow(2).sum()
        return [grad.detach(), *torch.autograd.grad(penalty, params, allow_unused=True, materialize_grads=True)]

    for fast, naive in zip(r1_and_grads(False), r1_and_grads(True), strict=True):
        torch.testing.assert_close(fast, naive, rtol=1e-8, atol=1e-10)


def test_mixed_layers_are_permutation_invariant() -> None:
    g = torch.Generator().manual_seed(8)
    D = _pointconv(2, 3, layers=MIXED_LAYERS)
    _perturb_bn_stats(D)
    D.eval()
    coords = torch.rand(70, 2, generator=g, dtype=torch.float64)
    feats = torch.randn(2, 70, 3, generator=g, dtype=torch.float64)
    perm = torch.randperm(70, generator=g)
    torch.testing.assert_close(D(coords[perm], feats[:, perm]), D(coords, feats), rtol=1e-9, atol=1e-9)


def test_weight_mlps_run_once_per_layer_for_shared_coords() -> None:
    D = _pointconv(2, 1)
    coords = grid_coords(12, 2).double()
    calls: dict[int, list[int]] = {}
    convs = [*D.convs, D.final]
    for i, conv in enumerate(convs):
        conv.weight_net.register_forward_hook(
            lambda mod, inp, out, i=i: calls.setdefault(i, []).append(inp[0].shape[:-1].numel())
        )
    D(coords, torch.randn(5, 144, 1, dtype=torch.float64))
    # One call per layer, on the unbatched offsets: 144 and 36 points x 9 neighbours, then 9 points onto 1 query.
    assert calls == {0: [144 * 9], 1: [36 * 9], 2: [9]}


@pytest.mark.parametrize("kind", ["pointconv", "set"])
def test_r1_double_backward(kind: str) -> None:
    torch.manual_seed(6)
    cfg = _small_cfg(kind=kind, channels=[4, 4], weight_hidden=[4, 4], set_hidden=[8, 8], set_num_frequencies=4)
    D = build_discriminator(2, 1, cfg).double().train()
    coords = torch.rand(20, 2, dtype=torch.float64)
    feats = torch.randn(2, 20, 1, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(D(coords, feats).sum(), feats, create_graph=True)
    penalty = 0.5 * grad.pow(2).sum()
    penalty.backward()
    # Output biases cannot change a gradient with respect to the features; every weight matrix can.
    for name, p in D.named_parameters():
        if name.endswith("weight") and p.dim() == 2:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    # The second-order derivatives themselves, against finite differences.
    f0 = feats.detach()[:1].clone().requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda f: D(coords, f), (f0,), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_set_discriminator_is_permutation_invariant_and_sqrt_n_scaled() -> None:
    torch.manual_seed(7)
    D = SetDiscriminator(2, 3, _small_cfg(kind="set", set_hidden=[16, 16], set_num_frequencies=8)).double()
    g = torch.Generator().manual_seed(7)
    coords = torch.rand(50, 2, generator=g, dtype=torch.float64)
    feats = torch.randn(4, 50, 3, generator=g, dtype=torch.float64)
    perm = torch.randperm(50, generator=g)
    torch.testing.assert_close(D(coords[perm], feats[:, perm]), D(coords, feats))
    torch.testing.assert_close(D(coords.expand(4, -1, -1), feats), D(coords, feats))
    # Every element twice: the sum doubles and n doubles, so the embedding grows by 2 / sqrt(2) = sqrt(2).
    doubled = D.pool(torch.cat([coords, coords]), torch.cat([feats, feats], dim=1))
    torch.testing.assert_close(doubled, math.sqrt(2) * D.pool(coords, feats))
    assert D.plan(coords) is None


def test_set_discriminator_without_encoding() -> None:
    D = SetDiscriminator(3, 1, _small_cfg(kind="set", set_hidden=[8], set_num_frequencies=0))
    assert D.phi[0].in_features == 4
    assert D(torch.rand(30, 3), torch.rand(2, 30, 1)).shape == (2,)


def test_build_discriminator_kinds() -> None:
    assert isinstance(build_discriminator(2, 1, _small_cfg()), PointConvDiscriminator)
    assert isinstance(build_discriminator(2, 1, _small_cfg(kind="set")), SetDiscriminator)
    with pytest.raises(ConfigError):
        build_discriminator(2, 1, _small_cfg(kind="transformer"))
    assert build_discriminator(2, 1, _small_cfg(neighbours=5)).level_specs == (("pool", 5), ("pool", 5))
