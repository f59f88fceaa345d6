"""Every table declared once: what it reads, the module that builds it, its summary and its caption.

The pipeline plan asks each declaration for its job, ``nfd table`` takes its choices and help from here, and the
report prints :func:`caption`. Imports neither torch nor pandas (Snakemake imports it at every parse).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nfd.pipeline import Plan


@dataclass(frozen=True)
class TableJob:
    """What one table of one preset reads: extra ``nfd table`` arguments and the files it depends on."""

    args: list[str] = field(default_factory=list)
    deps: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TableSpec:
    """One table of the reproduction."""

    caption: str
    """What the table shows, as the report prints it (the preset is appended)."""
    summary: str
    """Its lines in ``nfd table --help``."""
    plan: Callable[[Plan], TableJob]
    """Its job for the active preset (adding the jobs it reads to the plan)."""


def _t1(plan: Plan) -> TableJob:
    deps = [plan.evaluation(e) for e in plan.p["experiments"]]
    return TableJob([a for d in deps for a in ("--input", d)], deps)


def _t2(plan: Plan) -> TableJob:
    t2 = plan.p["table_t2"]
    return TableJob(["--max-points", str(t2["max_points"]), "--repeats", str(t2["repeats"])])


def _no_inputs(plan: Plan) -> TableJob:
    return TableJob()


TABLES: dict[str, TableSpec] = {
    "t1": TableSpec(
        "T1: sample quality per experiment, measured values beside the published anchors (marked).",
        "sample quality: the evaluation records given with --input (every numeric field, 'measured')\n"
        "beside the published anchors ('published': CelebA-HQ 64^2 FID of GASP 13.5, DPF 13.2, GEM 30.4,\n"
        "Functa 40.4; none for 3D-R2N2 32^3 chairs or MNIST)",
        _t1,
    ),
    "t2": TableSpec(
        "T2: resolution independence: time and peak memory of one discriminator step as the number of points grows, "
        "PointConv vs a CNN discriminator of similar depth.",
        "resolution independence: time and peak memory of one discriminator step with R1 as the grid\n"
        "grows up to --max-points, for PointConv on all points, PointConv on --k-points sampled points,\n"
        "and a DCGAN-like CNN of the same depth and channels; memory ratio at 2x the resolution",
        _t2,
    ),
    "t3": TableSpec(
        "T3: parameter counts per preset: generator, discriminator and the size of the generated function.",
        "parameter counts of every config preset: hypernetwork, discriminator, generated function",
        _no_inputs,
    ),
    "t4": TableSpec(
        "T4 (App. B.3): spectral norm of B, the Lipschitz bound of the Fourier features, and the measured largest "
        "gradient norm.",
        "App. B.3: ||B||, the Lipschitz bound 2 sqrt(2) pi ||B|| of the Fourier features, and the largest\n"
        "Jacobian norm of gamma measured with autograd",
        _no_inputs,
    ),
}
"""Table name -> its declaration; table ``name`` is built by ``nfd.report.<name>.table_<name>``."""


def caption(plan: Plan, name: str) -> str:
    """The report's caption of table ``name`` for the plan's preset."""
    return f"{TABLES[name].caption} Preset: {plan.preset}."
