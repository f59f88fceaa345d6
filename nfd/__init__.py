"""nfd: generative models as distributions of functions (Dupont, Teh, Doucet), resolution-independent."""

import os

RUNTIME_ENV = {
    # OpenMP threads that spin while waiting make concurrent jobs (Snakemake runs several) slow each other down by
    # an order of magnitude on a small CPU; passive waiting costs little when a job runs alone.
    "OMP_WAIT_POLICY": "PASSIVE",
    # PyTorch's CPU allocator then asks for transparent huge pages (madvise) for tensors of 2 MB and more. The
    # discriminator's step allocates and frees tensors of hundreds of MB; without huge pages every fresh one costs a
    # page fault per 4 KiB (measured: a 302 MB alloc+fill 80 ms -> 17 ms, the CelebAHQ 64 step 15% faster).
    "THP_MEM_ALLOC_ENABLE": "1",
}
"""Environment set when nfd is imported, unless the variable is already set or ``NFD_RUNTIME_ENV=0``. Both are read
once by the runtimes, so they act only if nfd is imported before torch (the ``nfd`` command and ``python -m nfd``
do)."""

ENV_SET_BY_NFD = (
    () if os.environ.get("NFD_RUNTIME_ENV") == "0" else tuple(k for k in RUNTIME_ENV if k not in os.environ)
)
"""The variables of :data:`RUNTIME_ENV` that this import set (the user had not)."""

for _key in ENV_SET_BY_NFD:
    os.environ[_key] = RUNTIME_ENV[_key]

__version__ = "0.1.0"
