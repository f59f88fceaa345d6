"""CelebA-HQ (or any folder / zip / tar of face photographs) -> ``nfd-pointcloud`` images, k = 3 (RGB).

Each image is decoded with Pillow, centre-cropped to a square and resized with LANCZOS (antialiased) to
``resolution x resolution`` (64 or 128 in the paper); pixel ``(row, col)`` is grid point ``row * R + col``.
Order: a folder's images sorted by relative path; an archive's in archive order (recorded by its sha256).

Strict by default: a non-image file (any suffix outside :data:`nfd.data.images.IMAGE_SUFFIXES`; hidden files and
``__MACOSX`` are ignored) or an image that fails to decode stops the run with an error naming it. ``skip_bad``
instead skips them and records them in the ``skipped`` attribute.
"""

from __future__ import annotations

import json
import multiprocessing as mp
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from nfd.data.archive import archive_kind, iter_archive_files, list_members, sha256_file, sha256_files
from nfd.data.h5format import check_overwritable, write_pointcloud
from nfd.data.images import ImageError, center_crop_resize, decode_image, is_image_name
from nfd.errors import NfdError


class ImageSourceError(NfdError):
    """A folder/archive without images, or with files that are not images."""


def _ignored(rel: str) -> bool:
    parts = rel.replace("\\", "/").split("/")
    return any(p.startswith(".") or p == "__MACOSX" for p in parts if p)


def _describe(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown}{', ...' if len(names) > limit else ''} ({len(names)} file{'s' if len(names) != 1 else ''})"


def list_image_source(source: Path) -> tuple[str, list[str], list[str]]:
    """``(kind, image names, non-image names)`` for a folder ("dir") or an archive ("zip"/"tar")."""
    if source.is_dir():
        names = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
        kind = "dir"
    elif source.is_file():
        kind = archive_kind(source) or ""
        if not kind:
            raise ImageSourceError(f"{source}: not a folder, zip or tar of images")
        names = list_members(source, files_only=True)
    else:
        raise ImageSourceError(f"{source}: no such file or folder")
    names = [n for n in names if not _ignored(n)]
    images = [n for n in names if is_image_name(n)]
    others = [n for n in names if not is_image_name(n)]
    return kind, images, others


def _decode_resize(item: tuple[str, bytes | None, str | None, int]) -> tuple[str, np.ndarray | None, str | None]:
    name, data, path, resolution = item
    try:
        if data is None:
            assert path is not None
            data = Path(path).read_bytes()
        img = center_crop_resize(decode_image(data, name), resolution)
        arr = np.asarray(img, dtype=np.uint8)
        return name, arr.reshape(resolution * resolution, 3), None
    except ImageError as e:
        return name, None, str(e).split(": ", 1)[-1]
    except OSError as e:
        return name, None, f"cannot read ({e.strerror or e})"


def prepare_celebahq(
    source: str | Path,
    out: str | Path,
    *,
    resolution: int = 64,
    split_seed: int = 0,
    val_frac: float = 0.05,
    test_frac: float = 0.05,
    skip_bad: bool = False,
    workers: int = 1,
    force: bool = False,
    progress: bool = False,
    dataset: str = "celebahq",
) -> dict[str, Any]:
    """Write the images of ``source`` (folder, zip or tar) at ``resolution`` as an ``nfd-pointcloud`` file."""
    from tqdm import tqdm

    source = Path(source)
    if resolution < 1:
        raise NfdError(f"--resolution must be >= 1, got {resolution}")
    check_overwritable(out, force)
    kind, images, others = list_image_source(source)
    if not images:
        extra = f"; found only non-image files: {_describe(others)}" if others else ""
        raise ImageSourceError(f"{source}: no images (.jpg, .png, ...) found{extra}")
    if others and not skip_bad:
        raise ImageSourceError(
            f"{source}: contains non-image files: {_describe(others)}; remove them or pass --skip-bad"
        )
    skipped: list[str] = [f"{n}: not an image" for n in others]

    def items() -> Iterator[tuple[str, bytes | None, str | None, int]]:
        if kind == "dir":
            for n in images:
                yield n, None, str(source / n), resolution
        else:
            wanted = set(images)
            for n, data in iter_archive_files(source, lambda m: m in wanted):
                yield n, data, None, resolution

    def results() -> Iterator[np.ndarray]:
        pool = mp.get_context("spawn").Pool(workers) if workers > 1 else None
        try:
            it = pool.imap(_decode_resize, items(), chunksize=8) if pool else map(_decode_resize, items())
            for name, arr, err in tqdm(it, total=len(images), disable=not progress, desc="images", unit="img"):
                if err is not None:
                    label = f"{source}/{name}" if kind == "dir" else f"{source}:{name}"
                    if not skip_bad:
                        raise ImageError(f"{label}: {err}")
                    skipped.append(f"{name}: {err}")
                    continue
                yield arr
        finally:
            if pool:
                pool.terminate()

    digest = sha256_file(source) if kind != "dir" else sha256_files(source, [source / n for n in images])
    summary = write_pointcloud(
        out,
        results(),
        grid_shape=(resolution, resolution),
        feature_dim=3,
        dataset=dataset,
        source=str(source),
        source_sha256=digest,
        split_seed=split_seed,
        val_frac=val_frac,
        test_frac=test_frac,
        num_examples=len(images),
        compression=None,
        extra_attrs={
            "feature_kind": "rgb",
            "preprocessing": "centre-crop to square, Pillow LANCZOS resize",
            "skipped": lambda: json.dumps(skipped[:200]),
            "num_skipped": lambda: len(skipped),
        },
    )
    summary["skipped"] = skipped
    return summary
