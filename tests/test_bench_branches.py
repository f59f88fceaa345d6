"""benchmarks/bench_branches.py: the two forms of the D step timed alternately, and the record they give."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_branches.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_branches", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_record_holds_every_step_and_the_median_ratio(tmp_path):
    out = tmp_path / "rec.json"
    before = torch.get_num_threads()
    try:
        assert _module().main(["--preset", "tiny", "--steps", "4", "--skip", "1", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(before)
    rec = json.loads(out.read_text())
    assert rec["schema"] == "nfd-bench-branches/1" and rec["cpu"] and rec["threads"] == 2
    seq, par = rec["seconds"]["sequential"], rec["seconds"]["branches"]
    assert len(seq) == len(par) == 4 and min(seq + par) > 0
    ratios = sorted(a / b for a, b in zip(seq[1:], par[1:]))
    assert rec["speedup_median"] == pytest.approx(ratios[1], rel=0.01)
    assert not list(tmp_path.glob("*.tmp"))


def test_one_thread_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        _module().main(["--preset", "tiny", "--threads", "1"])
    assert e.value.code == 2 and "--threads must be at least 2" in capsys.readouterr().err
