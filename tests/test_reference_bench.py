"""benchmarks/reference_bench.py: what can be checked without the authors' code (which is never part of the tree)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from tests.test_discriminators import PAPER_DISCRIMINATORS

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "reference_bench.py"


def _module():
    spec = importlib.util.spec_from_file_location("reference_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mnist_config_in_the_authors_layout_matches_the_preset():
    """The MNIST config written in the authors' layout has nfd's mnist levels: channels, neighbours, points."""
    layers = _module().mnist_reference_config()["discriminator"]["layer_configs"]
    convs = [(c["out_channels"], c["num_neighbors"]) for c in layers if "out_channels" in c]
    points = [784] + [c["num_output_points"] for c in layers if "out_channels" not in c] + [1]
    _, _, _, _, levels, sizes, _ = PAPER_DISCRIMINATORS["mnist"]
    assert convs[:-1] == [(ch, nb) for _, ch, nb in levels] and convs[-1] == (1, sizes[-1])
    assert points == [*sizes, 1]


def test_refuses_a_folder_that_is_not_the_authors_code(tmp_path):
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--reference-src", str(tmp_path)], capture_output=True, text=True
    )
    assert res.returncode == 2 and "not a copy of the authors' repository" in res.stderr
