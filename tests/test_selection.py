"""Automatic sample choices for figures (nfd.viz.selection, fig6/fig9 best batch, fig11 worst samples)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from nfd.cli import main
from nfd.errors import NfdError
from nfd.viz import selection
from nfd.viz.figures import FIGURES, FigureOptions
from tests.conftest import write_contract_h5

RES = 16
POINTS = 256


def _box(lo, hi) -> np.ndarray:
    v = -np.ones((RES, RES, RES), np.float32)
    v[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 1.0
    return v


def _noise(seed: int) -> np.ndarray:
    """Scattered voxels all over the grid: a 'chair' that is nothing like any reference."""
    return np.where(np.random.default_rng(seed).random((RES, RES, RES)) < 0.08, 1.0, -1.0).astype(np.float32)


@pytest.fixture
def chairs(tmp_path):
    """8 box 'chairs', the last 4 of them the test split; returns (data path, the test shapes)."""
    rng = np.random.default_rng(0)
    shapes = []
    for _ in range(8):
        lo = rng.integers(1, 5, 3)
        shapes.append(_box(lo, lo + rng.integers(5, 10, 3)))
    data = np.stack(shapes)[..., None]
    path = write_contract_h5(tmp_path / "chairs.h5", data, None, {"train": [0, 1, 2], "val": [3], "test": [4, 5, 6, 7]})
    return path, shapes[4:]


def _batch(path, volumes) -> np.ndarray:
    feats = np.stack(volumes)[..., None].astype(np.float32)
    np.savez(path, features=feats, resolution=RES, coord_dim=3, feature_dim=1)
    return feats


def _renders(folder, num, colour):
    folder.mkdir()
    for i in range(num):
        Image.fromarray(np.full((32, 32, 3), colour, np.uint8)).save(folder / f"sample_{i:03d}.png")
    return folder


def test_worst_samples_are_the_noise_and_the_empty_one(chairs, tmp_path):
    data, test = chairs
    empty = -np.ones((RES, RES, RES), np.float32)
    # batch 0: two copies of test chairs and a noise sample; batch 1: a copy, an empty sample and another noise one
    b0 = [test[0], _noise(1), test[1]]
    b1 = [test[2], empty, _noise(2)]
    scores, criterion = selection.shape_scores([np.stack(b0), np.stack(b1)], data, points=POINTS)
    assert np.isinf(scores[1][1])
    copies = [scores[0][0], scores[0][2], scores[1][0]]
    assert max(copies) < min(scores[0][1], scores[1][2])
    worst = selection.worst_samples(scores, 3)
    assert [(b, i) for b, i, _ in worst[:1]] == [(1, 1)]  # no surface: the worst of all
    assert {(b, i) for b, i, _ in worst} == {(1, 1), (0, 1), (1, 2)}  # exactly the empty and the noise ones
    assert criterion.num_references == 4 and "nearest of 4 test chairs" in criterion.describe()

    # the figure: the same three, named with the criterion in the title
    s0, s1 = tmp_path / "b0.npz", tmp_path / "b1.npz"
    _batch(s0, b0), _batch(s1, b1)
    r0, r1 = _renders(tmp_path / "r0", 3, (200, 0, 0)), _renders(tmp_path / "r1", 3, (0, 0, 200))
    (r1 / "sample_001.png").unlink()  # `nfd mesh` writes no mesh for an empty sample, so there is no render
    inputs = {"samples_b0": s0, "samples_b1": s1, "renders_b0": r0, "renders_b1": r1, "data": data}
    fig = FIGURES["fig11"](inputs, "fig11: test", FigureOptions(points=POINTS, worst=3))
    title = fig._suptitle.get_text().replace("\n", " ")
    assert "the 3 of 6 with the largest squared Chamfer distance to the nearest of 4 test chairs" in title
    tiles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert tiles[0] == "batch 2, sample 1\nno surface"
    assert sorted(tiles[1:]) == sorted(
        [f"batch 1, sample 1\nCD {scores[0][1]:.4f}", f"batch 2, sample 2\nCD {scores[1][2]:.4f}"]
    )


def test_best_batch_is_the_one_nearest_the_test_chairs(chairs, tmp_path, capsys):
    data, test = chairs
    empty = -np.ones((RES, RES, RES), np.float32)
    batches = [
        [_noise(3), test[0], _noise(4)],  # far from the references
        [test[1], test[2], test[3]],  # copies of them: the best
        [test[0], test[3], empty],
    ]  # copies too, but one sample has no surface
    inputs = {"data": data}
    for b, (vols, colour) in enumerate(zip(batches, [(255, 0, 0), (0, 255, 0), (0, 0, 255)])):
        inputs[f"samples_b{b}"] = tmp_path / f"s{b}.npz"
        _batch(inputs[f"samples_b{b}"], vols)
        inputs[f"renders_b{b}"] = _renders(tmp_path / f"r{b}", 3, colour)
    scores, _ = selection.shape_scores([np.stack(v) for v in batches], data, points=POINTS)
    assert selection.best_batch(scores) == 1
    assert (
        selection.batch_key(scores[2])[0] == 1 and selection.batch_key(scores[2])[1] < selection.batch_key(scores[0])[1]
    )

    out = tmp_path / "fig9.png"
    argv = ["figure", "fig9", "--out", str(out), "--label", "t", "--points", str(POINTS)]
    for k, v in inputs.items():
        argv += ["--input", f"{k}={v}"]
    assert main(argv) == 0
    log = capsys.readouterr().out
    assert "batch 2: mean" in log and log.index("<- shown") > log.index("batch 2:") and "batch 3: mean" in log
    img = np.asarray(Image.open(out).convert("RGB")).reshape(-1, 3)
    green = np.sum((img[:, 1] > 200) & (img[:, 0] < 60) & (img[:, 2] < 60))
    red_or_blue = np.sum(((img[:, 0] > 200) | (img[:, 2] > 200)) & (img[:, 1] < 60))
    assert green > 1000 and red_or_blue == 0  # batch 2 (green) is the one shown
    fig = FIGURES["fig9"](inputs, "fig9: t", FigureOptions(points=POINTS))
    title = fig._suptitle.get_text().replace("\n", " ")
    assert "(batch 2 of 3) - best of 3 batches: the lowest mean squared Chamfer distance to the nearest" in title


def test_single_batch_is_shown_unscored(tmp_path, capsys):
    """The default (one batch): fig9 needs no data and shows it as before."""
    renders = _renders(tmp_path / "r", 2, (10, 10, 10))
    assert main(["figure", "fig9", "--out", str(tmp_path / "f.png"), "--input", f"renders={renders}"]) == 0
    assert "scored" not in capsys.readouterr().out
    fig = FIGURES["fig9"]({"renders": renders}, "fig9: t")
    assert fig._suptitle.get_text() == "fig9: t"


def test_best_image_batch_and_the_fig6_caption(tmp_path, capsys):
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (10, 8, 8, 3)).astype(np.float32)
    data = write_contract_h5(tmp_path / "faces.h5", real, None, {"train": range(5), "val": [5], "test": range(6, 10)})
    near = real[6:9] + rng.normal(0, 0.02, (3, 8, 8, 3)).astype(np.float32)  # almost the test images
    far = rng.uniform(-1, 1, (3, 8, 8, 3)).astype(np.float32)
    scores, criterion = selection.image_scores([far, np.clip(near, -1, 1)], data)
    assert selection.best_batch(scores) == 1 and scores[1].max() < scores[0].min()
    assert "pixel MSE (features in [-1, 1]) to the nearest of 4 test images" in criterion.describe()
    for name, arr in (("far", far), ("near", np.clip(near, -1, 1))):
        np.savez(tmp_path / f"{name}.npz", features=arr)
    inputs = {
        "celebahq64_b0": tmp_path / "far.npz",
        "celebahq64_b1": tmp_path / "near.npz",
        "celebahq64_data": data,
        "celebahq128": tmp_path / "far.npz",
    }
    fig = FIGURES["fig6"](inputs, "fig6: t")
    assert (
        "best of 2 batches: the lowest mean pixel MSE (features in [-1, 1]) to the nearest of 4 test images"
        in fig._suptitle.get_text().replace("\n", " ")
    )
    assert "CelebAHQ 64x64, batch 2 of 2" in [ax.get_title() for ax in fig.axes]
    with pytest.raises(NfdError, match="resolution"):
        selection.image_scores([far[:, :4, :4]], data)


def test_batch_inputs_must_be_numbered_without_gaps():
    with pytest.raises(NfdError, match="without gaps"):
        selection.batch_paths({"renders_b0": "a", "renders_b2": "b"}, "renders")
    with pytest.raises(NfdError, match="not both"):
        selection.batch_paths({"renders": "a", "renders_b0": "b"}, "renders")
    with pytest.raises(KeyError):
        selection.batch_paths({}, "renders")


def _preset_plan(preset: str, figure_selection: dict | None):
    from pathlib import Path

    import yaml

    from nfd.pipeline import Plan

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    params["preset"] = preset
    if figure_selection is None:
        params["presets"][preset].pop("figure_selection", None)
    else:
        params["presets"][preset]["figure_selection"] = figure_selection
    return Plan(params)


def test_plan_default_is_one_batch_and_fig9_unchanged():
    plan = _preset_plan("demo", None)  # no figure_selection key: one batch, fig11 shows 4
    fig9 = plan.get("figure", {"fig": "fig9"})
    assert [a for a in fig9.cmd if a.startswith("renders")] == ["renders=results/renders/chairs/r128_n16_s0"]
    assert "--num-ref" not in fig9.cmd and len(fig9.deps) == 1
    fig11 = plan.get("figure", {"fig": "fig11"})
    assert fig11.cmd[fig11.cmd.index("--worst") + 1] == "4"
    assert "data=data/processed/chairs.h5" in fig11.cmd
    assert fig11.cmd[fig11.cmd.index("--num-ref") + 1] == str(plan.p["eval"]["num_reference"])


def test_plan_best_of_batches():
    plan = _preset_plan("demo", {"batches": 3, "worst": 5})
    fig9 = plan.get("figure", {"fig": "fig9"})
    for b in range(3):
        assert f"renders_b{b}=results/renders/chairs/r128_n16_s{b}" in fig9.cmd
        assert f"samples_b{b}=results/samples/chairs/r128_n16_s{b}.npz" in fig9.cmd
        plan.get("render", {"exp": "chairs", "tag": f"r128_n16_s{b}"})  # each batch is meshed and rendered
    assert "presets.demo.figure_selection" in fig9.params
    fig11 = plan.get("figure", {"fig": "fig11"})
    assert (
        fig11.cmd[fig11.cmd.index("--worst") + 1] == "5"
        and "renders_b2=results/renders/chairs/r128_n16_s2" in fig11.cmd
    )
    paper = _preset_plan("paper", {"batches": 2})
    fig6 = paper.get("figure", {"fig": "fig6"})
    assert {
        "celebahq64_b1=results/samples/celebahq64/r64_n16_s1.npz",
        "celebahq64_data=data/processed/celebahq64.h5",
        "celebahq128_b1=results/samples/celebahq128/r128_n16_s1.npz",
    } <= set(fig6.cmd)


def test_report_captions_name_the_criterion():
    import types
    from pathlib import Path

    import jinja2
    import yaml

    from nfd.pipeline import Plan

    root = Path(__file__).resolve().parents[1]
    template = jinja2.Template((root / "workflow/report/figure.rst").read_text())
    config = yaml.safe_load((root / "params.yaml").read_text())

    def caption(preset, fig, batches):
        config["preset"] = preset
        config["presets"][preset]["figure_selection"] = {"batches": batches}
        if fig not in config["presets"][preset]["figures"]:
            config["presets"][preset]["figures"].append(fig)
        text = Plan(config).caption("figure", {"fig": fig})  # the rule passes this as its `caption` param
        return template.render(
            snakemake=types.SimpleNamespace(
                config=config, params=types.SimpleNamespace(caption=text), wildcards=types.SimpleNamespace(fig=fig)
            )
        )

    assert "largest squared Chamfer distance to their nearest test chair" in caption("demo", "fig11", 1)
    assert "Of 5 sampled batches" in caption("paper", "fig9", 5) and "Chamfer" in caption("paper", "fig9", 5)
    assert "pixel MSE" in caption("paper", "fig6", 5)
    assert "batches" not in caption("demo", "fig9", 1)
