"""Every paper figure declared once: the jobs whose outputs it reads, its builder and its caption.

The pipeline plan (:mod:`nfd.pipeline`) asks each declaration for its inputs, ``nfd figure`` looks its builder up
here, and the report's caption template prints :func:`caption`. This module imports neither matplotlib nor torch:
Snakemake imports it every time it parses the Snakefile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nfd.pipeline import Plan


@dataclass(frozen=True)
class FigureJob:
    """What one figure of one preset reads: ``--input NAME=PATH`` pairs, the subtitle, extra CLI arguments, and the
    params.yaml keys it depends on beyond its inputs."""

    inputs: dict[str, str]
    label: str
    args: list[str] = field(default_factory=list)
    params: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the paper."""

    caption: str
    """What the figure shows, as the report prints it (the preset and any automatic choice are appended)."""
    inputs_help: str
    """Its ``--input`` names, for ``nfd figure --help``."""
    plan: Callable[[Plan], FigureJob]
    """The jobs it reads, for the active preset (adding them to the plan)."""
    best_of: str = ""
    """With several sampled batches (``figure_selection.batches``), the criterion that picks the one shown."""
    builder: str = ""
    """The function of :mod:`nfd.viz.figures` that draws it (default: the figure's name)."""


def _score_args(plan: Plan) -> list[str]:
    """The automatic choices use the references and points of the shape metrics (``eval``)."""
    ev = plan.p["eval"]
    return ["--num-ref", str(ev["num_reference"]), "--points", str(ev["shape_points"]), "--seed", "0"]


def _selection_params(plan: Plan) -> list[str]:
    return [f"presets.{plan.preset}.figure_selection"] if "figure_selection" in plan.p else []


def _chair_batches(plan: Plan, res: int, batches: int) -> dict[str, str]:
    """Renders and samples of ``batches`` batches of chairs (seeds seed, seed + 1, ...), and the data they are scored
    against; a single batch keeps the plain names."""
    num, seed = plan.p["sample"]["num"], plan.p["sample"]["seed"]
    inputs: dict[str, str] = {}
    for b in range(batches):
        tag = "" if batches == 1 else f"_b{b}"
        inputs[f"renders{tag}"] = plan.renders("chairs", res, num, seed + b)
        inputs[f"samples{tag}"] = plan.samples("chairs", res, num, seed + b)
    inputs["data"] = plan.dataset(plan.p["experiments"]["chairs"]["data"])
    return inputs


def _fig2(plan: Plan) -> FigureJob:
    fi = plan.p["fit_image"]
    return FigureJob(
        {"rff": plan.fit_image("rff"), "plain": plan.fit_image("plain")}, f"one image ({fi['image']}, {fi['size']}^2)"
    )


def _fig6(plan: Plan) -> FigureJob:
    num, seed = plan.p["sample"]["num"], plan.p["sample"]["seed"]
    batches, _ = plan.selection()
    label = "CelebAHQ 64^2 and 128^2 samples"
    if batches == 1:
        return FigureJob(
            {
                "celebahq64": plan.samples("celebahq64", 64, num, seed),
                "celebahq128": plan.samples("celebahq128", 128, num, seed),
            },
            label,
        )
    inputs: dict[str, str] = {}
    for exp, res in (("celebahq64", 64), ("celebahq128", 128)):
        inputs.update({f"{exp}_b{b}": plan.samples(exp, res, num, seed + b) for b in range(batches)})
        inputs[f"{exp}_data"] = plan.dataset(plan.p["experiments"][exp]["data"])
    return FigureJob(inputs, label, _score_args(plan), _selection_params(plan))


def _fig7(plan: Plan) -> FigureJob:
    exp = "celebahq64" if "celebahq64" in plan.p["experiments"] else "mnist"
    res = 64 if exp == "celebahq64" else 28
    f = plan.p["superresolution_factor"]
    seed = plan.p["sample"]["seed"]
    return FigureJob(
        {"low": plan.samples(exp, res, 8, seed), "high": plan.samples(exp, res * f, 8, seed)},
        f"{exp} superresolution {res}^2 -> {res * f}^2",
    )


def _mnist_columns(*experiments: str) -> Callable[[Plan], FigureJob]:
    """One column of 28^2 samples per experiment."""

    def planned(plan: Plan) -> FigureJob:
        num, seed = plan.p["sample"]["num"], plan.p["sample"]["seed"]
        return FigureJob({e: plan.samples(e, 28, num, seed) for e in experiments}, "MNIST 28^2 samples")

    return planned


def _fig9(plan: Plan) -> FigureJob:
    res = max(plan.p["chairs_resolutions"])
    batches, _ = plan.selection()
    label = f"chairs sampled at {res}^3, marching cubes, rendered"
    if batches == 1:
        num, seed = plan.p["sample"]["num"], plan.p["sample"]["seed"]
        return FigureJob({"renders": plan.renders("chairs", res, num, seed)}, label)
    return FigureJob(_chair_batches(plan, res, batches), label, _score_args(plan), _selection_params(plan))


def _fig10(plan: Plan) -> FigureJob:
    resolutions = plan.p["chairs_resolutions"]
    seed = plan.p["sample"]["seed"] + 1
    return FigureJob(
        {f"r{r}": plan.renders("chairs", r, 1, seed) for r in resolutions},
        "one sampled chair at " + "/".join(f"{r}^3" for r in resolutions),
    )


def _fig11(plan: Plan) -> FigureJob:
    res = max(plan.p["chairs_resolutions"])
    batches, worst = plan.selection()
    return FigureJob(
        _chair_batches(plan, res, batches),
        f"failure cases of chairs sampled at {res}^3",
        [*_score_args(plan), "--worst", str(worst)],
        _selection_params(plan),
    )


CHAMFER = "squared Chamfer distance to the nearest test chair"

FIGURES: dict[str, FigureSpec] = {
    "fig2": FigureSpec(
        "Fig. 2: one image fitted by a ReLU MLP without (left) and with (right) random Fourier features; PSNR in the "
        "panel titles.",
        "rff=DIR plain=DIR",
        _fig2,
    ),
    "fig6": FigureSpec(
        "Fig. 6: samples of the NFD trained on CelebAHQ 64x64 (top) and 128x128 (bottom).",
        "celebahq64=NPZ celebahq128=NPZ",
        _fig6,
        best_of="pixel MSE to the nearest test image",
    ),
    "fig7": FigureSpec(
        "Fig. 7: superresolution. Samples at the training resolution, the same functions at 4x the resolution, and "
        "bicubic upsampling of the first.",
        "low=NPZ high=NPZ",
        _fig7,
    ),
    "fig8": FigureSpec(
        "Fig. 8: auto-decoder, set discriminator and NFD (PointConv discriminator) samples side by side.",
        "EXPERIMENT=NPZ (one column each)",
        _mnist_columns("mnist_autodecoder", "mnist_setdisc", "mnist"),
        builder="mnist_columns",
    ),
    "fig9": FigureSpec(
        "Fig. 9: chairs sampled from the NFD on a fine grid (128^3 in the demo and paper presets), meshed with "
        "marching cubes at occupancy 0.5 and rendered.",
        "renders=DIR",
        _fig9,
        best_of=CHAMFER,
    ),
    "fig10": FigureSpec(
        "Fig. 10: one sampled chair evaluated at increasing resolutions (the same function).",
        "rR=DIR per resolution R",
        _fig10,
    ),
    "fig11": FigureSpec(
        "Fig. 11: failure cases, chosen automatically: the sampled chairs with the largest squared Chamfer distance "
        "to their nearest test chair (surface points of marching-cubes meshes; a sample with no surface counts as the "
        "worst), worst first, each with its distance.",
        "samples=NPZ renders=DIR data=H5",
        _fig11,
    ),
    "fig12": FigureSpec(
        "Fig. 12: samples of the auto-decoder baseline (latents drawn from the prior).",
        "mnist_autodecoder=NPZ",
        _mnist_columns("mnist_autodecoder"),
        builder="mnist_columns",
    ),
    "fig13": FigureSpec(
        "Fig. 13: samples of the NFD trained against the set discriminator baseline.",
        "mnist_setdisc=NPZ",
        _mnist_columns("mnist_setdisc"),
        builder="mnist_columns",
    ),
    "fig14": FigureSpec(
        "Fig. 14: MNIST samples of the NFD.", "mnist=NPZ", _mnist_columns("mnist"), builder="mnist_columns"
    ),
}
"""Figure name -> its declaration, in the order of the paper."""


def caption(plan: Plan, name: str) -> str:
    """The report's caption of figure ``name`` for the plan's preset, naming any automatic choice of batch."""
    spec = FIGURES[name]
    text = f"{spec.caption} Preset: {plan.preset} (the figure title names the data set and resolution)."
    batches, _ = plan.selection()
    if spec.best_of and batches > 1:
        text += (
            f" Of {batches} sampled batches this is the one with the lowest mean {spec.best_of} (the paper "
            "chose the best of 5 by eye); the figure title names the batch."
        )
    return text
