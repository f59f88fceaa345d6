"""Images: decoding, centre-crop + antialiased resize (Pillow LANCZOS), and ``load_image`` for Fig. 2.

Arrays are ``[H, W, 3]``: axis 0 = row (top to bottom), axis 1 = column (docs/contracts.md).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from nfd.errors import NfdError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif"})
"""File suffixes treated as images (case-insensitive)."""

SKIMAGE_IMAGES = ("astronaut", "camera", "coffee", "chelsea", "rocket", "cat")
"""Photographs that ship inside the scikit-image wheel (no download), usable by name."""


class ImageError(NfdError):
    """An image that cannot be decoded, or an unknown image name."""


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def decode_image(data: bytes, name: str) -> Image.Image:
    """Decode encoded image bytes to an RGB PIL image; :class:`ImageError` names ``name`` on failure."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.load()
    except Exception as e:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError, ...)
        raise ImageError(f"{name}: cannot decode image ({type(e).__name__}: {e})") from None
    if img.mode != "RGB":
        if img.mode in ("RGBA", "LA", "P"):
            img = img.convert("RGBA")
            background = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, img)
        img = img.convert("RGB")
    return img


def center_crop_resize(img: Image.Image, size: int | None) -> Image.Image:
    """Crop the largest centred square, then resize it to ``size x size`` with LANCZOS (antialiased)."""
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    if (w, h) != (s, s):
        img = img.crop((left, top, left + s, top + s))
    if size is not None and s != size:
        img = img.resize((size, size), resample=Image.Resampling.LANCZOS)
    return img


def to_unit_range(img: Image.Image) -> np.ndarray:
    """uint8 RGB image -> float32 ``[H, W, 3]`` in [-1, 1]."""
    return np.asarray(img, dtype=np.float32) / 127.5 - 1.0


def load_image(name_or_path: str | Path, size: int | None = 64) -> np.ndarray:
    """A photograph as float32 ``[size, size, 3]`` in [-1, 1]: centre-cropped to a square, LANCZOS-resized.

    ``name_or_path`` is one of :data:`SKIMAGE_IMAGES` (shipped in the scikit-image wheel, e.g. ``"astronaut"``,
    ``"camera"``; greyscale is repeated to RGB) or an image file path. ``size=None`` keeps the cropped size.
    """
    key = str(name_or_path)
    if key in SKIMAGE_IMAGES and not Path(key).exists():
        import skimage.data

        arr = np.asarray(getattr(skimage.data, key)())
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=-1)
        img = Image.fromarray(arr[..., :3].astype(np.uint8), "RGB")
    else:
        path = Path(key)
        if not path.is_file():
            raise ImageError(f"{key}: no such image file, and not a built-in image name ({', '.join(SKIMAGE_IMAGES)})")
        img = decode_image(path.read_bytes(), str(path))
    if size is not None and size < 1:
        raise ImageError(f"{key}: size must be >= 1, got {size}")
    return to_unit_range(center_crop_resize(img, size))
