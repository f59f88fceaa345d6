"""The trainer: exact resume, learning on an easy set, baselines, non-finite stop, bad inputs."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch

from nfd.cli import main
from nfd.errors import NfdError
from nfd.presets import resolve
from nfd.training import checkpoint as ckpt
from nfd.training.trainer import Trainer


def _cfg(*sets: str):
    return resolve("tiny", None, ["train.checkpoint_every=1000", "train.sample_every=1000", *sets])


def _state(t: Trainer) -> dict[str, torch.Tensor]:
    out = {f"G.{k}": v for k, v in t.G.state_dict().items()}
    out.update({f"D.{k}": v for k, v in t.D.state_dict().items()})
    if t.G_ema is not None:
        out.update({f"G_ema.{k}": v for k, v in t.G_ema.state_dict().items()})
    return out


@pytest.mark.parametrize("ema", ["0", "0.9"])
def test_resume_equals_uninterrupted(images_h5, tmp_path, ema):
    sets = [f"train.ema_beta={ema}"]
    straight = Trainer(_cfg("steps=20", *sets), images_h5, tmp_path / "a")
    straight.fit(progress=False)
    first = Trainer(_cfg("steps=10", *sets), images_h5, tmp_path / "b")
    first.fit(progress=False)
    resumed = Trainer(_cfg("steps=20", *sets), images_h5, tmp_path / "b")
    resumed.fit(resume=True, progress=False)
    assert (straight.G_ema is not None) == (ema != "0")
    assert resumed.step == straight.step == 20
    a, b = _state(straight), _state(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the metrics file continues: one row per step, no duplicates
    rows = (tmp_path / "b" / "metrics.tsv").read_text().strip().splitlines()[1:]
    assert [int(r.split("\t")[0]) for r in rows] == list(range(1, 21))


def test_ema_follows_its_recurrence_and_is_what_samples(images_h5, tmp_path):
    """G_ema after each step equals the recurrence e <- b e + (1 - b) G computed by hand from G's weights, and
    model.pt samples from it."""
    from nfd.sampling.sample import load_generator

    beta = 0.75
    t = Trainer(_cfg("steps=1", f"train.ema_beta={beta}"), images_h5, tmp_path / "r")
    expect = {k: v.clone() for k, v in t.G.state_dict().items()}
    for n in (1, 2, 3):
        t.total_steps = n
        t.fit(progress=False, force=True)  # the same trainer, on from its in-memory step
        for k, v in t.G.state_dict().items():
            expect[k] = beta * expect[k] + (1 - beta) * v
    for k, v in t.G_ema.state_dict().items():
        torch.testing.assert_close(v, expect[k], rtol=1e-6, atol=1e-7)
    assert not all(torch.equal(v, t.G.state_dict()[k]) for k, v in t.G_ema.state_dict().items())
    G, _ = load_generator(tmp_path / "r" / "model.pt")
    for k, v in G.state_dict().items():
        assert torch.equal(v, t.G_ema.state_dict()[k]), k


def test_a_different_seed_differs(images_h5, tmp_path):
    a = Trainer(_cfg("steps=3"), images_h5, tmp_path / "a")
    a.fit(progress=False)
    b = Trainer(_cfg("steps=3", "seed=1"), images_h5, tmp_path / "b")
    b.fit(progress=False)
    assert not all(torch.equal(x, y) for x, y in zip(_state(a).values(), _state(b).values()))


def _column(path, name):
    lines = path.read_text().strip().splitlines()
    head = lines[0].split("\t")
    return np.array([float(r.split("\t")[head.index(name)]) for r in lines[1:]])


@pytest.mark.parametrize("amp", [False, True])
def test_discriminator_learns_an_easy_set(images_h5, tmp_path, amp):
    """With the generator frozen, a few D steps separate real discs from the generator's samples (also under bf16
    autocast, train.amp, which runs on the CPU too)."""
    t = Trainer(
        _cfg("steps=30", "train.lr_g=0.0", "train.lr_d=2e-3", "train.r1_weight=0.0", f"train.amp={amp}"),
        images_h5,
        tmp_path,
    )
    t.fit(progress=False)
    loss = _column(tmp_path / "metrics.tsv", "loss_d")
    assert loss[-5:].mean() < 0.7 * loss[:3].mean()


@pytest.mark.parametrize("sets", [["discriminator.kind=set"], ["train.model=autodecoder"]])
def test_baselines_train_with_the_same_trainer(images_h5, tmp_path, sets):
    t = Trainer(_cfg("steps=4", *sets), images_h5, tmp_path)
    final = t.fit(progress=False)
    data = ckpt.load(final)
    assert data["step"] == 4 and data["model"] == t.cfg.train.model


def test_trains_on_3d_voxels(voxels_h5, tmp_path):
    t = Trainer(_cfg("steps=3"), voxels_h5, tmp_path)
    t.fit(progress=False)
    assert t.coord_dim == 3 and (tmp_path / "samples").is_dir()
    assert list((tmp_path / "samples").glob("*.png"))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(images_h5, tmp_path):
    t = Trainer(_cfg("steps=4", "train.checkpoint_every=2"), images_h5, tmp_path)
    t.fit(progress=False)
    t2 = Trainer(_cfg("steps=8", "train.checkpoint_every=2"), images_h5, tmp_path)
    restore = t2.restore

    def restore_then_break(path):
        restore(path)
        with torch.no_grad():
            next(t2.G.parameters()).fill_(float("nan"))

    t2.restore = restore_then_break
    with pytest.raises(NfdError, match="non-finite"):
        t2.fit(resume=True, progress=False)
    assert ckpt.load(tmp_path / "checkpoints" / "last.pt")["step"] == 4
    assert math.isfinite(float(next(iter(ckpt.load(tmp_path / "checkpoints" / "last.pt")["G"].values())).sum()))


def test_cli_bad_inputs(images_h5, voxels_h5, tmp_path, capsys):
    assert main(["train", "--preset", "nope", "--data", str(images_h5), "--out", str(tmp_path / "x")]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert (
        main(["train", "--preset", "tiny", "--data", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "x")]) == 2
    )
    assert "missing.h5" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--preset",
                "tiny",
                "--set",
                "train.bogus=1",
                "--data",
                str(images_h5),
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "train.bogus" in capsys.readouterr().err
    # a checkpoint of 2D data cannot be resumed on 3D data
    assert (
        main(
            [
                "train",
                "--preset",
                "tiny",
                "--steps",
                "1",
                "--data",
                str(images_h5),
                "--out",
                str(tmp_path / "r"),
                "--quiet",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "train",
                "--preset",
                "tiny",
                "--steps",
                "2",
                "--data",
                str(voxels_h5),
                "--out",
                str(tmp_path / "r"),
                "--resume",
                "--quiet",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "another model/data" in err and len(err.splitlines()) == 1


def test_snapshots_hold_the_generator_of_their_step(tmp_path) -> None:
    """A snapshot at step 4 of a 6-step run == the generator of a 4-step run (same seed); no optimiser state."""
    from nfd.presets import preset
    from tests.conftest import write_h5

    rng = np.random.default_rng(0)
    h5 = write_h5(tmp_path / "d.h5", (rng.random((12, 8, 8, 1)) > 0.5).astype(np.uint8) * 255, (8, 8))
    runs = {}
    for steps in (4, 6):
        cfg = preset("tiny")
        cfg.train.steps, cfg.train.keep_every, cfg.train.batch_size = steps, 4, 4
        Trainer(cfg, h5, tmp_path / f"r{steps}").fit(progress=False)
        runs[steps] = tmp_path / f"r{steps}"
    assert [p.name for p in sorted((runs[6] / "snapshots").iterdir())] == ["step_0000004.pt"]
    snap = ckpt.load(runs[6] / "snapshots" / "step_0000004.pt")
    full = ckpt.load(runs[4] / "model.pt")
    assert snap["step"] == 4 and "opt_g" not in snap and "D" not in snap
    assert snap["G"].keys() == full["G"].keys()
    assert all(torch.equal(snap["G"][k], full["G"][k]) for k in full["G"])


def test_wall_clock_budget_ends_training_and_is_carried_over_resumes(images_h5, tmp_path, monkeypatch):
    """train.max_seconds ends training after the step whose clock reaches it; the seconds are saved with the model
    and continue on resume. The clock is replaced by one that advances 1 s per reading (deterministic)."""
    import nfd.training.trainer as trainer_mod

    class Clock:
        now = 0.0

        def perf_counter(self) -> float:
            self.now += 1.0
            return self.now

    monkeypatch.setattr(trainer_mod, "time", Clock())
    t = Trainer(_cfg("steps=1000", "train.max_seconds=10"), images_h5, tmp_path / "r")
    t.fit(progress=False)
    assert 1 < t.step < 1000 and t.train_seconds >= 10
    saved = ckpt.load(tmp_path / "r" / "model.pt")
    assert saved["step"] == t.step and saved["train_seconds"] == t.train_seconds
    # a checkpoint's budget already spent: a resume with a larger one goes on from the saved seconds
    more = Trainer(_cfg("steps=1000", "train.max_seconds=20"), images_h5, tmp_path / "r")
    more.fit(resume=True, progress=False)
    assert more.train_seconds >= 20 and more.step > t.step
    assert more.step - t.step < t.step + 2  # about the same number of steps for the second 10 s
    with pytest.raises(Exception, match="train.max_seconds"):
        _cfg("train.max_seconds=-1")


def test_plan_built_ahead_on_a_side_thread_changes_nothing(voxels_h5, tmp_path, monkeypatch):
    """With two threads and a fresh point subset per step, the next step's neighbour plan is built on a side thread
    while the current step trains; the run is bit for bit the one that plans every step on the main thread, and the
    side thread did build the plans the steps then used (cache hits)."""
    from nfd.models.neighbours import plan_cache

    sets = ["steps=6", "train.threads=2", "train.num_points=128", "train.d_branches=sequential"]
    threads = torch.get_num_threads()
    try:
        ahead = Trainer(_cfg(*sets), voxels_h5, tmp_path / "ahead")
        hits = plan_cache.hits
        ahead.fit(progress=False)
        assert plan_cache.hits - hits >= 5  # steps 1-5 found the plan the side thread built
        monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # the trainer's test for a second thread
        inline = Trainer(_cfg(*sets), voxels_h5, tmp_path / "inline")
        plan_cache._plans.clear()
        inline.fit(progress=False)
    finally:
        monkeypatch.undo()
        torch.set_num_threads(threads)
    a, b = _state(ahead), _state(inline)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert ahead._planner is None and not any(t.name.startswith("nfd-plan") for t in threading.enumerate())
