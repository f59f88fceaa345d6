"""``nfd data download NAME``: a registry of datasets with mirrors; atomic, resumable, verified downloads.

A file is fetched into ``<out>/.<name>.part`` (resumed with an HTTP ``Range`` request when the server allows it),
verified (size, sha256 and/or md5 when the registry knows them), then renamed onto ``<out>/<name>``. A mismatch
deletes the partial file and tries the next mirror; when every mirror fails the error names the file and why.
URLs may be ``http(s)://`` or ``file://`` (tests use local archives; no test touches the network).
"""

from __future__ import annotations

import logging
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from nfd.data.archive import ArchiveError, ChecksumError, archive_kind, file_digest, safe_extract, verify_file
from nfd.errors import NfdError
from nfd.io import atomic_path

log = logging.getLogger(__name__)

DEFAULT_RAW_DIR = Path("data/raw")
_CHUNK = 1 << 20
_TIMEOUT_S = 60
_TAR_SUFFIXES = (".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


class DownloadError(NfdError):
    """No mirror delivered a file that passes verification."""


@dataclass(frozen=True)
class RemoteFile:
    filename: str
    urls: tuple[str, ...]
    """Mirrors, tried in order."""
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    description: str
    files: tuple[RemoteFile, ...] = ()
    extract: bool = False
    """Extract archives after download by default (``--extract``/``--no-extract`` override)."""
    instructions: str = ""
    """For datasets without a public direct URL: where users obtain them."""
    prepare_hint: str = ""
    extra: dict[str, str] = field(default_factory=dict)


_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
# md5 and sizes are the widely published values (torchvision's MNIST resources; LeCun's page lists the sizes).
_MNIST_FILES = (
    ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", 9912422),
    ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", 28881),
    ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", 1648877),
    ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", 4542),
)

REGISTRY: dict[str, DatasetEntry] = {
    "mnist": DatasetEntry(
        name="mnist",
        description="MNIST handwritten digits, 70,000 28x28 images as the four IDX files (gzip)",
        files=tuple(
            RemoteFile(fn, tuple(m + fn for m in _MNIST_MIRRORS), md5=md5, size=size) for fn, md5, size in _MNIST_FILES
        ),
        prepare_hint="nfd data prepare mnist --source data/raw/mnist --out data/processed/mnist.h5",
    ),
    "shapenet_vox32": DatasetEntry(
        name="shapenet_vox32",
        description="3D-R2N2 ShapeNet voxels at 32^3 (ShapeNetVox32.tgz: ShapeNetVox32/<synset>/<model>/model.binvox)",
        # The 3D-R2N2 authors publish neither a checksum nor the size of this archive: the first download records
        # its sha256 beside it (see pin_digest) and later copies are checked against that record.
        files=(
            RemoteFile(
                "ShapeNetVox32.tgz",
                (
                    "http://cvgl.stanford.edu/data2/ShapeNetVox32.tgz",
                    "http://ftp.cs.stanford.edu/cs/cvgl/ShapeNetVox32.tgz",
                ),
            ),
        ),
        prepare_hint=(
            "nfd data prepare shapenet --source data/raw/shapenet_vox32/ShapeNetVox32.tgz "
            "--out data/processed/shapenet_chairs.h5"
        ),
    ),
    "celebahq": DatasetEntry(
        name="celebahq",
        description="CelebA-HQ faces (30,000 images); no public direct download",
        instructions=(
            "CelebA-HQ has no public direct URL. Obtain the 30,000 images (e.g. generated with the scripts of "
            "Karras et al., 'Progressive Growing of GANs', github.com/tkarras/progressive_growing_of_gans, from "
            "CelebA + the delta files, or a pre-built copy such as the 'CelebAMask-HQ' release's CelebA-HQ-img "
            "folder), then run: nfd data prepare celebahq --source FOLDER_OR_ZIP_OR_TAR --resolution 64 "
            "--out data/processed/celebahq64.h5"
        ),
    ),
}


def _is_url(s: str) -> bool:
    return urllib.parse.urlparse(s).scheme in ("http", "https", "file", "ftp")


def _open(url: str, start: int):
    req = urllib.request.Request(url, headers={"User-Agent": "nfd-data/1"})
    if start > 0 and url.startswith(("http://", "https://")):
        req.add_header("Range", f"bytes={start}-")
    return urllib.request.urlopen(req, timeout=_TIMEOUT_S)  # noqa: S310 - http(s)/file/ftp by design


def fetch(
    urls: str | list[str] | tuple[str, ...],
    dest: str | Path,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    size: int | None = None,
    progress: bool = True,
) -> Path:
    """Download the first mirror in ``urls`` whose content verifies, atomically onto ``dest``; return ``dest``.

    Resumes ``.<dest name>.part`` from a previous interrupted attempt with HTTP ``Range`` (falls back to a full
    download if the server ignores it). An existing ``dest`` that verifies is kept without downloading.
    """
    from tqdm import tqdm

    dest = Path(dest)
    urls = [urls] if isinstance(urls, str) else list(urls)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        try:
            verify_file(dest, sha256=sha256, md5=md5, size=size)
            return dest
        except ChecksumError:
            pass  # re-download; the old file is replaced only once a good one has arrived
    part = dest.with_name(f".{dest.name}.part")
    failures: list[str] = []
    for url in urls:
        try:
            start = part.stat().st_size if part.exists() else 0
            if size is not None and start > size:
                part.unlink()
                start = 0
            with _open(url, start) as resp:
                status = getattr(resp, "status", None)
                if start and status != 206:  # server ignored Range (or file://): restart from scratch
                    start = 0
                length = resp.headers.get("Content-Length")
                total = (int(length) + start) if length and length.isdigit() else size
                mode = "ab" if start else "wb"
                with (
                    open(part, mode) as out,
                    tqdm(
                        total=total,
                        initial=start,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        desc=dest.name,
                        disable=not progress,
                        file=sys.stderr,
                        leave=False,
                    ) as bar,
                ):
                    while chunk := resp.read(_CHUNK):
                        out.write(chunk)
                        bar.update(len(chunk))
            try:
                verify_file(part, sha256=sha256, md5=md5, size=size)
            except ChecksumError as e:
                part.unlink(missing_ok=True)
                failures.append(f"{url}: {str(e).split(': ', 1)[1]}")
                continue
            os.replace(part, dest)
            return dest
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e)
            failures.append(f"{url}: {reason}")
            if isinstance(e, urllib.error.HTTPError) and e.code == 416:  # stale .part: start over next time
                part.unlink(missing_ok=True)
            # keep .part for a later resume only if it came over HTTP (file:// and bad data restart)
            if not url.startswith(("http://", "https://")):
                part.unlink(missing_ok=True)
            continue
    raise DownloadError(f"{dest.name}: download failed from every mirror ({'; '.join(failures)})")


def download_dataset(
    name: str,
    out_dir: str | Path | None = None,
    *,
    extract: bool | None = None,
    progress: bool = True,
    entry: DatasetEntry | None = None,
) -> list[Path]:
    """Fetch every file of registry entry ``name`` into ``out_dir`` (default ``data/raw/<name>``), verify it, and
    (if ``extract``, default per entry) safely extract archives there. Returns the downloaded file paths."""
    if entry is None:
        if name not in REGISTRY:
            raise NfdError(f"unknown dataset {name!r} (known: {', '.join(sorted(REGISTRY))})")
        entry = REGISTRY[name]
    if not entry.files:
        raise NfdError(f"{name}: {entry.instructions or 'no download available'}")
    out_dir = Path(out_dir) if out_dir is not None else DEFAULT_RAW_DIR / name
    paths = []
    for rf in entry.files:
        p = fetch(rf.urls, out_dir / rf.filename, sha256=rf.sha256, md5=rf.md5, size=rf.size, progress=progress)
        if not (rf.sha256 or rf.md5):
            pin_digest(p)
        paths.append(p)
    if extract if extract is not None else entry.extract:
        for p in paths:
            if archive_kind(p) == "zip" or p.name.endswith(_TAR_SUFFIXES):
                safe_extract(p, out_dir)
    return paths


def pin_digest(path: Path) -> str:
    """For a file with no published checksum: record its sha256 in ``<path>.sha256`` (``sha256sum`` format) at its
    first download, and check the file against that record afterwards, so that a copy changed on disk or on the
    server is noticed. Returns the digest."""
    got = file_digest(path, "sha256")
    pin = path.with_name(path.name + ".sha256")
    if pin.is_file():
        want = pin.read_text().split()[0] if pin.read_text().strip() else ""
        if got != want:
            raise ChecksumError(
                f"{path}: sha256 {got} differs from the one recorded at its first download in {pin} "
                f"({want or 'empty'}); delete both files to download it again"
            )
        return got
    with atomic_path(pin) as tmp:
        tmp.write_text(f"{got}  {path.name}\n")
    log.warning(
        "%s: no published checksum; recorded its sha256 %s (%d bytes) in %s, later copies are checked against it",
        path.name,
        got,
        path.stat().st_size,
        pin,
    )
    return got


def resolve_source(source: str, cache_dir: str | Path = DEFAULT_RAW_DIR / "downloads", progress: bool = True) -> Path:
    """A ``--source`` that is a URL is downloaded (unverified: no checksum known) into ``cache_dir``; a path is
    returned as is."""
    if _is_url(source):
        name = Path(urllib.parse.urlparse(source).path).name or "download"
        return fetch([source], Path(cache_dir) / name, progress=progress)
    return Path(source)


__all__ = [
    "REGISTRY",
    "DatasetEntry",
    "DownloadError",
    "RemoteFile",
    "download_dataset",
    "fetch",
    "pin_digest",
    "resolve_source",
    "ArchiveError",
]
