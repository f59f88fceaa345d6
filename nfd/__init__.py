"""nfd: generative models as distributions of functions (Dupont, Teh, Doucet), resolution-independent."""

import os

# OpenMP threads that spin while waiting make concurrent jobs (Snakemake runs several) slow each other down by
# an order of magnitude on a small CPU; passive waiting costs little when a job runs alone. Must precede torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
