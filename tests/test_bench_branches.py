"""benchmarks/bench_branches.py: the two forms of the D step timed alternately, and the record they give."""

from __future__ import annotations

import json

import pytest
import torch


def test_record_holds_every_step_and_the_median_ratio(tmp_path, bench_script):
    out = tmp_path / "rec.json"
    before = torch.get_num_threads()
    try:
        assert (
            bench_script("bench_branches").main(["--preset", "tiny", "--steps", "4", "--skip", "1", "--out", str(out)])
            == 0
        )
    finally:
        torch.set_num_threads(before)
    rec = json.loads(out.read_text())
    assert rec["schema"] == "nfd-bench-branches/1" and rec["cpu"] and rec["threads"] == 2
    seq, par = rec["seconds"]["sequential"], rec["seconds"]["branches"]
    assert len(seq) == len(par) == 4 and min(seq + par) > 0
    ratios = sorted(a / b for a, b in zip(seq[1:], par[1:]))
    assert rec["speedup_median"] == pytest.approx(ratios[1], rel=0.01)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".rec.json")]  # no temporary file left


def test_one_thread_is_refused(capsys, bench_script):
    with pytest.raises(SystemExit) as e:
        bench_script("bench_branches").main(["--preset", "tiny", "--threads", "1"])
    assert e.value.code == 2 and "--threads must be at least 2" in capsys.readouterr().err
