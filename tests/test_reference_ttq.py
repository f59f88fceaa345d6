"""benchmarks/reference_ttq.py: the time-to-quality harness for the authors' code, without their code.

A fake reference tree (their module layout and the calls the harness makes, a few lines each; its converter follows
their ``GridDataConverter``'s conventions) stands in for their repository, which is never part of this one.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import write_contract_h5
from tests.test_metrics_classifier import synthetic_digits

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "reference_ttq.py"
NFD_CURVES = ROOT / "results" / "benchmarks" / "sweeps" / "ttq_demo_mnist_curves.tsv"

FAKE_TREE = {
    "main.py": "",
    "data/__init__.py": "",
    "data/conversion.py": """
        import torch

        class GridDataConverter:
            # their conventions: coordinates of torch.ones(shape).nonzero() in [-1, 1], features row-major
            def __init__(self, device, data_shape, normalize=True, normalize_features=False):
                self.device, self.data_shape, self.normalize_features = device, data_shape, normalize_features
                c = torch.ones(data_shape[1:]).nonzero(as_tuple=False).float()
                self.coordinates = (c / (data_shape[1] - 1) - 0.5) * 2

            def batch_to_coordinates_and_features(self, data_batch):
                b, k = data_batch.shape[0], data_batch.shape[1]
                f = data_batch.view(b, k, -1).transpose(2, 1)
                if self.normalize_features:
                    f = 2.0 * f - 1.0
                return self.coordinates.unsqueeze(0).repeat(b, 1, 1), f

            def to_data(self, coordinates, features, resolution=None):
                if self.normalize_features:
                    features = 0.5 * (features + 1.0)
                return features.T.view(self.data_shape)
        """,
    "models/__init__.py": "",
    "models/function_representation.py": """
        import torch
        from torch import nn

        class FourierFeatures(nn.Module):
            def __init__(self, frequency_matrix):
                super().__init__()
                self.register_buffer("frequency_matrix", frequency_matrix)
                self.feature_dim = 2 * frequency_matrix.shape[0]

            def forward(self, x):
                p = 6.283185307 * x @ self.frequency_matrix.T
                return torch.cat([torch.cos(p), torch.sin(p)], dim=-1)

        class FunctionRepresentation(nn.Module):
            def __init__(self, coordinate_dim, feature_dim, layer_sizes, encoding, non_linearity, final):
                super().__init__()
                self.encoding, self.final = encoding, final
                self.out = nn.Linear(encoding.feature_dim, feature_dim)

            def forward(self, x):
                return self.out(self.encoding(x))
        """,
    "models/function_distribution.py": """
        import torch
        from torch import nn

        class HyperNetwork(nn.Module):
            def __init__(self, function_representation, latent_dim, layer_sizes, non_linearity):
                super().__init__()
                self.function_representation, self.latent_dim = function_representation, latent_dim
                self.forward_layers = nn.Linear(latent_dim, 1)

        class FunctionDistribution(nn.Module):
            def __init__(self, hypernetwork):
                super().__init__()
                self.hypernetwork, self.latent_dim = hypernetwork, hypernetwork.latent_dim

            def features(self, coordinates, latents):  # [B, N, 1] in (-1, 1)
                rep = self.hypernetwork.function_representation
                return torch.tanh(rep(coordinates) + self.hypernetwork.forward_layers(latents)[:, None, :])

            def latent_to_data(self, latents, data_converter, resolution=None):
                coords = data_converter.coordinates
                return [data_converter.to_data(coords, f) for f in self.features(coords[None], latents)]
        """,
    "models/discriminator.py": """
        from torch import nn

        class PointConvDiscriminator(nn.Module):
            def __init__(self, coordinate_dim, feature_dim, layer_configs, **kwargs):
                super().__init__()
                self.layer_configs, self.kwargs = layer_configs, kwargs
                self.linear = nn.Linear(feature_dim, 1)
        """,
    "training/__init__.py": "",
    "training/training.py": """
        import torch
        from torchvision.utils import save_image  # their import: the harness provides a stand-in if needed

        class Trainer:
            def __init__(self, device, function_distribution, discriminator, data_converter, lr=2e-4,
                         lr_disc=2e-4, betas=(0.5, 0.999), r1_weight=0, max_num_points=None, is_voxel=False):
                self.function_distribution, self.data_converter = function_distribution, data_converter
                self.settings = dict(lr=lr, lr_disc=lr_disc, r1_weight=r1_weight, max_num_points=max_num_points)
                params = list(function_distribution.parameters()) + list(discriminator.parameters())
                self.optimizer = torch.optim.Adam(params, lr=1e-2)
                self.logs = {"generator": [], "discriminator": []}

            def train_batch(self, batch):
                data, _ = batch
                # what their MNIST loader yields: [B, 1, 28, 28] images in [0, 1]
                assert tuple(data.shape[1:]) == (1, 28, 28) and 0.0 <= data.min() and data.max() <= 1.0
                coords, feats = self.data_converter.batch_to_coordinates_and_features(data)
                latents = torch.randn(data.shape[0], self.function_distribution.latent_dim)
                fake = self.function_distribution.features(coords, latents)
                loss = ((fake.mean(0) - feats.mean(0)) ** 2).mean()
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                self.logs["generator"].append(loss.item())
                self.logs["discriminator"].append(loss.item())
        """,
}


def _module():
    spec = importlib.util.spec_from_file_location("reference_ttq", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ttq = _module()


def _fake_tree(root: Path) -> Path:
    for name, text in FAKE_TREE.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def _fake_converter(root: Path):
    """The fake tree's converter module, loaded under a private name (their top-level package names stay free)."""
    spec = importlib.util.spec_from_file_location("fake_ref_conversion", root / "data" / "conversion.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.GridDataConverter(torch.device("cpu"), ttq.SHAPE, normalize_features=True)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """300 synthetic 28 x 28 digits (not symmetric: a transposed image would score and compare differently)."""
    x, y = synthetic_digits(300)
    idx = np.random.default_rng(1).permutation(300)
    path = tmp_path_factory.mktemp("digits") / "digits.h5"
    return write_contract_h5(
        path, x, y, {"train": np.sort(idx[:240]), "val": np.sort(idx[240:270]), "test": np.sort(idx[270:])}
    )


@pytest.fixture(scope="module")
def classifier(digits, tmp_path_factory):
    from nfd.metrics.classifier_fd import train_classifier

    out = tmp_path_factory.mktemp("clf") / "clf.pt"
    train_classifier(digits, out, epochs=1, seed=0)
    return out


# -- data conversion ---------------------------------------------------------------------------------------------
def test_images_are_nfd_features_in_their_layout_and_range(digits, tmp_path):
    """nfd's reader -> their [B, 1, 28, 28] images in [0, 1]: pixel [0, i, j] is grid point i * 28 + j, which their
    converter puts at nfd's coordinate of that point; their converter's features are nfd's; and back."""
    from nfd.data.dataset import PointCloudDataset
    from nfd.metrics.data import read_examples, split_indices

    idx = [3, 0, 7]
    images = ttq.load_images(digits, "train", idx)
    direct = read_examples(digits, split_indices(digits, "train")[idx])  # [3, 28, 28, 1] in [-1, 1]
    assert images.shape == (3, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    np.testing.assert_allclose(images[:, 0].numpy(), (direct[..., 0] + 1) / 2, atol=1e-6)
    conv = _fake_converter(_fake_tree(tmp_path / "ref"))
    coords, feats = conv.batch_to_coordinates_and_features(images)
    ds = PointCloudDataset(digits, "train")
    np.testing.assert_allclose(coords[0].numpy(), ds.coords.numpy(), atol=1e-6)
    np.testing.assert_allclose(feats.numpy(), ds.read(idx).numpy(), atol=1e-6)
    back = ttq.images_to_features([conv.to_data(coords[i], feats[i]) for i in range(3)])
    assert back.shape == (3, 28, 28, 1) and back.dtype == np.float32
    np.testing.assert_allclose(back, direct, atol=1e-6)


def test_batches_are_those_of_nfds_trainer(digits, tmp_path):
    from nfd.presets import preset
    from nfd.training.trainer import Trainer

    cfg = preset("tiny")
    cfg.train.batch_size, cfg.train.seed = 32, 3
    trainer = Trainer(cfg, digits, tmp_path / "run")
    n = len(trainer.data)
    for step in (0, 1, 6, 7, 8, 20):  # 240 // 32 = 7 steps per epoch: 7 and 8 are in the second epoch
        assert ttq.batch_indices(3, step, n, 32).tolist() == trainer.batch(step).index.tolist()
    first = torch.cat([ttq.batch_indices(3, s, n, 32) for s in range(7)])
    assert len(set(first.tolist())) == 7 * 32  # one epoch: no example twice
    assert ttq.batch_indices(3, 7, n, 32).tolist() != ttq.batch_indices(3, 0, n, 32).tolist()


# -- the budget loop ---------------------------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _loop(budget, keep_every, step_cost, keep_cost=0.0, max_steps=0):
    clock, steps, kept = FakeClock(), [], []

    def step_fn(step):
        steps.append(step)
        clock.now += step_cost

    def keep(step, seconds):
        kept.append((step, seconds))
        clock.now += keep_cost

    return ttq.train_loop(step_fn, budget, keep_every, keep, clock=clock, max_steps=max_steps), steps, kept


def test_budget_loop_ends_at_the_step_that_reaches_the_budget():
    (n, secs), steps, kept = _loop(budget=35, keep_every=2, step_cost=10)
    assert (n, secs) == (4, 40) and steps == [0, 1, 2, 3]
    assert kept == [(2, 20), (4, 40)]  # the last step was a multiple: kept once
    (n, secs), _, kept = _loop(budget=35, keep_every=3, step_cost=10)
    assert kept == [(3, 30), (4, 40)]  # the end is always kept
    (n, _), _, kept = _loop(budget=30, keep_every=0, step_cost=10)
    assert n == 3 and kept == [(3, 30)]


def test_budget_clock_counts_snapshot_writes_and_max_steps_stops_early():
    (n, secs), _, kept = _loop(budget=150, keep_every=1, step_cost=10, keep_cost=100)
    assert kept == [(1, 10), (2, 120), (3, 230)] and (n, secs) == (3, 230)
    (n, _), _, kept = _loop(budget=1e9, keep_every=5, step_cost=1, max_steps=7)
    assert n == 7 and kept == [(5, 5), (7, 7)]


# -- samples files, scoring, curves ------------------------------------------------------------------------------
def test_real_digits_through_their_converter_score_at_the_real_data_floor(digits, classifier, tmp_path):
    """The path every snapshot's samples take (their converter's images -> nfd samples file -> nfd's reader and
    scoring) gives real train digits the FD of the same digits read directly: the metric's baseline_fd."""
    from nfd.metrics.data import read_examples, split_indices
    from nfd.sampling.samples_file import read_samples

    conv = _fake_converter(_fake_tree(tmp_path / "ref"))
    feats = ttq.real_features(conv, digits, 50)
    pick = np.sort(np.random.default_rng(0).permutation(240)[:50])
    np.testing.assert_allclose(feats, read_examples(digits, split_indices(digits, "train")[pick]), atol=1e-6)
    out = tmp_path / "real.npz"
    res = ttq.write_and_score(feats, np.zeros((50, 4), np.float32), out, digits, classifier, 1, "real")
    stored = read_samples(out, coord_dim=2)
    assert stored.meta["resolution"] == 28 and stored.meta["preset"] == "reference:demo_mnist"
    np.testing.assert_array_equal(stored.features, feats)
    assert res["classifier_fd"] == pytest.approx(res["baseline_fd"], rel=1e-4, abs=1e-3)
    # the check sees a range mistake: their [0, 1] images scored as if they were nfd's [-1, 1] features
    wrong = ttq.write_and_score((feats + 1) / 2, np.zeros((50, 4)), out, digits, classifier, 1, "range mistake")
    assert wrong["classifier_fd"] > 10 * res["baseline_fd"]


def test_curves_have_nfds_columns_and_formatting(tmp_path):
    import pandas as pd

    rows = [{"step": 5, "train_seconds": 12.3456789, "classifier_fd": 400.123456, "confident_share": 0.1,
             "class_entropy": 0.5, "extra": 1}]  # fmt: skip
    ttq.write_curves(tmp_path, {"ref_s0_t1": rows, "ref_s1_t1": rows})
    lines = (tmp_path / "curves.tsv").read_text().splitlines()
    expected = "run\tstep\ttrain_seconds\tclassifier_fd\tconfident_share\tclass_entropy"
    if NFD_CURVES.is_file():
        expected = NFD_CURVES.read_text().splitlines()[0]
    assert lines[0] == expected
    assert lines[1] == "ref_s0_t1\t5\t12.3457\t400.123\t0.1\t0.5" and lines[2].startswith("ref_s1_t1\t")
    assert len(pd.read_csv(tmp_path / "curves.tsv", sep="\t")) == 2


# -- bad inputs --------------------------------------------------------------------------------------------------
def _cli(capsys, *args):
    rc = ttq.main(list(args))
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


def test_bad_inputs_give_one_line_naming_the_file(tmp_path, digits, classifier, capsys):
    ref = _fake_tree(tmp_path / "ref")
    common = ["--budget", "1", "--out", str(tmp_path / "out")]
    cases = [
        ((tmp_path / "nowhere", digits, classifier), "reference source folder not found", "nowhere"),
        ((tmp_path, digits, classifier), "not a copy of the authors' repository (no main.py)", str(tmp_path)),
        ((ref, tmp_path / "missing.h5", classifier), "data file not found", "missing.h5"),
        ((ref, digits, tmp_path / "clf.pt"), "classifier not found", "clf.pt"),
    ]
    for (src, data, clf), message, name in cases:
        rc, err = _cli(capsys, "--reference-src", str(src), "--data", str(data), "--classifier", str(clf), *common)
        assert rc == 2 and len(err) == 1 and message in err[0] and name in err[0], err
        assert err[0].startswith("reference_ttq: error: ")
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    rc, err = _cli(capsys, "--reference-src", str(ref), "--data", str(bad), "--classifier", str(classifier), *common)
    assert rc == 2 and len(err) == 1 and "bad.h5" in err[0]
    rc, err = _cli(capsys, "--reference-src", str(ref), "--data", str(digits), "--classifier", str(classifier),
                   "--budget", "0", "--out", str(tmp_path / "out"))  # fmt: skip
    assert rc == 2 and "--budget" in err[0]
    assert not (tmp_path / "out").exists()


# -- end to end, with the fake tree ------------------------------------------------------------------------------
def test_end_to_end_with_a_fake_reference_tree(tmp_path, digits, classifier):
    ref, out = _fake_tree(tmp_path / "ref"), tmp_path / "out"
    cmd = [sys.executable, str(SCRIPT), "--reference-src", str(ref), "--data", str(digits)]
    cmd += ["--classifier", str(classifier), "--budget", "60", "--max-steps", "12", "--keep-every", "5"]
    cmd += ["--seeds", "0", "1", "--threads", "1", "--cores", "2", "--num-samples", "20", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    lines = (out / "curves.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["run", "step", "train_seconds", *ttq.METRIC_COLUMNS]
    rows = [line.split("\t") for line in lines[1:]]
    for name in ("ref_s0_t1", "ref_s1_t1"):
        mine = [r for r in rows if r[0] == name]
        assert [int(r[1]) for r in mine] == [5, 10, 12]
        secs = [float(r[2]) for r in mine]
        assert 0 < secs[0] < secs[1] < secs[2] < 60
        assert all(float(r[3]) > 0 for r in mine)
        rec = json.loads((out / name / "train.json").read_text())
        assert rec["steps"] == 12 and rec["threads"] == 1 and rec["train_seconds"] == pytest.approx(secs[-1], 1e-4)
        snap = torch.load(out / name / "snapshots" / "step_0000010.pt", weights_only=True)
        assert snap["step"] == 10 and "hypernetwork.forward_layers.weight" in snap["state_dict"]
        assert (out / name / "samples" / "step_0000012.npz").is_file()
    s0 = torch.load(out / "ref_s0_t1" / "snapshots" / "step_0000012.pt", weights_only=True)["state_dict"]
    s1 = torch.load(out / "ref_s1_t1" / "snapshots" / "step_0000012.pt", weights_only=True)["state_dict"]
    assert not torch.equal(s0["hypernetwork.forward_layers.weight"], s1["hypernetwork.forward_layers.weight"])
    summary = (out / "summary.md").read_text()
    assert "sigmoid" in summary and "logit" in summary and "- cpu: " in summary and "- threads: 1 per run" in summary
    assert "real train digits" in summary and "| ref_s1_t1 | ok | 12 |" in summary
    assert not list(out.rglob(".*.tmp")) and not [p for p in out.rglob("*") if p.name.startswith(".")]
