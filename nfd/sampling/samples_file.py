"""The samples file of ``nfd sample`` (``.npz``): its one writer and its one reader.

An ``.npz`` archive with ``features`` ``[num, R, ..., R, k]`` (float32, in [-1, 1]: the sampled functions on a grid
over [-1, 1]^d), ``latents`` ``[num, latent_dim]`` and scalars naming how they were drawn (``resolution``,
``coord_dim``, ``feature_dim``, ``seed``, ``preset``, ``train_resolution``, ``model``). The figures, the meshes and the
metrics read it through :func:`read_samples`, so a bad file gets the same one-line error naming it wherever it is read;
what each reader needs beyond that (2D or 3D, a value range) it checks itself.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nfd.errors import NfdError

SCALARS = ("resolution", "coord_dim", "feature_dim", "seed", "preset", "train_resolution", "model")
"""The scalars a samples file may carry besides its arrays."""
_INT_SCALARS = ("resolution", "coord_dim", "feature_dim", "seed", "train_resolution")


@dataclass(frozen=True)
class SamplesFile:
    """What a samples file holds: ``features`` as stored, and those of :data:`SCALARS` that it has."""

    path: Path
    features: np.ndarray
    meta: dict[str, Any]


def write_samples(path: str | Path, features: np.ndarray, latents: np.ndarray, **scalars: Any) -> None:
    """Write a samples file to ``path`` (the caller makes the write atomic); ``scalars`` are among :data:`SCALARS`."""
    unknown = sorted(set(scalars) - set(SCALARS))
    if unknown:
        raise NfdError(f"{path}: not samples-file scalars: {', '.join(unknown)}")
    np.savez(path, features=features, latents=latents, **scalars)


def read_samples(path: str | Path, coord_dim: int | None = None) -> SamplesFile:
    """Read a samples file; ``coord_dim`` (2 or 3) also requires samples of that many dimensions.

    Raises a one-line ``NfdError`` naming the file when it is missing, not an ``.npz`` archive, has no numeric
    ``features``, has a malformed scalar, or (with ``coord_dim``) holds samples of other dimensions."""
    path = Path(path)
    if not path.is_file():
        raise NfdError(f"samples file not found: {path}")
    try:
        if not zipfile.is_zipfile(path):  # np.load would take it for a .npy array or a pickle
            raise NfdError(f"{path}: not an nfd samples file (not an .npz archive)")
        with np.load(path, allow_pickle=False) as data:
            if "features" not in data.files:
                raise NfdError(
                    f"{path}: not an nfd samples file (no 'features' array; keys: {', '.join(data.files) or 'none'})"
                )
            features = data["features"]
            meta = {key: _scalar(path, key, data[key]) for key in SCALARS if key in data.files}
    except NfdError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise NfdError(f"{path}: not an nfd samples file (not a readable .npz file: {e})") from None
    if not np.issubdtype(features.dtype, np.number) or np.issubdtype(features.dtype, np.complexfloating):
        raise NfdError(f"{path}: 'features' are not real numbers (dtype {features.dtype})")
    if coord_dim is not None:
        stored = meta.get("coord_dim")
        if features.ndim != coord_dim + 2 or (stored is not None and stored != coord_dim):
            got = f"{stored}D (coord_dim={stored}), features" if stored is not None else "features"
            raise NfdError(f"{path}: expected {coord_dim}D samples, got {got} of shape {features.shape}")
    return SamplesFile(path, features, meta)


def _scalar(path: Path, key: str, value: np.ndarray) -> Any:
    """A stored scalar as a Python value; integers must be whole numbers (one-line error naming the file if not)."""
    if value.ndim != 0:
        raise NfdError(f"{path}: '{key}' must be a single value, got an array of shape {value.shape}")
    item = value.item()
    if key in _INT_SCALARS:
        if isinstance(item, bool) or not isinstance(item, int | float) or not float(item).is_integer():
            raise NfdError(f"{path}: '{key}' must be an integer, got {item!r}")
        return int(item)
    return item
