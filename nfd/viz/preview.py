"""Quick-look PNG grids of samples: images as they are; 3D occupancy as a front view from +z (depth-shaded, +y up)
beside the field's raw values on the middle x-slice (grey levels kept: a saturated, near-binary field shows as pure
black and white there, a soft one in greys).

Used for the periodic fixed-latent grids of training; the paper figures use real meshes and renders instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from nfd.io import atomic_path


def to_image(sample: np.ndarray) -> np.ndarray:
    """One sample ``[H, W, k]`` (2D) or ``[X, Y, Z, 1]`` (3D) in [-1, 1] as a uint8 RGB image."""
    if sample.ndim == 3:
        img = (np.clip(sample, -1, 1) + 1) * 127.5
        img = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img[..., :3]
        return img.astype(np.uint8)
    occ = sample[..., 0][..., ::-1] > 0  # [x, y, z], z reversed: seen from +z, the chairs' front
    z = occ.shape[2]
    # depth of the nearest occupied voxel: near is dark, far is light grey, empty is white
    first = np.where(occ.any(axis=2), occ.argmax(axis=2), z)
    shade = np.where(first < z, 40 + 170 * first / max(z - 1, 1), 255).astype(np.uint8)
    img = shade.T[::-1]  # rows = y from top (high y) to bottom, columns = x
    # the middle x-slice (a side view: rows = y from the top, columns = z), occupied dark, empty white, soft grey
    side = (1.0 - (np.clip(sample[sample.shape[0] // 2, :, :, 0], -1, 1) + 1) / 2) * 255
    gap = np.full((img.shape[0], 1), 255, np.uint8)
    img = np.concatenate([img, gap, side[::-1].astype(np.uint8)], axis=1)
    return np.repeat(img[..., None], 3, axis=2)


def tile(images: Sequence[np.ndarray], cols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile RGB images of one size into one uint8 image on white, row by row (``cols`` defaults to a near-square
    grid); the training previews and the paper figures share it, so their grids look alike."""
    h, w = images[0].shape[:2]
    cols = cols or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = im[..., :3]
    return out


def grid_image(samples: np.ndarray, cols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile samples into one RGB image."""
    return tile([to_image(s) for s in samples], cols, pad)


def save_preview(samples: np.ndarray, path: str | Path, title: str = "") -> None:
    """Write the tiled grid as a PNG (atomically), upscaled so small samples stay visible; ``title`` goes in its
    metadata."""
    img = grid_image(samples)
    scale = max(1, 256 // img.shape[0])
    pil = Image.fromarray(img).resize((img.shape[1] * scale, img.shape[0] * scale), Image.NEAREST)
    info = PngInfo()
    info.add_text("Title", title)
    with atomic_path(path) as tmp:
        pil.save(tmp, format="PNG", pnginfo=info)
