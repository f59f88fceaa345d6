"""benchmarks/demo_threads.py: real `nfd train` runs at one and two threads, alternating, and the record they give."""

from __future__ import annotations

import json

import pytest


def test_record_holds_every_run_and_the_ratio_of_their_seconds(voxels_h5, tmp_path, bench_script):
    out = tmp_path / "rec.json"
    args = ["--preset", "tiny", "--data", str(voxels_h5), "--steps", "4", "--skip", "1", "--rounds", "1"]
    assert bench_script("demo_threads").main([*args, "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["schema"] == "nfd-demo-threads/1" and rec["cpu"]
    runs = {r["threads"]: r for r in rec["runs"]}
    assert sorted(runs) == [1, 2] and all(r["step_s_sum"] > 0 and r["wall_s"] >= r["step_s_sum"] for r in runs.values())
    speedup = rec["summary"]["current"]["speedup_2_over_1"]
    assert speedup == pytest.approx(runs[1]["step_s_sum"] / runs[2]["step_s_sum"], rel=0.02)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".rec.json")]  # no temporary file left


def test_bad_inputs_stop_with_one_line(tmp_path, capsys, bench_script):
    mod = bench_script("demo_threads")
    with pytest.raises(SystemExit) as e:
        mod.main(["--data", str(tmp_path / "none.h5")])
    assert e.value.code == 2 and "none.h5: no such data file" in capsys.readouterr().err
    (tmp_path / "d.h5").write_bytes(b"")
    with pytest.raises(SystemExit):
        mod.main(["--data", str(tmp_path / "d.h5"), "--src", f"x={tmp_path}"])
    assert "expected NAME=DIR" in capsys.readouterr().err
