"""A training run folder owned by one process at a time, and the state a resume must agree with.

Two trainers writing into one folder interleave snapshots, tear ``metrics.tsv`` and leave a ``model.pt`` of one run
beside the ``config.yaml`` of the other; a fresh run into an old folder leaves the old model looking finished. The
lock file names its owner (pid, host) so a second writer gets a clear refusal, and a lock left by a process that no
longer exists (kill -9) is recognised and taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from nfd.errors import NfdError

LOCK_NAME = ".nfd-train.lock"
"""The lock file inside a run folder."""

OUTPUTS = ("config.yaml", "metrics.tsv", "model.pt", "checkpoints", "snapshots", "samples")
"""What ``nfd train`` writes into a run folder (``--force`` removes exactly these)."""

SUBFOLDERS = ("", "checkpoints", "snapshots", "samples")
"""Where the trainer's atomic writes leave their hidden temporary files if killed."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold ``out``'s lock for the duration; refuse if another live process holds it."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _read_owner(path)
            if owner is None or (owner.get("host") == me["host"] and not _alive(int(owner.get("pid", -1)))):
                path.unlink(missing_ok=True)  # left by a dead process (or unreadable): take it over
                continue
            raise NfdError(
                f"{out}: run folder is in use by another nfd train (pid {owner.get('pid')} on "
                f"{owner.get('host')} since {owner.get('since')}); wait for it to finish, or delete "
                f"{path} if that process is gone"
            ) from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise NfdError(f"{path}: cannot take the run folder's lock")
    try:
        yield
    finally:
        if (_read_owner(path) or {}).get("pid") == me["pid"]:
            path.unlink(missing_ok=True)


def _read_owner(path: Path) -> dict | None:
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) and "pid" in owner else None


def existing_outputs(out: Path) -> list[str]:
    """The training outputs already in ``out`` (empty folders do not count)."""
    found = []
    for name in OUTPUTS:
        p = out / name
        if p.is_file() or (p.is_dir() and any(p.iterdir())):
            found.append(name)
    return found


def clear(out: Path) -> None:
    """Remove a previous run's outputs (``--force``); other files in the folder are left alone."""
    for name in OUTPUTS:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def remove_temp_files(out: Path) -> list[Path]:
    """Delete the hidden temporary files of atomic writes that a killed run left behind; returns them."""
    removed = []
    for sub in SUBFOLDERS:
        folder = out / sub if sub else out
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.name.startswith(".") and p.name != LOCK_NAME and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def remove_after(folder: Path, step: int) -> list[Path]:
    """Delete ``step_NNNNNNN.*`` files of steps after ``step`` (snapshots, previews of a run resumed earlier)."""
    removed = []
    if folder.is_dir():
        for p in folder.glob("step_*"):
            try:
                s = int(p.stem.split("_", 1)[1])
            except ValueError:
                continue
            if s > step:
                p.unlink()
                removed.append(p)
    return removed
