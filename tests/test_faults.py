"""Faults injected for real into training runs (tiny preset, real processes, real signals and files).

Each test asserts what is left afterwards: the weights of a resumed run equal an uninterrupted run's bit for bit,
the metrics have one row per step, nothing stale or half-written stays in the run folder, and every refusal is one
line naming the file.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nfd.cli import main
from nfd.training import checkpoint as ckpt
from nfd.training.runfolder import LOCK_NAME
from tests.conftest import write_h5

STEPS = 60


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:8, 0:8]
    imgs = [((yy - rng.uniform(2, 6)) ** 2 + (xx - rng.uniform(2, 6)) ** 2 < rng.uniform(2, 9)) for _ in range(40)]
    return write_h5(
        tmp_path_factory.mktemp("faults") / "d.h5", np.stack(imgs)[..., None].astype(np.uint8) * 255, (8, 8)
    )


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "nfd",
        "train",
        "--preset",
        "tiny",
        "--quiet",
        "--data",
        str(data),
        "--out",
        str(out),
        "--set",
        "threads=1",
        "--set",
        "train.checkpoint_every=7",
        "--set",
        "train.keep_every=25",
        "--set",
        "train.sample_every=1000",
        "--steps",
        str(STEPS),
        *extra,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def train(data: Path, out: Path, *extra: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(_args(data, out, *extra), env=_env(), capture_output=True, text=True, timeout=300, **kw)


@pytest.fixture
def here(capsys):
    """``nfd train`` in this process (no interpreter start-up) for the cases that need no signal or kill; the
    result looks like ``train``'s."""

    def run(data: Path, out: Path, *extra: str) -> SimpleNamespace:
        threads = torch.get_num_threads()
        try:
            code = main(_args(data, out, *extra)[3:])
        finally:
            torch.set_num_threads(threads)  # the run's threads=1 must not slow the tests after it
        cap = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=cap.out, stderr=cap.err)

    return run


def start(data: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        _args(data, out, *extra), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_rows(out: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Block until ``metrics.tsv`` has ``n`` data rows (the run is in its training loop)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        p = out / "metrics.tsv"
        if p.is_file() and len(p.read_text().splitlines()) > n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.communicate()}")
        time.sleep(0.02)
    raise AssertionError("training did not reach its loop")


def steps_logged(out: Path) -> list[int]:
    return [int(line.split("\t")[0]) for line in (out / "metrics.tsv").read_text().splitlines()[1:]]


def weights(path: Path) -> dict[str, torch.Tensor]:
    data = ckpt.load(path)
    return {**{f"G.{k}": v for k, v in data["G"].items()}, **{f"D.{k}": v for k, v in data["D"].items()}}


def hidden_files(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*") if p.is_file()]


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> dict[str, torch.Tensor]:
    """The uninterrupted run every faulted run must end equal to."""
    out = tmp_path_factory.mktemp("ref") / "run"
    r = train(data, out)
    assert r.returncode == 0, r.stderr
    assert steps_logged(out) == list(range(1, STEPS + 1))
    return weights(out / "model.pt")


def assert_equal_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("checkpoint_every", ["7", "1"])
def test_kill_9_then_resume_equals_uninterrupted(data, tmp_path, reference, checkpoint_every, here):
    """SIGKILL in the loop (and, with a checkpoint every step, most likely inside a checkpoint write), twice; then
    ``--resume`` finishes bit-exact, the metrics have one row per step and no temp file of a killed write is left."""
    out = tmp_path / "run"
    extra = ("--set", f"train.checkpoint_every={checkpoint_every}")
    for rows in (12, 36):
        proc = start(data, out, *extra, *(["--resume"] if rows > 12 else []))
        wait_rows(out, rows, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        assert ckpt.load(out / "checkpoints" / "last.pt")["step"] >= 1  # the previous checkpoint is intact
        assert not (out / "model.pt").exists()
    r = here(data, out, *extra, "--resume")
    assert r.returncode == 0, r.stderr
    assert_equal_weights(weights(out / "model.pt"), reference)
    assert steps_logged(out) == list(range(1, STEPS + 1))
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == [
        f"step_{s:07d}.pt" for s in range(25, STEPS + 1, 25)
    ]
    assert not hidden_files(out)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_after_a_step_with_a_checkpoint(data, tmp_path, reference, sig, code, here):
    """The first signal finishes the step, writes a checkpoint of it and says where to resume; two interrupts
    at different moments, then a resume, equal the uninterrupted run."""
    out = tmp_path / "run"
    for i, rows in enumerate((8, 30)):
        proc = start(data, out, *(["--resume"] if i else []))
        wait_rows(out, rows, proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == code, err
        step = ckpt.load(out / "checkpoints" / "last.pt")["step"]
        assert steps_logged(out)[-1] == step  # metrics and checkpoint agree
        assert f"after step {step}; checkpoint {out / 'checkpoints' / 'last.pt'}" in err and "--resume" in err
        assert "Segmentation fault" not in err and "Traceback" not in err
        assert not (out / LOCK_NAME).exists()
    r = here(data, out, "--resume")
    assert r.returncode == 0, r.stderr
    assert_equal_weights(weights(out / "model.pt"), reference)
    assert steps_logged(out) == list(range(1, STEPS + 1))


def test_a_second_writer_is_refused_and_a_stale_lock_taken_over(data, tmp_path, here):
    out = tmp_path / "run"
    first = start(data, out, "--steps", "100000")
    wait_rows(out, 5, first)
    second = train(data, out, "--force")
    err = second.stderr.strip()
    assert second.returncode == 2 and len(err.splitlines()) == 1, err
    assert f"in use by another nfd train (pid {first.pid}" in err
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=60)
    assert first.returncode == 130
    # the first run was not disturbed: its metrics are its own steps, up to its checkpoint
    step = ckpt.load(out / "checkpoints" / "last.pt")["step"]
    assert steps_logged(out) == list(range(1, step + 1))
    # a lock left by a process that no longer exists (kill -9) does not block the next run
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK_NAME).write_text(f'{{"pid": {dead.pid}, "host": "{os.uname().nodename}", "since": "then"}}')
    r = here(data, out, "--resume", "--steps", str(step + 3))
    assert r.returncode == 0, r.stderr
    assert not (out / LOCK_NAME).exists() and steps_logged(out) == list(range(1, step + 4))


def test_fresh_run_into_an_old_folder_needs_force(data, tmp_path, here):
    out = tmp_path / "run"
    assert here(data, out, "--steps", "30").returncode == 0
    r = here(data, out, "--steps", "20")
    assert r.returncode == 2 and "holds another run's outputs" in r.stderr and "--force" in r.stderr
    assert ckpt.load(out / "model.pt")["step"] == 30  # untouched
    r = here(data, out, "--steps", "20", "--force", "--set", "train.keep_every=5")
    assert r.returncode == 0, r.stderr
    assert ckpt.load(out / "model.pt")["step"] == 20 and steps_logged(out) == list(range(1, 21))
    # the old run's snapshot (step 25) is gone, only this run's are there
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == [f"step_{s:07d}.pt" for s in (5, 10, 15, 20)]


def test_resume_with_new_learning_rate_uses_it_and_says_so(data, tmp_path, here):
    out = tmp_path / "run"
    assert here(data, out, "--steps", "10").returncode == 0
    r = here(data, out, "--steps", "20", "--resume", "--set", "train.lr_g=0.01")
    assert r.returncode == 0, r.stderr
    data_ = ckpt.load(out / "model.pt")
    assert data_["config"]["train"]["lr_g"] == 0.01
    assert [g["lr"] for g in data_["opt_g"]["param_groups"]] == [0.01]
    assert "resumed optimiser now uses lr 0.01" in r.stderr + r.stdout
    assert "lr_g: 0.01" in (out / "config.yaml").read_text()


def _largest_member(path: Path) -> tuple[int, int]:
    """(offset, size) of the biggest stored tensor record inside a torch zip checkpoint."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        assert info.compress_type == zipfile.ZIP_STORED
    with path.open("rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(f.read(4), dtype="<u2")
    return info.header_offset + 30 + int(name_len) + int(extra_len), info.file_size


def test_flipped_bytes_in_a_checkpoint_are_refused(data, tmp_path, here, capsys):
    out = tmp_path / "run"
    assert here(data, out, "--steps", "8").returncode == 0
    for name in ("model.pt", "checkpoints/last.pt"):
        path = out / name
        offset, size = _largest_member(path)
        raw = bytearray(path.read_bytes())
        raw[offset + size // 2 : offset + size // 2 + 8] = bytes(b ^ 0xFF for b in raw[offset + size // 2 :][:8])
        path.write_bytes(bytes(raw))
    code = main(
        [
            "sample",
            "--checkpoint",
            str(out / "model.pt"),
            "--num",
            "2",
            "--resolution",
            "8",
            "--out",
            str(tmp_path / "s.npz"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "model.pt: checkpoint is damaged" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "s.npz").exists()
    r = here(data, out, "--steps", "12", "--resume")
    assert r.returncode == 2 and "last.pt: checkpoint is damaged" in r.stderr


def test_unsafe_pickle_gets_our_refusal(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"x": os.getcwd}, path)  # a callable: only a full unpickler would rebuild it
    code = main(
        ["sample", "--checkpoint", str(path), "--num", "1", "--resolution", "4", "--out", str(tmp_path / "s.npz")]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == f"nfd sample: error: not a weights-only checkpoint: refusing to unpickle code from {path}"
    assert "weights_only" not in err


def test_failed_checkpoint_write_is_one_line_and_state_agrees(data, tmp_path, here):
    """A write that fails (file-size limit: the kernel's EFBIG, the same path as a full disk) stops the run with one
    line naming the checkpoint; the folder keeps the last good checkpoint, no temp file, and a resume with room
    finishes with one metrics row per step."""
    out = tmp_path / "run"
    assert here(data, out, "--steps", "7").returncode == 0  # one checkpoint written with room
    size = (out / "checkpoints" / "last.pt").stat().st_size

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))

    r = train(data, out, "--steps", "30", "--resume", preexec_fn=limit)
    err = r.stderr.strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1, err
    assert "last.pt: cannot write checkpoint" in err and "File too large" in err
    assert ckpt.load(out / "checkpoints" / "last.pt")["step"] == 7 and not hidden_files(out)
    assert not (out / "model.pt").exists()  # the run is not finished; no model of an older length beside it
    r = here(data, out, "--steps", "30", "--resume")
    assert r.returncode == 0, r.stderr
    assert steps_logged(out) == list(range(1, 31))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps", "0"], "--steps: expected an integer >= 1, got 0"),
        (["--steps", "-1"], "--steps: expected an integer >= 1, got -1"),
        (["--set", "train.lr_d=-1"], "train.lr_d must be a finite number >= 0, got -1.0"),
        (["--set", "train.lr_g=nan"], "train.lr_g must be a finite number >= 0, got nan"),
        (["--set", "train.checkpoint_every=0"], "train.checkpoint_every must be >= 1, got 0"),
        (["--set", "train.sample_every=0"], "train.sample_every must be >= 1, got 0"),
        (["--set", "train.steps=-3"], "train.steps must be >= 0 (0 = derive from train.epochs), got -3"),
    ],
)
def test_bad_values_are_refused_before_anything_is_written(data, tmp_path, args, message, capsys):
    out = tmp_path / "run"
    cmd = _args(data, out)[3:]
    with pytest.raises(SystemExit) if args[0] == "--steps" else contextlib.nullcontext():  # argparse exits 2
        assert main(cmd[: cmd.index("--steps")] + args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_clamped_values_are_recorded_as_used(data, tmp_path, here):
    out = tmp_path / "run"
    r = here(data, out, "--steps", "2", "--set", "train.batch_size=1000", "--set", "train.num_points=5000")
    assert r.returncode == 0, r.stderr
    cfg = ckpt.load(out / "model.pt")["config"]["train"]
    n_train = ckpt.load(out / "model.pt")["num_examples"]
    assert cfg["batch_size"] == n_train and cfg["num_points"] == 0
    assert f"train.batch_size=1000 -> {n_train}" in r.stderr + r.stdout


def test_failed_metrics_write_names_the_file(data, tmp_path):
    """A run whose metrics file cannot grow (file-size limit) stops with one line naming metrics.tsv."""
    out = tmp_path / "run"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))

    r = train(data, out, "--set", "train.keep_every=0", "--set", "train.checkpoint_every=1000", preexec_fn=limit)
    err = r.stderr.strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1, err
    assert f"{out / 'metrics.tsv'}: cannot write (File too large)" in err and not hidden_files(out)


@pytest.mark.parametrize("delay", [0.3, 1.5, 3.0])
def test_signal_during_start_up_is_not_lost(data, tmp_path, delay):
    """Ctrl-C while the command is still importing or building the models: exit 130 with one line, never a
    traceback and never a run that trains on to the end."""
    out = tmp_path / "run"
    proc = start(data, out, "--steps", "100000")
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # the signal was lost: do not leave a training running after the test
        proc.kill()
        raise
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err.strip().splitlines()[-1]
    if (out / "checkpoints" / "last.pt").is_file():  # it got as far as training: one step, then a checkpoint
        assert steps_logged(out)[-1] == ckpt.load(out / "checkpoints" / "last.pt")["step"]
