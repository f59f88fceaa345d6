"""Edits of params.yaml must take effect or stop the run with one line: never a stale command recorded as done.

Real `dvc repro` and `snakemake -n` runs on a copy of the project with the tiny preset (the fixtures of
tests/test_pipeline.py), targeting the cheapest stage whose command reads a param (fit_image-rff, seconds).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from nfd.cli import main
from nfd.errors import NfdError
from nfd.pipeline import Plan, load_params
from nfd.pipeline.dvc import CHECK_STAMP, check_dvc_yaml, dvc_yaml
from tests.test_pipeline import BIN, ROOT, _copy, _env, _run


def _edit(work: Path, change) -> None:
    params = yaml.safe_load((work / "params.yaml").read_text())
    change(params)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _try(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)


def _error_lines(r: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (r.stdout + r.stderr).splitlines() if "error" in line.lower()]


def _lock_cmd(work: Path, stage: str) -> str:
    return yaml.safe_load((work / "dvc.lock").read_text())["stages"][stage]["cmd"]


def _set_steps(value):
    def change(p):
        p["presets"]["tiny"]["experiments"]["mnist"]["steps"] = value

    return change


def _set_iterations(value):
    def change(p):
        p["presets"]["tiny"]["fit_image"]["iterations"] = value

    return change


@pytest.mark.slow
def test_dvc_repro_follows_params_edits_or_refuses(tmp_path):
    work = _copy(tmp_path, "tiny")
    _run(["git", "init", "-q"], work)
    dvc = str(BIN / "dvc")
    r = _run([dvc, "repro", "fit_image-rff"], work)
    assert "Running stage 'check'" in r.stdout and "--iterations 10" in r.stdout
    assert (work / "results/fit_image/rff/fourier.json").is_file()
    assert "Data and pipelines are up to date" in _run([dvc, "status", "fit_image-rff"], work).stdout

    # valid edits and invalid ones: the check stage (upstream of every stage) refuses in one line; nothing runs
    cases = [
        (_set_steps(6), "dvc.yaml is stale for params.yaml (stage changed: train-mnist): run `nfd pipeline dvc-yaml`"),
        (
            _set_steps("four"),
            "params.yaml: invalid config at 'presets/tiny/experiments/mnist/steps': 'four' is not of type 'integer'",
        ),
        (lambda p: p.update(preset="bogus"), "params.yaml: unknown preset 'bogus' at 'preset'"),
        (
            _set_iterations(12),
            "dvc.yaml is stale for params.yaml (stages changed: fit_image-rff, "
            "fit_image-plain): run `nfd pipeline dvc-yaml`",
        ),
    ]
    original = (work / "params.yaml").read_text()
    write = ["pipeline", "dvc-yaml", "--params", str(work / "params.yaml"), "--out", str(work / "dvc.yaml")]
    for change, message in cases:
        (work / "params.yaml").write_text(original)
        _edit(work, change)
        r = _try([dvc, "repro", "fit_image-rff"], work)
        assert r.returncode != 0
        ours = [line for line in _error_lines(r) if line.startswith("nfd pipeline: error:")]
        assert len(ours) == 1 and message in ours[0], r.stdout + r.stderr
        assert "Traceback" not in r.stdout + r.stderr
        assert "Running stage 'fit_image-rff'" not in r.stdout
        assert _lock_cmd(work, "fit_image-rff").endswith("--iterations 10")  # the old run is still what is recorded
        assert not (work / CHECK_STAMP).exists()
        status = _run([dvc, "status"], work).stdout
        assert "up to date" not in status and "check:" in status  # not falsely clean
        # the invalid edits cannot be written into dvc.yaml either
        if "invalid" in message or "unknown" in message:
            before = (work / "dvc.yaml").read_text()
            assert main(write) == 2 and (work / "dvc.yaml").read_text() == before

    # after `nfd pipeline dvc-yaml` the edit takes effect: the new command runs and is recorded
    assert main(write) == 0
    r = _run([dvc, "repro", "fit_image-rff"], work)
    assert "Running stage 'fit_image-rff'" in r.stdout and "--iterations 12" in r.stdout
    assert yaml.safe_load((work / "results/fit_image/rff/fourier.json").read_text())["iterations"] == 12
    assert _lock_cmd(work, "fit_image-rff").endswith("--iterations 12")
    assert "Data and pipelines are up to date" in _run([dvc, "status", "fit_image-rff"], work).stdout

    # back to the old value without rewriting dvc.yaml: the run cache holds a passing check for these params, but
    # the check's output is not cached, so it runs again and refuses
    (work / "params.yaml").write_text(original)
    r = _try([dvc, "repro", "fit_image-rff"], work)
    assert r.returncode != 0 and "dvc.yaml is stale for params.yaml" in r.stderr + r.stdout
    assert "Running stage 'fit_image-rff'" not in r.stdout

    # an edit that changes nothing of the active preset runs the check only
    _edit(work, _set_iterations(12))
    _edit(work, lambda p: p["presets"]["demo"]["fit_image"].update(iterations=7))
    r = _run([dvc, "repro", "fit_image-rff"], work)
    assert "Running stage 'check'" in r.stdout and "Running stage 'fit_image-rff'" not in r.stdout


def test_dvc_dry_run_lists_every_stage(tmp_path):
    """A plain `dvc repro --dry` stops at the first stage whose inputs the dry run did not make (a DVC
    limitation); with --force-downstream, as dvc.yaml's header says, it lists every stage of a fresh copy."""
    work = _copy(tmp_path, "tiny")
    _run(["git", "init", "-q"], work)
    r = _run([str(BIN / "dvc"), "repro", "--dry", "--force-downstream"], work)
    stages = yaml.safe_load((work / "dvc.yaml").read_text())["stages"]
    assert r.stdout.count("Running stage '") == len(stages)
    assert "--dry --force-downstream" in (work / "dvc.yaml").read_text().split("stages:", 1)[0]
    assert not (work / "results").exists()


def test_snakemake_reads_params_when_it_parses(tmp_path):
    work = _copy(tmp_path, "tiny")
    snake = [str(BIN / "snakemake"), "-n", "-p", "-F", "--cores", "1", "results/runs/mnist/model.pt"]
    assert "--steps 4" in _run(snake, work).stdout
    original = (work / "params.yaml").read_text()
    _edit(work, _set_steps(6))
    assert "--steps 6" in _run(snake, work).stdout
    for change, message in (
        (_set_steps("four"), "'presets/tiny/experiments/mnist/steps': 'four' is not of type"),
        (lambda p: p.update(preset="bogus"), "unknown preset 'bogus' at 'preset'"),
    ):
        (work / "params.yaml").write_text(original)
        _edit(work, change)
        r = _try(snake, work)
        lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip() and "profile" not in line]
        assert r.returncode != 0 and len(lines) == 1 and message in lines[0], r.stdout + r.stderr
        assert lines[0].startswith("snakemake: error: params.yaml: ")


# -- the check itself, without DVC ------------------------------------------------------------------------------


def _project(tmp_path: Path) -> tuple[Path, Path]:
    params, dvc_yaml = tmp_path / "params.yaml", tmp_path / "dvc.yaml"
    config = yaml.safe_load((ROOT / "params.yaml").read_text())
    config["preset"] = "tiny"
    params.write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["pipeline", "dvc-yaml", "--params", str(params), "--out", str(dvc_yaml)]) == 0
    return params, dvc_yaml


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda p: p.update(preset="demo"), "preset changed: tiny -> demo"),
        (
            lambda p: p["presets"]["tiny"]["sample"].update(num=5),
            "stages added: sample-mnist_autodecoder-r28_n5_s0, sample-mnist_setdisc-r28_n5_s0, "
            "sample-mnist-r28_n5_s0 and",
        ),
        (lambda p: p["presets"]["tiny"].update(classifier_epochs=2), "stage changed: classifier-mnist)"),
    ],
)
def test_check_says_why_dvc_yaml_is_stale(tmp_path, change, reason, capsys):
    params, dvc_yaml = _project(tmp_path)
    stamp = tmp_path / "stamp.txt"
    argv = ["pipeline", "check", "--params", str(params), "--out", str(dvc_yaml), "--stamp", str(stamp)]
    assert main(argv) == 0 and stamp.read_text() == "dvc.yaml matches params.yaml\n"
    _edit(tmp_path, change)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and reason in err and err.rstrip().endswith("run `nfd pipeline dvc-yaml`"), err
    assert not stamp.exists()  # an old stamp never vouches for a stale file
    assert main(["pipeline", "dvc-yaml", "--params", str(params), "--out", str(dvc_yaml), "--check"]) == 2
    assert main(["pipeline", "dvc-yaml", "--params", str(params), "--out", str(dvc_yaml)]) == 0
    assert main(argv) == 0 and stamp.is_file()


def test_check_names_params_file_and_key(tmp_path):
    params, dvc_yaml = _project(tmp_path)
    _edit(tmp_path, lambda p: p["presets"]["tiny"]["fit_image"].update(size=0))
    with pytest.raises(NfdError, match=r"params.yaml: invalid config at 'presets/tiny/fit_image/size': 0 is less"):
        check_dvc_yaml(params, dvc_yaml)
    params.write_text("preset: [tiny\n")
    with pytest.raises(NfdError, match=r"params.yaml: not valid YAML at line 2"):
        load_params(params)
    (tmp_path / "missing").mkdir()
    with pytest.raises(NfdError, match="pipeline config not found"):
        load_params(tmp_path / "missing" / "params.yaml")


def test_every_dvc_stage_waits_for_the_check():
    dvc = dvc_yaml(Plan(load_params(ROOT / "params.yaml", "tiny")))["stages"]
    assert list(dvc)[0] == "check" and "params.yaml" in dvc["check"]["deps"]
    assert dvc["check"]["outs"] == [{CHECK_STAMP: {"cache": False}}]
    assert all(CHECK_STAMP in st["deps"] for name, st in dvc.items() if name != "check")
