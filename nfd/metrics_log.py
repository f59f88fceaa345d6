"""Per-step training metrics as a TSV that ``dvc plots`` draws directly (x: step).

On resume the rows after the checkpoint's step are dropped, so the file always matches the weights.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


class MetricsLog:
    """Append-only TSV with a fixed header; one row per step, flushed as written."""

    def __init__(self, path: str | Path, columns: list[str], start_step: int = 0) -> None:
        self.path = Path(path)
        self.columns = columns
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept: list[str] = []
        if start_step > 0 and self.path.is_file():
            with self.path.open() as f:
                rows = list(csv.DictReader(f, delimiter="\t"))
            kept = ["\t".join(r[c] for c in columns) for r in rows if int(r["step"]) <= start_step]
        self._f = self.path.open("w")
        self._f.write("\t".join(columns) + "\n")
        for line in kept:
            self._f.write(line + "\n")
        self._f.flush()

    def write(self, row: dict[str, Any]) -> None:
        self._f.write("\t".join(format_value(row.get(c, "")) for c in self.columns) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def format_value(v: Any) -> str:
    """Floats to 6 significant digits, everything else as str."""
    return f"{v:.6g}" if isinstance(v, float) else str(v)
