"""Per-step training metrics as a TSV that ``dvc plots`` draws directly (x: step).

The file is append-only while training. On resume the rows after the checkpoint's step (and a torn last line of a
killed run) are dropped by writing the kept rows to a new file and renaming it over the old one, so a kill at any
moment leaves either the old rows or the kept ones, and the file always matches the weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nfd.io import atomic_path


class MetricsLog:
    """Append-only TSV with a fixed header; one row per step, flushed as written."""

    def __init__(self, path: str | Path, columns: list[str], start_step: int = 0) -> None:
        self.path = Path(path)
        self.columns = columns
        kept = kept_rows(self.path, columns, start_step) if start_step > 0 else []
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(line + "\n" for line in ["\t".join(columns), *kept]))
        self._f = self.path.open("a")

    def write(self, row: dict[str, Any]) -> None:
        try:
            self._f.write("\t".join(format_value(row.get(c, "")) for c in self.columns) + "\n")
            self._f.flush()
        except OSError as e:  # name the file: a write() error carries no file name
            raise OSError(e.errno, e.strerror, str(self.path)) from None

    def close(self) -> None:
        try:
            self._f.close()
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(self.path)) from None


def kept_rows(path: Path, columns: list[str], last_step: int) -> list[str]:
    """The complete rows of ``path`` with steps 1..``last_step``, in order (a torn or foreign line is dropped)."""
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    if not lines or lines[0].split("\t") != columns:
        return []
    kept: list[str] = []
    for line in lines[1:]:
        parts = line.split("\t")
        if len(parts) != len(columns):
            continue
        try:
            step = int(parts[0])
        except ValueError:
            continue
        if step == len(kept) + 1 and step <= last_step:
            kept.append(line)
    return kept


def format_value(v: Any) -> str:
    """Floats to 6 significant digits, everything else as str."""
    return f"{v:.6g}" if isinstance(v, float) else str(v)
