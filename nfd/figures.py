"""The paper's figures, one function each in a registry, composed from samples (.npz) and renders (PNG folders).

Every figure carries a title naming the data set, the preset and the resolution, so a demo figure is never taken
for one of the paper's.
"""

from __future__ import annotations

import argparse
import json
import math
import textwrap
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from nfd.errors import NfdError  # noqa: E402
from nfd.io import atomic_path  # noqa: E402
from nfd.preview import grid_image  # noqa: E402

FIGURES: dict[str, Callable[[dict[str, Path], str], plt.Figure]] = {}
"""Figure name -> function(inputs, title) returning a matplotlib figure."""


def figure(name: str) -> Callable:
    def deco(fn: Callable) -> Callable:
        FIGURES[name] = fn
        return fn

    return deco


def load_samples(path: Path, dims: int | None = None) -> np.ndarray:
    """``features`` of an ``nfd sample`` file; ``dims`` checks 2D vs 3D."""
    if not path.is_file():
        raise NfdError(f"{path}: samples file not found")
    try:
        with np.load(path) as f:
            feats = f["features"]
    except (OSError, ValueError, KeyError) as e:
        raise NfdError(f"{path}: not an nfd samples file ({e})") from None
    if dims is not None and feats.ndim != dims + 2:
        raise NfdError(f"{path}: expected {dims}D samples, got features of shape {feats.shape}")
    return feats


def load_renders(path: Path) -> list[np.ndarray]:
    files = sorted(path.glob("*.png")) if path.is_dir() else []
    if not files:
        raise NfdError(f"{path}: no rendered PNG files (run `nfd render` first)")
    return [np.asarray(Image.open(f).convert("RGB")) for f in files]


def _tile(images: list[np.ndarray], cols: int | None = None, pad: int = 4) -> np.ndarray:
    h, w = images[0].shape[:2]
    cols = cols or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = im[..., :3]
    return out


def _suptitle(fig: plt.Figure, title: str, fontsize: int = 11) -> None:
    """The figure title, wrapped to the figure's width: a one-column figure must not cut off the preset's name."""
    chars = max(24, int(fig.get_figwidth() * 72 / (0.6 * fontsize)))
    fig.suptitle(textwrap.fill(title, width=chars), fontsize=fontsize)


def _panels(images: list[np.ndarray], names: list[str], title: str, width: float = 4.0) -> plt.Figure:
    fig, axes = plt.subplots(1, len(images), figsize=(width * len(images), width + 0.8), squeeze=False)
    for ax, im, name in zip(axes[0], images, names):
        ax.imshow(im, interpolation="nearest")
        ax.set_title(name, fontsize=11)
        ax.axis("off")
    _suptitle(fig, title)
    fig.tight_layout()
    return fig


@figure("fig2")
def fig2(inputs: dict[str, Path], title: str) -> plt.Figure:
    """Target, fit without and with Fourier features, with PSNRs."""
    ims, names = [], []
    target = inputs["rff"] / "target.png"
    ims.append(np.asarray(Image.open(target).convert("RGB")))
    names.append("target")
    for key, tag, name in (("plain", "no_fourier", "ReLU MLP"), ("rff", "fourier", "ReLU MLP + RFF")):
        folder = inputs[key]
        try:
            psnr = json.loads((folder / f"{tag}.json").read_text())["psnr_db"]
            ims.append(np.asarray(Image.open(folder / f"{tag}.png").convert("RGB")))
        except (OSError, KeyError, json.JSONDecodeError) as e:
            raise NfdError(f"{folder}: incomplete fit-image output ({e})") from None
        names.append(f"{name}: PSNR {psnr:.1f} dB")
    return _panels(ims, names, title)


@figure("fig6")
def fig6(inputs: dict[str, Path], title: str) -> plt.Figure:
    ims = [grid_image(load_samples(inputs[k], 2)) for k in ("celebahq64", "celebahq128")]
    return _panels(ims, ["CelebAHQ 64x64", "CelebAHQ 128x128"], title, width=6.0)


def _bicubic(sample: np.ndarray, size: int) -> np.ndarray:
    """Pillow's bicubic upsampling of one [R, R, k] sample in [-1, 1] (the baseline of Fig. 7)."""
    u8 = ((np.clip(sample, -1, 1) + 1) * 127.5).round().astype(np.uint8)
    img = Image.fromarray(u8[..., 0] if u8.shape[-1] == 1 else u8)
    up = np.asarray(img.resize((size, size), Image.BICUBIC), dtype=np.float32) / 127.5 - 1
    return up.reshape(size, size, sample.shape[-1])


@figure("fig7")
def fig7(inputs: dict[str, Path], title: str) -> plt.Figure:
    """Training resolution, the same functions at higher resolution, and bicubic upsampling of the first."""
    low, high = load_samples(inputs["low"], 2), load_samples(inputs["high"], 2)
    if low.shape[0] != high.shape[0]:
        raise NfdError(f"{inputs['high']}: {high.shape[0]} samples, but {inputs['low']} has {low.shape[0]}")
    r_low, r_high = low.shape[1], high.shape[1]
    ups = np.stack([_bicubic(s, r_high) for s in low])
    low_nn = np.stack([np.kron(s, np.ones((r_high // r_low, r_high // r_low, 1))) for s in low])
    cols = [grid_image(low_nn, cols=2), grid_image(high, cols=2), grid_image(ups, cols=2)]
    return _panels(cols, [f"{r_low}x{r_low} (training)", f"{r_high}x{r_high} (same functions)",
                          f"bicubic {r_low}->{r_high}"], title, width=4.5)


def _sample_columns(inputs: dict[str, Path], title: str, names: dict[str, str]) -> plt.Figure:
    ims = [grid_image(load_samples(path, 2)) for path in inputs.values()]
    return _panels(ims, [names.get(k, k) for k in inputs], title)


MODEL_NAMES = {"mnist": "NFD (PointConv discriminator)", "mnist_autodecoder": "auto-decoder",
               "mnist_setdisc": "NFD (set discriminator)"}


def _columns_figure(inputs: dict[str, Path], title: str) -> plt.Figure:
    """Fig. 8 (all three models side by side), 12, 13 and 14 (one model each): one column of samples per input."""
    return _sample_columns(inputs, title, MODEL_NAMES)


for _name in ("fig8", "fig12", "fig13", "fig14"):
    FIGURES[_name] = _columns_figure


@figure("fig9")
def fig9(inputs: dict[str, Path], title: str) -> plt.Figure:
    """A grid of rendered sampled chairs."""
    tiles = _tile(load_renders(inputs["renders"]))
    fig, ax = plt.subplots(figsize=(10, 10 * tiles.shape[0] / tiles.shape[1] + 0.6))
    ax.imshow(tiles)
    ax.axis("off")
    _suptitle(fig, title)
    fig.tight_layout()
    return fig


@figure("fig10")
def fig10(inputs: dict[str, Path], title: str) -> plt.Figure:
    """The same sampled chair at increasing resolutions."""
    keys = sorted(inputs, key=lambda k: int(k.lstrip("r")))
    ims = [load_renders(inputs[k])[0] for k in keys]
    return _panels(ims, [f"{k.lstrip('r')}^3" for k in keys], title)


def run_figure(args: argparse.Namespace) -> int:
    inputs: dict[str, Path] = {}
    for item in args.input or []:
        if "=" not in item:
            raise NfdError(f"--input expects NAME=PATH, got '{item}'")
        k, v = item.split("=", 1)
        inputs[k] = Path(v)
    for k, v in inputs.items():
        if not v.exists():
            raise NfdError(f"{v}: input '{k}' of {args.name} not found")
    title = f"{args.name}: {args.label}" if args.label else args.name
    try:
        fig = FIGURES[args.name](inputs, title)
    except KeyError as e:
        raise NfdError(f"{args.name} needs input {e} (--input NAME=PATH)") from None
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, format="png", dpi=args.dpi)
    plt.close(fig)
    print(f"nfd figure: wrote {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("figure", help="compose one paper figure from samples and renders",
                       description="Compose a paper figure (fig2, fig6, fig7, fig8, fig9, fig10, fig12, fig13, "
                                   "fig14) from the outputs of fit-image, sample and render. Inputs are given as "
                                   "NAME=PATH: fig2 rff=DIR plain=DIR; fig6 celebahq64=NPZ celebahq128=NPZ; "
                                   "fig7 low=NPZ high=NPZ; fig8/12/13/14 EXPERIMENT=NPZ (one column each); "
                                   "fig9 renders=DIR; fig10 rR=DIR per resolution R.")
    p.add_argument("name", choices=sorted(FIGURES), help="which figure")
    p.add_argument("--input", action="append", metavar="NAME=PATH", help="an input (repeatable)")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--label", default="", help="subtitle: data set, preset and resolution")
    p.add_argument("--dpi", type=int, default=100, help="resolution of the PNG")
    p.set_defaults(func=run_figure)
