"""GAN losses against closed forms, and R1 against analytic values and a per-example autograd loop."""

from __future__ import annotations

import math

import pytest
import torch

from nfd.models.losses import d_loss, g_loss, r1_penalty


def _softplus(t: float) -> float:
    return math.log1p(math.exp(t))


def test_losses_at_zero_logits() -> None:
    zero = torch.zeros(5)
    assert d_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert g_loss(zero).item() == pytest.approx(math.log(2))


def test_losses_against_closed_form() -> None:
    real, fake = [1.0, -2.0, 0.5], [0.3, 3.0]
    want_d = (
        sum(-math.log(1 / (1 + math.exp(-r))) for r in real) / 3
        + sum(-math.log(1 - 1 / (1 + math.exp(-f))) for f in fake) / 2
    )
    want_g = sum(_softplus(-f) for f in fake) / 2
    assert d_loss(torch.tensor(real), torch.tensor(fake)).item() == pytest.approx(want_d, rel=1e-6)
    assert g_loss(torch.tensor(fake)).item() == pytest.approx(want_g, rel=1e-6)


def test_losses_stay_finite_for_saturated_logits() -> None:
    assert d_loss(torch.tensor([200.0]), torch.tensor([-200.0])).item() == pytest.approx(0.0, abs=1e-12)
    assert d_loss(torch.tensor([-200.0]), torch.tensor([200.0])).item() == pytest.approx(400.0)
    assert g_loss(torch.tensor([-200.0])).item() == pytest.approx(200.0)
    fake = torch.tensor([-200.0], requires_grad=True)
    g_loss(fake).backward()
    assert fake.grad.item() == pytest.approx(-1.0)  # non-saturating: full gradient where D rejects the fake


def test_r1_of_a_linear_discriminator_is_analytic() -> None:
    # D_b(s) = a_b * sum_i w . y_i + (anything in x): dD/dy_i = a_b w, so R1_b = 1/2 N a_b^2 ||w||^2.
    torch.manual_seed(0)
    B, N, k = 3, 11, 2
    w = torch.tensor([0.5, -2.0], requires_grad=True)
    a = torch.tensor([1.0, 2.0, -3.0])
    x = torch.rand(B, N, 2)
    y = torch.randn(B, N, k, requires_grad=True)
    d = a * (y @ w).sum(dim=1) + x.pow(3).sum(dim=(1, 2))
    r1 = r1_penalty(d, y)
    want = (0.5 * N * a.pow(2) * 4.25).mean().item()
    assert r1.item() == pytest.approx(want, rel=1e-6)
    # create_graph: the penalty trains D. d R1 / d w = N mean(a^2) w.
    (gw,) = torch.autograd.grad(r1, w)
    assert torch.allclose(gw, N * a.pow(2).mean() * w.detach())


def test_r1_equals_a_per_example_autograd_loop() -> None:
    torch.manual_seed(1)
    B, N, k = 4, 9, 3
    phi = torch.nn.Sequential(torch.nn.Linear(k + 2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 8))
    rho = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

    def disc(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return rho(phi(torch.cat([x, y], -1)).mean(-2)).squeeze(-1)

    x, y = torch.rand(B, N, 2), torch.randn(B, N, k)
    feats = y.clone().requires_grad_()
    r1 = r1_penalty(disc(x, feats), feats, create_graph=False)
    manual = []
    for b in range(B):
        J = torch.autograd.functional.jacobian(lambda yb, b=b: disc(x[b], yb), y[b])
        manual.append(0.5 * J.pow(2).sum())
    assert r1.item() == pytest.approx(torch.stack(manual).mean().item(), rel=1e-5)
    assert r1.item() > 0


def test_r1_on_the_sigmoid_vanishes_when_d_saturates() -> None:
    y = torch.randn(2, 5, 1, requires_grad=True)
    logit = 20.0 + y.sum(dim=(1, 2))
    on_logit = r1_penalty(logit, y).item()
    on_sigmoid = r1_penalty(torch.sigmoid(logit), y).item()
    assert on_logit == pytest.approx(2.5) and on_sigmoid < 1e-15


def test_r1_requires_features_that_require_grad() -> None:
    y = torch.randn(2, 5, 1)
    with pytest.raises(ValueError):
        r1_penalty(y.sum(dim=(1, 2)), y)
