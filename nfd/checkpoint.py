"""Checkpoints: plain data and tensors only, written atomically, read with ``weights_only=True``.

A checkpoint holds the generator, the discriminator, both optimisers, the step, the RNG states and the resolved config
as a nested dict, so a run resumes exactly and a reviewer can rebuild the model without this run's files.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from nfd import __version__
from nfd.config import Config, ConfigError, from_dict
from nfd.errors import NfdError
from nfd.io import atomic_path

FORMAT = "nfd-checkpoint"
VERSION = 1


def save(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` plus format markers to ``path`` atomically (a crash leaves the previous file intact)."""
    data = {"format": FORMAT, "version": VERSION, "nfd_version": __version__, **payload}
    with atomic_path(path) as tmp:
        torch.save(data, tmp)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely; one-line errors for a missing, corrupt or foreign file."""
    p = Path(path)
    if not p.is_file():
        raise NfdError(f"{p}: checkpoint not found")
    try:
        data = torch.load(p, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NfdError(f"{p}: not a readable checkpoint ({first[:200]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise NfdError(f"{p}: not an nfd checkpoint (no '{FORMAT}' marker)")
    if data.get("version") != VERSION:
        raise NfdError(f"{p}: checkpoint format version {data.get('version')} is not supported (expected {VERSION})")
    for key in ("config", "model", "coord_dim", "feature_dim", "G", "step"):
        if key not in data:
            raise NfdError(f"{p}: checkpoint is missing '{key}'")
    return data


def config_of(data: dict[str, Any], path: str | Path) -> Config:
    """The resolved config stored in a checkpoint."""
    try:
        return from_dict(data["config"])
    except ConfigError as e:
        raise NfdError(f"{path}: checkpoint config is invalid ({e})") from None
