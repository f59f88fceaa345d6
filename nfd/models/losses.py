"""GAN objectives of Sec. 3.5: the non-saturating loss and the R1 penalty on point clouds.

The losses take logits (D's output before its final sigmoid) and use softplus, because -log sigmoid(t) =
softplus(-t) and log(1 - sigmoid(t)) = -softplus(t) stay finite and accurate for any logit, where composing log
with sigmoid underflows once D saturates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss -E log D(real) - E log(1 - D(fake)) = mean softplus(-real) + mean softplus(fake)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss -E log D(fake) = mean softplus(-fake)."""
    return F.softplus(-fake_logits).mean()


def r1_penalty(d_out: torch.Tensor, features: torch.Tensor, create_graph: bool = True) -> torch.Tensor:
    """R1 on sets (Sec. 3.5): mean over the batch of 1/2 sum_i ||dD(s)/dy_i||^2, a gradient penalty on features only.

    ``d_out [B]`` is D's output for the sets whose ``features [B, N, k]`` (which must require grad) it was computed
    from. The caller chooses what D means here: the logit is the usual choice (train.r1_on = 'logit') because the
    gradient of the sigmoid is sigmoid' times the logit's gradient, so it vanishes exactly when D saturates and
    the penalty would stop acting when it is needed most.

    The gradient is taken of sum_b d_out[b], which gives each example's own gradient when D treats the examples of
    a batch independently; with train-mode batchnorm in D the cross-example terms are included too, as in common R1
    implementations. ``create_graph=True`` keeps the graph so the penalty can be backpropagated to D's parameters.
    """
    if not features.requires_grad:
        raise ValueError("r1_penalty needs features that require grad (call features.requires_grad_() before D)")
    if d_out.dim() != 1 or d_out.shape[0] != features.shape[0]:
        raise ValueError(f"d_out must be [{features.shape[0]}], got {list(d_out.shape)}")
    (grad,) = torch.autograd.grad(d_out.sum(), features, create_graph=create_graph)
    return 0.5 * grad.pow(2).flatten(1).sum(dim=1).mean()
