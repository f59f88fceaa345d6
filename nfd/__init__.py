"""nfd: generative models as distributions of functions (Dupont, Teh, Doucet), resolution-independent."""

import ctypes
import os
import platform

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


MALLOC_TUNED = keep_freed_memory()
"""Whether importing nfd switched glibc's malloc to keeping freed memory (:func:`keep_freed_memory`)."""

__version__ = "0.1.0"
