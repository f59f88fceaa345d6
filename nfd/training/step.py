"""One adversarial training step (Sec. 3.5) and its pieces, shared by the training loop and ``nfd bench``.

``nfd bench`` times exactly the step that trains, so the step, its optimisers, its random streams and the EMA update
live here, apart from the loop that feeds them (:mod:`nfd.training.trainer`). Every source of randomness of a step
is drawn from a generator seeded by ``(seed, step, stream)`` (:func:`step_generator`), so a resumed run replays
exactly the steps it would have taken, whatever happened before.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
import torch.nn.functional as F

from nfd.config import Config, TrainConfig
from nfd.models.losses import g_loss, r1_penalty


def step_generator(seed: int, step: int, stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator that depends only on (seed, step, stream): the key to resuming exactly."""
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + step * 7_919 + stream * 104_729) % (2**63 - 1))
    return g


def adam(params: Any, lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    """Adam with the fused kernel: one pass over each parameter and its two moments, no model-sized temporaries.

    Measured on this project's 2-core CPU for the 34M-parameter MNIST hypernetwork: 0.026 s per update against
    0.163 s for the default multi-tensor (foreach) implementation; same update up to float rounding.
    """
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)


def gan_optimizers(
    G: torch.nn.Module, D: torch.nn.Module, tc: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """The Adam optimisers of a GAN run (App. A.2), for the training loop and ``nfd bench`` alike."""
    betas = (tc.beta1, tc.beta2)
    return adam(G.parameters(), tc.lr_g, betas), adam(D.parameters(), tc.lr_d, betas)


PARALLEL_BRANCHES_MAX_VALUES = 65_536
"""``train.d_branches='auto'`` runs the branches side by side up to this many values (batch x points) per
step. Measured on the 2-core benchmark machine, ``demo_chairs`` (16 x 2,048): the D step 0.51 -> 0.37 s and 0.59 ->
0.41 s in two runs (two threads, in one process). Larger steps multiply large matrices, which two intra-op threads
already share well, and would hold both branches' graphs at the peak."""


class ParallelBranches:
    """The D step's fake branch on a second thread, beside the real branch on the calling thread.

    At demo sizes most products are too small for two intra-op threads to share well, while the D step's two halves
    (D on the real sets with R1's double backward; G's samples and D on them) are independent until their gradients
    are summed. The fake half runs on a replica of D that shares its parameters and owns its batchnorm buffers (the
    running statistics are the only state a forward pass writes); after the step, D's buffers are those of the
    sequential order (real, then fake) up to rounding. Each side gets half the threads (at least one).
    """

    def __init__(self, D: torch.nn.Module, threads: int) -> None:
        self.D = D
        self.replica = copy.deepcopy(D, {id(p): p for p in D.parameters()})
        self.main_threads = max(1, threads // 2)
        side = max(1, threads - self.main_threads)
        self.pool = ThreadPoolExecutor(
            1, thread_name_prefix="nfd-branch", initializer=torch.set_num_threads, initargs=(side,)
        )
        self.norms = [
            (a, b)
            for a, b in zip(D.modules(), self.replica.modules())
            if isinstance(a, torch.nn.modules.batchnorm._BatchNorm) and a.track_running_stats
        ]
        if any(a.momentum is None for a, _ in self.norms):
            raise ValueError("parallel branches need batchnorm with a momentum (not a cumulative average)")

    def start(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Copy D's buffers and mode into the replica; returns the running statistics before the step."""
        self.replica.train(self.D.training)
        with torch.no_grad():
            for a, b in zip(self.D.buffers(), self.replica.buffers()):
                b.copy_(a)
        return [(a.running_mean.clone(), a.running_var.clone()) for a, _ in self.norms]

    @torch.no_grad()
    def merge(self, before: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """D's running statistics as if its fake pass had followed its real pass: the replica's update, m * stat
        = replica - (1 - m) * before, applied after D's own."""
        for (a, b), stats in zip(self.norms, before):
            m = float(a.momentum)
            for name, start in zip(("running_mean", "running_var"), stats):
                own, side = getattr(a, name), getattr(b, name)
                own.mul_(1 - m).add_(side - (1 - m) * start)
            a.num_batches_tracked.add_(1)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def parallel_branches_for(
    tc: TrainConfig, D: torch.nn.Module, device: torch.device, batch: int, points: int, world: int = 1
) -> ParallelBranches | None:
    """The trainer's (and ``nfd bench``'s) choice for ``train.d_branches``: on the CPU with two or more threads in
    one process, when 'parallel', or 'auto' and the step is small (:data:`PARALLEL_BRANCHES_MAX_VALUES`)."""
    threads = torch.get_num_threads()
    if tc.d_branches == "sequential" or device.type != "cpu" or threads < 2 or world > 1:
        return None
    if tc.d_branches == "auto" and batch * points > PARALLEL_BRANCHES_MAX_VALUES:
        return None
    return ParallelBranches(D, threads)


def gan_step(
    G: torch.nn.Module,
    D: torch.nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    coords: torch.Tensor,
    real: torch.Tensor,
    cfg: TrainConfig | Config,
    generator: torch.Generator | None,
    naive: bool = False,
    amp: bool = False,
    shard: tuple[int, int] = (0, 1),
    sync: Callable[[torch.nn.Module], None] | None = None,
    branches: ParallelBranches | None = None,
) -> dict[str, float]:
    """The adversarial training step (Sec. 3.5), used by :class:`~nfd.training.trainer.Trainer` and by ``nfd bench``.

    One D step (non-saturating loss with the R1 penalty on the real sets, a double backward), then one G step, all on
    the ``coords`` ``[N, d]`` shared by the batch; ``real`` ``[B, N, k]`` are the real features. The neighbour plan
    is computed (or fetched from the cache) once and shared by the real, fake and R1 passes. The latents of both
    halves are drawn from ``generator``. ``naive=True`` runs the same step through the reference implementations
    (the per-example generator loop, brute-force neighbours on every D call and the naive PointConv): same
    numbers, for benchmarks and tests. ``amp=True`` runs the forward passes under bf16 autocast (backward passes and
    the R1 gradient outside it, as autocast wants); D's logits are cast to float32 before the losses and R1 on
    every device (CUDA's autocast computes softplus in float32, the CPU's in bf16, ~3 digits). In data-parallel
    training ``shard = (rank, world)``: each half's latents are this rank's share ``[rank::world]`` of the global
    batch's, and ``sync(module)`` averages a module's gradients over the ranks before its optimiser step. With
    ``branches`` (not with ``naive``) the D step's fake branch runs on its thread beside the real branch
    (:class:`ParallelBranches`): the same gradients, summed as the sequential step sums them (fake, then real).
    Returns the step's metrics as floats.
    """
    tc = cfg.train if isinstance(cfg, Config) else cfg
    n = real.shape[0]
    rank, world = shard
    plan = None if naive else D.plan(coords)

    def latents() -> torch.Tensor:
        return G.sample_latents(n * world, generator=generator, device=real.device)[rank::world]

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast(real.device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()

    real = real.requires_grad_(tc.r1_weight > 0)
    opt_d.zero_grad(set_to_none=True)
    if branches is not None and not naive:
        loss_real, loss_fake, r1, real_logits, fake_logits = _d_step_parallel(
            G, branches, coords, real, latents(), plan, tc, autocast
        )
    else:
        with autocast():
            real_logits = D(coords, real, plan=plan, naive=naive).float()
            with torch.no_grad():
                fake = G(latents(), coords, naive=naive)
            fake_logits = D(coords, fake, plan=plan, naive=naive).float()
            loss_fake = F.softplus(fake_logits).mean()
        # d_loss = softplus(-real).mean() + softplus(fake).mean(): backpropagating the fake half now frees that
        # pass's graph before R1 builds its own (the peak of the step); the gradients are the same sums in another
        # order.
        loss_fake.backward()
        with autocast():
            loss_real = F.softplus(-real_logits).mean()
        r1 = torch.zeros((), device=real.device)
        if tc.r1_weight > 0:
            r1 = r1_penalty(real_logits if tc.r1_on == "logit" else torch.sigmoid(real_logits), real)
        (loss_real + tc.r1_weight * r1).backward()
    if sync is not None:
        sync(D)
    opt_d.step()
    opt_d.zero_grad(set_to_none=True)  # D's gradients are not needed again this step: free them
    loss_d = (loss_real + loss_fake).detach()

    with autocast():
        fake = G(latents(), coords, naive=naive)
    # The G step backpropagates through D, but only into G: D's parameter gradients would be discarded.
    d_flags = [p.requires_grad for p in D.parameters()]
    D.requires_grad_(False)
    try:
        with autocast():
            loss_g = g_loss(D(coords, fake, plan=plan, naive=naive).float())
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
    finally:
        for p, flag in zip(D.parameters(), d_flags):
            p.requires_grad_(flag)
    if sync is not None:
        sync(G)
    opt_g.step()
    opt_g.zero_grad(set_to_none=True)  # G's gradients (the size of the hypernetwork) are free during D's step
    return {
        "loss_d": float(loss_d.detach()),
        "loss_g": float(loss_g.detach()),
        "r1": float(r1.detach()),
        "d_real": float(torch.sigmoid(real_logits.detach()).mean()),
        "d_fake": float(torch.sigmoid(fake_logits.detach()).mean()),
        "sat_fake": saturated_share(fake),
        "sat_real": saturated_share(real),
    }


def _d_step_parallel(
    G: torch.nn.Module,
    branches: ParallelBranches,
    coords: torch.Tensor,
    real: torch.Tensor,
    z: torch.Tensor,
    plan: Any,
    tc: TrainConfig,
    autocast: Callable[[], contextlib.AbstractContextManager],
) -> tuple[torch.Tensor, ...]:
    """The D step's gradients, fake branch on the side thread, real branch here; leaves them in ``D``'s ``.grad``
    as ``fake + real``, the sum the sequential step's two backward passes make."""
    D, params = branches.D, [p for p in branches.D.parameters() if p.requires_grad]

    def fake_branch() -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor | None, ...]]:
        with autocast():  # autocast and grad mode are per thread: set here
            with torch.no_grad():
                fake = G(z, coords)
            logits = branches.replica(coords, fake, plan=plan).float()
            loss = F.softplus(logits).mean()
        return loss, logits, torch.autograd.grad(loss, params, allow_unused=True)

    before = branches.start()
    threads = torch.get_num_threads()
    torch.set_num_threads(branches.main_threads)
    try:
        future = branches.pool.submit(fake_branch)
        try:
            with autocast():
                real_logits = D(coords, real, plan=plan).float()
                loss_real = F.softplus(-real_logits).mean()
            r1 = torch.zeros((), device=real.device)
            if tc.r1_weight > 0:
                r1 = r1_penalty(real_logits if tc.r1_on == "logit" else torch.sigmoid(real_logits), real)
            real_grads = torch.autograd.grad(loss_real + tc.r1_weight * r1, params, allow_unused=True)
        finally:
            loss_fake, fake_logits, fake_grads = future.result()  # waits (and re-raises) even if this side failed
    finally:
        torch.set_num_threads(threads)
    branches.merge(before)
    for p, gf, gr in zip(params, fake_grads, real_grads):
        parts = [g for g in (gf, gr) if g is not None]
        if parts:
            p.grad = parts[0] + parts[1] if len(parts) == 2 else parts[0]
    return loss_real, loss_fake, r1, real_logits, fake_logits


SATURATION = 0.99
"""|feature| above this counts as saturated: tanh's gradient there is below 2% of its maximum."""


def saturated_share(features: torch.Tensor) -> float:
    """The share of feature values with |v| > :data:`SATURATION`: for the generator's outputs, the share whose tanh
    passes (almost) no gradient; the real data's own share, logged beside it, says what it should be."""
    return float((features.detach().abs() > SATURATION).float().mean())


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, beta: float) -> None:
    """ema <- beta * ema + (1 - beta) * model for every parameter (one fused pass); buffers are copied."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)
