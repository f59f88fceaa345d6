"""Inception FID and KID through torch-fidelity, or a structured "not computed" result. Never a substitute number.

FID/KID are computed only when ``torch_fidelity`` imports **and** the Inception weights file exists: the path given,
else ``$NFD_INCEPTION_WEIGHTS``, else the file that torch-fidelity's own download would leave in the torch hub cache
(``<torch.hub.get_dir()>/checkpoints/weights-inception-2015-12-05-6726825d.pth``). Nothing is downloaded. Otherwise
the result has ``status="not computed"``, ``fid``/``kid_*`` set to ``None`` and the message
``not computed: torch-fidelity not installed`` or ``not computed: Inception weights not found at <path>``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from nfd.metrics.registry import register_metric

WEIGHTS_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_ENV = "NFD_INCEPTION_WEIGHTS"
MSG_NOT_INSTALLED = "not computed: torch-fidelity not installed"
MSG_NO_WEIGHTS = "not computed: Inception weights not found at {path}"


def _import_torch_fidelity() -> tuple[Any | None, str | None]:
    """``(torch_fidelity, None)``, or ``(None, why)`` when it or one of its imports (e.g. torchvision) is missing."""
    try:
        import torch_fidelity
    except ImportError as e:
        return None, f"{type(e).__name__}: {e}"
    return torch_fidelity, None


def default_weights_path() -> Path:
    """Where torch-fidelity caches its Inception weights (``torch.hub.get_dir()/checkpoints/<file>``)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILENAME


def weights_path(configured: str | Path | None = None) -> Path:
    """The weights file to use: ``configured``, else ``$NFD_INCEPTION_WEIGHTS``, else the torch hub cache file."""
    if configured:
        return Path(configured)
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env)
    return default_weights_path()


def to_uint8_rgb(images: np.ndarray) -> np.ndarray:
    """Images ``[N, H, W, k]`` (k = 1 or 3) in [-1, 1] to uint8 ``[N, 3, H, W]`` (grey repeated to RGB)."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"FID needs images [N, H, W, 1 or 3], got shape {list(x.shape)}")
    u8 = np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)
    if u8.shape[-1] == 1:
        u8 = np.repeat(u8, 3, axis=-1)
    return np.ascontiguousarray(u8.transpose(0, 3, 1, 2))


def _not_computed(message: str, protocol: dict[str, Any], detail: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "status": "not computed",
        "message": message,
        "results": {"fid": None, "kid_mean": None, "kid_std": None},
        "protocol": protocol,
    }
    if detail:
        out["protocol"] = {**protocol, "detail": detail}
    return out


@register_metric("fid")
def fid_kid(
    samples: np.ndarray,
    reference: np.ndarray,
    weights: str | Path | None = None,
    cuda: bool | None = None,
    kid_subset_size: int = 1000,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Inception FID and KID (torch-fidelity) of images in [-1, 1] against reference images, or "not computed".

    ``samples``, ``reference``: ``[N, H, W, k]`` (k = 1 or 3) in [-1, 1]; ``weights``: the Inception weights file
    (default: see the module docstring); ``cuda``: default = when available.
    """
    path = weights_path(weights)
    protocol: dict[str, Any] = {
        "library": "torch-fidelity",
        "feature_extractor": "inception-v3-compat",
        "weights": str(path),
        "num_samples": int(len(samples)),
        "num_reference": int(len(reference)),
    }
    tf, why = _import_torch_fidelity()
    if tf is None:
        return _not_computed(MSG_NOT_INSTALLED, protocol, detail=why)
    if not path.is_file():
        return _not_computed(MSG_NO_WEIGHTS.format(path=path), protocol)

    # Not exercised by the test suite: torch-fidelity (which needs torchvision) is not installable in the CPU test
    # environment, and the Inception weights are not present there.
    import torch

    class _Images(torch.utils.data.Dataset):
        def __init__(self, x: np.ndarray):
            self.x = torch.from_numpy(x)

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, i: int) -> torch.Tensor:
            return self.x[i]

    if cuda is None:
        cuda = torch.cuda.is_available()
    n_min = min(len(samples), len(reference))
    subset = int(min(kid_subset_size, n_min))
    metrics = tf.calculate_metrics(
        input1=_Images(to_uint8_rgb(samples)),
        input2=_Images(to_uint8_rgb(reference)),
        fid=True,
        kid=True,
        kid_subset_size=subset,
        feature_extractor_weights_path=str(path),
        cuda=bool(cuda),
        batch_size=batch_size,
        cache=False,
        verbose=False,
    )
    protocol.update(
        {
            "torch_fidelity_version": getattr(tf, "__version__", None),
            "kid_subset_size": subset,
            "cuda": bool(cuda),
            "input": "uint8 RGB (grey repeated), resized to 299 by torch-fidelity",
        }
    )
    return {
        "status": "computed",
        "results": {
            "fid": float(metrics["frechet_inception_distance"]),
            "kid_mean": float(metrics["kernel_inception_distance_mean"]),
            "kid_std": float(metrics["kernel_inception_distance_std"]),
        },
        "protocol": protocol,
    }
