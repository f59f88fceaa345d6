"""A registry of metric functions and one JSON record per evaluation (one line of a ``.jsonl`` log, as in stylegan3).

A metric is a function registered with ``@register_metric("name")``. It takes keyword inputs and returns a dict::

    {"results": {...},            # the numbers: name -> float | int | list | None
     "protocol": {...},           # how they were obtained: sample counts, points per shape, distance, seeds, ...
     "status": "computed",        # optional; "not computed" when a metric could not run (then "message" says why)
     "message": "..."}            # optional

``evaluate(name, **inputs)`` runs it and wraps the result into a record::

    {"metric": name, "status": ..., "results": ..., "protocol": ..., "inputs": <a description of each input>,
     "context": <caller's extra fields, e.g. file paths>, "total_time": seconds, "timestamp": unix time,
     "time_utc": ISO 8601, "nfd_version": ...}

Records are plain JSON: numpy scalars become Python numbers, and non-finite floats (an MMD of +inf when every sample
failed) become ``null`` with their key path and value listed under ``"nonfinite"``, so strict JSON readers accept them.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nfd import __version__
from nfd.errors import NfdError

BUILTIN_MODULES = ["nfd.metrics.shapes3d", "nfd.metrics.classifier_fd", "nfd.metrics.fid"]
"""Modules whose import registers the built-in metrics; imported on first lookup."""


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric: its name, function and one-line description (the function's first docstring line)."""

    name: str
    fn: Callable[..., Mapping[str, Any]]
    description: str


_METRICS: dict[str, MetricSpec] = {}


def register_metric(name: str) -> Callable[[Callable[..., Mapping[str, Any]]], Callable[..., Mapping[str, Any]]]:
    """Decorator: register ``fn`` under ``name``. Registering a different function under a taken name is an error."""

    def deco(fn: Callable[..., Mapping[str, Any]]) -> Callable[..., Mapping[str, Any]]:
        old = _METRICS.get(name)
        if old is not None and (old.fn.__module__, old.fn.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"metric {name!r} is already registered by {old.fn.__module__}.{old.fn.__qualname__}")
        doc = (fn.__doc__ or "").strip().splitlines()
        _METRICS[name] = MetricSpec(name, fn, doc[0] if doc else "")
        return fn

    return deco


def _load_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def list_metrics() -> list[str]:
    """Names of all registered metrics (built-ins included), sorted."""
    _load_builtins()
    return sorted(_METRICS)


def get_metric(name: str) -> MetricSpec:
    """The registered metric ``name``; an unknown name is an ``NfdError`` listing the known ones."""
    if name not in _METRICS:
        _load_builtins()
    if name not in _METRICS:
        raise NfdError(f"unknown metric {name!r}; known: {', '.join(sorted(_METRICS))}")
    return _METRICS[name]


def describe_input(value: Any) -> Any:
    """A short JSON description of one metric input: arrays by shape and dtype, models by class and size."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.ndarray):
        return {"type": "ndarray", "shape": list(value.shape), "dtype": str(value.dtype)}
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        torch = None
    if torch is not None:
        if isinstance(value, torch.Tensor):
            return {"type": "tensor", "shape": list(value.shape), "dtype": str(value.dtype).removeprefix("torch.")}
        if isinstance(value, torch.nn.Module):
            return {"type": type(value).__name__, "num_parameters": int(sum(p.numel() for p in value.parameters()))}
    if isinstance(value, list | tuple):
        items = list(value)
        if items and all(v is None or isinstance(v, np.ndarray) for v in items):
            sizes = [len(v) for v in items if v is not None]
            return {
                "type": "list[ndarray]",
                "len": len(items),
                "num_none": sum(v is None for v in items),
                "rows": [min(sizes), max(sizes)] if sizes else None,
            }
        if len(items) <= 16:
            return [describe_input(v) for v in items]
        return {"type": type(value).__name__, "len": len(items)}
    if isinstance(value, Mapping):
        return {str(k): describe_input(v) for k, v in value.items()}
    return {"type": type(value).__name__}


def to_json_safe(value: Any, path: str = "", nonfinite: dict[str, str] | None = None) -> Any:
    """Plain JSON data: numpy scalars/arrays to Python, non-finite floats to ``None`` (listed in ``nonfinite``)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        if nonfinite is not None:
            nonfinite[path] = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return None
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_json_safe(v, f"{path}.{k}" if path else str(k), nonfinite) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_safe(v, f"{path}[{i}]", nonfinite) for i, v in enumerate(value)]
    return str(value)


def evaluate(name: str, /, context: Mapping[str, Any] | None = None, **inputs: Any) -> dict[str, Any]:
    """Run metric ``name`` on ``inputs`` and return its record (plain JSON data, see the module docstring).

    ``context`` is not passed to the metric; it is stored as is in the record (file paths, splits, the checkpoint).
    """
    spec = get_metric(name)
    t0 = time.perf_counter()
    out = spec.fn(**inputs)
    total = time.perf_counter() - t0
    if not isinstance(out, Mapping) or "results" not in out:
        raise TypeError(f"metric {name!r} must return a dict with 'results', got {type(out).__name__}")
    now = time.time()
    record: dict[str, Any] = {"metric": name, "status": out.get("status", "computed")}
    if "message" in out:
        record["message"] = out["message"]
    record.update(
        {
            "results": dict(out["results"]),
            "protocol": dict(out.get("protocol", {})),
            "inputs": {k: describe_input(v) for k, v in inputs.items()},
            "context": dict(context or {}),
            "total_time": total,
            "timestamp": now,
            "time_utc": _dt.datetime.fromtimestamp(now, _dt.UTC).isoformat(timespec="seconds"),
            "nfd_version": __version__,
        }
    )
    nonfinite: dict[str, str] = {}
    safe = to_json_safe(record, "", nonfinite)
    if nonfinite:
        safe["nonfinite"] = nonfinite
    return safe


def append_jsonl(path: str | Path, record: Mapping[str, Any]) -> None:
    """Append ``record`` as one JSON line to ``path`` (created with its folder if missing), in a single write.

    The line is built completely before the file is opened and written with one ``os.write`` on an ``O_APPEND``
    descriptor, so a crash cannot leave half a line and concurrent writers do not interleave within a line.
    """
    path = Path(path)
    nonfinite: dict[str, str] = {}
    safe = to_json_safe(dict(record), "", nonfinite)
    if nonfinite:
        safe.setdefault("nonfinite", nonfinite)
    line = (json.dumps(safe, allow_nan=False, sort_keys=False) + "\n").encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as e:
        raise NfdError(f"cannot open metrics log {path}: {e.strerror}") from e
    try:
        written = os.write(fd, line)
        if written != len(line):  # pragma: no cover - regular files write fully
            raise NfdError(f"short write to metrics log {path}")
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: str | Path, record: Mapping[str, Any]) -> None:
    """Write ``record`` as an indented JSON file, atomically (a temporary file renamed onto ``path``)."""
    from nfd.io import atomic_path

    nonfinite: dict[str, str] = {}
    safe = to_json_safe(dict(record), "", nonfinite)
    if nonfinite:
        safe.setdefault("nonfinite", nonfinite)
    text = json.dumps(safe, indent=2, allow_nan=False) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
