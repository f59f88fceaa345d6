"""`nfd table`: T1-T4 contents against independent formulas, and the CSV + Markdown files the CLI writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from nfd.cli import main
from nfd.errors import NfdError
from nfd.report.t1 import PUBLISHED_T1, load_evaluation, table_t1
from nfd.report.t2 import table_t2
from nfd.report.t3 import table_t3
from nfd.report.t4 import jacobian_norms, table_t4
from nfd.report.table import Table, markdown_path, read_csv_rows, write_table


def _mlp_size(widths: list[int]) -> int:
    """Weights plus biases of an MLP with these layer widths, written out independently of nfd."""
    total = 0
    for a, b in zip(widths[:-1], widths[1:]):
        total += a * b + b
    return total


# ---------------------------------------------------------------------------------------------------------------------
# T3


@pytest.fixture(scope="module")
def t3() -> Table:
    return table_t3("demo")


def _t3_row(t3: Table, preset: str, dataset: str) -> dict:
    (row,) = [r for r in t3.rows if r["config_preset"] == preset and r["dataset"] == dataset]
    return row


def test_t3_function_sizes_match_the_paper_and_the_formula(t3: Table) -> None:
    from nfd.models.function import MLPShape

    chairs = _t3_row(t3, "shapenet_chairs", "chairs")
    celeba = _t3_row(t3, "celebahq64", "celebahq64")
    assert chairs["function_weights"] == 33_665 == _mlp_size([3, 128, 128, 128, 1])
    assert celeba["function_weights"] == 66_307 == _mlp_size([256, 128, 128, 128, 3])
    assert _t3_row(t3, "celebahq128", "celebahq128")["function_weights"] == 66_307
    assert _t3_row(t3, "mnist", "mnist")["function_weights"] == _mlp_size([256, 128, 128, 128, 1]) == 66_049
    assert MLPShape(3, (128, 128, 128), 1).num_weights == 33_665
    for r in t3.rows:
        assert r["function_weights"] == r["function_weights_formula"]


def test_t3_lists_every_preset_and_counts_g_and_d(t3: Table) -> None:
    from nfd.presets import PRESETS

    assert {r["config_preset"] for r in t3.rows} == set(PRESETS)
    assert {r["dataset"] for r in t3.rows if r["config_preset"] == "tiny"} == {"mnist", "chairs"}
    for r in t3.rows:
        # the hypernetwork latent -> hyper_hidden -> P, all Linear layers
        widths = [int(w) for w in r["hypernetwork"].split("-")]
        assert widths[-1] == r["function_weights"]
        assert r["g_params"] == _mlp_size(widths)
        assert r["d_params"] > 0
    # the discriminator count is that of the module the trainer builds
    from nfd.models.discriminators import build_discriminator
    from nfd.presets import preset

    cfg = preset("celebahq64")
    d = build_discriminator(2, 3, cfg.discriminator)
    assert _t3_row(t3, "celebahq64", "celebahq64")["d_params"] == sum(p.numel() for p in d.parameters())


# ---------------------------------------------------------------------------------------------------------------------
# T4


@pytest.fixture(scope="module")
def t4() -> Table:
    return table_t4("demo", num_points=512)


def test_t4_bound_formula_and_measured_gradient_below_it(t4: Table) -> None:
    rows = [r for r in t4.rows if isinstance(r["norm_B"], float)]
    assert len(rows) >= 5
    for r in rows:
        assert r["bound"] == 2 * math.sqrt(2) * math.pi * r["norm_B"]
        assert r["paper_printed"] == pytest.approx(math.sqrt(8 * math.pi) * r["norm_B"])
        assert r["measured_max_grad"] <= r["bound"]
        assert r["within_bound"] is True
        # the Jacobian norm of RFF is exactly 2 pi ||B|| everywhere: the bound is loose by sqrt(2) and the
        # printed sqrt(8 pi)||B|| is below the measured value (not a bound)
        assert r["measured_max_grad"] == pytest.approx(2 * math.pi * r["norm_B"], rel=1e-9)
        assert r["paper_printed"] < r["measured_max_grad"]


def test_t4_uses_the_presets_encoding_and_the_trainers_b(t4: Table) -> None:
    from nfd.models.hypernetwork import FunctionDistribution
    from nfd.presets import preset

    row = next(r for r in t4.rows if r["config_preset"] == "celebahq64" and r["component"].startswith("generator"))
    assert (row["m"], row["sigma"], row["in_dim"]) == (128, 2.0, 2)
    cfg = preset("celebahq64")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)  # what the trainer does before building the model
        enc = FunctionDistribution(2, 3, cfg.generator).encoding
    norm = float(torch.linalg.matrix_norm(enc.B.double(), ord=2))
    assert row["norm_B"] == pytest.approx(norm, rel=1e-6)
    chairs = next(r for r in t4.rows if r["config_preset"] == "shapenet_chairs")
    assert chairs["norm_B"] == chairs["bound"] == chairs["measured_max_grad"] == "no encoding"


def test_jacobian_norms_match_a_per_point_jacobian() -> None:
    from nfd.models.encoding import FourierFeatures

    enc = FourierFeatures(3, 5, 1.3, generator=torch.Generator().manual_seed(3)).double()
    x = torch.rand(7, 3, dtype=torch.float64) * 2 - 1
    got = jacobian_norms(enc, x)
    for i in range(7):
        J = torch.autograd.functional.jacobian(enc, x[i])
        assert got[i].item() == pytest.approx(torch.linalg.matrix_norm(J, ord=2).item(), rel=1e-10)


# ---------------------------------------------------------------------------------------------------------------------
# T2


def test_t2_tiny_cnn_memory_grows_with_pixels_and_k_points_stay_constant() -> None:
    t = table_t2("tiny", max_points=4096, repeats=1, batch=4, k_points=256, min_resolution=16, device="cpu")
    points = t.column("points")
    assert points == [256, 1024, 4096]
    assert t.column("grid") == ["16x16", "32x32", "64x64"]
    mem = t.column("cnn_peak_mib")
    assert all(isinstance(m, float) and m > 0 for m in mem), mem
    for a, b in zip(mem[:-1], mem[1:]):
        assert 2.5 <= b / a <= 6, mem
    assert t.column("cnn_mem_ratio")[1:] == pytest.approx([b / a for a, b in zip(mem[:-1], mem[1:])])
    pc_all = t.column("pointconv_all_peak_mib")
    for a, b in zip(pc_all[:-1], pc_all[1:]):
        assert 2.5 <= b / a <= 6, pc_all
    # K = 256 sampled points: the same work at every resolution
    assert t.column("pointconv_k_points") == [256, 256, 256]
    pc_k = t.column("pointconv_k_peak_mib")
    assert max(pc_k) / min(pc_k) < 1.2, pc_k
    for c in ("cnn_time_ms", "pointconv_all_time_ms", "pointconv_k_time_ms", "pointconv_all_plan_s"):
        assert all(isinstance(v, float) and v > 0 for v in t.column(c)), c


def test_t2_rejects_a_grid_too_small_for_the_discriminator() -> None:
    with pytest.raises(NfdError, match="max-points"):
        table_t2("tiny", max_points=16, repeats=1, device="cpu")


# ---------------------------------------------------------------------------------------------------------------------
# T1


def _write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_t1_measured_rows_beside_the_published_anchors(tmp_path: Path) -> None:
    mnist = _write_json(
        tmp_path / "mnist.json",
        {
            "metric": "classifier_fd",
            "status": "computed",
            "results": {"classifier_fd": 12.5, "confident_share": 0.75, "class_counts": [1, 2, 3], "note": "text"},
            "protocol": {"num_samples": 500, "label": "classifier FD (not Inception)"},
            "inputs": {"samples": {"type": "ndarray", "shape": [500, 28, 28, 1], "dtype": "float32"}},
            "context": {"data": "data/processed/mnist.h5", "ref_split": "test"},
        },
    )
    celeba = _write_json(
        tmp_path / "celebahq64.json",
        {
            "metric": "fid",
            "status": "not computed",
            "message": "not computed: torch-fidelity not installed",
            "results": {"fid": None, "kid_mean": None},
            "protocol": {"num_samples": 100},
        },
    )
    t = table_t1("demo", [mnist, celeba])

    published = [r for r in t.rows if r["source"] == "published"]
    fids = {r["model"]: r["value"] for r in published if r["metric"] == "FID"}
    assert fids == {
        "GASP (this paper's model)": 13.5,
        "Diffusion Probabilistic Fields": 13.2,
        "GEM": 30.4,
        "Functa": 40.4,
    }
    assert all(r["dataset"] == "CelebA-HQ" and r["resolution"] == "64x64" for r in published if r["metric"] == "FID")
    chairs = [r for r in published if "chairs" in r["dataset"]]
    assert chairs and chairs[0]["value"] == "no published number" and chairs[0]["resolution"] == "32^3"
    assert len(published) == len(PUBLISHED_T1)

    measured = {(r["experiment"], r["metric"]): r for r in t.rows if r["source"] == "measured"}
    assert measured[("mnist", "classifier_fd")]["value"] == 12.5
    assert measured[("mnist", "classifier_fd/confident_share")]["value"] == 0.75
    assert measured[("mnist", "classifier_fd/class_counts")]["value"] == "1 2 3"
    assert ("mnist", "classifier_fd/note") not in measured  # not a number: not rendered
    assert measured[("mnist", "classifier_fd")]["resolution"] == "28x28"
    assert measured[("mnist", "classifier_fd")]["dataset"] == "mnist (test split)"
    assert "num_samples=500" in measured[("mnist", "classifier_fd")]["notes"]
    assert measured[("celebahq64", "fid")]["value"] == "not computed: torch-fidelity not installed"
    assert measured[("celebahq64", "fid/kid_mean")]["value"] == "not computed: torch-fidelity not installed"
    assert all(r["preset"] == "demo" for r in measured.values())


def test_t1_simple_value_records(tmp_path: Path) -> None:
    a = _write_json(
        tmp_path / "chairs.json", {"metric": "shapes3d", "values": {"cov": 0.4, "mmd": 0.01}, "protocol": "2048 points"}
    )
    b = _write_json(tmp_path / "x.json", {"metric": "fd", "value": 3.25})
    rows = [r for r in table_t1("tiny", [a, b]).rows if r["source"] == "measured"]
    assert {(r["metric"], r["value"]) for r in rows} == {("shapes3d/cov", 0.4), ("shapes3d/mmd", 0.01), ("fd", 3.25)}


def test_t1_bad_inputs_are_one_line_errors_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(NfdError, match="nope.json: evaluation file not found"):
        table_t1("demo", [missing])
    not_record = _write_json(tmp_path / "other.json", {"hello": 1})
    with pytest.raises(NfdError, match="other.json: not an evaluation record"):
        load_evaluation(not_record)
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    with pytest.raises(NfdError, match="garbage.json: not valid JSON"):
        load_evaluation(garbage)
    with pytest.raises(NfdError, match="list.json: not an evaluation record"):
        load_evaluation(_write_json(tmp_path / "list.json", [1, 2]))


# ---------------------------------------------------------------------------------------------------------------------
# Files and CLI


def test_cli_t1_writes_csv_and_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ev = _write_json(tmp_path / "mnist.json", {"metric": "classifier_fd", "results": {"classifier_fd": 7.0}})
    out = tmp_path / "tables" / "t1.csv"
    assert main(["table", "t1", "--out", str(out), "--preset", "demo", "--input", str(ev)]) == 0
    md = out.with_suffix(".md")
    assert markdown_path(out) == md and out.is_file() and md.is_file()
    rows = read_csv_rows(out)
    assert [r["source"] for r in rows].count("published") == len(PUBLISHED_T1)
    assert any(r["source"] == "measured" and r["value"] == "7" for r in rows)
    text = out.read_text()
    assert text.splitlines()[0].startswith("source,")
    assert "# Table T1:" in text and "# Note 1:" in text
    mdt = md.read_text()
    assert mdt.startswith("**Table T1.**") and "| source |" in mdt and "| published |" in mdt
    assert "1. source=published" in mdt
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary files left

    # a missing input: one-line error naming the file, exit status 2, nothing written
    out2 = tmp_path / "t1b.csv"
    assert main(["table", "t1", "--out", str(out2), "--input", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing.json" in err and not out2.exists()


def test_cli_t3_and_t4_write_both_files(tmp_path: Path) -> None:
    for name in ("t3", "t4"):
        out = tmp_path / f"{name}.csv"
        assert main(["table", name, "--out", str(out), "--preset", "tiny", "--t4-points", "64"]) == 0
        assert out.is_file() and out.with_suffix(".md").is_file()
        assert f"# Table {name.upper()}:" in out.read_text()
    rows = read_csv_rows(tmp_path / "t3.csv")
    assert {r["function_weights"] for r in rows if r["config_preset"] == "shapenet_chairs"} == {"33665"}
    rows4 = read_csv_rows(tmp_path / "t4.csv")
    assert {r["bound"] for r in rows4 if r["config_preset"] == "demo_chairs"} == {"no encoding"}
    assert "2 sqrt(2) pi" in (tmp_path / "t4.md").read_text()


def test_write_table_needs_a_csv_path(tmp_path: Path) -> None:
    t = Table("t9", "x", ["a"], [{"a": 1}], ["note"])
    with pytest.raises(NfdError, match="must name a .csv"):
        write_table(t, tmp_path / "t9.md")
    csv_path, md_path = write_table(t, tmp_path / "t9.csv")
    assert read_csv_rows(csv_path) == [{"a": "1"}]
    assert "| 1 |" in md_path.read_text()
