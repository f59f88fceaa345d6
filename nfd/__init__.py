"""nfd: generative models as distributions of functions (Dupont, Teh, Doucet), resolution-independent."""

import ctypes
import ctypes.util
import os
import platform
import sys

RUNTIME_ENV = {
    # OpenMP threads that spin while waiting make concurrent jobs (Snakemake runs several) slow each other down by
    # an order of magnitude on a small CPU; passive waiting costs little when a job runs alone...
    "OMP_WAIT_POLICY": "PASSIVE",
    # ...except that a step of thousands of small products wakes the sleeping threads through a futex each time: a
    # short spin first (GNU OpenMP: ~0.1 ms) keeps them awake between consecutive parallel regions. Measured on 2
    # cores: the CelebAHQ 128 step 17.1 s passive -> 12.1 s with this spin; but two 2-thread demo_mnist jobs at once
    # 1.0 -> 1.9 s per step. Jobs that share cores should set GOMP_SPINCOUNT=0 (the Snakemake train rule takes every
    # core, so the demo and paper runs do not share).
    "GOMP_SPINCOUNT": "10000",
    # PyTorch's CPU allocator then asks for transparent huge pages (madvise) for tensors of 2 MB and more. The
    # discriminator's step allocates and frees tensors of hundreds of MB; without huge pages every fresh one costs a
    # page fault per 4 KiB (measured: a 302 MB alloc+fill 80 ms -> 17 ms, the CelebAHQ 64 step 15% faster).
    "THP_MEM_ALLOC_ENABLE": "1",
}
"""Environment set when nfd is imported, unless the variable is already set or ``NFD_RUNTIME_ENV=0``. Both are read
once by the runtimes, so they act only if nfd is imported before torch (the ``nfd`` command and ``python -m nfd``
do)."""

_TUNING_ON = os.environ.get("NFD_RUNTIME_ENV") != "0"

ENV_SET_BY_NFD = tuple(k for k in RUNTIME_ENV if k not in os.environ) if _TUNING_ON else ()
"""The variables of :data:`RUNTIME_ENV` that this import set (the user had not)."""

for _key in ENV_SET_BY_NFD:
    os.environ[_key] = RUNTIME_ENV[_key]

MALLOC_USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")
"""Variables by which a user tunes glibc's allocator; if any is set, :func:`keep_freed_memory` leaves it alone."""

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of returning it to the kernel; True if it did.

    glibc serves every block above 32 MB with its own ``mmap`` and unmaps it on free, so each of the step's large
    tensors arrives as fresh pages that the kernel must fault in and zero: half of the CelebAHQ 128 discriminator's
    real branch went to zeroing pages (``clear_page``, from the products writing their outputs). Serving all blocks
    from the heap and trimming it only above 2 GB of free top lets the next step reuse them: that branch 13-19 s ->
    5-6 s, the whole step 33 s -> 13 s, at the price of a higher peak RSS (4.05 -> 5.1 GB there), the memory no longer
    returned between steps. Unlike the environment above, this acts at any time (also after torch is imported).
    glibc on Linux only; skipped when ``NFD_RUNTIME_ENV=0`` or the user tunes malloc (:data:`MALLOC_USER_SETTINGS`).
    """
    if not _TUNING_ON or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(k in os.environ for k in MALLOC_USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1,oversize_threshold:17179869184"
"""jemalloc's settings under nfd (unless the user sets ``MALLOC_CONF``): keep freed pages for reuse, never purge them,
and serve blocks of up to 16 GB from the ordinary arenas (by default those above 8 MB come from a dedicated arena).
With jemalloc's default decay (freed pages returned after ~10 s) the CelebAHQ 128 step took 22-25 s, as slow as
glibc's unmapping (see :func:`keep_freed_memory`); with the decay off, the 8 MB threshold of the default cost 0.1 GB of
peak RSS there (2.85 -> 2.75 GB without it, steps as fast)."""

_REEXEC_MARK = "NFD_ALLOCATOR_PRELOADED"  # the library nfd preloaded; a re-executed process does not do it again
_CONF_MARK = "NFD_MALLOC_CONF_SET"  # set when MALLOC_CONF is nfd's (JEMALLOC_CONF), not the user's


def jemalloc_library() -> str | None:
    """The jemalloc shared library to preload: the environment's own (conda-forge's ``jemalloc`` in the conda or
    virtual environment's ``lib/``), else the system's (``ld.so``'s cache, e.g. Debian's ``libjemalloc2``); None if
    there is none."""
    for prefix in dict.fromkeys(filter(None, (os.environ.get("CONDA_PREFIX"), sys.prefix, sys.base_prefix))):
        for name in ("libjemalloc.so.2", "libjemalloc.so"):
            path = os.path.join(prefix, "lib", name)
            if os.path.isfile(path):
                return path
    return ctypes.util.find_library("jemalloc") if platform.system() == "Linux" else None


def jemalloc_env(environ: dict[str, str], library: str | None) -> dict[str, str] | None:
    """The environment in which to run this process again under jemalloc, or None where that does not apply: no
    library, not Linux, tuning off (``NFD_RUNTIME_ENV=0`` or ``NFD_ALLOCATOR=system``), jemalloc already preloaded,
    or this process is already the re-executed one.

    Why: glibc, even when it keeps freed memory (:func:`keep_freed_memory`), fragments the heap that the step's tensors
    of hundreds of MB come and go in: on the CelebAHQ 128 step its heap grew to 4.2 GB for 2.3 GB ever in use at once.
    jemalloc, keeping its freed pages (:data:`JEMALLOC_CONF`), reuses them as well: measured side by side on 2 cores
    (4 steps, 2 runs each), peak RSS 4.3 -> 3.3 GB (CelebAHQ 128), 3.7 -> 2.6 GB (CelebAHQ 64), 4.3-4.6 -> 3.6 GB
    (chairs), 1.9-2.1 -> 1.65 GB (MNIST), and every step as fast or faster (CelebAHQ 128 12.9-13.1 -> 10.0-10.5 s).
    """
    if library is None or platform.system() != "Linux" or environ.get(_REEXEC_MARK):
        return None
    if environ.get("NFD_RUNTIME_ENV") == "0" or environ.get("NFD_ALLOCATOR", "auto") != "auto":
        return None
    preload = environ.get("LD_PRELOAD", "")
    if "jemalloc" in preload:
        return None
    env = dict(environ)
    env["LD_PRELOAD"] = f"{library}:{preload}" if preload else library
    if "MALLOC_CONF" not in env:
        env["MALLOC_CONF"], env[_CONF_MARK] = JEMALLOC_CONF, "1"
    env[_REEXEC_MARK] = library
    for key in ENV_SET_BY_NFD:  # the new process sets them again, and so knows that they are nfd's
        env.pop(key, None)
    return env


def untuned_env(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` without what nfd's runtime tuning added (:data:`RUNTIME_ENV`'s variables, the jemalloc preload and
    its settings) and with ``NFD_RUNTIME_ENV=0``, so that a child process runs in the environment as the user set it
    (benchmarks of the untuned runtime, the authors' code as shipped)."""
    env = dict(environ)
    for key in ENV_SET_BY_NFD:
        env.pop(key, None)
    library = env.pop(_REEXEC_MARK, None)
    if library:
        rest = [p for p in env.get("LD_PRELOAD", "").split(":") if p and p != library]
        if rest:
            env["LD_PRELOAD"] = ":".join(rest)
        else:
            env.pop("LD_PRELOAD", None)
        if env.pop(_CONF_MARK, None):
            env.pop("MALLOC_CONF", None)
    env["NFD_RUNTIME_ENV"] = "0"
    return env


def run_under_jemalloc(argv: list[str]) -> None:
    """Replace this process by ``argv`` (a Python command line, e.g. ``[sys.executable, '-m', 'nfd', ...]``) run under
    jemalloc, where :func:`jemalloc_env` says so; return if not (or if the exec fails). The allocator must be loaded
    before the process starts, so the ``nfd`` command and the benchmark scripts call this first thing; programs that
    import nfd as a library keep glibc (with :func:`keep_freed_memory`). The re-executed process and every process
    it starts (Snakemake's and DVC's jobs) inherit the preload."""
    env = jemalloc_env(dict(os.environ), jemalloc_library())
    if env is None:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, argv, env)
    except OSError:
        return


def _jemalloc_loaded() -> bool:
    try:
        return hasattr(ctypes.CDLL(None), "mallctl")
    except OSError:
        return False


ALLOCATOR = "jemalloc" if _jemalloc_loaded() else "system"
"""The C allocator of this process: 'jemalloc' (preloaded, see :func:`run_under_jemalloc`) or 'system'."""

MALLOC_TUNED = ALLOCATOR == "system" and keep_freed_memory()
"""Whether importing nfd switched glibc's malloc to keeping freed memory (:func:`keep_freed_memory`); not done under
jemalloc, which does not use glibc's malloc."""

__version__ = "0.1.0"
