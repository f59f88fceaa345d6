"""Every verb of the `nfd` command documents itself."""

import subprocess
import sys

import pytest

from nfd.cli import build_parser

VERBS = ["train", "sample", "fit-image", "data", "mesh", "render", "figure", "evaluate", "table", "bench", "pipeline"]


def test_every_verb_is_registered():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "verb")
    assert set(VERBS) <= set(sub.choices)


@pytest.mark.parametrize("verb", VERBS)
def test_help_documents_every_option(verb):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "verb").choices[verb]
    for action in sub._actions:
        if action.dest not in ("help",) and action.option_strings:
            assert action.help, f"nfd {verb} {action.option_strings} has no help text"


def test_python_dash_m_nfd():
    r = subprocess.run([sys.executable, "-m", "nfd", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "train" in r.stdout
