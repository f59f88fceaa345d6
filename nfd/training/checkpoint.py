"""Checkpoints: plain data and tensors only, written atomically, read with ``weights_only=True``.

A checkpoint holds the generator, the discriminator, both optimisers, the step, the RNG states and the resolved config
as a nested dict, so a run resumes exactly and a reviewer can rebuild the model without this run's files. It also
carries a digest of every tensor it holds (their paths, dtypes, shapes and bytes): a flipped bit inside a weight
leaves the zip container readable, so only the digest can tell a damaged model from a trained one.
"""

from __future__ import annotations

import hashlib
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
VERSION = 2
"""Version 2 added the tensor digest; version-1 files (no digest) are still read, unverified."""


def tensor_digest(obj: Any) -> str:
    """BLAKE2b over a nested dict/list in a fixed order: every tensor's key path, dtype, shape and bytes, and every
    other leaf's key path and repr (the step, the config)."""
    h = hashlib.blake2b(digest_size=20)

    def visit(node: Any, key: str) -> None:
        if isinstance(node, torch.Tensor):
            t = node.detach().cpu().contiguous()
            h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(node, dict):
            for k in sorted(node, key=str):
                visit(node[k], f"{key}/{k}")
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                visit(v, f"{key}[{i}]")
        else:
            h.update(f"{key}={node!r}|".encode())

    visit(obj, "")
    return h.hexdigest()


def save(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` plus format markers and its tensor digest to ``path`` atomically (a crash leaves the
    previous file intact); a failed write (a full disk) is one line naming the file."""
    data = {"format": FORMAT, "version": VERSION, "nfd_version": __version__, **payload}
    data["digest"] = tensor_digest(payload)
    p = Path(path)
    try:
        # through a Python file object, so a failed write is an OSError with its errno (torch's own file writer
        # reports a full disk as "unexpected pos")
        with atomic_path(p) as tmp, tmp.open("wb") as f:
            torch.save(data, f)
    except (OSError, RuntimeError) as e:
        raise NfdError(f"{p}: cannot write checkpoint ({_os_reason(e)})") from None


def _os_reason(e: BaseException) -> str:
    """The OSError behind a failed write (torch re-raises it as a RuntimeError while closing its zip writer)."""
    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        cause = cause.__cause__ or cause.__context__
    return _first_line(e)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely; one-line errors for a missing, corrupt or foreign file."""
    p = Path(path)
    if not p.is_file():
        raise NfdError(f"{p}: checkpoint not found")
    try:
        data = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message suggests weights_only=False, the one thing not to do: say what happened instead
        if "global" in str(e).lower():
            raise NfdError(f"not a weights-only checkpoint: refusing to unpickle code from {p}") from None
        detail = [line.strip() for line in str(e).splitlines() if line.strip().startswith("Unsupported")]
        raise NfdError(f"{p}: not a readable checkpoint ({detail[0] if detail else 'not a torch file'})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError) as e:
        reason = "not a torch file" if isinstance(e, KeyError) else _first_line(e)
        raise NfdError(f"{p}: not a readable checkpoint ({reason})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise NfdError(f"{p}: not an nfd checkpoint (no '{FORMAT}' marker)")
    if data.get("version") not in (1, VERSION):
        raise NfdError(f"{p}: checkpoint format version {data.get('version')} is not supported (expected {VERSION})")
    if data["version"] >= 2:
        stored = data.pop("digest", None)
        payload = {k: v for k, v in data.items() if k not in ("format", "version", "nfd_version")}
        if stored is None or tensor_digest(payload) != stored:
            raise NfdError(f"{p}: checkpoint is damaged (its tensors do not match the digest written with them)")
    for key in ("config", "model", "coord_dim", "feature_dim", "G", "step"):
        if key not in data:
            raise NfdError(f"{p}: checkpoint is missing '{key}'")
    return data


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def config_of(data: dict[str, Any], path: str | Path) -> Config:
    """The resolved config stored in a checkpoint."""
    try:
        return from_dict(data["config"])
    except ConfigError as e:
        raise NfdError(f"{path}: checkpoint config is invalid ({e})") from None
