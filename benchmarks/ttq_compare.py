"""Time to quality, nfd against the authors' code: the ratio of the times to reach the same classifier FD.

Reads two curves files in nfd's layout (``run, step, train_seconds, classifier_fd, ...``): nfd's from ``nfd sweep
--budget``, the authors' from ``benchmarks/reference_ttq.py``. The target FDs are those the slower implementation
reaches: each of its runs' best FD within the budget (the slower one is the one whose best run is worse). For each
target, every run's time is that of its first kept snapshot at or below it; a run that never gets there counts as
not reaching it. The ratio is the slower implementation's median time over the faster one's, over the runs that
reach the target (medians over the runs, not over the snapshots). A snapshot's time bounds the true crossing from
above, so the ratio is flagged as a lower bound (">=") when the faster side's time is a run's first snapshot (it may
have crossed sooner) or when a run of the slower side never reached the target within its budget.

    python benchmarks/ttq_compare.py --nfd NFD_CURVES.tsv --reference REF_CURVES.tsv --out-md OUT.md [--out-png P]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import pandas as pd


def load_curves(path: Path) -> dict[str, pd.DataFrame]:
    """Each run's (train_seconds, classifier_fd) rows, sorted by time; a clear error names a bad file."""
    try:
        df = pd.read_csv(path, sep="\t")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise SystemExit(f"{path}: cannot read curves ({e})") from None
    missing = {"run", "train_seconds", "classifier_fd"} - set(df.columns)
    if missing:
        raise SystemExit(f"{path}: not a curves file (missing columns: {', '.join(sorted(missing))})")
    return {run: g.sort_values("train_seconds").reset_index(drop=True) for run, g in df.groupby("run")}


def first_time_at_or_below(curve: pd.DataFrame, fd: float) -> tuple[float | None, bool]:
    """(seconds of the first snapshot with FD <= ``fd`` or None, whether that is the run's first snapshot)."""
    hits = curve.index[curve["classifier_fd"] <= fd]
    if len(hits) == 0:
        return None, False
    i = int(hits[0])
    return float(curve.loc[i, "train_seconds"]), i == 0


def compare(nfd: dict[str, pd.DataFrame], ref: dict[str, pd.DataFrame]) -> list[dict]:
    """One row per target FD: each side's per-run times, medians and the ratio (slower / faster)."""
    best = {
        name: {r: float(c["classifier_fd"].min()) for r, c in runs.items()}
        for name, runs in (("nfd", nfd), ("authors", ref))
    }
    slower = "authors" if min(best["authors"].values()) > min(best["nfd"].values()) else "nfd"
    faster = "nfd" if slower == "authors" else "authors"
    sides = {"nfd": nfd, "authors": ref}
    rows = []
    for run, target in sorted(best[slower].items(), key=lambda kv: -kv[1]):
        row: dict = {"target_fd": target, "from": f"{slower} {run}'s best", "slower": slower}
        for name in ("nfd", "authors"):
            times = {r: first_time_at_or_below(c, target) for r, c in sides[name].items()}
            row[name] = times
            reached = [t for t, _ in times.values() if t is not None]
            row[f"{name}_median"] = statistics.median(reached) if reached else None
            row[f"{name}_reached"] = f"{len(reached)}/{len(times)}"
        a, b = row[f"{slower}_median"], row[f"{faster}_median"]
        row["ratio"] = a / b if a is not None and b else None
        unreached = any(t is None for t, _ in row[slower].values())
        row["lower_bound"] = unreached or any(first for t, first in row[faster].values() if t is not None)
        rows.append(row)
    return rows


def write_md(rows: list[dict], nfd_path: Path, ref_path: Path, out: Path) -> None:
    def times(d: dict) -> str:
        return ", ".join(
            f"{r} {'-' if t is None else f'{t:.0f} s'}{'*' if first else ''}" for r, (t, first) in d.items()
        )

    lines = [
        "# Time to quality: nfd against the authors' code",
        "",
        f"- nfd curves: {nfd_path}",
        f"- authors' curves: {ref_path}",
        "- time of a run: its first kept snapshot at or below the target FD (an upper bound of the crossing; * = the "
        "run's first snapshot, so the crossing may be earlier and the ratio is a lower bound)",
        "",
        "| target FD | from | nfd runs | authors' runs | nfd median s | authors' median s | ratio (slower / faster) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"{'>= ' if r['lower_bound'] else ''}{r['ratio']:.1f}x"
        med = {k: "-" if r[f"{k}_median"] is None else f"{r[f'{k}_median']:.0f}" for k in ("nfd", "authors")}
        lines.append(
            f"| {r['target_fd']:.1f} | {r['from']} | {times(r['nfd'])} ({r['nfd_reached']}) | "
            f"{times(r['authors'])} ({r['authors_reached']}) | {med['nfd']} | {med['authors']} | {ratio} |"
        )
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out)


def plot(nfd: dict[str, pd.DataFrame], ref: dict[str, pd.DataFrame], rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, runs, colour in (("nfd", nfd, "tab:blue"), ("authors", ref, "tab:orange")):
        for run, c in runs.items():
            ax.plot(c["train_seconds"], c["classifier_fd"], marker=".", color=colour, alpha=0.8, label=f"{name} {run}")
    for r in rows:
        ax.axhline(r["target_fd"], color="grey", lw=0.6, ls="--")
    ax.set(xlabel="training seconds", ylabel="classifier FD (lower is better)", yscale="log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nfd", type=Path, required=True, help="nfd's curves.tsv (nfd sweep --budget)")
    p.add_argument("--reference", type=Path, required=True, help="the authors' curves.tsv (reference_ttq.py)")
    p.add_argument("--out-md", type=Path, required=True, help="Markdown table of the targets and ratios")
    p.add_argument("--out-png", type=Path, default=None, help="plot of both sides' curves against seconds")
    args = p.parse_args(argv)
    nfd, ref = load_curves(args.nfd), load_curves(args.reference)
    rows = compare(nfd, ref)
    write_md(rows, args.nfd, args.reference, args.out_md)
    if args.out_png:
        plot(nfd, ref, rows, args.out_png)
    print(args.out_md.read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
