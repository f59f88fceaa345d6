"""Reader and writer for ``.binvox`` voxel files (own implementation of Patrick Min's format spec).

File layout: an ASCII header ::

    #binvox 1
    dim D D D
    translate tx ty tz      (optional)
    scale s                 (optional)
    data

then run-length-encoded voxels: byte pairs ``(value, count)``, value 0/1 (version 2: 0..255, non-zero = set),
``1 <= count <= 255``, the counts summing to ``D**3``.

Axis order (the spec, "Voxel ordering": *y runs fastest, then z, then x*): the voxel ``(x, y, z)`` is element
``index = x * D*D + z * D + y`` of the decoded sequence. So ``flat.reshape(D, D, D)`` is indexed ``[x, z, y]`` and
``.transpose(0, 2, 1)`` gives ``[x, y, z]`` -- the same mapping as binvox-rw-py's ``read_as_3d_array`` (xzy -> xyz)
and trimesh's ``load_binvox(axis_order="xzy")``. The arrays returned here are always ``[x, y, z]``, matching the
project's voxel convention (grid axis 0 = x, axis 1 = y = up, axis 2 = z; docs/contracts.md): binvox keeps the
mesh's own coordinates (it only translates and scales uniformly), and ShapeNet models are y-up, so ShapeNet /
3D-R2N2 voxels read this way stand upright along axis 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nfd.errors import NfdError

MAX_DIM = 1024


class BinvoxError(NfdError):
    """A ``.binvox`` file with a bad header, bad run-length data, or the wrong size."""


@dataclass
class Binvox:
    voxels: np.ndarray
    """bool ``[D, D, D]`` indexed ``[x, y, z]`` (y up)."""
    translate: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0


def read_binvox(source: str | Path | bytes, name: str | None = None, expected_dim: int | None = None) -> Binvox:
    """Decode a binvox file (path or bytes) to ``[x, y, z]`` bool voxels; errors name ``name`` (or the path)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = name or "<binvox bytes>"
    else:
        label = name or str(source)
        try:
            data = Path(source).read_bytes()
        except OSError as e:
            raise BinvoxError(f"{label}: cannot read ({e.strerror or e})") from None

    pos = 0

    def next_line() -> bytes:
        nonlocal pos
        end = data.find(b"\n", pos)
        if end < 0 or end - pos > 256:
            raise BinvoxError(f"{label}: bad binvox header (unterminated header line)")
        line = data[pos:end].strip()
        pos = end + 1
        return line

    first = next_line()
    if not first.startswith(b"#binvox"):
        raise BinvoxError(f"{label}: bad binvox header (first line is {first[:40]!r}, expected b'#binvox 1')")
    try:
        version = int(first.split()[1])
    except (IndexError, ValueError):
        raise BinvoxError(f"{label}: bad binvox header (no version in {first[:40]!r})") from None
    if version not in (1, 2):
        raise BinvoxError(f"{label}: unsupported binvox version {version}")
    dims: list[int] | None = None
    translate = (0.0, 0.0, 0.0)
    scale = 1.0
    for _ in range(16):
        line = next_line()
        if line == b"data":
            break
        key, *vals = line.split()
        try:
            if key == b"dim":
                dims = [int(v) for v in vals]
                if len(dims) != 3:
                    raise ValueError
            elif key == b"translate":
                t = [float(v) for v in vals]
                if len(t) != 3:
                    raise ValueError
                translate = (t[0], t[1], t[2])
            elif key == b"scale":
                (scale,) = (float(v) for v in vals)
            else:
                raise BinvoxError(f"{label}: bad binvox header (unknown line {line[:40]!r})")
        except ValueError:
            raise BinvoxError(f"{label}: bad binvox header (malformed line {line[:40]!r})") from None
    else:
        raise BinvoxError(f"{label}: bad binvox header (no 'data' line)")
    if dims is None:
        raise BinvoxError(f"{label}: bad binvox header (no 'dim' line)")
    if len(set(dims)) != 1 or not 1 <= dims[0] <= MAX_DIM:
        raise BinvoxError(f"{label}: unsupported dims {dims} (need D D D with 1 <= D <= {MAX_DIM})")
    d = dims[0]
    if expected_dim is not None and d != expected_dim:
        raise BinvoxError(f"{label}: wrong size: binvox is {d}^3, expected {expected_dim}^3")

    rle = np.frombuffer(data, dtype=np.uint8, offset=pos)
    if rle.size % 2:
        raise BinvoxError(f"{label}: corrupt binvox data (odd number of run-length bytes: {rle.size})")
    values, counts = rle[0::2], rle[1::2].astype(np.int64)
    if np.any(counts == 0):
        raise BinvoxError(f"{label}: corrupt binvox data (run of length 0)")
    if version == 1 and np.any(values > 1):
        raise BinvoxError(f"{label}: corrupt binvox data (value {int(values.max())} in a version-1 file)")
    total = int(counts.sum())
    if total != d**3:
        raise BinvoxError(f"{label}: wrong size: run-length data holds {total} voxels, header says {d}^3 = {d**3}")
    flat = np.repeat(values != 0, counts)
    voxels = np.ascontiguousarray(flat.reshape(d, d, d).transpose(0, 2, 1))  # [x, z, y] -> [x, y, z]
    return Binvox(voxels=voxels, translate=translate, scale=float(scale))


def encode_binvox(
    voxels: np.ndarray, translate: tuple[float, float, float] = (0.0, 0.0, 0.0), scale: float = 1.0
) -> bytes:
    """Encode ``[x, y, z]`` voxels (truthy = set) as a version-1 binvox file, in the spec's x-z-y order."""
    vox = np.asarray(voxels)
    if vox.ndim != 3 or len(set(vox.shape)) != 1:
        raise ValueError(f"binvox needs a cubic [D, D, D] array, got shape {vox.shape}")
    d = vox.shape[0]
    flat = (vox != 0).transpose(0, 2, 1).reshape(-1).astype(np.uint8)  # index x*D*D + z*D + y
    # runs of equal values
    change = np.flatnonzero(np.diff(flat)) + 1
    starts = np.concatenate(([0], change))
    lengths = np.diff(np.concatenate((starts, [flat.size])))
    run_values = flat[starts]
    # split runs longer than 255
    reps = (lengths + 254) // 255
    out_values = np.repeat(run_values, reps)
    out_counts = np.full(int(reps.sum()), 255, dtype=np.int64)
    last = np.cumsum(reps) - 1
    out_counts[last] = lengths - 255 * (reps - 1)
    body = np.empty(2 * out_values.size, dtype=np.uint8)
    body[0::2] = out_values
    body[1::2] = out_counts
    header = (
        f"#binvox 1\ndim {d} {d} {d}\ntranslate {translate[0]:g} {translate[1]:g} {translate[2]:g}\n"
        f"scale {scale:g}\ndata\n"
    ).encode()
    return header + body.tobytes()
