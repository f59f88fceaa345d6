"""Data-parallel training through the real ``torchrun`` launcher (2 CPU processes on gloo)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nfd.training import checkpoint as ckpt
from tests.conftest import write_h5


def nfd_train(tmp: Path, nproc: int, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = (
        [sys.executable, "-m", "nfd"]
        if nproc == 1
        else [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "nfd"]
    )
    return subprocess.run(
        [*launcher, "train", "--preset", "tiny", "--quiet", "--set", "threads=1", *args],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.tsv").open() as f:
        return list(csv.DictReader(f, delimiter="\t"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:8, 0:8]
    imgs = [((yy - rng.uniform(2, 6)) ** 2 + (xx - rng.uniform(2, 6)) ** 2 < rng.uniform(2, 9)) for _ in range(40)]
    return write_h5(tmp_path_factory.mktemp("ddp") / "d.h5", np.stack(imgs)[..., None].astype(np.uint8) * 255, (8, 8))


def test_two_processes_equal_one_on_the_global_batch(data, tmp_path) -> None:
    """Auto-decoder (no batch coupling): 2 ranks x 4 examples == 1 process x 8 examples, step for step."""
    common = ["--data", str(data), "--steps", "4", "--set", "train.model=autodecoder"]
    one = nfd_train(tmp_path, 1, *common, "--out", "one")
    two = nfd_train(tmp_path, 2, *common, "--out", "two")
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = ckpt.load(tmp_path / "one" / "model.pt"), ckpt.load(tmp_path / "two" / "model.pt")
    assert a["step"] == b["step"] == 4
    for k in a["G"]:
        torch.testing.assert_close(b["G"][k], a["G"][k], rtol=1e-4, atol=1e-5, msg=k)
    losses_one = [float(r["loss"]) for r in rows(tmp_path / "one")]
    losses_two = [float(r["loss"]) for r in rows(tmp_path / "two")]
    assert losses_two == pytest.approx(losses_one, rel=1e-4)


def test_gan_resumes_across_process_counts(data, tmp_path) -> None:
    """2 processes -> resume in 1 -> resume in 2: one continuous run, ranks in sync (checked by the trainer)."""
    common = ["--data", str(data), "--out", "run", "--set", "train.checkpoint_every=100"]
    for nproc, steps in ((2, 3), (1, 5), (2, 7)):
        r = nfd_train(tmp_path, nproc, *common, "--steps", str(steps), "--resume")
        assert r.returncode == 0, r.stderr[-2000:]
        assert ckpt.load(tmp_path / "run" / "model.pt")["step"] == steps
    assert [int(r["step"]) for r in rows(tmp_path / "run")] == list(range(1, 8))
    assert all(np.isfinite(float(r["loss_d"])) for r in rows(tmp_path / "run"))


def test_batch_must_split_evenly(data, tmp_path) -> None:
    r = nfd_train(tmp_path, 2, "--data", str(data), "--out", "bad", "--steps", "1", "--set", "batch=7")
    assert r.returncode != 0
    assert "batch size 7 is not divisible by the 2 training processes" in r.stderr
    assert not (tmp_path / "bad" / "model.pt").exists()


def test_each_rank_reads_its_share_of_the_global_batch(data, tmp_path) -> None:
    from nfd.presets import preset
    from nfd.training.distributed import World
    from nfd.training.trainer import Trainer

    t = Trainer(preset("tiny"), data, tmp_path / "r")
    full = [t.batch(s) for s in range(3)]
    shares = []
    for rank in (0, 1):
        t.world = World(rank=rank, size=2)
        shares.append([t.batch(s) for s in range(3)])
    for s in range(3):
        a, b = shares[0][s], shares[1][s]
        assert len(a.index) == len(b.index) == len(full[s].index) // 2
        assert sorted(a.index.tolist() + b.index.tolist()) == full[s].index.tolist()
        torch.testing.assert_close(a.coords, full[s].coords)  # the K points are shared by all ranks
        mine = {int(i): f for i, f in zip(a.index, a.features)} | {int(i): f for i, f in zip(b.index, b.features)}
        for i, f in zip(full[s].index.tolist(), full[s].features):
            torch.testing.assert_close(mine[i], f)
