"""Archives (tar, tar.gz/bz2/xz, zip) read and extracted safely, and checksums.

Safety rule: an archive with any member whose path is absolute or contains ``..``, a symlink or hardlink that
points outside the archive's root, or a special file (device, fifo) is rejected *as a whole*: nothing is extracted
or read from it. Truncated or corrupt archives (bad gzip CRC, missing end of stream, bad zip) are rejected too; for
extraction the whole archive is verified before the first file is written, and files land in a temporary folder
that is moved into place only at the end.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from nfd.errors import NfdError

_CHUNK = 1 << 20


class ArchiveError(NfdError):
    """An archive that is unsafe, truncated or corrupt; the message names the archive and the member."""


class ChecksumError(NfdError):
    """A file whose sha256/md5/size differs from the expected value."""


# --- checksums ------------------------------------------------------------------------------------------------------
def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | Path) -> str:
    return file_digest(path, "sha256")


def sha256_files(root: str | Path, files: Iterable[str | Path]) -> str:
    """One sha256 for a set of files: over sorted ``relative/path NUL sha256(file) NL`` lines."""
    root = Path(root)
    h = hashlib.sha256()
    rels = sorted(Path(p).resolve().relative_to(root.resolve()).as_posix() for p in files)
    for rel in rels:
        h.update(f"{rel}\0{sha256_file(root / rel)}\n".encode())
    return h.hexdigest()


def verify_file(path: str | Path, sha256: str | None = None, md5: str | None = None, size: int | None = None) -> None:
    """Raise :class:`ChecksumError` naming ``path`` if its size or digests differ from the given (known) values."""
    path = Path(path)
    if size is not None and path.stat().st_size != size:
        raise ChecksumError(f"{path}: size mismatch: expected {size} bytes, got {path.stat().st_size}")
    for algo, want in (("sha256", sha256), ("md5", md5)):
        if want:
            got = file_digest(path, algo)
            if got.lower() != want.lower():
                raise ChecksumError(f"{path}: {algo} mismatch: expected {want}, got {got}")


# --- kinds and safety checks ----------------------------------------------------------------------------------------
def archive_kind(path: str | Path) -> str | None:
    """``"zip"``, ``"tar"`` (plain or gz/bz2/xz compressed) or None, by content (magic bytes), not by name."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00":
        return "tar"  # a compressed stream; whether it holds a tar is found out when reading
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def _open_decompressed(path: Path):
    with open(path, "rb") as f:
        head = f.read(6)
    if head[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    if head[:3] == b"BZh":
        return bz2.open(path, "rb")
    if head[:6] == b"\xfd7zXZ\x00":
        return lzma.open(path, "rb")
    return open(path, "rb")


def _unsafe_name(name: str) -> str | None:
    """Why a member name is unsafe (absolute, ``..``, empty), or None."""
    if not name or name in (".", "./"):
        return None if name else "empty member name"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        return "'..' in path"
    return None


def _link_escapes(member_name: str, target: str, hard: bool) -> bool:
    """Does a link at ``member_name`` pointing to ``target`` resolve outside the archive root?"""
    if not target or target.startswith(("/", "\\")) or (len(target) > 1 and target[1] == ":"):
        return True
    target = target.replace("\\", "/")
    base = "" if hard else posixpath.dirname(member_name.replace("\\", "/"))
    resolved = posixpath.normpath(posixpath.join(base, target))
    return resolved == ".." or resolved.startswith("../") or resolved.startswith("/")


def _check_tar_member(archive: Path, m: tarfile.TarInfo) -> None:
    why = _unsafe_name(m.name)
    if why:
        raise ArchiveError(f"{archive}: unsafe member {m.name!r} ({why}); archive rejected, nothing extracted")
    if m.issym() or m.islnk():
        if _link_escapes(m.name, m.linkname, hard=m.islnk()):
            kind = "symlink" if m.issym() else "hardlink"
            raise ArchiveError(
                f"{archive}: unsafe member {m.name!r} ({kind} to {m.linkname!r} escapes the target); "
                "archive rejected, nothing extracted"
            )
    elif not (m.isfile() or m.isdir()):
        raise ArchiveError(f"{archive}: unsafe member {m.name!r} (special file); archive rejected, nothing extracted")


def _zip_link_target(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str | None:
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return zf.read(info).decode("utf-8", "replace")
    return None


def _check_zip(archive: Path, zf: zipfile.ZipFile) -> None:
    for info in zf.infolist():
        why = _unsafe_name(info.filename)
        if why:
            raise ArchiveError(
                f"{archive}: unsafe member {info.filename!r} ({why}); archive rejected, nothing extracted"
            )
        target = _zip_link_target(zf, info)
        if target is not None and _link_escapes(info.filename, target, hard=False):
            raise ArchiveError(
                f"{archive}: unsafe member {info.filename!r} (symlink to {target!r} escapes the target); "
                "archive rejected, nothing extracted"
            )
    bad = zf.testzip()
    if bad is not None:
        raise ArchiveError(f"{archive}: corrupt member {bad!r} (CRC mismatch)")


@contextlib.contextmanager
def _archive_errors(archive: Path) -> Iterator[None]:
    try:
        yield
    except ArchiveError:
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError) as e:
        raise ArchiveError(f"{archive}: truncated or corrupt archive ({type(e).__name__}: {e})") from None
    except OSError as e:
        if isinstance(e, (FileNotFoundError, PermissionError)):
            raise
        raise ArchiveError(f"{archive}: truncated or corrupt archive ({type(e).__name__}: {e})") from None


def _drain(stream) -> None:
    while stream.read(_CHUNK):
        pass


# --- reading without extracting -------------------------------------------------------------------------------------
def iter_archive_files(archive: str | Path, want: Callable[[str], bool] | None = None) -> Iterator[tuple[str, bytes]]:
    """Yield ``(member name, content)`` for the regular files of a tar/zip for which ``want(name)`` holds.

    Streams tars (one pass, constant memory). Every member is checked as it passes; an unsafe one rejects the
    archive with :class:`ArchiveError` (callers write their outputs atomically, so nothing partial remains), as
    does truncation or corruption, which is detected by reading the compressed stream to its end.
    """
    archive = Path(archive)
    kind = archive_kind(archive)
    if kind is None:
        raise ArchiveError(f"{archive}: not a tar or zip archive")
    with _archive_errors(archive):
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                _check_zip(archive, zf)
                for info in zf.infolist():
                    if info.is_dir() or _zip_link_target(zf, info) is not None:
                        continue
                    if want is None or want(info.filename):
                        yield info.filename, zf.read(info)
            return
        with _open_decompressed(archive) as raw:
            with tarfile.open(fileobj=raw, mode="r|") as tf:
                count = 0
                for m in tf:
                    count += 1
                    _check_tar_member(archive, m)
                    if m.isfile() and (want is None or want(m.name)):
                        fobj = tf.extractfile(m)
                        assert fobj is not None
                        yield m.name, fobj.read()
            _drain(raw)
            if count == 0:
                raise ArchiveError(f"{archive}: empty or not a tar archive")


def list_members(archive: str | Path, files_only: bool = False) -> list[str]:
    """Names of all members (only regular files if ``files_only``) after verifying the whole archive (safety,
    integrity); raises ArchiveError."""
    archive = Path(archive)
    kind = archive_kind(archive)
    if kind is None:
        raise ArchiveError(f"{archive}: not a tar or zip archive")
    names: list[str] = []
    with _archive_errors(archive):
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                _check_zip(archive, zf)
                return [
                    i.filename
                    for i in zf.infolist()
                    if not files_only or (not i.is_dir() and _zip_link_target(zf, i) is None)
                ]
        with _open_decompressed(archive) as raw:
            with tarfile.open(fileobj=raw, mode="r|") as tf:
                count = 0
                for m in tf:
                    count += 1
                    _check_tar_member(archive, m)
                    if not files_only or m.isfile():
                        names.append(m.name)
            _drain(raw)
    if not count:
        raise ArchiveError(f"{archive}: empty or not a tar archive")
    return names


# --- safe extraction ------------------------------------------------------------------------------------------------
def safe_extract(archive: str | Path, dest: str | Path) -> list[Path]:
    """Extract a tar/zip into ``dest`` after verifying all of it; returns the top-level paths created in ``dest``.

    Pass 1 reads the whole archive and checks every member (see module doc) -- any problem raises
    :class:`ArchiveError` before anything is written. Pass 2 extracts into a temporary folder inside ``dest``
    (tar: with Python's ``data`` filter as a second line of defence), then moves the top-level entries into place.
    """
    archive, dest = Path(archive), Path(dest)
    list_members(archive)  # raises on any unsafe / corrupt member: nothing extracted
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".nfd-extract-", dir=dest))
    try:
        with _archive_errors(archive):
            if archive_kind(archive) == "zip":
                with zipfile.ZipFile(archive) as zf:
                    for info in zf.infolist():
                        target = _zip_link_target(zf, info)
                        out = tmp / info.filename
                        if info.is_dir():
                            out.mkdir(parents=True, exist_ok=True)
                        elif target is not None:
                            out.parent.mkdir(parents=True, exist_ok=True)
                            os.symlink(target, out)
                        else:
                            out.parent.mkdir(parents=True, exist_ok=True)
                            with zf.open(info) as src, open(out, "wb") as dst:
                                shutil.copyfileobj(src, dst, _CHUNK)
            else:
                with _open_decompressed(archive) as raw, tarfile.open(fileobj=raw, mode="r|") as tf:
                    tf.extractall(tmp, filter="data")
        created = []
        for entry in sorted(tmp.iterdir()):
            final = dest / entry.name
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)
            elif final.exists() or final.is_symlink():
                final.unlink()
            os.replace(entry, final)
            created.append(final)
        return created
    except tarfile.FilterError as e:  # pragma: no cover - pass 1 rejects these first
        raise ArchiveError(f"{archive}: unsafe member rejected by extraction filter ({e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_bytes_source(path: str | Path) -> bytes:
    """Read a file, transparently gunzipping ``.gz`` (by magic bytes)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(2)
    try:
        if head == b"\x1f\x8b":
            with gzip.open(path, "rb") as g:
                return g.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
        if isinstance(e, (FileNotFoundError, PermissionError)):
            raise
        raise ArchiveError(f"{path}: truncated or corrupt gzip file ({e})") from None


__all__ = [
    "ArchiveError",
    "ChecksumError",
    "archive_kind",
    "file_digest",
    "iter_archive_files",
    "list_members",
    "read_bytes_source",
    "safe_extract",
    "sha256_file",
    "sha256_files",
    "verify_file",
]
