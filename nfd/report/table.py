"""A table of the reproduction and its two files (CSV with comment rows, Markdown twin), and the presets tables are
made for."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nfd.errors import NfdError
from nfd.io import atomic_path

PIPELINE_PRESETS = ("tiny", "demo", "paper")
"""Presets of params.yaml; any config preset name (nfd.config.PRESETS) is accepted as well."""


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
