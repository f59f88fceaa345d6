"""The reproduction pipeline: the plan, Snakemake and DVC in step, and real end-to-end `tiny` runs of both."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nfd.cli import main
from nfd.errors import NfdError
from nfd.pipeline import Plan, load_params
from nfd.pipeline.dvc import CHECK_CMD, CHECK_STAMP, REPORT, REPORT_CMD

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PIPELINE_FILES = [
    "Snakefile",
    "workflow",
    "params.yaml",
    "profiles",
    "dvc.yaml",
    ".dvc/config",
    ".dvcignore",
    "nfd/schemas/config.schema.yaml",
]  # the check stage depends on the schema (package data)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    env.setdefault("PYOPENGL_PLATFORM", "egl")
    return env


def _run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _copy(tmp: Path, preset: str) -> Path:
    """A fresh copy of the pipeline files with ``preset`` active (and dvc.yaml written for it)."""
    work = tmp / "repo"
    work.mkdir()
    for name in PIPELINE_FILES:
        src = ROOT / name
        dst = work / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["preset"] = preset
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert main(["pipeline", "dvc-yaml", "--params", str(work / "params.yaml"), "--out", str(work / "dvc.yaml")]) == 0
    return work


def test_committed_dvc_yaml_is_in_step_with_params():
    assert (
        main(
            ["pipeline", "dvc-yaml", "--params", str(ROOT / "params.yaml"), "--out", str(ROOT / "dvc.yaml"), "--check"]
        )
        == 0
    )


def test_bad_params_are_named(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["presets"]["demo"]["experiments"]["mnist"]["model"] = "nope"
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    with pytest.raises(NfdError, match="presets/demo/experiments/mnist/model"):
        load_params(bad)
    with pytest.raises(NfdError, match="unknown preset 'gpu'"):
        load_params(ROOT / "params.yaml", preset="gpu")


def _snakemake_jobs(work: Path, preset: str) -> dict[str, set[str]]:
    r = _run([str(BIN / "snakemake"), "-n", "-p", "-F", "--cores", "1", "--config", f"preset={preset}"], work)
    cmds = re.findall(r"^Shell command: (.*?) > logs/\S+ 2>&1$", r.stdout, flags=re.M)
    outs = re.findall(r"^\s+output: (.*)$", r.stdout, flags=re.M)
    return {"cmds": set(cmds), "outs": {o.strip() for line in outs for o in line.split(", ")}}


def _dvc_jobs(work: Path) -> dict[str, set[str]]:
    from dvc.repo import Repo

    with Repo(str(work)) as repo:
        stages = list(repo.index.stages)
        return {
            "cmds": {s.cmd for s in stages},
            "outs": {os.path.relpath(o.fs_path, work) for s in stages for o in s.outs},
        }


@pytest.mark.parametrize("preset", ["tiny", "demo", "paper"])
def test_snakemake_and_dvc_dags_agree(tmp_path, preset):
    work = _copy(tmp_path, preset)
    _run(["git", "init", "-q"], work)
    snake, dvc = _snakemake_jobs(work, preset), _dvc_jobs(work)
    # DVC's last stage builds the report with `snakemake --report` (Snakemake's own mode, not a job of its DAG);
    # its first checks that dvc.yaml still matches params.yaml (Snakemake reads params.yaml each time it parses)
    assert snake["cmds"] and snake["cmds"] == dvc["cmds"] - {REPORT_CMD, CHECK_CMD}
    assert snake["outs"] - {"all"} == dvc["outs"] - {REPORT, CHECK_STAMP}


def test_every_rule_has_log_and_benchmark():
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        rules = re.findall(r"^rule (\w+):", text, flags=re.M)
        for rule in rules:
            if rule == "all":
                continue
            body = text.split(f"rule {rule}:", 1)[1].split("\nrule ", 1)[0]
            assert "log:" in body and "benchmark:" in body, f"{smk.name}: rule {rule}"


def test_plan_covers_every_figure_of_each_preset():
    for preset in ("tiny", "demo", "paper"):
        plan = Plan(load_params(ROOT / "params.yaml", preset))
        figs = {Path(t).stem for t in plan.targets() if "/figures/" in t}
        assert figs == set(plan.p["figures"])


@pytest.mark.slow
def test_tiny_snakemake_run_to_fig9_then_dvc_repro_and_remote(tmp_path):
    """Real runs: Snakemake renders fig9; `dvc repro` builds every figure and table, then is a no-op; a reviewer
    pulls the checkpoints from a local-folder remote and regenerates the figures without retraining."""
    work = _copy(tmp_path, "tiny")
    _run(
        [str(BIN / "snakemake"), "--profile", "profiles/default", "--cores", "2", "--", "results/figures/fig9.png"],
        work,
    )
    assert (work / "results/figures/fig9.png").stat().st_size > 1000
    assert list((work / "logs" / "train").glob("*.log")) and list((work / "logs" / "benchmarks").rglob("*.tsv"))
    _run([str(BIN / "snakemake"), "--report", "results/report.html", "--", "results/figures/fig9.png"], work)
    report = (work / "results/report.html").read_text(errors="replace")
    assert "fig9.png" in report and "marching cubes" in report

    shutil.rmtree(work / "results")
    shutil.rmtree(work / "data", ignore_errors=True)
    _run(["git", "init", "-q"], work)
    _run(["git", "add", "-A"], work)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "pipeline"], work)
    _run([str(BIN / "dvc"), "repro"], work, timeout=900)
    plan = Plan(load_params(work / "params.yaml"))
    for target in [*plan.targets(), REPORT]:
        assert (work / target).is_file(), target
    assert "t1.csv" in (work / REPORT).read_text(errors="replace")  # the report of `dvc repro`
    again = _run([str(BIN / "dvc"), "repro"], work)
    assert "Running stage" not in again.stdout
    plots = _run([str(BIN / "dvc"), "plots", "show", "--json"], work)
    assert "loss_d" in plots.stdout
    assert "classifier_fd" in plots.stdout and "1nna" in plots.stdout  # quality over training (progress)

    remote = tmp_path / "remote"
    _run([str(BIN / "dvc"), "remote", "add", "-d", "local", str(remote)], work)
    _run([str(BIN / "dvc"), "push"], work)
    _run(["git", "add", "-A"], work)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results"], work)
    reviewer = tmp_path / "reviewer"
    _run(["git", "clone", "-q", str(work), str(reviewer)], tmp_path)
    _run([str(BIN / "dvc"), "pull"], reviewer)
    assert (reviewer / "results/runs/chairs/model.pt").is_file()
    for folder in ("samples", "meshes", "renders", "figures"):
        shutil.rmtree(reviewer / "results" / folder)
    r = _run([str(BIN / "dvc"), "repro"], reviewer)
    assert "Running stage 'train-" not in r.stdout
    for target in plan.targets():
        assert (reviewer / target).is_file(), target
    (reviewer / "results/figures/fig9.png").unlink()
    r = _run([str(BIN / "dvc"), "repro", "--force", "--single-item", "figure-fig9"], reviewer)
    assert "Running stage 'figure-fig9'" in r.stdout and (reviewer / "results/figures/fig9.png").is_file()
