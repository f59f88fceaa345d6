"""``nfd sweep``: real runs of the tiny preset, scored with the pipeline's verbs, one table that adds up over parts."""

from __future__ import annotations

import json

import numpy as np

from nfd.cli import main
from nfd.training.sweep import GREY, SATURATED, value_shares

TINY_SCORING = ["--num-samples", "4", "--resolution", "8", "--points", "64", "--num-ref", "2"]
"""Scoring settings small enough for the tiny preset's 8^3 test voxels."""


def _rows(path):
    lines = path.read_text().strip().splitlines()
    head = lines[0].split("\t")
    return [dict(zip(head, line.split("\t"))) for line in lines[1:]]


def test_value_shares_against_counting() -> None:
    v = np.array([-1.0, -0.995, -0.5, 0.0, 0.89, 0.91, 0.999, 1.0])
    sat, grey = value_shares(v)
    assert sat == sum(abs(x) > SATURATED for x in v) / len(v) == 4 / 8
    assert grey == sum(abs(x) < GREY for x in v) / len(v) == 3 / 8


def test_sweep_trains_scores_and_merges_parts(voxels_h5, tmp_path) -> None:
    out = tmp_path / "sweep"
    common = [
        "sweep",
        "--preset",
        "tiny",
        "--data",
        str(voxels_h5),
        "--out",
        str(out),
        "--threads",
        "1",
        "--cores",
        "2",
        "--steps",
        "2",
        *TINY_SCORING,
    ]
    assert main([*common, "--seeds", "0", "1"]) == 0
    rows = _rows(out / "sweep.tsv")
    assert [(r["run"], r["status"]) for r in rows] == [("s0_t1", "ok"), ("s1_t1", "ok")]
    for r in rows:
        run = out / r["run"]
        # every run trained with its own seed and thread count, as the config it saved says
        cfg = (run / "run" / "config.yaml").read_text()
        assert f"seed: {r['seed']}" in cfg and "threads: 1" in cfg
        assert float(r["train_s"]) > 0
        # the table's numbers are those of the run's own evaluation record and samples
        record = json.loads((run / "eval.json").read_text())["results"]
        assert float(r["cov"]) == round(record["cov"], 4) or abs(float(r["cov"]) - record["cov"]) < 1e-3
        with np.load(run / "samples.npz") as z:
            sat, _ = value_shares(z["features"])
        assert abs(float(r["saturated"]) - sat) < 1e-3
    # a second part (another seed) adds its row and keeps the others
    assert main([*common, "--seeds", "2"]) == 0
    assert [r["run"] for r in _rows(out / "sweep.tsv")] == ["s0_t1", "s1_t1", "s2_t1"]
    md = (out / "sweep.md").read_text()
    assert "| s2_t1 | 2 | 1 |" in md and "cpu:" in md


def test_sweep_with_a_budget_scores_each_snapshot_against_wall_time(voxels_h5, tmp_path) -> None:
    out = tmp_path / "budget"
    code = main(
        [
            "sweep",
            "--preset",
            "tiny",
            "--data",
            str(voxels_h5),
            "--out",
            str(out),
            "--seeds",
            "0",
            "--threads",
            "1",
            "--budget",
            "3",
            "--set",
            "train.keep_every=3",
            *TINY_SCORING,
        ]
    )
    assert code == 0
    (row,) = _rows(out / "sweep.tsv")
    steps = int(row["steps"])
    assert steps > 10  # the budget, not the tiny preset's 10 steps, ended the run
    cfg = (out / "s0_t1" / "run" / "config.yaml").read_text()
    assert "max_seconds: 3.0" in cfg
    curve = _rows(out / "curves.tsv")
    # one row per kept snapshot and one for the final model (the same row if its step was kept)
    assert [int(c["step"]) for c in curve] == sorted({*range(3, steps + 1, 3), steps})
    secs = [float(c["train_seconds"]) for c in curve]
    assert secs == sorted(secs) and secs[-1] >= 3.0
    # the last point of the curve is the model the sweep table scored
    assert abs(float(curve[-1]["cov"]) - float(row["cov"])) < 1e-3
    assert "budget_s: 3.0" in (out / "sweep.md").read_text()
