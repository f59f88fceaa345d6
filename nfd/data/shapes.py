"""The data each config preset trains on, declared once.

``nfd bench`` times training steps on these shapes and the tables (T2-T4) build models for them; keeping the facts
here means the two cannot drift apart. Plain data: importing this module loads neither torch nor h5py.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainingData:
    """One data set as the models see it: ``resolution**coord_dim`` grid points with ``feature_dim`` features each."""

    dataset: str
    coord_dim: int
    feature_dim: int
    resolution: int


MNIST = TrainingData("mnist", 2, 1, 28)
CELEBAHQ64 = TrainingData("celebahq64", 2, 3, 64)
CELEBAHQ128 = TrainingData("celebahq128", 2, 3, 128)
CHAIRS = TrainingData("chairs", 3, 1, 32)

PRESET_DATA: dict[str, tuple[TrainingData, ...]] = {
    "mnist": (MNIST,),
    "celebahq64": (CELEBAHQ64,),
    "celebahq128": (CELEBAHQ128,),
    "shapenet_chairs": (CHAIRS,),
    "demo_mnist": (MNIST,),
    "demo_chairs": (CHAIRS,),
    "tiny": (MNIST, CHAIRS),
}
"""The data sets each config preset trains on, its primary one first (tiny: both, as in the tiny pipeline)."""
