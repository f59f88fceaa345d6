"""Progress bars of the long verbs (``nfd sample``, ``mesh``, ``render``, ``evaluate shapes``), all alike.

A bar goes to stderr, and only to a terminal: in a Snakemake or DVC log, or in captured output, it stays off, so it
never mixes into the lines (or the one-line errors) written there. Library functions take ``progress=False`` by
default; the verbs turn it on unless ``nfd -q`` asked for errors only.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    desc: str,
    unit: str,
    total: int | None = None,
    enabled: bool = False,
    **options: Any,
) -> tqdm:
    """A tqdm bar on stderr (``dynamic_ncols``), shown when ``enabled`` and stderr is a terminal; ``options`` go to
    tqdm (e.g. ``unit_scale``)."""
    return tqdm(
        iterable,
        desc=desc,
        unit=unit,
        total=total,
        file=sys.stderr,
        dynamic_ncols=True,
        disable=None if enabled else True,
        **options,
    )
