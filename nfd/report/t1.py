"""T1 sample quality: the evaluation records of ``nfd evaluate`` beside the published anchors."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from nfd.errors import NfdError
from nfd.report.table import Table, _csv_cell, _one_line

PUBLISHED_T1: list[dict[str, Any]] = [
    {
        "model": "GASP (this paper's model)",
        "dataset": "CelebA-HQ",
        "resolution": "64x64",
        "metric": "FID",
        "value": 13.5,
        "notes": "published Inception FID",
    },
    {
        "model": "Diffusion Probabilistic Fields",
        "dataset": "CelebA-HQ",
        "resolution": "64x64",
        "metric": "FID",
        "value": 13.2,
        "notes": "published Inception FID",
    },
    {
        "model": "GEM",
        "dataset": "CelebA-HQ",
        "resolution": "64x64",
        "metric": "FID",
        "value": 30.4,
        "notes": "published Inception FID",
    },
    {
        "model": "Functa",
        "dataset": "CelebA-HQ",
        "resolution": "64x64",
        "metric": "FID",
        "value": 40.4,
        "notes": "published Inception FID",
    },
    {
        "model": "GASP (this paper's model)",
        "dataset": "ShapeNet chairs (3D-R2N2 voxels)",
        "resolution": "32^3",
        "metric": "COV / MMD / 1-NNA",
        "value": "no published number",
        "notes": "the paper shows chair samples (Figs. 9, 10, 18) but reports no metric for 3D-R2N2 32^3 chairs",
    },
    {
        "model": "GASP (this paper's model)",
        "dataset": "MNIST",
        "resolution": "28x28",
        "metric": "any",
        "value": "no published number",
        "notes": "the paper shows MNIST samples only (Figs. 12-14) and calls MNIST not a meaningful benchmark "
        "(Sec. 3.6)",
    },
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
        if not (
            isinstance(r, dict)
            and isinstance(r.get("metric"), str)
            and any(k in r for k in ("results", "value", "values"))
        ):
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
    base = {
        "source": "measured",
        "preset": preset,
        "experiment": exp,
        "model": f"{EXPERIMENT_MODELS.get(exp, 'NFD')} [{exp}]",
        "dataset": _dataset(record),
        "resolution": _resolution(record),
    }
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
        "source=published: numbers reported in the literature (values as tabulated in Table 1 of Zhuang et al., "
        "Diffusion Probabilistic Fields, ICLR 2023: GASP, i.e. this "
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
    return Table(
        "t1", f"Sample quality: published anchors and measured metrics (preset {preset}).", columns, rows, notes
    )
