"""Regular grids over [-1, 1]^d, in the one axis order used everywhere (see docs/contracts.md)."""

from __future__ import annotations

import torch


def grid_coords(resolution: int, dim: int, device: torch.device | str | None = None) -> torch.Tensor:
    """All points of a ``resolution**dim`` grid over [-1, 1]^dim, shape ``[resolution**dim, dim]``, C order."""
    if resolution < 1 or dim < 1:
        raise ValueError(f"grid needs resolution >= 1 and dim >= 1, got {resolution}, {dim}")
    axis = torch.linspace(-1.0, 1.0, resolution, device=device) if resolution > 1 else torch.zeros(1, device=device)
    mesh = torch.meshgrid(*([axis] * dim), indexing="ij")
    return torch.stack(mesh, dim=-1).reshape(-1, dim)
