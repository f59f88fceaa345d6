"""A table of the reproduction and its two files (CSV with comment rows, Markdown twin), and the presets tables are
made for."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from nfd.errors import NfdError
from nfd.io import atomic_path

PIPELINE_PRESETS = ("tiny", "demo", "paper")
"""Presets of params.yaml; any config preset name (nfd.presets.PRESETS) is accepted as well."""


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

    def frame(self) -> pd.DataFrame:
        """The table as one DataFrame, from which both files are written. Object columns keep every cell's Python
        value (an int stays an int beside a missing cell) until a file formats it."""
        return pd.DataFrame([[r.get(c) for c in self.columns] for r in self.rows], columns=self.columns, dtype=object)


def csv_text(table: Table, frame: pd.DataFrame) -> str:
    """The CSV file: header, data rows, then the title and notes as ``#`` comment rows."""
    lines = [frame.map(_csv_cell).to_csv(index=False, lineterminator="\n")]
    lines.append(f"# Table {table.key.upper()}: {_one_line(table.title)}\n")
    lines += [f"# Note {i}: {_one_line(note)}\n" for i, note in enumerate(table.notes, 1)]
    return "".join(lines)


def markdown_text(table: Table, frame: pd.DataFrame) -> str:
    """The Markdown twin: the title as a caption, the table, the notes as numbered footnotes."""
    cells = frame.map(lambda v: _md_escape(_md_cell(v)))
    lines = [f"**Table {table.key.upper()}.** {_one_line(table.title)}", ""]
    lines.append("| " + " | ".join(_md_escape(str(c)) for c in frame.columns) + " |")
    lines.append("|" + "|".join("---" for _ in frame.columns) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False, name=None)]
    if table.notes:
        lines.append("")
        lines += [f"{i}. {_one_line(n)}" for i, n in enumerate(table.notes, 1)]
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
    frame = table.frame()
    with atomic_path(out) as tmp:
        tmp.write_text(csv_text(table, frame), encoding="utf-8")
    with atomic_path(md) as tmp:
        tmp.write_text(markdown_text(table, frame), encoding="utf-8")
    return out, md


def read_csv_rows(path: str | Path) -> list[dict[str, str]]:
    """Read a table CSV back (comment rows skipped): one dict per data row, values as strings. Only whole lines
    starting with ``#`` are comments (pandas' ``comment="#"`` would also cut a cell that contains one)."""
    lines = [ln for ln in Path(path).read_text(encoding="utf-8").splitlines(keepends=True) if not ln.startswith("#")]
    frame = pd.read_csv(io.StringIO("".join(lines)), dtype=str, keep_default_na=False)
    return frame.to_dict(orient="records")
