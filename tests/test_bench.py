"""`nfd bench`: the fast and naive training steps agree, the JSON record has its documented keys, and the
generator's cost per example does not depend on the batch size. Tiny sizes; nothing here asserts on wall time."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest
import torch

import nfd
from nfd.cli import main
from nfd.presets import resolve
from nfd.report.bench_step import DataShape, build_setup, generator_cost, run_step, step_inputs

STEP_KEYS = {
    "schema",
    "kind",
    "preset",
    "config",
    "sets",
    "device",
    "device_name",
    "threads",
    "torch_version",
    "cpu",
    "timestamp",
    "data",
    "steps",
    "warmup",
    "amp",
    "compile",
    "rss_isolated",
    "mode",
    "seconds_per_step",
    "cpu_seconds_per_step",
    "peak_rss_bytes",
    "peak_rss_gb",
    "peak_cuda_bytes",
    "flops_per_step",
    "gflops_per_s",
    "metrics",
    "env",
    "fast",
    "naive",
    "fast_over_naive",
    "speedup_over_naive",
    "step0_max_rel_diff",
}
MODE_KEYS = {
    "mode",
    "seconds_per_step",
    "cpu_seconds_per_step",
    "flops_per_step",
    "gflops_per_s",
    "metrics",
    "peak_rss_bytes",
    "peak_rss_gb",
    "peak_cuda_bytes",
    "rss_after_build_bytes",
    "threads",
    "env",
    "metrics_step0",
    "peak_rss_process_bytes",
    "loadavg_before",
    "loadavg_after",
}


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _state(setup) -> dict[str, torch.Tensor]:
    out = {f"G.{k}": v.detach().clone() for k, v in setup.G.state_dict().items()}
    out.update({f"D.{k}": v.detach().clone() for k, v in setup.D.state_dict().items()})
    return out


@pytest.mark.parametrize("case", ["grid2d", "subset3d", "features3", "grouped"])
def test_fast_and_naive_steps_agree(float64, case):
    """From the same weights and data, one fast step and one naive step (per-example generator loop, brute-force
    neighbours on every D call, naive PointConv) give the same losses and the same parameter updates; 'grouped' forces
    the per-offset form on every level of D (its automatic choice needs larger grids than a test can afford)."""
    # both steps keep D's branches on one thread: this compares the forms, tests/test_parallel_branches.py the threads
    sets = ["train.r1_weight=10.0", "train.d_branches=sequential"]
    if case in ("grid2d", "grouped"):
        shape = DataShape(2, 1, 10)  # full 10x10 grid: ties everywhere in the neighbour search
    elif case == "subset3d":
        shape = DataShape(3, 1, 8)  # 256 of 512 points, a fresh subset per step
        sets.append("points=256")
    else:
        shape = DataShape(2, 3, 12)
        sets += ["discriminator.channels=[8, 16, 16]", "train.r1_on=sigmoid"]
    cfg = resolve("tiny", None, sets)
    fast, naive = build_setup(cfg, shape, seed=3), build_setup(cfg, shape, seed=3)
    if case == "grouped":
        for conv in fast.D.convs:
            conv.strategy = "grouped"
    before = _state(fast)
    assert all(torch.equal(before[k], v) for k, v in _state(naive).items())
    for step in range(2):
        m_fast = run_step(fast, step, naive=False)
        m_naive = run_step(naive, step, naive=True)
        for k in m_fast:
            assert m_fast[k] == pytest.approx(m_naive[k], rel=1e-9, abs=1e-12), (step, k)
    if case == "grouped":  # the grouped form really ran on every level
        assert all(level._groups is not None for level in fast.D.plan(step_inputs(fast, 0)[0]).levels)
    a, b = _state(fast), _state(naive)
    moved = 0
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-7, atol=1e-9, msg=k)
        moved += int(not torch.equal(a[k], before[k]))
    assert moved > len(a) // 2  # the step really updated the models


def test_bf16_autocast_step_tracks_float32():
    """train.amp: the same step under bf16 autocast (CPU here) gives the float32 step's losses to bf16 precision
    (about 3 significant digits) and updates the same parameters, all finite."""
    cfg = resolve("tiny", None, ["train.r1_weight=10.0"])
    shape = DataShape(2, 3, 12)
    ref, amp = build_setup(cfg, shape, seed=5), build_setup(cfg, shape, seed=5)
    before = _state(ref)
    m_ref, m_amp = run_step(ref, 0), run_step(amp, 0, amp=True)
    for k in m_ref:
        assert m_amp[k] == pytest.approx(m_ref[k], rel=5e-2, abs=2e-2), k
        if k.startswith("loss"):
            assert m_amp[k] != m_ref[k], k  # bf16 really ran: not bit-identical to float32
    a, b = _state(ref), _state(amp)
    for k in a:
        assert torch.isfinite(b[k]).all(), k
        assert torch.equal(a[k], before[k]) == torch.equal(b[k], before[k]), k
        assert b[k].dtype == a[k].dtype, k  # autocast changes compute precision, never the weights'


def test_runtime_environment_is_set_unless_the_user_opts_out():
    """`nfd` sets nfd.RUNTIME_ENV (huge pages for large tensors, passive OpenMP waiting) before torch starts, unless
    the user set a variable already or NFD_RUNTIME_ENV=0; `nfd bench --no-env-tuning` passes that on to its child."""
    import os
    import subprocess
    import sys

    import nfd

    probe = "import nfd, os, json; print(json.dumps({k: os.environ.get(k) for k in nfd.RUNTIME_ENV}))"
    base = {k: v for k, v in os.environ.items() if k not in nfd.RUNTIME_ENV and k != "NFD_RUNTIME_ENV"}

    def child_env(extra: dict[str, str]) -> dict[str, str | None]:
        out = subprocess.run(
            [sys.executable, "-c", probe], env={**base, **extra}, capture_output=True, text=True, check=True
        ).stdout
        return json.loads(out)

    assert child_env({}) == nfd.RUNTIME_ENV
    assert child_env({"THP_MEM_ALLOC_ENABLE": "0"})["THP_MEM_ALLOC_ENABLE"] == "0"
    assert child_env({"NFD_RUNTIME_ENV": "0"}) == {k: None for k in nfd.RUNTIME_ENV}


_MALLOC_PROBE = """
import ctypes, json, nfd
names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
class Info(ctypes.Structure):  # glibc's struct mallinfo2; hblkhd: bytes in mmapped blocks
    _fields_ = [(n, ctypes.c_size_t) for n in names]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype, libc.malloc.restype = Info, ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
before = libc.mallinfo2().hblkhd
block = libc.malloc(64 << 20)
mapped = libc.mallinfo2().hblkhd - before
libc.free(block)
print(json.dumps({"tuned": nfd.MALLOC_TUNED, "mapped": mapped}))
"""


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc tuning only"
)
def test_malloc_keeps_freed_memory_unless_the_user_opts_out():
    """Importing nfd serves large blocks from glibc's heap (no mmap per block, so no fresh zeroed pages per step);
    NFD_RUNTIME_ENV=0 or the user's own malloc settings leave glibc's default: a 64 MB block gets its own mapping."""
    drop = {*nfd.MALLOC_USER_SETTINGS, "NFD_RUNTIME_ENV", "LD_PRELOAD", "MALLOC_CONF"}  # glibc's malloc, untuned
    base = {k: v for k, v in os.environ.items() if k not in drop}

    def probe(extra: dict[str, str]) -> dict[str, object]:
        out = subprocess.run(
            [sys.executable, "-c", _MALLOC_PROBE], env={**base, **extra}, capture_output=True, text=True, check=True
        ).stdout
        return json.loads(out)

    assert probe({}) == {"tuned": True, "mapped": 0}
    off = probe({"NFD_RUNTIME_ENV": "0"})
    assert off["tuned"] is False and off["mapped"] >= 64 << 20
    assert probe({"MALLOC_TRIM_THRESHOLD_": "131072"})["tuned"] is False


def test_step_inputs_follow_the_trainer_streams():
    cfg = resolve("tiny", None, ["points=100"])
    setup = build_setup(cfg, DataShape(2, 1, 16))
    c0, r0, _ = step_inputs(setup, 0)
    c0b, r0b, _ = step_inputs(setup, 0)
    c1, _, _ = step_inputs(setup, 1)
    assert c0.shape == (100, 2) and r0.shape == (cfg.train.batch_size, 100, 1)
    assert torch.equal(c0, c0b) and torch.equal(r0, r0b) and not torch.equal(c0, c1)


@pytest.mark.parametrize("naive", [False, True])
def test_generator_flops_per_example_do_not_grow_with_batch(naive):
    cfg = resolve("tiny", None, [])
    setup = build_setup(cfg, DataShape(2, 1, 12))
    sizes = (1, 2, 5, 16)
    flops = [generator_cost(setup.G, setup.all_coords, b, naive=naive, repeats=1)["flops"] for b in sizes]
    # Exactly affine in the batch: a fixed cost per example plus the coordinate encoding, done once per batch.
    per_example = (flops[1] - flops[0]) / (sizes[1] - sizes[0])
    assert per_example > 0
    assert (flops[3] - flops[2]) / (sizes[3] - sizes[2]) == pytest.approx(per_example, rel=1e-12)
    shared = flops[0] - per_example
    assert 0 <= shared < 0.05 * per_example


def test_cli_writes_the_documented_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert (
        main(
            [
                "bench",
                "--preset",
                "tiny",
                "--steps",
                "2",
                "--warmup",
                "1",
                "--naive-steps",
                "1",
                "--naive-warmup",
                "1",
                "--set",
                "batch=4",
                "--json",
                str(out),
                "--in-process",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "fast/naive time ratio" in text and "nfd bench tiny" in text
    rec = json.loads(out.read_text())
    assert STEP_KEYS <= set(rec)
    assert rec["schema"] == "nfd-bench/2" and rec["kind"] == "step" and rec["mode"] == "fast"
    assert rec["data"] == {
        "coord_dim": 2,
        "feature_dim": 1,
        "resolution": 16,
        "points_total": 256,
        "points_per_step": 256,
        "batch_size": 4,
    }
    for mode in ("fast", "naive"):
        assert MODE_KEYS <= set(rec[mode]), mode
        assert rec[mode]["flops_per_step"] > 0 and rec[mode]["peak_rss_bytes"] > 0
        assert set(rec[mode]["seconds_per_step"]) == {"median", "min", "max", "all"}
    assert len(rec["fast"]["seconds_per_step"]["all"]) == 2 and len(rec["naive"]["seconds_per_step"]["all"]) == 1
    assert rec["fast_over_naive"] == pytest.approx(1 / rec["speedup_over_naive"])
    # both modes' FLOP-counted first steps start from the same weights and data (float32 here)
    assert rec["step0_max_rel_diff"] < 1e-4
    assert [g["batch"] for g in rec["fast"]["generator"]] == [1, 2, 4]
    assert rec["rss_isolated"] is False


def test_cli_subprocess_isolation_and_sample_mode(tmp_path, capsys):
    out = tmp_path / "fast.json"
    assert (
        main(
            [
                "bench",
                "--preset",
                "tiny",
                "--steps",
                "1",
                "--warmup",
                "0",
                "--no-naive",
                "--no-gen-scaling",
                "--set",
                "batch=2",
                "--threads",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    rec = json.loads(out.read_text())
    assert rec["rss_isolated"] is True and rec["naive"] is None and rec["fast_over_naive"] is None
    assert rec["threads"] == 1 and rec["env"]["OMP_WAIT_POLICY"]
    out = tmp_path / "sample.json"
    assert (
        main(
            [
                "bench",
                "--preset",
                "tiny",
                "--sample",
                "--sample-resolution",
                "20",
                "--sample-resolution",
                "33",
                "--num",
                "3",
                "--chunk-points",
                "100",
                "--json",
                str(out),
                "--in-process",
            ]
        )
        == 0
    )
    rec = json.loads(out.read_text())
    assert rec["kind"] == "sample" and [r["resolution"] for r in rec["results"]] == [20, 33]
    for r in rec["results"]:
        assert {"seconds", "peak_rss_bytes", "output_bytes", "flops", "gflops_per_s", "points"} <= set(r)
        assert r["finite"] and r["output_bytes"] == 3 * r["points"] * 4
    assert "33^2" in capsys.readouterr().out


def test_cli_errors(capsys):
    assert main(["bench", "--preset", "nope"]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert main(["bench", "--preset", "tiny", "--steps", "0"]) == 2
    if not torch.cuda.is_available():
        assert main(["bench", "--preset", "tiny", "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_jemalloc_env_preloads_it_once_and_untuned_env_restores_the_users_environment():
    """The re-execution's environment puts jemalloc first in LD_PRELOAD (the user's preloads kept), gives it nfd's
    settings unless the user has their own, and is refused where it does not apply; :func:`nfd.untuned_env` undoes
    exactly what it added (round trip to the user's environment)."""
    lib = "/opt/env/lib/libjemalloc.so.2"
    user = {"PATH": "/usr/bin", "LD_PRELOAD": "/usr/lib/libfoo.so"}
    env = nfd.jemalloc_env(user, lib)
    assert env is not None
    assert env["LD_PRELOAD"] == f"{lib}:/usr/lib/libfoo.so"
    assert env["MALLOC_CONF"] == nfd.JEMALLOC_CONF
    assert nfd.untuned_env(env) == {**user, "NFD_RUNTIME_ENV": "0"}
    own = nfd.jemalloc_env({"MALLOC_CONF": "narenas:1"}, lib)
    assert own is not None and own["MALLOC_CONF"] == "narenas:1" and own["LD_PRELOAD"] == lib
    assert nfd.untuned_env(own) == {"MALLOC_CONF": "narenas:1", "NFD_RUNTIME_ENV": "0"}
    for refused in (
        {"NFD_RUNTIME_ENV": "0"},
        {"NFD_ALLOCATOR": "system"},
        {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"},
        env,  # the re-executed process does not re-execute again
    ):
        assert nfd.jemalloc_env(refused, lib) is None, refused
    assert nfd.jemalloc_env(user, None) is None
    if platform.system() == "Linux":  # the variables that importing nfd set are left for the new process to set
        set_here = {k: nfd.RUNTIME_ENV[k] for k in nfd.RUNTIME_ENV}
        again = nfd.jemalloc_env({**user, **set_here}, lib)
        assert again is not None
        assert {k for k in nfd.ENV_SET_BY_NFD}.isdisjoint(again)


@pytest.mark.skipif(
    nfd.jemalloc_library() is None, reason="no jemalloc installed (optional: libjemalloc2, conda's jemalloc)"
)
def test_nfd_command_runs_under_jemalloc_where_installed():
    """The `nfd` command re-executes itself under jemalloc (its --version says which allocator runs); with
    NFD_ALLOCATOR=system or NFD_RUNTIME_ENV=0 it keeps the system's, and a child started with untuned_env does too."""
    drop = {"LD_PRELOAD", "MALLOC_CONF", "NFD_RUNTIME_ENV", "NFD_ALLOCATOR", "NFD_ALLOCATOR_PRELOADED"}
    base = {k: v for k, v in os.environ.items() if k not in drop}

    def version(extra: dict[str, str]) -> str:
        cmd = [sys.executable, "-m", "nfd", "--version"]
        return subprocess.run(cmd, env={**base, **extra}, capture_output=True, text=True, check=True).stdout

    assert "allocator jemalloc" in version({})
    assert "allocator system" in version({"NFD_ALLOCATOR": "system"})
    assert "allocator system" in version({"NFD_RUNTIME_ENV": "0"})
    probe = (
        "import nfd, os, subprocess, sys; assert nfd.ALLOCATOR == 'jemalloc', nfd.ALLOCATOR; "
        "sys.exit(subprocess.run([sys.executable, '-c', 'import nfd; print(nfd.ALLOCATOR, nfd.MALLOC_TUNED)'], "
        "env=nfd.untuned_env(dict(os.environ))).returncode)"
    )
    cmd = [sys.executable, "-c", f"import nfd, sys; nfd.run_under_jemalloc([sys.executable, '-c', {probe!r}])"]
    out = subprocess.run(cmd, env=base, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["system", "False"]
