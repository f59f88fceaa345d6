"""Every form of every PointConv level of the presets' discriminators, timed, and the cost model fitted to them.

For each preset, its discriminator on random data of its shape (the full grid, or the preset's point subset) at its
batch size; each level's input is the previous level's output. Each form of each level ('factored', 'weights' and,
for inputs of 16 channels or more, 'grouped') is timed through what the real branch of the D step does: the forward
pass, R1's gradient with respect to the input (``create_graph``) and the backward pass of both; the best of
``--repeat`` calls. The record holds every time, each form's cost terms (``nfd.models.pointconv.form_cost_terms``)
and the form the model chose; ``--fit`` adds the non-negative least-squares weights of those terms (in multiply-add
equivalents, as ``PointConv.COST_WEIGHTS`` holds them) and the time the chosen forms take against the best.

    python benchmarks/bench_pointconv_forms.py --preset celebahq128 --preset mnist [--threads 2] [--fit] [--out F]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

import nfd  # before torch: nfd's runtime tuning (nfd.RUNTIME_ENV) acts only so

if __name__ == "__main__":  # under jemalloc where installed, as the nfd command runs
    nfd.run_under_jemalloc([sys.executable, *sys.argv])

import torch
from scipy.optimize import nnls

from nfd.metrics.registry import write_json
from nfd.models.pointconv import PointConv, avg_pool_points_major, form_cost_terms
from nfd.presets import preset
from nfd.report.bench_step import build_setup, data_shape
from nfd.report.timing import cpu_model

FORMS = ("factored", "weights", "grouped")


def real_branch(conv: PointConv, x: torch.Tensor, level: Any, points_major: bool) -> float:
    """Seconds of one forward + R1-gradient + backward pass of ``conv`` at ``level`` on input ``x``."""
    t0 = time.perf_counter()
    x = x.detach().requires_grad_(True)
    y = conv.forward_shared(x, level.conv_idx, level.conv_offsets, points_major, level.conv_groups)
    loss = (y * torch.randn_like(y)).sum()
    (g,) = torch.autograd.grad(loss, x, create_graph=True)
    (loss + g.pow(2).sum()).backward()
    return time.perf_counter() - t0


def time_levels(name: str, repeat: int) -> list[dict[str, Any]]:
    """One record per level of preset ``name``'s discriminator: shape, groups, times and cost terms per form."""
    cfg = preset(name)
    setup = build_setup(cfg, data_shape(cfg))
    if setup.branches is not None:
        setup.branches.close()  # only the discriminator's levels are timed here
    D, batch = setup.D, setup.batch_size
    coords = setup.all_coords
    if setup.num_points:
        coords = coords[torch.randperm(coords.shape[0], generator=torch.Generator().manual_seed(0))[: setup.num_points]]
    plan = D.plan(coords)
    h, points_major = torch.rand(batch, coords.shape[0], setup.shape.feature_dim) * 2 - 1, False
    rows = []
    for i, (conv, norm, level) in enumerate(zip(D.convs, D.norms, plan.levels)):
        m, k = level.conv_idx.shape
        groups = level.conv_groups()
        forms = [f for f in FORMS if f != "grouped" or conv.in_ch >= PointConv.GROUPED_MIN_IN_CH]
        shape = (batch, m, k, conv.in_ch, conv.out_ch, conv.mid)
        seconds: dict[str, float] = {}
        for form in forms:
            conv.strategy = form
            seconds[form] = min(real_branch(conv, h, level, points_major) for _ in range(repeat))
        conv.strategy = "auto"
        rows.append(
            {
                "preset": name,
                "level": i,
                "batch": batch,
                "queries": m,
                "k": k,
                "in_ch": conv.in_ch,
                "out_ch": conv.out_ch,
                "mid": conv.mid,
                "groups": len(groups.sizes),
                "seconds": seconds,
                "terms": {f: form_cost_terms(f, *shape, len(groups.sizes)) for f in forms},
                "chosen": conv.shared_strategy(batch, m, k, level.conv_groups),
            }
        )
        print(
            f"{name} level {i}: M={m} k={k} Cin={conv.in_ch} Cout={conv.out_ch} offsets={len(groups.sizes)} "
            + " ".join(f"{f} {s:.3f}s" for f, s in seconds.items())
            + f" -> {rows[-1]['chosen']}",
            flush=True,
        )
        with torch.no_grad():
            h = conv.forward_shared(h, level.conv_idx, level.conv_offsets, points_major, level.conv_groups)
            h, points_major = D.act(norm(h.view(-1, h.shape[-1]))).view_as(h), True
            if level.pool_idx is not None:
                h = avg_pool_points_major(h, level.pool_idx)
    return rows


def fit(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Non-negative least-squares weights of the cost terms (relative to the first), and the time the model's
    choices take against the fastest form of each level."""
    pairs = [(r["terms"][f], r["seconds"][f]) for r in rows for f in r["seconds"]]
    x = np.array([t for t, _ in pairs], dtype=float)
    y = np.array([s for _, s in pairs])
    scale = np.where(x.max(axis=0) > 0, x.max(axis=0), 1.0)
    coef = nnls(x / scale, y)[0] / scale
    weights = (coef / coef[0]).tolist() if coef[0] > 0 else coef.tolist()

    def picked(w: np.ndarray) -> float:
        return sum(r["seconds"][min(r["seconds"], key=lambda f: np.dot(r["terms"][f], w))] for r in rows)

    return {
        "weights": weights,
        "seconds_per_unit": coef[0],
        "fitted_choice_seconds": picked(coef),
        "model_choice_seconds": sum(r["seconds"][r["chosen"]] for r in rows),
        "multiply_adds_only_seconds": picked(np.array([1.0, 1.0, 0.0, 0.0, 0.0])),
        "best_seconds": sum(min(r["seconds"].values()) for r in rows),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", action="append", required=True, help="training preset, repeatable")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    ap.add_argument("--repeat", type=int, default=2, help="calls per form, the best kept (default 2)")
    ap.add_argument("--fit", action="store_true", help="fit the cost model's weights to the times")
    ap.add_argument("--out", help="write the JSON record here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [r for name in args.preset for r in time_levels(name, args.repeat)]
    record: dict[str, Any] = {
        "schema": "nfd-bench-pointconv-forms/1",
        "cpu": cpu_model(),
        "threads": args.threads,
        "torch": torch.__version__,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cost_weights": list(PointConv.COST_WEIGHTS),
        "levels": rows,
        "model_choice_seconds": sum(r["seconds"][r["chosen"]] for r in rows),
        "best_seconds": sum(min(r["seconds"].values()) for r in rows),
    }
    if args.fit:
        record["fit"] = fit(rows)
        f = record["fit"]
        print(
            "fitted weights "
            + ", ".join(f"{w:.3g}" for w in f["weights"])
            + f"; chosen forms {f['fitted_choice_seconds']:.2f} s (fitted), {f['model_choice_seconds']:.2f} s "
            f"(current weights), {f['multiply_adds_only_seconds']:.2f} s (multiply-adds only), best "
            f"{f['best_seconds']:.2f} s"
        )
    print(f"model's choices {record['model_choice_seconds']:.2f} s, best forms {record['best_seconds']:.2f} s")
    if args.out:
        write_json(args.out, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
