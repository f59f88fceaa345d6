"""The flat-parameter MLP f_theta: layout, parameter counts, and batched == per-example evaluation."""

from __future__ import annotations

import pytest
import torch

from nfd.models.function import MLPShape, _layers, batched_mlp, per_example_mlp

SLOPE = 0.2


def test_paper_parameter_counts() -> None:
    chairs = MLPShape(3, (128, 128, 128), 1)
    assert chairs.layer_shapes == [(128, 3), (128, 128), (128, 128), (1, 128)]
    assert chairs.num_weights == 33_665
    assert MLPShape(256, (128, 128, 128), 3).num_weights == 66_307


def test_flat_layout_is_weight_row_major_then_bias_per_layer() -> None:
    shape = MLPShape(2, (3,), 2)
    W1, b1 = torch.randn(3, 2), torch.randn(3)
    W2, b2 = torch.randn(2, 3), torch.randn(2)
    params = torch.cat([W1.flatten(), b1, W2.flatten(), b2]).unsqueeze(0)
    x = torch.randn(1, 5, 2)
    # Written out by hand, one scalar at a time.
    want = torch.empty(5, 2)
    for p in range(5):
        h = [sum(W1[r, c] * x[0, p, c] for c in range(2)) + b1[r] for r in range(3)]
        h = [v if v > 0 else SLOPE * v for v in h]
        for r in range(2):
            want[p, r] = torch.tanh(sum(W2[r, c] * h[c] for c in range(3)) + b2[r])
    assert torch.allclose(batched_mlp(params, x, shape, SLOPE)[0], want, atol=1e-6)
    assert torch.allclose(per_example_mlp(params, x, shape, SLOPE)[0], want, atol=1e-6)


def test_layer_views_share_the_params_storage() -> None:
    shape = MLPShape(4, (8, 8), 2)
    params = torch.randn(3, shape.num_weights)
    for W, b in _layers(params, shape):
        assert W.untyped_storage().data_ptr() == params.untyped_storage().data_ptr()
        assert b.untyped_storage().data_ptr() == params.untyped_storage().data_ptr()


@pytest.mark.parametrize("shared", [True, False])
def test_batched_equals_per_example_in_values_and_gradients(shared: bool) -> None:
    torch.manual_seed(0)
    shape = MLPShape(5, (16, 12), 3)
    params = (torch.randn(4, shape.num_weights, dtype=torch.float64) * 0.4).requires_grad_()
    x = torch.randn(1 if shared else 4, 30, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 30, 3, dtype=torch.float64)

    fast = batched_mlp(params, x, shape, SLOPE)
    g_fast = torch.autograd.grad((fast * w).sum(), [params, x])
    slow = per_example_mlp(params, x, shape, SLOPE)
    g_slow = torch.autograd.grad((slow * w).sum(), [params, x])

    assert fast.shape == (4, 30, 3)
    assert torch.allclose(fast, slow, atol=1e-12)
    for a, b in zip(g_fast, g_slow):
        assert torch.allclose(a, b, atol=1e-10)


def test_shared_coordinates_equal_repeated_coordinates() -> None:
    shape = MLPShape(3, (8,), 1)
    params = torch.randn(5, shape.num_weights)
    x = torch.randn(1, 40, 3)
    assert torch.allclose(
        batched_mlp(params, x, shape, SLOPE), batched_mlp(params, x.repeat(5, 1, 1), shape, SLOPE), atol=1e-6
    )


def test_different_weights_give_different_functions() -> None:
    shape = MLPShape(2, (8,), 1)
    params = torch.randn(2, shape.num_weights)
    y = batched_mlp(params, torch.randn(1, 20, 2), shape, SLOPE)
    assert (y[0] - y[1]).abs().max() > 1e-2


def test_bad_shapes_are_rejected() -> None:
    shape = MLPShape(2, (4,), 1)
    params = torch.randn(3, shape.num_weights)
    with pytest.raises(ValueError):
        batched_mlp(params[:, :-1], torch.randn(3, 5, 2), shape, SLOPE)
    with pytest.raises(ValueError):
        batched_mlp(params, torch.randn(2, 5, 2), shape, SLOPE)
    with pytest.raises(ValueError):
        per_example_mlp(params, torch.randn(3, 5, 3), shape, SLOPE)


def test_outputs_are_in_tanh_range_with_leaky_hidden_units() -> None:
    shape = MLPShape(1, (1,), 1)
    # f(x) = tanh(1 * leaky(x)): the slope shows up for negative x only.
    params = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    x = torch.tensor([[[-2.0], [3.0]]])
    assert torch.allclose(batched_mlp(params, x, shape, SLOPE)[0, :, 0], torch.tanh(torch.tensor([-0.4, 3.0])))
