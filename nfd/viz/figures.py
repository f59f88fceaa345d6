"""The paper's figures, one function each in a registry, composed from samples (.npz) and renders (PNG folders).

Every figure carries a title naming the data set, the preset and the resolution, so a demo figure is never taken
for one of the paper's. Where the paper chose samples by eye (Fig. 6 and 9: "the best of 5 batches by visual
inspection"; Fig. 11: failure cases), the choice here is automatic and the title names the criterion
(``nfd.viz.selection``): fig6/fig9 given several batches show the best one, fig11 the worst samples of all batches.
"""

from __future__ import annotations

import argparse
import json
import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from nfd.cli import int_at_least, verb_help  # noqa: E402
from nfd.errors import NfdError  # noqa: E402
from nfd.io import atomic_path  # noqa: E402
from nfd.sampling.samples_file import read_samples  # noqa: E402
from nfd.viz import selection  # noqa: E402
from nfd.viz.figure_registry import FIGURES as FIGURE_SPECS  # noqa: E402
from nfd.viz.preview import grid_image, tile  # noqa: E402


@dataclass(frozen=True)
class FigureOptions:
    """Settings of the automatic sample choices (fig6/fig9 best batch, fig11 worst samples)."""

    num_ref: int = 0  # reference examples of the test split the scores use; 0 = all of them
    points: int = selection.SHAPE_POINTS  # surface points per chair for the Chamfer distance
    worst: int = 4  # fig11: how many samples to show
    seed: int = 0  # draws the references (as `nfd evaluate shapes --seed`) and the surface points


def load_samples(path: Path, dims: int | None = None) -> np.ndarray:
    """``features`` of an ``nfd sample`` file; ``dims`` checks 2D vs 3D. A figure of no samples, or of a diverged
    model's NaNs, would show nothing, so both are refused in one line."""
    feats = read_samples(path, coord_dim=dims).features
    if feats.shape[0] == 0:
        raise NfdError(f"{path}: no samples (features of shape {feats.shape})")
    if not np.all(np.isfinite(feats)):
        raise NfdError(f"{path}: features are not all finite numbers (a diverged model?); nothing to show")
    return feats


def load_png(path: Path) -> np.ndarray:
    """An RGB image; a missing or unreadable file is a one-line error naming it."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as e:  # UnidentifiedImageError is an OSError
        raise NfdError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None


def render_files(path: Path) -> list[Path]:
    """The PNGs of a render folder, skipping hidden files (such as the temporary PNG a killed writer leaves)."""
    return sorted(f for f in path.glob("*.png") if not f.name.startswith(".") and f.is_file()) if path.is_dir() else []


def load_renders(path: Path) -> list[np.ndarray]:
    files = render_files(path)
    if not files:
        raise NfdError(f"{path}: no rendered PNG files (run `nfd render` first)")
    images = [load_png(f) for f in files]
    sizes = {im.shape[:2] for im in images}
    if len(sizes) > 1:  # renders of different runs (another --size) mixed in one folder
        raise NfdError(
            f"{path}: rendered PNGs of different sizes ({', '.join(f'{w}x{h}' for h, w in sorted(sizes))}); "
            "render the folder again with `nfd render`"
        )
    return images


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


def fig2(inputs: dict[str, Path], title: str, opts: FigureOptions | None = None) -> plt.Figure:
    """Target, fit without and with Fourier features, with PSNRs."""
    ims, names = [], []
    ims.append(load_png(inputs["rff"] / "target.png"))
    names.append("target")
    for key, tag, name in (("plain", "no_fourier", "ReLU MLP"), ("rff", "fourier", "ReLU MLP + RFF")):
        folder = inputs[key]
        try:
            psnr = float(json.loads((folder / f"{tag}.json").read_text())["psnr_db"])
            ims.append(load_png(folder / f"{tag}.png"))
        except (OSError, KeyError, TypeError, ValueError) as e:
            raise NfdError(f"{folder}: incomplete fit-image output ({e})") from None
        names.append(f"{name}: PSNR {psnr:.1f} dB")
    return _panels(ims, names, title)


def _choose_batch(items: list, scores: list[np.ndarray], criterion: selection.Criterion, what: str) -> tuple[int, str]:
    """Index of the best of several batches (``nfd.viz.selection.best_batch``), printed with every batch's score, and
    the words that say which it is."""
    if len(scores) != len(items):
        raise NfdError(f"{what}: {len(items)} batches to show but {len(scores)} scored")
    best = selection.best_batch(scores)
    print(
        f"nfd figure: {what}, batches scored by the mean {criterion.describe()}:\n"
        f"{selection.format_batch_table(scores, best)}"
    )
    return best, f"batch {best + 1} of {len(items)}"


def _best_of_note(num: int, criterion: selection.Criterion) -> str:
    return f" - best of {num} batches: the lowest mean {criterion.describe()}"


def fig6(inputs: dict[str, Path], title: str, opts: FigureOptions | None = None) -> plt.Figure:
    """CelebAHQ 64^2 and 128^2 samples. With several batches of each (``celebahq64_b0=NPZ``, ...), each panel shows
    the batch nearest, on average, to the test images (``celebahq64_data=H5``, ``celebahq128_data=H5``)."""
    opts = opts or FigureOptions()
    ims, names, note = [], [], ""
    for key, name in (("celebahq64", "CelebAHQ 64x64"), ("celebahq128", "CelebAHQ 128x128")):
        batches = [load_samples(p, 2) for p in selection.batch_paths(inputs, key)]
        shown = 0
        if len(batches) > 1:
            scores, criterion = selection.image_scores(batches, inputs[f"{key}_data"], opts.num_ref, opts.seed)
            shown, which = _choose_batch(batches, scores, criterion, name)
            name = f"{name}, {which}"
            note = _best_of_note(len(batches), criterion)
        ims.append(grid_image(batches[shown]))
        names.append(name)
    return _panels(ims, names, title + note, width=6.0)


def _bicubic(sample: np.ndarray, size: int) -> np.ndarray:
    """Pillow's bicubic upsampling of one [R, R, k] sample in [-1, 1] (the baseline of Fig. 7)."""
    u8 = ((np.clip(sample, -1, 1) + 1) * 127.5).round().astype(np.uint8)
    img = Image.fromarray(u8[..., 0] if u8.shape[-1] == 1 else u8)
    up = np.asarray(img.resize((size, size), Image.BICUBIC), dtype=np.float32) / 127.5 - 1
    return up.reshape(size, size, sample.shape[-1])


def fig7(inputs: dict[str, Path], title: str, opts: FigureOptions | None = None) -> plt.Figure:
    """Training resolution, the same functions at higher resolution, and bicubic upsampling of the first."""
    low, high = load_samples(inputs["low"], 2), load_samples(inputs["high"], 2)
    if low.shape[0] != high.shape[0]:
        raise NfdError(f"{inputs['high']}: {high.shape[0]} samples, but {inputs['low']} has {low.shape[0]}")
    r_low, r_high = low.shape[1], high.shape[1]
    ups = np.stack([_bicubic(s, r_high) for s in low])
    low_nn = np.stack([np.kron(s, np.ones((r_high // r_low, r_high // r_low, 1))) for s in low])
    cols = [grid_image(low_nn, cols=2), grid_image(high, cols=2), grid_image(ups, cols=2)]
    return _panels(
        cols,
        [f"{r_low}x{r_low} (training)", f"{r_high}x{r_high} (same functions)", f"bicubic {r_low}->{r_high}"],
        title,
        width=4.5,
    )


def _sample_columns(inputs: dict[str, Path], title: str, names: dict[str, str]) -> plt.Figure:
    ims = [grid_image(load_samples(path, 2)) for path in inputs.values()]
    return _panels(ims, [names.get(k, k) for k in inputs], title)


MODEL_NAMES = {
    "mnist": "NFD (PointConv discriminator)",
    "mnist_autodecoder": "auto-decoder",
    "mnist_setdisc": "NFD (set discriminator)",
}


def mnist_columns(inputs: dict[str, Path], title: str, opts: FigureOptions | None = None) -> plt.Figure:
    """Fig. 8 (all three models side by side), 12, 13 and 14 (one model each): one column of samples per input."""
    return _sample_columns(inputs, title, MODEL_NAMES)


def _chair_scores(inputs: dict[str, Path], opts: FigureOptions) -> tuple[list[np.ndarray], selection.Criterion]:
    volumes = [load_samples(p, 3) for p in selection.batch_paths(inputs, "samples")]
    return selection.shape_scores(volumes, inputs["data"], opts.num_ref, opts.points, opts.seed)


def fig9(inputs: dict[str, Path], title: str, opts: FigureOptions | None = None) -> plt.Figure:
    """A grid of rendered sampled chairs. With several batches (``renders_b0=DIR samples_b0=NPZ ... data=H5``), the
    batch whose chairs are on average nearest to a test chair (``nfd.viz.selection``)."""
    opts = opts or FigureOptions()
    renders = selection.batch_paths(inputs, "renders")
    shown = 0
    if len(renders) > 1:
        scores, criterion = _chair_scores(inputs, opts)
        shown, which = _choose_batch(renders, scores, criterion, "chairs")
        title += f" ({which})" + _best_of_note(len(renders), criterion)
    tiles = tile(load_renders(renders[shown]), pad=4)
    fig, ax = plt.subplots(figsize=(10, 10 * tiles.shape[0] / tiles.shape[1] + 0.6))
    ax.imshow(tiles)
    ax.axis("off")
    _suptitle(fig, title)
    fig.tight_layout()
    return fig


def fig10(inputs: dict[str, Path], title: str, opts: FigureOptions | None = None) -> plt.Figure:
    """The same sampled chair at increasing resolutions."""
    bad = [k for k in inputs if not (k.startswith("r") and k[1:].isdigit())]
    if bad:
        raise NfdError(f"fig10 inputs are named rR for resolution R (e.g. r32=DIR), got {', '.join(bad)}")
    keys = sorted(inputs, key=lambda k: int(k[1:]))
    ims = [load_renders(inputs[k])[0] for k in keys]
    return _panels(ims, [f"{k[1:]}^3" for k in keys], title)


def fig11(inputs: dict[str, Path], title: str, opts: FigureOptions | None = None) -> plt.Figure:
    """Failure cases: the ``opts.worst`` chairs of all batches (``samples[_bN]=NPZ renders[_bN]=DIR data=H5``) with
    the largest squared Chamfer distance to their nearest test chair, worst first, each with its score."""
    opts = opts or FigureOptions()
    renders = selection.batch_paths(inputs, "renders")
    scores, criterion = _chair_scores(inputs, opts)
    if len(scores) != len(renders):
        raise NfdError(f"fig11: {len(renders)} render folders but {len(scores)} samples files")
    total = sum(len(s) for s in scores)
    chosen = selection.worst_samples(scores, opts.worst)
    print(f"nfd figure: fig11 shows the {len(chosen)} of {total} chairs with the largest {criterion.describe()}:")
    tiles, names = [], []
    for b, i, score in chosen:
        where = f"batch {b + 1}, sample {i}" if len(renders) > 1 else f"sample {i}"
        print(f"  {where}: {score:.6g}")
        png = renders[b] / f"sample_{i:03d}.png"
        if np.isfinite(score) and png.is_file():
            tiles.append(load_png(png))
            names.append(f"{where}\nCD {score:.4f}")
        else:  # no surface: nothing was rendered
            tiles.append(None)
            names.append(f"{where}\nno surface" if not np.isfinite(score) else f"{where}\n(no render)")
    size = next((t.shape[:2] for t in tiles if t is not None), (256, 256))
    tiles = [t if t is not None else np.full((*size, 3), 255, np.uint8) for t in tiles]
    cols = min(len(tiles), 4)
    rows = math.ceil(len(tiles) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.3 * rows + 1.0), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, im, name in zip(axes.ravel(), tiles, names):
        ax.imshow(im)
        ax.set_title(name, fontsize=9)
    _suptitle(fig, f"{title} - the {len(chosen)} of {total} with the largest {criterion.describe()}", fontsize=10)
    fig.tight_layout()
    return fig


def run_figure(args: argparse.Namespace) -> int:
    inputs: dict[str, Path] = {}
    for item in args.input or []:
        if "=" not in item:
            raise NfdError(f"--input expects NAME=PATH, got '{item}'")
        k, v = item.split("=", 1)
        inputs[k] = Path(v)
    if not inputs:
        raise NfdError(f"{args.name} needs its inputs as --input NAME=PATH (see `nfd figure --help`)")
    for k, v in inputs.items():
        if not v.exists():
            raise NfdError(f"{v}: input '{k}' of {args.name} not found")
    out = Path(args.out)
    if out.is_dir():
        raise NfdError(f"--out {out} is a folder; give the PNG file to write")
    title = f"{args.name}: {args.label}" if args.label else args.name
    opts = FigureOptions(num_ref=args.num_ref, points=args.points, worst=args.worst, seed=args.seed)
    try:
        fig = FIGURES[args.name](inputs, title, opts)
    except KeyError as e:
        raise NfdError(f"{args.name} needs input {e} (--input NAME=PATH)") from None
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=args.dpi)
    except (OSError, ValueError) as e:  # e.g. a read-only folder, or a dpi too large for the image
        raise NfdError(f"{out}: cannot write the figure ({type(e).__name__}: {e})") from None
    finally:
        plt.close(fig)
    print(f"nfd figure: wrote {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    inputs = "; ".join(f"{name} {spec.inputs_help}" for name, spec in FIGURE_SPECS.items())
    p = sub.add_parser(
        "figure",
        help=verb_help(__name__),
        description=f"Compose a paper figure ({', '.join(FIGURE_SPECS)}) from the outputs of "
        f"fit-image, sample and render. Inputs are given as NAME=PATH: {inputs}. Several "
        "batches: number the inputs KEY_b0, KEY_b1, ... "
        "(fig6 adds celebahq64_data=H5 celebahq128_data=H5, fig9 samples_bN=NPZ and "
        "data=H5): fig6 and fig9 then show the best batch, fig11 the worst samples of "
        "all. Chairs are scored by the squared Chamfer distance to the nearest test "
        "chair (surface points of marching-cubes meshes), images by the mean squared "
        "pixel difference to the nearest test image; the figure title names the "
        "criterion and the log lists every score.",
    )
    p.add_argument("name", choices=sorted(FIGURES), help="which figure")
    p.add_argument("--input", action="append", metavar="NAME=PATH", help="an input (repeatable)")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--label", default="", help="subtitle: data set, preset and resolution")
    p.add_argument("--dpi", type=_positive_int, default=100, help="resolution of the PNG (default: 100)")
    p.add_argument(
        "--num-ref",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="test examples the scores compare with; 0 = the whole test split (default: 0)",
    )
    p.add_argument(
        "--points",
        type=_positive_int,
        default=selection.SHAPE_POINTS,
        metavar="P",
        help=f"surface points per chair for the Chamfer distance (default: {selection.SHAPE_POINTS})",
    )
    p.add_argument(
        "--worst",
        type=_positive_int,
        default=FigureOptions.worst,
        metavar="K",
        help=f"fig11: how many of the worst samples to show (default: {FigureOptions.worst})",
    )
    p.add_argument(
        "--seed",
        type=_non_negative_int,
        default=0,
        help="draws the --num-ref references and the surface points, as `nfd evaluate shapes --seed` (default: 0)",
    )
    p.set_defaults(func=run_figure)


_non_negative_int = int_at_least(0)
_positive_int = int_at_least(1)


FIGURES: dict[str, Callable[..., plt.Figure]] = {
    name: globals()[spec.builder or name] for name, spec in FIGURE_SPECS.items()
}
"""Figure name -> its builder, function(inputs, title, opts=None) returning a matplotlib figure."""
