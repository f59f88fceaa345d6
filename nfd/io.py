"""Atomic output: write to a temporary file beside the target, rename on success, remove on failure.

Snakemake and DVC judge a job by its outputs, so a crashed job must never leave a half-written file behind.
A failed write (disk full, read-only folder) is turned into one line naming the output by :func:`writing`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from nfd.errors import NfdError

_HDF5_ERRNO = re.compile(r"errno = (\d+)")
_HDF5_MESSAGE = re.compile(r"error message = '([^']*)'")


def os_error_reason(error: BaseException) -> str:
    """The short cause of an ``OSError`` ("No space left on device"), also out of HDF5's long messages, which
    carry it as ``errno = 28, error message = '...'`` inside one line of timestamps and byte counts."""
    text = str(error)
    match = _HDF5_ERRNO.search(text)
    if match and int(match.group(1)) in errno.errorcode:
        return os.strerror(int(match.group(1)))
    match = _HDF5_MESSAGE.search(text)
    if match:
        return match.group(1)
    if isinstance(error, OSError) and error.errno is not None and error.strerror:
        return error.strerror
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else type(error).__name__
    return first if len(first) <= 200 else first[:197] + "..."


@contextlib.contextmanager
def writing(target: str | Path) -> Iterator[None]:
    """Turn an ``OSError`` raised inside into ``NfdError("cannot write TARGET: reason")``."""
    try:
        yield
    except OSError as e:
        raise NfdError(f"cannot write {target}: {os_error_reason(e)}") from None


def free_disk_bytes(target: str | Path) -> int | None:
    """Free bytes on the file system that will hold ``target`` (its nearest existing folder); None if unknown."""
    folder = Path(target).absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return int(shutil.disk_usage(folder).free)
    except OSError:
        return None


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto ``target``.

    The temporary name keeps the target's suffix (``suffix`` overrides it) so libraries that dispatch on the
    extension (numpy, h5py, trimesh, PIL) write the right format.
    """
    target = Path(target)
    if target.exists() and not target.is_file():
        # replacing a folder fails late; replacing a device (/dev/null, as root) would destroy it
        raise NfdError(f"cannot write {target}: not a regular file")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=suffix if suffix is not None else target.suffix, dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
