"""Small filesystem helpers for the data modules."""

from __future__ import annotations

import os
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def set_default_mode(path: str | Path) -> None:
    """Give a file made by ``tempfile.mkstemp``/``mkdtemp`` (mode 0600/0700, e.g. via ``nfd.io.atomic_path``) the
    permissions an ordinary ``open()``/``mkdir`` would have had (0666/0777 minus the umask)."""
    path = Path(path)
    base = 0o777 if path.is_dir() else 0o666
    os.chmod(path, base & ~_umask())
