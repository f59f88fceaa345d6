"""benchmarks/bench_pointconv_forms.py: every form of every level timed, the model's choices and the fit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch


def test_record_times_every_form_and_the_choice_is_the_modelled_cheapest(tmp_path, bench_script):
    out = tmp_path / "forms.json"
    before = torch.get_num_threads()
    try:
        mod = bench_script("bench_pointconv_forms")
        assert mod.main(["--preset", "demo_mnist", "--threads", "1", "--repeat", "1", "--fit", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(before)
    rec = json.loads(out.read_text())
    assert rec["schema"] == "nfd-bench-pointconv-forms/1" and rec["cpu"] and rec["threads"] == 1
    levels = rec["levels"]
    assert levels and any("grouped" in r["seconds"] for r in levels)
    weights = np.array(rec["cost_weights"])
    for r in levels:
        assert set(r["seconds"]) == set(r["terms"]) and min(r["seconds"].values()) > 0
        assert r["chosen"] == min(r["terms"], key=lambda f: float(np.dot(r["terms"][f], weights)))
    assert rec["model_choice_seconds"] == pytest.approx(sum(r["seconds"][r["chosen"]] for r in levels))
    assert rec["best_seconds"] <= rec["model_choice_seconds"]
    fit = rec["fit"]
    assert len(fit["weights"]) == 5 and min(fit["weights"]) >= 0
    assert fit["best_seconds"] <= fit["fitted_choice_seconds"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".forms.json")]
