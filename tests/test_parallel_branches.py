"""The D step's two branches side by side (train.d_branches): the same step as the sequential one."""

from __future__ import annotations

import re
import threading

import pytest
import torch

from nfd.config import ConfigError
from nfd.presets import preset, resolve
from nfd.report.bench_step import build_setup, data_shape, step_inputs
from nfd.training.step import PARALLEL_BRANCHES_MAX_VALUES, ParallelBranches, gan_step, parallel_branches_for
from nfd.training.trainer import Trainer


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _steps(branches: bool, steps: int = 3, r1_on: str = "logit") -> tuple[dict, list[dict]]:
    cfg = preset("tiny")
    cfg.train.r1_on = r1_on
    setup = build_setup(cfg, data_shape(cfg, dim=3, features=1, resolution=8), seed=3)
    side = ParallelBranches(setup.D, torch.get_num_threads()) if branches else None
    metrics = []
    try:
        for step in range(steps):
            coords, real, gen = step_inputs(setup, step)
            metrics.append(
                gan_step(setup.G, setup.D, setup.opt_g, setup.opt_d, coords, real, cfg.train, gen, branches=side)
            )
    finally:
        if side is not None:
            side.close()
    state = {f"G.{k}": v for k, v in setup.G.state_dict().items()}
    state.update({f"D.{k}": v for k, v in setup.D.state_dict().items()})
    return state, metrics


@pytest.mark.parametrize("r1_on", ["logit", "sigmoid"])
def test_parallel_branches_equal_the_sequential_step_bit_for_bit(one_thread, r1_on):
    """At one thread per side every parameter after three steps (D's and, through D, G's) and every metric equal
    the sequential step's exactly: the gradients are the same sums (fake, then real). D's batchnorm running
    statistics, merged from the replica's, agree to rounding, and its batch counter exactly."""
    a, ma = _steps(True, r1_on=r1_on)
    b, mb = _steps(False, r1_on=r1_on)
    assert ma == mb
    assert a.keys() == b.keys()
    stats = [k for k in a if k.startswith("D.") and ("running_" in k)]
    assert stats and any("num_batches_tracked" in k for k in a)
    for k in a:
        if k in stats:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
        else:
            assert torch.equal(a[k], b[k]), k
    assert not any(t.name.startswith("nfd-branch") for t in threading.enumerate())


def test_parallel_branches_at_two_threads_match_to_rounding():
    """With two threads (one per side against two for the whole sequential step) the step agrees to float
    rounding."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        a, ma = _steps(True, steps=1)
        b, mb = _steps(False, steps=1)
    finally:
        torch.set_num_threads(before)
    # A bias just before a batchnorm has a zero gradient up to rounding, which Adam scales to a full step: skip those.
    before_norm = re.compile(r"D\.(convs\.\d+\.linear|.*weight_net\.net\.\d+)\.bias$")
    compared = [k for k in a if not before_norm.match(k)]
    assert len(compared) > len(a) / 2
    lr = max(preset("tiny").train.lr_g, preset("tiny").train.lr_d)
    for k in compared:  # running means of near-zero activations: batch means with cancellation, rounded apart
        tol = 1e-4 if "running_" in k else 1e-6
        diff = (a[k].double() - b[k].double()).abs()
        close = diff <= tol + 1e-4 * b[k].double().abs()
        # Adam's first step is lr * sign(gradient): an entry whose gradient is zero up to rounding moves by a full
        # step either way. Few such entries, and none further apart than two steps.
        assert close.double().mean() >= 0.99 and float(diff.max()) <= 2 * lr * (1 + 1e-3), k
    assert ma[0]["loss_d"] == pytest.approx(mb[0]["loss_d"], rel=1e-5)


def test_auto_choice_and_config_values():
    """'auto' takes the side thread on the CPU with two threads for small steps only; 'parallel' at every size;
    'sequential' never; one thread or several processes never; a bad value (e.g. YAML's on/off) is a config
    error."""
    cfg = preset("tiny")
    D = build_setup(cfg, data_shape(cfg, dim=2, features=1, resolution=8)).D
    cpu = torch.device("cpu")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        small = parallel_branches_for(cfg.train, D, cpu, 8, 256)
        assert small is not None and small.main_threads == 1
        small.close()
        assert parallel_branches_for(cfg.train, D, cpu, 64, PARALLEL_BRANCHES_MAX_VALUES) is None
        assert parallel_branches_for(cfg.train, D, cpu, 8, 256, world=2) is None
        cfg.train.d_branches = "parallel"
        big = parallel_branches_for(cfg.train, D, cpu, 64, PARALLEL_BRANCHES_MAX_VALUES)
        assert big is not None
        big.close()
        cfg.train.d_branches = "sequential"
        assert parallel_branches_for(cfg.train, D, cpu, 8, 256) is None
        torch.set_num_threads(1)
        cfg.train.d_branches = "parallel"
        assert parallel_branches_for(cfg.train, D, cpu, 8, 256) is None
    finally:
        torch.set_num_threads(before)
    for bad in ("yes", "off"):
        with pytest.raises(ConfigError, match="d_branches"):
            resolve("tiny", None, [f"train.d_branches={bad}"])


def test_trainer_uses_and_closes_the_side_thread(voxels_h5, tmp_path, monkeypatch):
    """A two-thread tiny run takes the side thread for its D steps (auto) and leaves no thread behind."""
    used = []
    real = ParallelBranches.start

    def start(self):
        used.append(threading.current_thread().name)
        return real(self)

    monkeypatch.setattr(ParallelBranches, "start", start)
    before = torch.get_num_threads()
    try:
        cfg = resolve("tiny", None, ["steps=3", "train.threads=2", "train.sample_every=1000"])
        t = Trainer(cfg, voxels_h5, tmp_path / "run")
        t.fit(progress=False)
    finally:
        torch.set_num_threads(before)
    assert len(used) == 3
    assert t._branches is None and not any(x.name.startswith("nfd-branch") for x in threading.enumerate())


def test_autocast_reaches_the_side_thread(one_thread):
    """bf16 autocast is per thread: the side thread enters it too, so with branches the amp step equals the
    sequential amp step (bit for bit at one thread per side) and differs from the float32 step."""
    cfg = preset("tiny")
    results = []
    for branches, amp in ((True, True), (False, True), (False, False)):
        setup = build_setup(cfg, data_shape(cfg, dim=2, features=1, resolution=8), seed=5)
        side = ParallelBranches(setup.D, 1) if branches else None
        coords, real, gen = step_inputs(setup, 0)
        try:
            results.append(
                gan_step(
                    setup.G, setup.D, setup.opt_g, setup.opt_d, coords, real, cfg.train, gen, amp=amp, branches=side
                )
            )
        finally:
            if side is not None:
                side.close()
    assert results[0] == results[1]
    assert results[0]["loss_d"] != results[2]["loss_d"]


@pytest.mark.parametrize("branches", [False, True])
def test_amp_losses_come_from_float32_logits(branches):
    """Under bf16 autocast D's logits are cast to float32 before the losses (the CPU's autocast would compute
    softplus in bf16, to ~3 digits): the logged losses are not all bf16 numbers, in both D-step forms."""
    cfg = preset("tiny")
    setup = build_setup(cfg, data_shape(cfg, dim=2, features=1, resolution=8), seed=1)
    side = ParallelBranches(setup.D, max(2, torch.get_num_threads())) if branches else None
    values = []
    try:
        for step in range(2):
            coords, real, gen = step_inputs(setup, step)
            m = gan_step(
                setup.G, setup.D, setup.opt_g, setup.opt_d, coords, real, cfg.train, gen, amp=True, branches=side
            )
            values += [m["loss_d"], m["loss_g"]]
    finally:
        if side is not None:
            side.close()
    assert all(torch.isfinite(torch.tensor(values)))
    assert any(torch.tensor(v).bfloat16().float().item() != v for v in values)
