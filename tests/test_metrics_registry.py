"""The metric registry: lookup, registration, plain-JSON records, one line per evaluation, atomic JSON files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nfd.errors import NfdError
from nfd.metrics import registry


def test_builtins_listed_and_unknown_name() -> None:
    assert {"shapes3d", "classifier_fd", "fid"} <= set(registry.list_metrics())
    with pytest.raises(NfdError, match="unknown metric 'nope'; known: .*shapes3d"):
        registry.evaluate("nope")


def test_register_evaluate_and_log(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(registry, "_METRICS", dict(registry._METRICS))

    @registry.register_metric("toy")
    def toy(x: np.ndarray, scale: float = 1.0) -> dict:
        """Mean and max of x."""
        return {"results": {"mean": np.float32(x.mean() * scale), "max": float("inf")}, "protocol": {"n": x.size}}

    assert registry.get_metric("toy").description == "Mean and max of x."
    with pytest.raises(ValueError, match="already registered"):
        registry.register_metric("toy")(lambda: None)
    rec = registry.evaluate("toy", context={"run": "a"}, x=np.ones((2, 3)), scale=2.0)
    assert rec["results"] == {"mean": 2.0, "max": None} and rec["nonfinite"] == {"results.max": "inf"}
    assert rec["inputs"] == {"x": {"type": "ndarray", "shape": [2, 3], "dtype": "float64"}, "scale": 2.0}
    assert rec["protocol"] == {"n": 6} and rec["context"] == {"run": "a"} and rec["status"] == "computed"
    assert {"total_time", "timestamp", "time_utc", "nfd_version", "metric"} <= set(rec)
    log = tmp_path / "m.jsonl"
    for _ in range(3):
        registry.append_jsonl(log, rec)
    lines = log.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) == rec for line in lines)
    out = tmp_path / "r" / "m.json"
    registry.write_json(out, rec)
    assert json.loads(out.read_text()) == rec
    assert [p.name for p in out.parent.iterdir()] == ["m.json"]  # no temporary file left
