"""The whole tree keeps the one style of pyproject.toml's [tool.ruff]: lint rules and formatting."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff_clean(args):
    if importlib.util.find_spec("ruff") is None:
        pytest.fail("ruff is not installed (it is in the project's test extras: pip install -e '.[test]')")
    res = subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
