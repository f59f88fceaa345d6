"""benchmarks/ttq_compare.py: times to a common FD and their ratio, on curves whose answers are known by hand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "ttq_compare.py"


def _write(path: Path, rows: list[tuple[str, float, float]]) -> Path:
    lines = ["run\tstep\ttrain_seconds\tclassifier_fd"] + [f"{r}\t{i}\t{t}\t{fd}" for i, (r, t, fd) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_ratio_of_times_to_the_slower_sides_best(tmp_path, bench_script):
    """The authors' runs reach best FDs 400 (r0) and 480 (r1). Below 480: nfd at 20 / 40 s (median 30), the
    authors at 600 / 200 s (median 400): 400 / 30, exact (nfd's times are not its first snapshots). Below 400: nfd at
    60 / 80 s (70), the authors at 600 s, r1 never: 600 / 70, a lower bound."""
    nfd = _write(
        tmp_path / "nfd.tsv",
        [("a", 10, 900), ("a", 20, 450), ("a", 60, 390), ("b", 10, 800), ("b", 40, 480), ("b", 80, 300)],
    )
    ref = _write(
        tmp_path / "ref.tsv",
        [("r0", 100, 900), ("r0", 300, 500), ("r0", 600, 400), ("r1", 100, 700), ("r1", 200, 480), ("r1", 600, 520)],
    )
    out = tmp_path / "cmp.md"
    res = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--nfd",
            str(nfd),
            "--reference",
            str(ref),
            "--out-md",
            str(out),
            "--out-png",
            str(tmp_path / "cmp.png"),
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    m = bench_script("ttq_compare")
    rows = m.compare(m.load_curves(nfd), m.load_curves(ref))
    assert [r["target_fd"] for r in rows] == [480.0, 400.0]
    first, second = rows
    assert first["slower"] == "authors" and first["nfd_median"] == 30 and first["authors_median"] == 400
    assert abs(first["ratio"] - 400 / 30) < 1e-12 and not first["lower_bound"]
    assert second["nfd_median"] == 70 and second["authors_median"] == 600 and second["authors_reached"] == "1/2"
    assert abs(second["ratio"] - 600 / 70) < 1e-12 and second["lower_bound"]
    assert "| 480.0 |" in out.read_text() and ">= 8.6x" in out.read_text()
    assert (tmp_path / "cmp.png").stat().st_size > 0


def test_a_file_that_is_not_a_curves_file_is_named(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\n1\t2\n")
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--nfd", str(bad), "--reference", str(bad), "--out-md", str(tmp_path / "o.md")],
        capture_output=True,
        text=True,
    )
    assert res.returncode != 0 and f"{bad}: not a curves file" in res.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "o.md").exists()
