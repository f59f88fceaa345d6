"""Sampling: the same seed gives the same functions at every resolution; bad checkpoints fail cleanly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nfd.cli import main
from nfd.presets import resolve
from nfd.training.trainer import Trainer


@pytest.fixture(scope="module")
def model_2d(tmp_path_factory):
    from tests.conftest import write_h5

    tmp = tmp_path_factory.mktemp("m2d")
    rng = np.random.default_rng(0)
    h5 = write_h5(tmp / "d.h5", rng.integers(0, 256, (12, 8, 8, 1), dtype=np.uint8), (8, 8))
    t = Trainer(resolve("tiny", None, ["steps=2"]), h5, tmp / "run")
    return t.fit(progress=False)


def test_same_seed_same_functions_across_resolutions(model_2d, tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert (
        main(
            [
                "sample",
                "--checkpoint",
                str(model_2d),
                "--num",
                "3",
                "--resolution",
                "33",
                "--seed",
                "5",
                "--out",
                str(a),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "sample",
                "--checkpoint",
                str(model_2d),
                "--num",
                "5",
                "--resolution",
                "65",
                "--seed",
                "5",
                "--out",
                str(b),
                "--chunk-points",
                "1000",
            ]
        )
        == 0
    )
    fa, fb = np.load(a)["features"], np.load(b)["features"]
    assert fa.shape == (3, 33, 33, 1) and fb.shape == (5, 65, 65, 1)
    np.testing.assert_allclose(fb[:3, ::2, ::2], fa, atol=1e-5)
    assert np.abs(fa[0] - fa[1]).max() > 1e-3  # different latents give different functions


@pytest.mark.parametrize(
    "content, msg",
    [
        (b"not a checkpoint at all", "checkpoint"),  # the wording is nfd.training.checkpoint's
        (None, "not an nfd checkpoint"),
    ],
)
def test_bad_checkpoints(tmp_path, capsys, content, msg):
    bad = tmp_path / "bad.pt"
    if content is None:
        torch.save({"weights": torch.zeros(3)}, bad)
    else:
        bad.write_bytes(content)
    out = tmp_path / "s.npz"
    assert main(["sample", "--checkpoint", str(bad), "--num", "1", "--resolution", "4", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and str(bad) in err and len(err.splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".s.npz*"))


def test_missing_checkpoint(tmp_path, capsys):
    assert (
        main(
            [
                "sample",
                "--checkpoint",
                str(tmp_path / "none.pt"),
                "--num",
                "1",
                "--resolution",
                "4",
                "--out",
                str(tmp_path / "s.npz"),
            ]
        )
        == 2
    )
    assert "checkpoint not found" in capsys.readouterr().err


@pytest.fixture(scope="module")
def model_3d(tmp_path_factory):
    from tests.conftest import write_h5

    tmp = tmp_path_factory.mktemp("m3d")
    rng = np.random.default_rng(1)
    h5 = write_h5(tmp / "d.h5", (rng.random((10, 8, 8, 8, 1)) < 0.5).astype(np.uint8) * 255, (8, 8, 8))
    t = Trainer(resolve("tiny", None, ["steps=2"]), h5, tmp / "run")
    return t.fit(progress=False)


def test_grid_rows_are_rows_of_the_full_grid():
    from nfd.grid import grid_coords
    from nfd.sampling.sample import grid_axis, grid_rows

    for r, d in ((1, 2), (2, 3), (7, 2), (5, 3), (3, 4)):
        full = grid_coords(r, d)
        n = r**d
        for a, b in ((0, n), (0, 1), (max(0, n - 3), n), (min(1, n - 1), max(1, n // 2))):
            assert torch.equal(grid_rows(grid_axis(r), d, a, b), full[a:b])


@pytest.mark.parametrize("which, resolutions", [("model_2d", (2, 7, 33)), ("model_3d", (2, 5, 9))])
def test_chunked_grid_is_bit_identical_to_the_one_shot_path(request, which, resolutions):
    """The earlier implementation built the whole grid and evaluated it in one call; chunked generation must give
    the same bits, also for chunk sizes that do not divide the grid."""
    from nfd.grid import grid_coords
    from nfd.sampling.sample import latents, load_generator, sample_grid

    G, meta = load_generator(request.getfixturevalue(which))
    d = int(meta["coord_dim"])
    z = latents(G, 19, 3)  # more than one evaluate batch (16)
    for r in resolutions:
        for chunk in (1, 7, 100, 1 << 18):
            if chunk == 1 and r**d > 200:
                continue
            old = G.evaluate(z, grid_coords(r, d), chunk_points=chunk).reshape(19, *([r] * d), -1).numpy()
            new = sample_grid(G, z, r, d, chunk_points=chunk)
            assert new.dtype == np.float32 and new.shape == old.shape
            assert np.array_equal(new.view(np.uint32), old.view(np.uint32)), (r, chunk)


def test_peak_memory_is_the_output_plus_one_chunk(model_2d):
    """16M grid points (64 MB of output): the peak grows by the output and a chunk, not by the 128 MB coordinate
    array (plus its temporaries) that the one-shot path built. Measured in a fresh process: the kernel's peak RSS
    (VmHWM), reset just before sampling through /proc/self/clear_refs."""
    import subprocess
    import sys

    script = (
        "import sys, torch\n"
        "from nfd.sampling.sample import latents, load_generator, sample_grid\n"
        "torch.set_num_threads(1)\n"
        "G, meta = load_generator(sys.argv[1]); z = latents(G, 1, 0)\n"
        "def kb(key):\n"
        "    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key)) * 1024\n"
        "sample_grid(G, z, 64, 2, chunk_points=16384)\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "before = kb('VmRSS'); out = sample_grid(G, z, 4000, 2, chunk_points=16384)\n"
        "print(kb('VmHWM') - before, out.nbytes)\n"
    )
    r = subprocess.run([sys.executable, "-c", script, str(model_2d)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    growth, output = map(int, r.stdout.split())
    assert output == 4000 * 4000 * 4
    assert 0.9 * output < growth < output + (32 << 20), (growth / 2**20, output / 2**20)


def test_too_large_a_grid_is_refused_upfront(model_2d, tmp_path, capsys):
    """Before: 'can't allocate 12000000000000000 bytes' after building coordinates. Now one line, nothing written."""
    out = tmp_path / "s.npz"
    rc = main(["sample", "--checkpoint", str(model_2d), "--num", "3", "--resolution", "100000", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert err.startswith("nfd sample: error: 3 functions at 100000^2 x 1 float32 (10000000000 points each) need ")
    assert "need 120.2 GB of memory (120.0 GB output), only " in err and err.endswith(
        "available; lower --resolution or --num"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "flag, value",
    [("--chunk-points", "0"), ("--chunk-points", "-5"), ("--chunk-points", "x"), ("--resolution", "1"), ("--num", "0")],
)
def test_nonsense_sizes_are_argparse_errors(model_2d, tmp_path, capsys, flag, value):
    argv = {"--checkpoint": str(model_2d), "--num": "1", "--resolution": "4", "--out": str(tmp_path / "s.npz")}
    argv[flag] = value
    with pytest.raises(SystemExit) as e:
        main(["sample", *[t for kv in argv.items() for t in kv]])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err[-1].startswith(f"nfd sample: error: argument {flag}: expected an integer >= ")
    assert not (tmp_path / "s.npz").exists()


def test_sample_onto_a_small_or_read_only_disk(model_2d, tmp_path):
    """Real tmpfs mounts: refused before any work when the .npz cannot fit; a read-only folder is one line too."""
    from tests.test_faults_data import in_tmpfs

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    out = mnt / "s.npz"
    cmd = f"$NFD sample --checkpoint {model_2d} --num 1 --resolution 1024 --out {out}; echo rc=$?; ls -A {mnt} | wc -l"
    r = in_tmpfs(mnt, cmd, "1m")
    assert r.stdout.split()[-2:] == ["rc=2", "0"], (r.stdout, r.stderr)
    assert r.stderr.strip() == (
        f"nfd sample: error: cannot write {out}: 1 function at 1024^2 x 1 float32 (1048576 "
        "points each) need 4.3 MB on disk, only 1.0 MB free there; lower --resolution or --num"
    )
    r = in_tmpfs(mnt, cmd.replace("1024", "8"), "1m", readonly=True)
    assert r.stdout.split()[-2:] == ["rc=2", "0"], (r.stdout, r.stderr)
    assert r.stderr.strip() == f"nfd sample: error: cannot write {out}: Read-only file system"
