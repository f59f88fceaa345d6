"""``nfd table``: the tables of the reproduction, each written as a CSV file and a Markdown twin.

* **T1 sample quality**: every numeric field of the evaluation records given with ``--input`` (``nfd evaluate``
  JSON files), marked ``measured``, beside the published anchors, marked ``published``.
* **T2 resolution independence** (paper Sec. 3.4): time and peak memory of one discriminator step (D on a real and a
  fake batch, non-saturating loss, R1 on the real batch through ``torch.autograd.grad(create_graph=True)``, backward)
  as the grid grows, for the PointConv discriminator on all points, for the same discriminator on K points sampled
  from the grid (how training stays resolution independent), and for a DCGAN-like CNN of the same depth and channels.
* **T3 parameter counts** of every config preset: hypernetwork g_phi, discriminator, and the size of one generated
  function f_theta.
* **T4 Lipschitz constant of the Fourier features** (App. B.3.2, C.2): ||B||, the bound 2 sqrt(2) pi ||B||, and the
  largest Jacobian norm of gamma measured with autograd over random points.

File format. The CSV has one header row, then the data rows, then comment rows starting with ``#``: the table's title
and its notes on the protocol (read it with ``pandas.read_csv(path, comment="#")``). The Markdown twin (same stem,
``.md``) has the title as a caption, the table, and the same notes as footnotes. Both files are written atomically.
Numbers are never invented: a metric that could not be computed shows its "not computed: ..." message, a missing
published number says so.

``--preset`` names a pipeline preset of ``params.yaml`` (tiny, demo, paper) or a config preset (mnist, celebahq64,
...). T1 labels its measured rows with it; T2 measures the discriminator of the config preset it maps to (see
:data:`T2_MODEL`, or ``--model``); T3 and T4 always list every config preset.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import re
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nfd.config import PRESETS, Config, DiscriminatorConfig, EncodingConfig, preset as config_preset
from nfd.cli import verb_help
from nfd.errors import NfdError
from nfd.io import atomic_path

TABLES = ("t1", "t2", "t3", "t4")
PIPELINE_PRESETS = ("tiny", "demo", "paper")
"""Presets of params.yaml; any config preset name (nfd.config.PRESETS) is accepted as well."""

PRESET_DATA: dict[str, list[tuple[str, int, int]]] = {
    "mnist": [("mnist", 2, 1)],
    "celebahq64": [("celebahq64", 2, 3)],
    "celebahq128": [("celebahq128", 2, 3)],
    "shapenet_chairs": [("chairs", 3, 1)],
    "demo_mnist": [("mnist", 2, 1)],
    "demo_chairs": [("chairs", 3, 1)],
    "tiny": [("mnist", 2, 1), ("chairs", 3, 1)],
}
"""(dataset, coordinate dim d, feature dim k) each config preset is trained on (tiny: both, as in the tiny pipeline)."""

T2_MODEL = {"tiny": "tiny", "demo": "celebahq64", "paper": "celebahq64"}
"""Config preset whose discriminator T2 measures, per pipeline preset (a config preset maps to itself)."""

T2_BATCH = {"tiny": 4, "demo": 1, "paper": 4}
"""Default sets per batch of the T2 step, per pipeline preset (1 for config presets): the demo's paper-sized
discriminator on every point of a 256^2 grid takes seconds per step on two CPU cores, so the demo uses one set."""

SET_DISCRIMINATOR_PRESETS = ("mnist", "demo_mnist", "tiny")
"""Config presets the pipeline also trains with the set discriminator (experiment mnist_setdisc); T4 lists its
encodings gamma_x and gamma_y for these."""


# =====================================================================================================================
# Tables and their two files


@dataclass
class Table:
    """A table: columns, rows (dicts keyed by column), a title and notes explaining the protocol."""

    key: str
    title: str
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def column(self, name: str) -> list[Any]:
        """The values of one column, row by row (missing cells are None)."""
        return [r.get(name) for r in self.rows]

    def csv_text(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns)
        for r in self.rows:
            w.writerow([_csv_cell(r.get(c)) for c in self.columns])
        buf.write(f"# Table {self.key.upper()}: {_one_line(self.title)}\n")
        for i, note in enumerate(self.notes, 1):
            buf.write(f"# Note {i}: {_one_line(note)}\n")
        return buf.getvalue()

    def markdown_text(self) -> str:
        lines = [f"**Table {self.key.upper()}.** {_one_line(self.title)}", ""]
        lines.append("| " + " | ".join(_md_escape(c) for c in self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        for r in self.rows:
            lines.append("| " + " | ".join(_md_escape(_md_cell(r.get(c))) for c in self.columns) + " |")
        if self.notes:
            lines.append("")
            lines += [f"{i}. {_one_line(n)}" for i, n in enumerate(self.notes, 1)]
        return "\n".join(lines) + "\n"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _csv_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return _one_line(str(v))


def _md_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    return _one_line(str(v))


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def markdown_path(out: str | Path) -> Path:
    """The Markdown twin of a CSV path: same folder and stem, suffix ``.md``."""
    return Path(out).with_suffix(".md")


def write_table(table: Table, out: str | Path) -> tuple[Path, Path]:
    """Write ``out`` (CSV) and its Markdown twin, each atomically; returns both paths."""
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise NfdError(f"{out}: --out must name a .csv file (the Markdown twin {out.stem}.md is written beside it)")
    md = markdown_path(out)
    csv_text, md_text = table.csv_text(), table.markdown_text()
    with atomic_path(out) as tmp:
        tmp.write_text(csv_text, encoding="utf-8")
    with atomic_path(md) as tmp:
        tmp.write_text(md_text, encoding="utf-8")
    return out, md


def read_csv_rows(path: str | Path) -> list[dict[str, str]]:
    """Read a table CSV back (comment rows skipped): one dict per data row, values as strings."""
    lines = [ln for ln in Path(path).read_text(encoding="utf-8").splitlines() if not ln.startswith("#")]
    return list(csv.DictReader(lines))


# =====================================================================================================================
# T1: sample quality


PUBLISHED_T1: list[dict[str, Any]] = [
    {"model": "GASP (this paper's model)", "dataset": "CelebA-HQ", "resolution": "64x64", "metric": "FID",
     "value": 13.5, "notes": "published Inception FID"},
    {"model": "Diffusion Probabilistic Fields", "dataset": "CelebA-HQ", "resolution": "64x64", "metric": "FID",
     "value": 13.2, "notes": "published Inception FID"},
    {"model": "GEM", "dataset": "CelebA-HQ", "resolution": "64x64", "metric": "FID", "value": 30.4,
     "notes": "published Inception FID"},
    {"model": "Functa", "dataset": "CelebA-HQ", "resolution": "64x64", "metric": "FID", "value": 40.4,
     "notes": "published Inception FID"},
    {"model": "GASP (this paper's model)", "dataset": "ShapeNet chairs (3D-R2N2 voxels)", "resolution": "32^3",
     "metric": "COV / MMD / 1-NNA", "value": "no published number",
     "notes": "the paper shows chair samples (Figs. 9, 10, 18) but reports no metric for 3D-R2N2 32^3 chairs"},
    {"model": "GASP (this paper's model)", "dataset": "MNIST", "resolution": "28x28", "metric": "any",
     "value": "no published number",
     "notes": "the paper shows MNIST samples only (Figs. 12-14) and calls MNIST not a meaningful benchmark (Sec. 3.6)"},
]
"""The published anchors of T1 (as tabulated in Table 1 of Zhuang et al., "Diffusion Probabilistic Fields",
ICLR 2023): CelebA-HQ 64^2 FIDs; no published numbers for the chairs or MNIST."""

EXPERIMENT_MODELS = {
    "mnist": "NFD + PointConv discriminator",
    "celebahq64": "NFD + PointConv discriminator",
    "celebahq128": "NFD + PointConv discriminator",
    "chairs": "NFD + PointConv discriminator",
    "mnist_autodecoder": "auto-decoder baseline (App. B.1)",
    "mnist_setdisc": "NFD + set discriminator baseline (App. B.2)",
}
"""Model descriptions of the pipeline's experiments (an evaluation file is named after its experiment)."""

_RECORD_HINT = "expected a JSON object with 'metric' and 'results', 'value' or 'values'"


def load_evaluation(path: str | Path) -> list[dict[str, Any]]:
    """The evaluation record(s) of a ``.json`` file (one object or a list of them) or a ``.jsonl`` log.

    Anything else is a one-line :class:`NfdError` naming the file.
    """
    p = Path(path)
    if not p.is_file():
        raise NfdError(f"{p}: evaluation file not found")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise NfdError(f"{p}: cannot read evaluation file ({e})") from None
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as e:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        try:  # a .jsonl log: one record per line
            data = [json.loads(ln) for ln in lines]
        except json.JSONDecodeError:
            data = None
        if not lines or data is None or len(lines) < 2:
            raise NfdError(f"{p}: not valid JSON ({e.msg} at line {e.lineno}); {_RECORD_HINT}") from None
    records = data if isinstance(data, list) else [data]
    if not records:
        raise NfdError(f"{p}: not an evaluation record (an empty list); {_RECORD_HINT}")
    for r in records:
        if not (isinstance(r, dict) and isinstance(r.get("metric"), str)
                and any(k in r for k in ("results", "value", "values"))):
            got = f"keys {sorted(r)[:8]}" if isinstance(r, dict) else f"a JSON {type(r).__name__}"
            raise NfdError(f"{p}: not an evaluation record ({_RECORD_HINT}; got {got})")
    return records


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _flatten(prefix: str, v: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(v, dict):
        for k, x in v.items():
            yield from _flatten(f"{prefix}.{k}" if prefix else str(k), x)
    else:
        yield prefix, v


def _render_value(key: str, v: Any, record: dict[str, Any]) -> Any:
    """The cell for one result field, or None when the field is not a number (or a 'not computed' string)."""
    if _is_number(v):
        return v if not (isinstance(v, float) and not math.isfinite(v)) else str(v)
    if isinstance(v, list) and v and all(_is_number(x) for x in v):
        return " ".join(_csv_cell(x) for x in v)
    if isinstance(v, str) and v.strip().lower().startswith("not computed"):
        return v
    if v is None:
        status = str(record.get("status", "computed"))
        if status != "computed":
            msg = record.get("message")
            return str(msg) if msg else status
        nonfinite = record.get("nonfinite") or {}
        for path in (f"results.{key}", key, f"values.{key}", "value"):
            if path in nonfinite:
                return str(nonfinite[path])
        return "null (not available)"
    return None


def _resolution(record: dict[str, Any]) -> str:
    ctx = record.get("context") if isinstance(record.get("context"), dict) else {}
    if isinstance(record.get("resolution"), int | str):
        return str(record["resolution"])
    res = ctx.get("sample_resolution")
    if isinstance(res, int):
        return f"{res}^3" if record.get("metric") == "shapes3d" else f"{res}x{res}"
    inputs = record.get("inputs") if isinstance(record.get("inputs"), dict) else {}
    samples = inputs.get("samples")
    if isinstance(samples, dict) and isinstance(samples.get("shape"), list) and len(samples["shape"]) >= 3:
        spatial = [int(s) for s in samples["shape"][1:]]
        if spatial[-1] in (1, 3) and len(spatial) >= 3:
            spatial = spatial[:-1]
        if len(spatial) == 3 and len(set(spatial)) == 1:
            return f"{spatial[0]}^3"
        return "x".join(map(str, spatial))
    m = re.search(r"(?:^|/)r(\d+)_n\d+", str(ctx.get("samples", "")))
    if m:
        return f"{m.group(1)}^3" if record.get("metric") == "shapes3d" else f"{m.group(1)}x{m.group(1)}"
    return ""


def _dataset(record: dict[str, Any]) -> str:
    ctx = record.get("context") if isinstance(record.get("context"), dict) else {}
    if isinstance(ctx.get("data"), str):
        name = Path(ctx["data"]).stem
        split = ctx.get("ref_split")
        return f"{name} ({split} split)" if isinstance(split, str) else name
    if isinstance(record.get("dataset"), str):
        return record["dataset"]
    return ""


def _protocol_summary(record: dict[str, Any], limit: int = 12) -> str:
    proto = record.get("protocol")
    parts = []
    if isinstance(proto, dict):
        for k, v in proto.items():
            if isinstance(v, bool | int | float | str) and v != "":
                s = _one_line(str(v))
                parts.append(f"{k}={s[:77] + '...' if len(s) > 80 else s}")
            elif isinstance(v, list) and len(v) <= 4 and all(isinstance(x, int | float | str) for x in v):
                parts.append(f"{k}={v}")
    elif isinstance(proto, str):
        parts.append(_one_line(proto))
    if len(parts) > limit:
        parts = parts[:limit] + ["..."]
    return "; ".join(parts)


def measured_rows(path: str | Path, record: dict[str, Any], preset: str) -> list[dict[str, Any]]:
    """T1 rows of one evaluation record: one per numeric result field (and one per 'not computed' field)."""
    path = Path(path)
    exp = path.stem
    metric = record["metric"]
    if "results" in record:
        res = record["results"]
        items = list(_flatten("", res)) if isinstance(res, dict) else [(metric, res)]
    elif "values" in record:
        vals = record["values"]
        items = list(_flatten("", vals)) if isinstance(vals, dict) else [(metric, vals)]
    else:
        items = [(metric, record["value"])]
    base = {"source": "measured", "preset": preset, "experiment": exp,
            "model": f"{EXPERIMENT_MODELS.get(exp, 'NFD')} [{exp}]", "dataset": _dataset(record),
            "resolution": _resolution(record)}
    proto = _protocol_summary(record)
    rows = []
    for key, v in items:
        cell = _render_value(key, v, record)
        if cell is None:
            continue
        name = metric if key in (metric, "") else f"{metric}/{key}"
        rows.append({**base, "metric": name, "value": cell, "notes": f"{path.name}: {proto}" if proto else path.name})
    if not rows:  # e.g. a record whose results are all non-numeric: say so rather than drop the file
        status = str(record.get("status", "computed"))
        msg = record.get("message") or (status if status != "computed" else "no numeric field in the record")
        rows.append({**base, "metric": metric, "value": str(msg), "notes": path.name})
    return rows


def table_t1(preset: str, inputs: Sequence[str | Path] = ()) -> Table:
    """T1: published anchors, then the measured rows of every evaluation file in ``inputs``."""
    records = [(Path(p), load_evaluation(p)) for p in inputs]  # validate every file before building anything
    columns = ["source", "preset", "experiment", "model", "dataset", "resolution", "metric", "value", "notes"]
    rows = [{"source": "published", "preset": "", "experiment": "", **r} for r in PUBLISHED_T1]
    for p, recs in records:
        for rec in recs:
            rows += measured_rows(p, rec, preset)
    notes = [
        "source=published: numbers reported in the literature (values as tabulated in Table 1 of Zhuang et al., Diffusion Probabilistic Fields, ICLR 2023: GASP, i.e. this "
        "paper's model, 13.5; Diffusion Probabilistic Fields 13.2; GEM 30.4; Functa 40.4; Inception FID on "
        "CelebA-HQ 64x64, lower is better). They are not recomputed here.",
        "source=measured: every numeric field of the evaluation records given with --input (nfd evaluate), one row "
        "per field; the notes give the record's protocol (sample counts, reference split, distance, ...). A metric "
        "that could not be computed shows its 'not computed: ...' message instead of a number.",
        "The MNIST classifier FD uses a small MNIST classifier's features and is not comparable with Inception FID; "
        "the 3D metrics are COV (higher is better), MMD and 1-NNA (0.5 is ideal) on squared Chamfer distances.",
        "No published number exists for 3D-R2N2 32^3 chairs or for MNIST: the paper shows samples only.",
    ]
    if not inputs:
        notes.append("No evaluation file was given (--input), so the table holds the published anchors only.")
    return Table("t1", f"Sample quality: published anchors and measured metrics (preset {preset}).", columns, rows,
                 notes)


# =====================================================================================================================
# T2: resolution independence


class ConvDiscriminator(nn.Module):
    """The CNN comparison of T2: a DCGAN-like discriminator with the PointConv discriminator's depth and channels.

    Per entry c of ``cfg.channels``: Conv (kernel 4, stride 2, padding 1) -> BatchNorm -> LeakyReLU, so each level
    keeps 1/2^d of the positions like the PointConv pooling; then a 3-wide conv to one channel averaged over the
    remaining positions (the analogue of the final PointConv over all remaining points). Its parameter count does not
    depend on the resolution, its activations grow with the number of pixels (voxels).
    """

    def __init__(self, coord_dim: int, feature_dim: int, cfg: DiscriminatorConfig) -> None:
        super().__init__()
        if coord_dim not in (2, 3):
            raise ValueError(f"the CNN comparison needs 2D or 3D grids, got coord_dim={coord_dim}")
        conv = nn.Conv2d if coord_dim == 2 else nn.Conv3d
        norm = nn.BatchNorm2d if coord_dim == 2 else nn.BatchNorm3d
        layers: list[nn.Module] = []
        width = feature_dim
        for c in cfg.channels:
            layers += [conv(width, c, 4, stride=2, padding=1),
                       norm(c) if cfg.batchnorm else nn.Identity(), nn.LeakyReLU(cfg.leaky_slope)]
            width = c
        self.body = nn.Sequential(*layers)
        self.final = conv(width, 1, 3, padding=1)
        self.coord_dim = coord_dim
        self.levels = len(cfg.channels)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        """Logits ``[B]`` of images ``[B, k, R, R]`` (volumes ``[B, k, R, R, R]``)."""
        return self.final(self.body(grid)).flatten(1).mean(dim=1)


def _grid_features(features: torch.Tensor, res: int, d: int) -> torch.Tensor:
    """``[B, R^d, k]`` features on a C-order grid -> ``[B, k, R, ..., R]``."""
    b, _, k = features.shape
    return features.reshape(b, *([res] * d), k).movedim(-1, 1).contiguous()


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (the profiler's C++ start/stop log lines); Python exceptions still propagate."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)


def cpu_peak_bytes(fn: Callable[[], Any]) -> int | str:
    """Peak of the tensor memory allocated by ``fn`` on the CPU, above what was allocated before it.

    The PyTorch profiler (``profile_memory=True``) records every allocation and free of the CPU allocator with its
    size; the peak is the maximum of their running sum in time order. This counts every tensor, including temporaries
    inside kernels and the graph saved for the double backward of R1, but not memory outside PyTorch's allocator.
    The profiler's allocation events are not a stable API: if they cannot be read, the result is a
    'not measured: ...' string (never a made-up number). Errors raised by ``fn`` itself propagate.
    """
    from torch.profiler import ProfilerActivity, profile

    try:
        prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        with _quiet_stderr():
            prof.start()
    except Exception as e:  # pragma: no cover - a torch without the profiler
        fn()
        return f"not measured: profiler unavailable ({type(e).__name__})"
    try:
        fn()
    finally:
        with _quiet_stderr():
            prof.stop()
    try:
        from torch._C._profiler import _EventType

        allocs = []
        stack = list(prof.profiler.kineto_results.experimental_event_tree())
        while stack:
            e = stack.pop()
            if e.typed[0] == _EventType.Allocation and e.extra_fields.device.type == "cpu":
                allocs.append((e.start_time_ns, e.extra_fields.alloc_size))
            stack.extend(e.children)
    except Exception as e:  # pragma: no cover - the private event API changed
        return f"not measured: profiler memory events unavailable ({type(e).__name__})"
    if not allocs:  # pragma: no cover
        return "not measured: the profiler recorded no allocation"
    allocs.sort(key=lambda a: a[0])
    cur = peak = 0
    for _, size in allocs:
        cur += size
        peak = max(peak, cur)
    return int(peak)


def peak_bytes(fn: Callable[[], Any], device: torch.device) -> int | str:
    """Peak tensor memory of ``fn`` above the memory allocated before it: ``torch.cuda.max_memory_allocated`` on CUDA,
    :func:`cpu_peak_bytes` on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    return cpu_peak_bytes(fn)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


OUT_OF_MEMORY = "not measured: out of memory"


def _after_oom(device: torch.device, reset: Callable[[], Any]) -> None:
    reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def time_and_memory(fn: Callable[[], Any], device: torch.device, repeats: int,
                    reset: Callable[[], Any] | None = None) -> tuple[float | str, int | str]:
    """(median wall time over ``repeats`` runs, peak memory of one run). The memory run comes first and doubles as
    the warm-up, so the timed runs do not include first-call costs. ``reset`` runs before every run, outside the
    measurement (dropping the previous run's gradients there keeps their release out of the memory accounting).
    A step that runs out of memory gives :data:`OUT_OF_MEMORY` for both."""
    reset = reset or (lambda: None)
    reset()
    try:
        mem = peak_bytes(fn, device)
    except (torch.cuda.OutOfMemoryError, MemoryError):
        _after_oom(device, reset)
        return OUT_OF_MEMORY, OUT_OF_MEMORY
    except RuntimeError as e:  # the CPU allocator reports failure as a RuntimeError
        if "can't allocate memory" not in str(e) and "out of memory" not in str(e):
            raise
        _after_oom(device, reset)
        return OUT_OF_MEMORY, OUT_OF_MEMORY
    times = []
    for _ in range(repeats):
        reset()
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    reset()
    return statistics.median(times), mem


Step = Callable[[], None]


def _d_step_fn(D: nn.Module, real: torch.Tensor, fake: torch.Tensor, r1_weight: float,
               call: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> tuple[Step, Step]:
    """One discriminator step as the trainer does it: D(real), D(fake), loss, R1 on real, backward; and the reset
    that drops its parameter gradients."""
    from nfd.models.losses import d_loss, r1_penalty

    def step() -> None:
        x = real.detach().requires_grad_(True)
        real_logits = call(D, x)
        fake_logits = call(D, fake)
        total = d_loss(real_logits, fake_logits) + r1_weight * r1_penalty(real_logits, x, create_graph=True)
        total.backward()

    def reset() -> None:
        D.zero_grad(set_to_none=True)

    return step, reset


def _build_plan(D: nn.Module, coords: torch.Tensor) -> Any:
    """The discriminator's neighbour plan for ``coords``, built afresh (not from the process-wide cache)."""
    try:
        from nfd.models.neighbours import build_plan

        return build_plan(coords, D.level_specs, D.p, D.keep_fraction)  # type: ignore[attr-defined]
    except AttributeError:  # another discriminator layout: go through its public interface
        return D.plan(coords)  # type: ignore[operator]


def _resolutions(d: int, max_points: int, levels: int, min_resolution: int | None) -> list[int]:
    # the PointConv discriminator needs >= 2 points after its last pooling (batchnorm of the final weight MLP),
    # the CNN >= 1 position: both hold from 2^(levels + 1) per axis
    smallest = 2 ** (levels + 1)
    lo = max(min_resolution if min_resolution is not None else (16 if d == 2 else 8), smallest)
    out = []
    r = 1
    while r < lo:
        r *= 2
    while r ** d <= max_points:
        out.append(r)
        r *= 2
    return out


def t2_model_preset(preset: str) -> str:
    """The config preset whose discriminator T2 measures for a pipeline or config preset name."""
    if preset in T2_MODEL:
        return T2_MODEL[preset]
    if preset in PRESETS:
        return preset
    raise NfdError(f"unknown preset '{preset}' (known: {', '.join([*PIPELINE_PRESETS, *sorted(PRESETS)])})")


def _mib(v: int | str) -> float | str:
    return v / 2 ** 20 if isinstance(v, int) else v


def _ms(v: float | str) -> float | str:
    return 1e3 * v if isinstance(v, float) else v


def _fmt_ms(v: float | str) -> str:
    return f"{1e3 * v:.1f} ms" if isinstance(v, float) else str(v)


def _ratio(cur: Any, prev: Any) -> float | None:
    if isinstance(cur, int | float) and isinstance(prev, int | float) and prev > 0:
        return float(cur) / float(prev)
    return None


def table_t2(preset: str, max_points: int = 65536, repeats: int = 3, batch: int | None = None, k_points: int = 4096,
             min_resolution: int | None = None, device: str = "auto", model: str | None = None, seed: int = 0,
             log: Callable[[str], None] | None = None) -> Table:
    """T2: one discriminator step at growing grid resolutions, for the CNN, PointConv on all points and PointConv on
    ``k_points`` points sampled from the grid. See the table's notes for the protocol."""
    from nfd.models.discriminators import build_discriminator
    from nfd.grid import grid_coords
    from nfd.models.build import pick_device

    batch = batch if batch is not None else T2_BATCH.get(preset, 1)
    if max_points < 1 or repeats < 1 or batch < 1 or k_points < 1:
        raise NfdError("--max-points, --repeats, --batch and --k-points must be >= 1")
    name = model or t2_model_preset(preset)
    if name not in PRESETS:
        raise NfdError(f"unknown config preset '{name}' for --model (known: {', '.join(sorted(PRESETS))})")
    cfg = config_preset(name)
    dataset, d, k = PRESET_DATA[name][0]
    dcfg = cfg.discriminator
    if dcfg.kind != "pointconv":
        dcfg.kind = "pointconv"
    levels = len(dcfg.channels)
    res_list = _resolutions(d, max_points, levels, min_resolution)
    if not res_list:
        raise NfdError(f"--max-points {max_points} is below the smallest grid ({2 ** (levels + 1)}^{d} points for a "
                       f"{levels}-level discriminator)")
    dev = pick_device(device)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pc = build_discriminator(d, k, dcfg).to(dev).train()
        cnn = ConvDiscriminator(d, k, dcfg).to(dev).train()
    r1 = cfg.train.r1_weight
    say = log or (lambda s: None)
    rows: list[dict[str, Any]] = []
    prev: dict[str, Any] = {}
    for res in res_list:
        n = res ** d
        coords = grid_coords(res, d)
        real = (torch.rand(batch, n, k, generator=gen) * 2 - 1).to(dev)
        fake = (torch.rand(batch, n, k, generator=gen) * 2 - 1).to(dev)
        row: dict[str, Any] = {"grid": "x".join([str(res)] * d), "points": n}

        # CNN on the full grid
        step, reset = _d_step_fn(cnn, _grid_features(real, res, d), _grid_features(fake, res, d), r1,
                                 lambda D, x: D(x))
        t, mem = time_and_memory(step, dev, repeats, reset)
        row.update(cnn_time_ms=_ms(t), cnn_peak_mib=_mib(mem), cnn_mem_ratio=_ratio(mem, prev.get("cnn")))
        prev["cnn"] = mem
        say(f"t2: {row['grid']} cnn {_fmt_ms(t)}")

        # PointConv on every point of the grid (the plan is built once per coordinate set, as for a fixed grid)
        t0 = time.perf_counter()
        plan = _build_plan(pc, coords)
        plan_s = time.perf_counter() - t0
        plan = plan.to(dev) if hasattr(plan, "to") else plan
        c_dev = coords.to(dev)
        step, reset = _d_step_fn(pc, real, fake, r1, lambda D, x, c=c_dev, p=plan: D(c, x, plan=p))
        t, mem = time_and_memory(step, dev, repeats, reset)
        row.update(pointconv_all_time_ms=_ms(t), pointconv_all_peak_mib=_mib(mem),
                   pointconv_all_mem_ratio=_ratio(mem, prev.get("all")), pointconv_all_plan_s=plan_s)
        prev["all"] = mem
        say(f"t2: {row['grid']} pointconv all {_fmt_ms(t)} (plan {plan_s:.2f} s)")
        del plan

        # PointConv on K points sampled uniformly without replacement from the grid (fresh subsets in training);
        # with K >= N the subset is the whole grid in the same order, i.e. the measurement above
        kk = min(k_points, n)
        if kk < n:
            idx = torch.randperm(n, generator=gen)[:kk].sort().values
            sub = coords[idx]
            t0 = time.perf_counter()
            plan_k = _build_plan(pc, sub)
            plan_k_s = time.perf_counter() - t0
            plan_k = plan_k.to(dev) if hasattr(plan_k, "to") else plan_k
            s_dev, i_dev = sub.to(dev), idx.to(dev)
            step, reset = _d_step_fn(pc, real[:, i_dev], fake[:, i_dev], r1,
                                     lambda D, x, c=s_dev, p=plan_k: D(c, x, plan=p))
            t, mem = time_and_memory(step, dev, repeats, reset)
            del plan_k
        else:
            plan_k_s = plan_s
        row.update(pointconv_k_points=kk, pointconv_k_time_ms=_ms(t), pointconv_k_peak_mib=_mib(mem),
                   pointconv_k_mem_ratio=_ratio(mem, prev.get("k")), pointconv_k_plan_s=plan_k_s)
        prev["k"] = mem
        say(f"t2: {row['grid']} pointconv K={kk} {_fmt_ms(t)} (plan {plan_k_s:.2f} s)")
        rows.append(row)
        del real, fake

    columns = ["grid", "points", "cnn_time_ms", "cnn_peak_mib", "cnn_mem_ratio",
               "pointconv_all_time_ms", "pointconv_all_peak_mib", "pointconv_all_mem_ratio", "pointconv_all_plan_s",
               "pointconv_k_points", "pointconv_k_time_ms", "pointconv_k_peak_mib", "pointconv_k_mem_ratio",
               "pointconv_k_plan_s"]
    n_cnn = sum(p.numel() for p in cnn.parameters())
    n_pc = sum(p.numel() for p in pc.parameters())
    expect = 2 ** d
    mem_how = ("torch.cuda.max_memory_allocated" if dev.type == "cuda" else
               "the PyTorch profiler's CPU allocation events (running sum of allocations and frees, maximum)")
    notes = [
        f"One discriminator step on a batch of {batch} real and {batch} fake sets (uniform random features in "
        f"[-1, 1], k={k}): D(real), D(fake), non-saturating loss, R1 penalty (weight {r1:g}) on the real logits "
        "via torch.autograd.grad(create_graph=True), backward to the parameters; no optimizer update.",
        f"Discriminators: the PointConv discriminator of config preset '{name}' (channels {dcfg.channels}, "
        f"{pc.k if hasattr(pc, 'k') else 3 ** d} neighbours, weight MLP {dcfg.weight_hidden}; {n_pc:,} parameters) "
        f"and, for comparison, a DCGAN-like CNN with the same depth and channels (conv 4x4 stride 2 + batchnorm + "
        f"LeakyReLU per level, a 3-wide conv to one channel averaged over positions; {n_cnn:,} parameters) on the "
        f"same {d}D grids over [-1, 1]^{d}.",
        f"time_ms: median wall time over {repeats} run(s) on {dev.type} ({torch.get_num_threads()} threads), after "
        "one untimed run. peak_mib: peak tensor memory of one step above what was allocated before it (inputs, "
        f"weights and neighbour plans excluded), from {mem_how}. Memory is deterministic; wall times depend on the "
        "machine and on whatever else runs on it.",
        f"mem_ratio: peak memory divided by that of the previous row, i.e. at 2x the resolution ({expect}x the "
        f"points). The paper (Sec. 3.4): a CNN at 2x the resolution needs {expect}x the memory; so does PointConv on "
        "every point, while PointConv on K sampled points costs the same at every resolution. Each peak also holds a "
        "part that does not grow with the grid (the weight gradients and the buffers of their double backward: the "
        f"CNN's weights alone are {4 * n_cnn / 2 ** 20:.2f} MiB in float32), so a ratio reaches {expect} only once "
        "the activations dominate, at larger grids or batches.",
        f"pointconv_k: the same PointConv discriminator on K={k_points} points drawn uniformly without replacement "
        "from the grid, which is how training with train.num_points stays resolution independent (Sec. 3.2); on "
        "grids of at most K points it is the all-points measurement.",
        "plan_s: time to build the neighbour plan (kNN and farthest-point query selection, on the CPU), not part of "
        "the step time: for a fixed full grid it is built once and cached, with a fresh K-subset per training step "
        "it is paid every step (and does not grow with the grid).",
    ]
    title = (f"Resolution independence: one discriminator step ({dataset}-like {d}D grids, k={k}) as the number of "
             f"points grows (preset {preset}).")
    return Table("t2", title, columns, rows, notes)


# =====================================================================================================================
# T3: parameter counts


def _count(module: nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def function_weights_formula(in_dim: int, hidden: Sequence[int], out_dim: int) -> int:
    """Weights plus biases of an MLP ``in_dim -> hidden... -> out_dim``: sum over layers of (in + 1) * out."""
    widths = [in_dim, *hidden, out_dim]
    return sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:]))


def _build_models(cfg: Config, d: int, k: int) -> tuple[nn.Module, nn.Module]:
    from nfd.models.discriminators import build_discriminator
    from nfd.models.hypernetwork import FunctionDistribution

    try:  # counting needs shapes only: build on the meta device (no memory, no initialisation cost)
        with torch.device("meta"):
            return FunctionDistribution(d, k, cfg.generator), build_discriminator(d, k, cfg.discriminator)
    except Exception:  # pragma: no cover - an op without a meta kernel: build for real, without touching the RNG
        with torch.random.fork_rng(devices=[]):
            return FunctionDistribution(d, k, cfg.generator), build_discriminator(d, k, cfg.discriminator)


def table_t3(preset: str) -> Table:
    """T3: parameters of g_phi and D and the size of f_theta, for every config preset and the data it trains on."""
    rows = []
    for name in PRESETS:
        cfg = config_preset(name)
        enc = cfg.generator.encoding
        for dataset, d, k in PRESET_DATA[name]:
            G, D = _build_models(cfg, d, k)
            in_dim = 2 * enc.num_frequencies if enc.num_frequencies else d
            shape = G.shape  # type: ignore[attr-defined]
            rows.append({
                "config_preset": name, "dataset": dataset, "d": d, "k": k,
                "encoding": f"RFF m={enc.num_frequencies} sigma={enc.scale:g}" if enc.num_frequencies else "none",
                "function_mlp": "-".join(map(str, [shape.in_dim, *shape.hidden, shape.out_dim])),
                "function_weights": int(shape.num_weights),
                "function_weights_formula": function_weights_formula(in_dim, cfg.generator.hidden, k),
                "hypernetwork": "-".join(map(str, [cfg.generator.latent_dim, *cfg.generator.hyper_hidden,
                                                   shape.num_weights])),
                "g_params": _count(G),
                "d_kind": cfg.discriminator.kind,
                "d_channels": " ".join(cfg.discriminator.layers) or "-".join(map(str, cfg.discriminator.channels)),
                "d_params": _count(D),
            })
    columns = ["config_preset", "dataset", "d", "k", "encoding", "function_mlp", "function_weights",
               "function_weights_formula", "hypernetwork", "g_params", "d_kind", "d_channels", "d_params"]
    notes = [
        "function_weights: the size P of one generated function f_theta (weights plus biases of the MLP "
        "function_mlp, counted by nfd.models.function.MLPShape); function_weights_formula: sum over layers of (in + 1) * out "
        "computed independently. Paper settings: 3 x 128 hidden units, RFF input of 2m = 256 for images (CelebA-HQ "
        "k=3: 66,307; MNIST k=1: 66,049) and raw 3D coordinates for the chairs (33,665).",
        "g_params: trainable parameters of the hypernetwork g_phi (latent -> hyper_hidden -> P); the Fourier matrix B "
        "is a fixed buffer, not a parameter. d_params: trainable parameters of the discriminator of the preset "
        "(PointConv: weight MLPs, linear maps and batchnorm).",
        "d = coordinate dimension, k = feature dimension: MNIST d=2 k=1, CelebA-HQ d=2 k=3, chairs d=3 k=1; the "
        "tiny preset trains on both MNIST and chairs and is listed for each.",
    ]
    return Table("t3", f"Parameter counts of every config preset (requested for preset {preset}).", columns, rows,
                 notes)


# =====================================================================================================================
# T4: Lipschitz constant of random Fourier features


def jacobian_norms(enc: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Largest singular value of the Jacobian of ``enc`` at each point of ``x [N, d]``, by autograd.

    Points are independent, so with y = enc(x) ``[N, e]`` and a dummy cotangent v, g = (dy/dx)^T v is ``[N, d]``
    and differentiating g[:, j] with respect to v gives column j of every Jacobian at once: d + 1 backward passes
    for all N Jacobians ``[N, e, d]``.
    """
    x = x.detach().requires_grad_(True)
    y = enc(x)
    v = torch.zeros_like(y, requires_grad=True)
    (g,) = torch.autograd.grad(y, x, v, create_graph=True)
    cols = [torch.autograd.grad(g[:, j].sum(), v, retain_graph=True)[0] for j in range(x.shape[1])]
    J = torch.stack(cols, dim=-1)  # [N, e, d]
    return torch.linalg.matrix_norm(J, ord=2)


def _t4_row(name: str, component: str, enc: nn.Module | None, enc_cfg: EncodingConfig, in_dim: int, seed: int,
            num_points: int) -> dict[str, Any]:
    row: dict[str, Any] = {"config_preset": name, "component": component, "in_dim": in_dim,
                           "m": enc_cfg.num_frequencies, "sigma": float(enc_cfg.scale), "seed": seed}
    if enc is None or enc_cfg.num_frequencies == 0:
        for c in ("norm_B", "two_pi_norm_B", "bound", "paper_printed", "measured_max_grad", "measured_over_bound",
                  "within_bound"):
            row[c] = "no encoding"
        return row
    enc = enc.double()
    norm_b = enc.spectral_norm()  # type: ignore[operator]
    bound = enc.lipschitz_bound()  # type: ignore[operator]
    x = torch.rand(num_points, in_dim, generator=torch.Generator().manual_seed(seed + 1),
                   dtype=torch.float64) * 2 - 1
    measured = float(jacobian_norms(enc, x).max())
    row.update(norm_B=norm_b, two_pi_norm_B=2 * math.pi * norm_b, bound=bound,
               paper_printed=math.sqrt(8 * math.pi) * norm_b, measured_max_grad=measured,
               measured_over_bound=measured / bound, within_bound=measured <= bound)
    return row


def set_discriminator_encodings(cfg: Config, d: int, k: int) -> tuple[nn.Module, nn.Module]:
    """gamma_x and gamma_y of the set discriminator exactly as a training run draws them: the trainer seeds the
    global RNG with train.seed, builds the generator, then the discriminator (done here inside ``fork_rng``)."""
    from nfd.models.discriminators import SetDiscriminator
    from nfd.models.hypernetwork import FunctionDistribution

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        FunctionDistribution(d, k, cfg.generator)
        D = SetDiscriminator(d, k, cfg.discriminator)
    return D.gamma_x, D.gamma_y


def table_t4(preset: str, num_points: int = 4096) -> Table:
    """T4: ||B||, the Lipschitz bound 2 sqrt(2) pi ||B|| and the measured largest Jacobian norm of gamma."""
    from nfd.models.encoding import FourierFeatures

    rows = []
    for name in PRESETS:
        cfg = config_preset(name)
        seed = cfg.train.seed
        _, d, k = PRESET_DATA[name][0]
        ec = cfg.generator.encoding
        enc = (FourierFeatures(d, ec.num_frequencies, ec.scale, generator=torch.Generator().manual_seed(seed))
               if ec.num_frequencies else None)
        rows.append(_t4_row(name, "generator gamma(x)", enc, ec, d, seed, num_points))
        if name in SET_DISCRIMINATOR_PRESETS:
            dc = cfg.discriminator
            sc = EncodingConfig(num_frequencies=dc.set_num_frequencies, scale=dc.set_scale)
            gx, gy = set_discriminator_encodings(cfg, d, k)
            rows.append(_t4_row(name, "set-D gamma_x (coordinates)", gx, sc, d, seed, num_points))
            rows.append(_t4_row(name, "set-D gamma_y (features)", gy, sc, k, seed, num_points))
    columns = ["config_preset", "component", "in_dim", "m", "sigma", "seed", "norm_B", "two_pi_norm_B", "bound",
               "paper_printed", "measured_max_grad", "measured_over_bound", "within_bound"]
    notes = [
        "gamma(x) = [cos 2 pi B x, sin 2 pi B x] with B ~ N(0, sigma^2) of shape [m, in_dim], drawn by "
        "nfd.models.encoding.FourierFeatures from a torch.Generator seeded with the preset's train.seed (the trainer seeds "
        "the global RNG with it before building the model, so the generator's B is drawn the same way). norm_B = "
        "||B||, the largest singular value.",
        "bound = 2 sqrt(2) pi ||B|| (App. B.3.2, Prop. 2 / App. C.2). The paper prints sqrt(8 pi) ||B||, but its own "
        "last step sqrt((2 pi ||B||)^2 + (2 pi ||B||)^2) equals sqrt(8 pi^2) ||B|| = 2 sqrt(2) pi ||B||: the square "
        "on pi was lost. paper_printed shows the printed value, which lies below the measured gradient norm and so "
        "is not a bound.",
        "measured_max_grad: the largest spectral norm of the Jacobian of gamma (autograd in float64, see "
        f"nfd.report.tables.jacobian_norms) over {num_points} points uniform in [-1, 1]^in_dim. It equals 2 pi ||B|| at "
        "every x (the Jacobian's Gram matrix is 4 pi^2 B^T B since sin^2 + cos^2 = 1), so measured/bound = "
        "1/sqrt(2) = 0.707: the bound holds and is loose by sqrt(2).",
        "The chairs presets feed raw coordinates to f_theta: no encoding. The set-D rows are the encodings gamma_x "
        "(coordinates) and gamma_y (features) of the App. B.2 set-discriminator baseline (experiment mnist_setdisc), "
        "whose Lipschitz constant App. B.3 is about, drawn exactly as a run with that seed draws them (global RNG "
        "seeded with train.seed, generator built first, then the discriminator).",
    ]
    return Table("t4", f"Lipschitz constant of the random Fourier features (requested for preset {preset}).",
                 columns, rows, notes)


# =====================================================================================================================
# CLI


def build_table(args: argparse.Namespace) -> Table:
    """The table ``args.table`` asks for (the CLI's arguments as a namespace)."""
    preset = args.preset
    if preset not in PIPELINE_PRESETS and preset not in PRESETS:
        raise NfdError(f"unknown preset '{preset}' (known: {', '.join([*PIPELINE_PRESETS, *sorted(PRESETS)])})")
    if args.table != "t1" and args.input:
        raise NfdError(f"--input is read by t1 only, not by {args.table}")
    if args.table == "t1":
        return table_t1(preset, args.input or [])
    if args.table == "t2":
        log = None if args.quiet else (lambda s: print(s, flush=True))
        return table_t2(preset, max_points=args.max_points, repeats=args.repeats, batch=args.batch,
                        k_points=args.k_points, min_resolution=args.min_resolution, device=args.device,
                        model=args.model, log=log)
    if args.table == "t3":
        return table_t3(preset)
    return table_t4(preset, num_points=args.t4_points)


def run_table(args: argparse.Namespace) -> int:
    table = build_table(args)
    out, md = write_table(table, args.out)
    print(f"nfd table: wrote {out} and {md} ({len(table.rows)} rows)")
    return 0


def _positive(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{v}'") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``table`` verb to the ``nfd`` parser."""
    p = sub.add_parser(
        "table",
        help=verb_help(__name__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Write one table as FILE.csv and its Markdown twin FILE.md (same stem), both atomically. Each ends with\n"
            "its title and notes on the protocol (CSV: '#' comment rows, read with pandas.read_csv(comment='#')).\n\n"
            "  t1  sample quality: the evaluation records given with --input (every numeric field, 'measured')\n"
            "      beside the published anchors ('published': CelebA-HQ 64^2 FID of GASP 13.5, DPF 13.2, GEM 30.4,\n"
            "      Functa 40.4; none for 3D-R2N2 32^3 chairs or MNIST)\n"
            "  t2  resolution independence: time and peak memory of one discriminator step with R1 as the grid\n"
            "      grows up to --max-points, for PointConv on all points, PointConv on --k-points sampled points,\n"
            "      and a DCGAN-like CNN of the same depth and channels; memory ratio at 2x the resolution\n"
            "  t3  parameter counts of every config preset: hypernetwork, discriminator, generated function\n"
            "  t4  App. B.3: ||B||, the Lipschitz bound 2 sqrt(2) pi ||B|| of the Fourier features, and the largest\n"
            "      Jacobian norm of gamma measured with autograd\n\n"
            "--preset is a pipeline preset of params.yaml (tiny, demo, paper) or a config preset\n"
            f"({', '.join(PRESETS)}).\n"
            "T2 measures the discriminator of config preset "
            + ", ".join(f"{k} -> {v}" for k, v in T2_MODEL.items()) + " (or --model).\n\n"
            "examples:\n"
            "  nfd table t1 --out results/tables/t1.csv --preset demo --input results/eval/mnist.json\n"
            "  nfd table t2 --out results/tables/t2.csv --preset demo --max-points 65536 --repeats 3\n"
            "  nfd table t3 --out results/tables/t3.csv --preset demo"
        ),
    )
    p.add_argument("table", choices=TABLES, help="which table: t1, t2, t3 or t4")
    p.add_argument("--out", required=True, metavar="FILE.csv", help="CSV to write; FILE.md is written beside it")
    p.add_argument("--preset", default="demo", metavar="NAME",
                   help="pipeline preset (tiny, demo, paper) or config preset (default: demo)")
    p.add_argument("--input", action="extend", nargs="+", default=[], metavar="FILE",
                   help="t1: evaluation JSON files from 'nfd evaluate' (repeatable); the file stem names the "
                        "experiment")
    p.add_argument("--max-points", type=_positive, default=65536, metavar="N",
                   help="t2: largest grid, in points (default: 65536 = 256^2)")
    p.add_argument("--repeats", type=_positive, default=3, metavar="R",
                   help="t2: timed runs per measurement, the median is reported (default: 3)")
    p.add_argument("--batch", type=_positive, default=None, metavar="B",
                   help="t2: real and fake sets per discriminator step (default: "
                        + ", ".join(f"{k} {v}" for k, v in T2_BATCH.items()) + ", 1 for a config preset)")
    p.add_argument("--k-points", type=_positive, default=4096, metavar="K",
                   help="t2: points sampled from the grid for the resolution-independent column (default: 4096)")
    p.add_argument("--min-resolution", type=_positive, default=None, metavar="R",
                   help="t2: smallest grid side (default: 16 in 2D, 8 in 3D; at least 2^(levels + 1))")
    p.add_argument("--model", default=None, metavar="PRESET",
                   help="t2: config preset whose discriminator to measure (default: from --preset, see above)")
    p.add_argument("--device", default="auto", help="t2: auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--t4-points", type=_positive, default=4096, metavar="N",
                   help="t4: random points at which the Jacobian norm of gamma is measured (default: 4096)")
    p.add_argument("--quiet", action="store_true", help="t2: no progress lines")
    p.set_defaults(func=run_table)
