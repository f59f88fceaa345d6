"""``nfd evaluate``: help, end-to-end runs on tiny contract-format files, one-line errors, no partial output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import nfd.cli
from tests.conftest import write_contract_h5


def write_samples(path: Path, features: np.ndarray) -> Path:
    num = features.shape[0]
    np.savez(
        path,
        features=features.astype(np.float32),
        latents=np.zeros((num, 4), np.float32),
        resolution=features.shape[1],
        coord_dim=features.ndim - 2,
        feature_dim=features.shape[-1],
        seed=0,
        preset="test",
    )
    return path


def digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """28 x 28 images in [-1, 1]: class c = a bright bar at one of 10 places (shifted, noisy)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    imgs = np.full((n, 28, 28), -1.0, dtype=np.float32)
    for i, c in enumerate(labels):
        r0 = 3 + 11 * (c // 5) + rng.integers(-2, 3)
        c0 = 1 + 5 * (c % 5) + rng.integers(-1, 2)
        imgs[i, r0 : r0 + 7, c0 : c0 + 4] = 1.0
    imgs += rng.normal(scale=0.2, size=imgs.shape).astype(np.float32)
    return np.clip(imgs, -1, 1)[..., None], labels


def balls(radii, res: int = 16) -> np.ndarray:
    g = np.linspace(-1, 1, res)
    x, y, z = np.meshgrid(g, g, g, indexing="ij")
    return np.stack([np.where(x**2 + y**2 + z**2 < r * r, 1.0, -1.0) for r in radii]).astype(np.float32)[..., None]


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run the real ``nfd.cli.main`` with only this verb module (other verbs may be mid-development)."""
    monkeypatch.setattr(nfd.cli, "VERB_MODULES", ["nfd.metrics.cli"])

    def run(*argv: str) -> tuple[int, str, str]:
        code = nfd.cli.main([str(a) for a in argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture(scope="module")
def mnist_h5(tmp_path_factory) -> Path:
    x, y = digits(300, seed=0)
    return write_contract_h5(
        tmp_path_factory.mktemp("mnist") / "mnist.h5",
        x,
        y,
        {"train": np.arange(0, 240), "val": np.arange(240, 260), "test": np.arange(260, 300)},
    )


@pytest.fixture(scope="module")
def chairs_h5(tmp_path_factory) -> Path:
    radii = np.random.default_rng(0).uniform(0.3, 0.9, 20)
    return write_contract_h5(
        tmp_path_factory.mktemp("chairs") / "chairs.h5",
        balls(radii),
        None,
        {"train": np.arange(0, 12), "val": np.arange(12, 14), "test": np.arange(14, 20)},
    )


@pytest.mark.parametrize("verb", ["train-classifier", "mnist", "shapes", "fid", "progress"])
def test_help(cli, verb) -> None:
    with pytest.raises(SystemExit) as e:
        cli("evaluate", verb, "--help")
    assert e.value.code == 0


def test_help_texts_name_the_options(monkeypatch, capsys) -> None:
    monkeypatch.setattr(nfd.cli, "VERB_MODULES", ["nfd.metrics.cli"])
    for verb, options in {
        "train-classifier": ["--data", "--out", "--epochs", "--seed"],
        "mnist": ["--samples", "--data", "--classifier", "--out", "--jsonl"],
        "shapes": ["--samples", "--data", "--num-ref", "--points", "--out", "--jsonl"],
        "fid": ["--samples", "--data", "--out", "--weights"],
    }.items():
        with pytest.raises(SystemExit):
            nfd.cli.main(["evaluate", verb, "--help"])
        text = capsys.readouterr().out
        assert all(o in text for o in options), (verb, text)
    with pytest.raises(SystemExit):
        nfd.cli.main(["evaluate", "--help"])
    assert "train-classifier" in capsys.readouterr().out


def test_train_classifier_and_mnist(cli, mnist_h5, tmp_path) -> None:
    clf = tmp_path / "clf.pt"
    code, out, err = cli("evaluate", "train-classifier", "--data", mnist_h5, "--out", clf, "--epochs", "12")
    assert code == 0, err
    assert "test accuracy" in out and clf.is_file()
    acc = float(out.split("test accuracy ")[1].split()[0].rstrip(","))
    assert acc > 0.9
    samples = write_samples(tmp_path / "s.npz", digits(60, seed=5)[0])
    log = tmp_path / "logs" / "metrics.jsonl"
    for i in range(2):
        code, out, err = cli(
            "evaluate",
            "mnist",
            "--samples",
            samples,
            "--data",
            mnist_h5,
            "--classifier",
            clf,
            "--out",
            tmp_path / f"m{i}.json",
            "--jsonl",
            log,
        )
        assert code == 0, err
    rec = json.loads((tmp_path / "m0.json").read_text())
    assert rec["metric"] == "classifier_fd" and rec["status"] == "computed"
    assert rec["protocol"]["label"] == "classifier FD (not comparable with Inception FID)"
    assert rec["protocol"]["num_samples"] == 60 and rec["protocol"]["num_reference"] == 40
    assert rec["results"]["confident_share"] > 0.8 and sum(rec["results"]["class_counts"]) == 60
    assert rec["context"]["classifier_test_accuracy"] == pytest.approx(acc, abs=1e-4)
    assert rec["results"]["baseline_fd"] is not None
    lines = log.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["metric"] == "classifier_fd"


def test_mnist_rejects_other_resolution(cli, mnist_h5, tmp_path) -> None:
    samples = write_samples(tmp_path / "s32.npz", np.zeros((4, 32, 32, 1)))
    out = tmp_path / "m.json"
    code, _, err = cli(
        "evaluate",
        "mnist",
        "--samples",
        samples,
        "--data",
        mnist_h5,
        "--classifier",
        tmp_path / "none.pt",
        "--out",
        out,
    )
    assert code == 2 and not out.exists()
    assert err.count("\n") == 1 and "resolution 32" in err and "28 x 28" in err


def test_shapes_end_to_end_with_a_failure(cli, chairs_h5, tmp_path) -> None:
    vols = np.concatenate([balls([0.4, 0.5, 0.6, 0.7, 0.8]), -np.ones((1, 16, 16, 16, 1), np.float32)])
    samples = write_samples(tmp_path / "s.npz", vols)
    out, log = tmp_path / "shapes.json", tmp_path / "m.jsonl"
    code, stdout, err = cli(
        "evaluate", "shapes", "--samples", samples, "--data", chairs_h5, "--points", "256", "--out", out, "--jsonl", log
    )
    assert code == 0, err
    rec = json.loads(out.read_text())
    assert rec["metric"] == "shapes3d"
    res, prot = rec["results"], rec["protocol"]
    assert res["num_failed"] == 1 and res["failure_rate"] == pytest.approx(1 / 6)
    assert prot["num_samples"] == 6 and prot["num_references"] == 6 and prot["points_per_shape"] == 256
    assert 0 < res["cov"] <= 1 and res["mmd"] > 0 and 0 <= res["1nna"] <= 1
    assert rec["context"]["ref_indices"] == [14, 15, 16, 17, 18, 19]
    assert json.loads(log.read_text()) == rec
    # a seeded subset of the references, and the same samples scored again give the same numbers
    code, _, err = cli(
        "evaluate",
        "shapes",
        "--samples",
        samples,
        "--data",
        chairs_h5,
        "--points",
        "256",
        "--num-ref",
        "3",
        "--out",
        tmp_path / "sub.json",
    )
    assert code == 0, err
    sub = json.loads((tmp_path / "sub.json").read_text())
    assert sub["protocol"]["num_references"] == 3 and len(sub["context"]["ref_indices"]) == 3


def test_shapes_errors(cli, chairs_h5, mnist_h5, tmp_path) -> None:
    out = tmp_path / "x.json"
    img = write_samples(tmp_path / "img.npz", np.zeros((2, 28, 28, 1)))
    code, _, err = cli("evaluate", "shapes", "--samples", img, "--data", chairs_h5, "--out", out)
    assert code == 2 and "3D occupancy samples" in err and err.count("\n") == 1
    vol = write_samples(tmp_path / "vol.npz", balls([0.5]))
    code, _, err = cli("evaluate", "shapes", "--samples", vol, "--data", mnist_h5, "--out", out)
    assert code == 2 and "3D occupancy data" in err
    code, _, err = cli("evaluate", "shapes", "--samples", tmp_path / "missing.npz", "--data", chairs_h5, "--out", out)
    assert code == 2 and "samples file not found" in err and "missing.npz" in err
    code, _, err = cli("evaluate", "shapes", "--samples", vol, "--data", tmp_path / "missing.h5", "--out", out)
    assert code == 2 and "data file not found" in err
    code, _, err = cli("evaluate", "shapes", "--samples", vol, "--data", chairs_h5, "--num-ref", "99", "--out", out)
    assert code == 2 and "--num-ref 99" in err
    bad = tmp_path / "bad.npz"
    np.savez(bad, features=np.full((1, 4, 4, 4, 1), 3.0, np.float32))
    code, _, err = cli("evaluate", "shapes", "--samples", bad, "--data", chairs_h5, "--out", out)
    assert code == 2 and "[-1, 1]" in err
    assert not out.exists() and not list(tmp_path.glob(".x.json*"))


def test_fid_not_computed_record_and_strict(cli, mnist_h5, tmp_path, monkeypatch) -> None:
    from nfd.metrics import fid

    monkeypatch.setattr(fid, "_import_torch_fidelity", lambda: (object(), None))
    weights = tmp_path / "nowhere.pth"
    samples = write_samples(tmp_path / "s.npz", digits(8, seed=1)[0])
    out = tmp_path / "fid.json"
    code, _, err = cli("evaluate", "fid", "--samples", samples, "--data", mnist_h5, "--weights", weights, "--out", out)
    assert code == 0
    rec = json.loads(out.read_text())
    assert rec["status"] == "not computed" and rec["results"]["fid"] is None
    assert rec["message"] == f"not computed: Inception weights not found at {weights}"
    assert rec["message"] in err
    strict = tmp_path / "strict.json"
    code, _, err = cli(
        "evaluate", "fid", "--samples", samples, "--data", mnist_h5, "--weights", weights, "--out", strict, "--strict"
    )
    assert code == 2 and not strict.exists()
    assert f"not computed: Inception weights not found at {weights}" in err
    vol = write_samples(tmp_path / "vol.npz", balls([0.5]))
    code, _, err = cli("evaluate", "fid", "--samples", vol, "--data", mnist_h5, "--out", out)
    assert code == 2 and "FID needs 2D images" in err


def test_progress_scores_every_snapshot_like_evaluate_mnist(cli, mnist_h5, tmp_path, monkeypatch) -> None:
    """One row per kept snapshot; the last row equals `nfd evaluate mnist` on `nfd sample` of model.pt (seed 1)."""
    monkeypatch.setattr(nfd.cli, "VERB_MODULES", ["nfd.metrics.cli", "nfd.training.train_cli", "nfd.sampling.sample"])
    run = tmp_path / "run"
    code, _, _ = cli(
        "train",
        "--preset",
        "tiny",
        "--data",
        mnist_h5,
        "--out",
        run,
        "--steps",
        "5",
        "--quiet",
        "--set",
        "train.keep_every=2",
    )
    assert code == 0
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["step_0000002.pt", "step_0000004.pt"]
    clf = tmp_path / "clf.pt"
    assert cli("evaluate", "train-classifier", "--data", mnist_h5, "--out", clf, "--epochs", "1")[0] == 0
    tsv, jsonl = tmp_path / "progress.tsv", tmp_path / "progress.jsonl"
    code, out, _ = cli(
        "evaluate",
        "progress",
        "--run",
        run,
        "--data",
        mnist_h5,
        "--classifier",
        clf,
        "--num-samples",
        "20",
        "--out",
        tsv,
        "--jsonl",
        jsonl,
    )
    assert code == 0, out
    lines = tsv.read_text().splitlines()
    assert lines[0].split("\t") == [
        "step",
        "train_seconds",
        "classifier_fd",
        "confident_share",
        "class_entropy",
        "seconds",
    ]
    rows = [dict(zip(lines[0].split("\t"), line.split("\t"))) for line in lines[1:]]
    assert [int(r["step"]) for r in rows] == [2, 4, 5]  # snapshots, then the final model (step 5)
    trained = [float(r["train_seconds"]) for r in rows]  # the training's own clock at each snapshot
    assert 0 < trained[0] < trained[1] < trained[2]
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["context"]["step"] for r in records] == [2, 4, 5]

    npz = tmp_path / "s.npz"
    assert (
        cli(
            "sample", "--checkpoint", run / "model.pt", "--num", "20", "--resolution", "28", "--seed", "1", "--out", npz
        )[0]
        == 0
    )
    assert (
        cli(
            "evaluate", "mnist", "--samples", npz, "--data", mnist_h5, "--classifier", clf, "--out", tmp_path / "m.json"
        )[0]
        == 0
    )
    direct = json.loads((tmp_path / "m.json").read_text())["results"]["classifier_fd"]
    assert float(rows[-1]["classifier_fd"]) == pytest.approx(direct, rel=1e-4)


def test_progress_errors_write_nothing(cli, mnist_h5, chairs_h5, tmp_path) -> None:
    out = tmp_path / "p.tsv"
    empty = tmp_path / "empty_run"
    empty.mkdir()
    code, _, err = cli("evaluate", "progress", "--run", empty, "--data", chairs_h5, "--out", out)
    assert code == 2 and "no snapshots" in err and err.count("\n") == 1
    code, _, err = cli("evaluate", "progress", "--run", empty, "--data", mnist_h5, "--out", out)
    assert code == 2 and "--classifier" in err
    assert not out.exists()
