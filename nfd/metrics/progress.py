"""Sample quality over training: the metric of a run's data at each generator snapshot, as a TSV ``dvc plots`` draws.

The snapshots are those the trainer keeps every ``train.keep_every`` steps (``RUN/snapshots/step_*.pt``) plus the final
``RUN/model.pt``. Every snapshot is sampled with the same latent seed, so the curve shows the model changing, not the
latents.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from nfd.errors import NfdError
from nfd.io import atomic_path
from nfd.training.loss_log import format_value

COLUMNS = {
    "classifier_fd": ["classifier_fd", "confident_share", "class_entropy"],
    "shapes3d": ["cov", "mmd", "1nna", "failure_rate"],
}
"""The TSV columns (besides ``step``, ``train_seconds`` and ``seconds``) for each metric, as named in its record's
``results``."""


def snapshot_paths(run: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the snapshots of ``run``, by step (the step is read from the file name)."""
    found = []
    for p in (Path(run) / "snapshots").glob("step_*.pt"):
        m = re.fullmatch(r"step_(\d+)\.pt", p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def evaluate_progress(
    run: str | Path,
    data: str | Path,
    out: str | Path,
    classifier: str | Path | None = None,
    num_samples: int = 500,
    ref_split: str = "test",
    num_ref: int = 0,
    points: int = 2048,
    seed: int = 1,
    jsonl: str | Path | None = None,
    device: str = "auto",
) -> list[dict[str, Any]]:
    """Score every snapshot of ``run`` and write ``out`` (TSV: step, the training's wall-clock seconds at that
    step, the metric's columns, the seconds its scoring took); return the rows."""
    from nfd.metrics.classifier_fd import IMAGE_SHAPE
    from nfd.metrics.data import h5_info
    from nfd.metrics.registry import append_jsonl
    from nfd.metrics.scoring import score_mnist, score_shapes
    from nfd.models.build import pick_device
    from nfd.sampling.sample import latents, load_generator, sample_grid

    run = Path(run)
    info = h5_info(data)
    if info.coord_dim == 2 and info.grid_shape == IMAGE_SHAPE and info.feature_dim == 1:
        metric = "classifier_fd"
        if classifier is None:
            raise NfdError(f"{data}: MNIST data is scored with the classifier; pass --classifier")
    elif info.coord_dim == 3 and info.feature_dim == 1:
        metric = "shapes3d"
    else:
        raise NfdError(
            f"{data}: progress is scored for MNIST (28 x 28 grey) or 3D occupancy data, not grid "
            f"{list(info.grid_shape)} x {info.feature_dim}"
        )
    todo = [path for _, path in snapshot_paths(run)]
    final = run / "model.pt"
    if final.is_file():
        todo.append(final)  # its step is read when it is loaded; skipped if a snapshot has that step
    if not todo:
        raise NfdError(f"{run}: no snapshots (snapshots/step_*.pt) and no model.pt to evaluate")
    dev = pick_device(device)
    res = info.grid_shape[0]
    done: set[int] = set()
    rows: list[dict[str, Any]] = []
    for path in tqdm(todo, desc=f"progress {run.name}", dynamic_ncols=True):
        G, meta = load_generator(path, device=str(dev))
        step = int(meta["step"])
        if step in done:
            continue
        if int(meta["coord_dim"]) != info.coord_dim or int(meta["feature_dim"]) != info.feature_dim:
            raise NfdError(
                f"{path}: a model of {meta['coord_dim']}D data with {meta['feature_dim']} features cannot be "
                f"scored against {data} ({info.coord_dim}D, {info.feature_dim} features)"
            )
        t0 = time.perf_counter()
        z = latents(G, num_samples, seed, dev)
        feats = np.clip(sample_grid(G, z, res, info.coord_dim), -1.0, 1.0)
        context = {"checkpoint": str(path), "step": step, "latent_seed": seed, "num_samples": num_samples}
        if metric == "classifier_fd":
            record = score_mnist(feats, data, classifier, ref_split, context=context)
        else:
            record = score_shapes(feats[..., 0], data, ref_split, num_ref, points, seed=0, context=context)
        if jsonl is not None:
            append_jsonl(jsonl, record)
        results = record["results"]
        trained = meta.get("train_seconds")  # absent in checkpoints written before the field existed
        rows.append(
            {
                "step": step,
                "train_seconds": "" if trained is None else float(trained),
                **{c: results[c] for c in COLUMNS[metric]},
                "seconds": time.perf_counter() - t0,
            }
        )
        done.add(step)
    rows.sort(key=lambda r: r["step"])
    columns = ["step", "train_seconds", *COLUMNS[metric], "seconds"]
    with atomic_path(out) as tmp:
        with open(tmp, "w") as f:
            f.write("\t".join(columns) + "\n")
            for r in rows:
                f.write("\t".join(format_value(r[c]) for c in columns) + "\n")
    print(f"nfd evaluate progress: {len(rows)} snapshots of {run} ({metric}) -> {out}")
    return rows
