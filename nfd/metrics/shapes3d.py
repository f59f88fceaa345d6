"""3D shape metrics on point sets sampled from surfaces: Coverage (COV), Minimum Matching Distance (MMD) and 1-NNA.

The distance between two shapes is the squared Chamfer distance between point sets ``A`` and ``B`` (``|A| = |B| =
2,048`` points sampled uniformly from each mesh surface)::

    CD(A, B) = mean_{a in A} min_{b in B} ||a - b||^2  +  mean_{b in B} min_{a in A} ||a - b||^2

so ``CD(A, A) = 0`` and ``CD(A, A + t) = 2 ||t||^2`` when every point's nearest neighbour is its own translate.

With S samples and R references and the distance matrix ``D`` of the union:

- **COV** = fraction of references that are the nearest reference of at least one sample (higher is better);
- **MMD** = mean over references of the distance to the nearest sample (lower is better);
- **1-NNA** = leave-one-out 1-nearest-neighbour classification accuracy over the union, with labels sample/reference
  (50% is ideal for S = R; 100% means the two sets are fully separated).

A failed sample (no surface: marching cubes found nothing, or a surface of zero area) is kept as ``None``: its
distance to everything, itself and other failures included, is ``+inf``. It is never anyone's nearest neighbour, so it
covers no reference and never gives an MMD match, and under 1-NNA it is always misclassified (its nearest neighbour is
undefined). Failures are counted and reported (``num_failed``), never dropped. References without a surface are a data
problem; they are dropped and counted (``num_ref_failed``).

Pairwise distances use one scipy ``cKDTree`` per set and query the stacked points of all other sets against it, so an
N-set union costs N tree queries of N x P points (about 1 ms per ordered pair of 2,048-point sets on one core).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from nfd.metrics.registry import register_metric

DEFAULT_POINTS = 2048
DISTANCE_NAME = "squared Chamfer (mean of squared nearest-neighbour distances, both directions, summed)"

PointSet = np.ndarray | None


# ---------------------------------------------------------------------------------------------------------------------
# Chamfer distances


def chamfer_naive(a: np.ndarray, b: np.ndarray) -> float:
    """Squared Chamfer distance from the full ``[|A|, |B|]`` matrix of squared distances (reference for the tests)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return float(d2.min(axis=1).mean() + d2.min(axis=0).mean())


def chamfer_kdtree(a: np.ndarray, b: np.ndarray) -> float:
    """Squared Chamfer distance between two point sets with KD-trees (one query per direction)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    da, _ = cKDTree(b).query(a, k=1)
    db, _ = cKDTree(a).query(b, k=1)
    return float(np.mean(da**2) + np.mean(db**2))


def _directed(trees_of: Sequence[cKDTree], query_sets: Sequence[np.ndarray], workers: int) -> np.ndarray:
    """``M[i, j] = mean_{p in query_sets[i]} min_{q in tree j} ||p - q||^2`` for non-empty sets."""
    sizes = np.array([len(q) for q in query_sets])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    stacked = np.concatenate(query_sets, axis=0)
    out = np.empty((len(query_sets), len(trees_of)))
    for j, tree in enumerate(trees_of):
        d, _ = tree.query(stacked, k=1, workers=workers)
        out[:, j] = np.add.reduceat(d * d, starts) / sizes
    return out


def _check_set(p: PointSet, what: str, i: int) -> np.ndarray | None:
    if p is None:
        return None
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"{what}[{i}] must be a non-empty [P, d] point set or None, got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError(f"{what}[{i}] has non-finite coordinates")
    return p


def chamfer_matrix(
    sets_a: Sequence[PointSet], sets_b: Sequence[PointSet] | None = None, workers: int = -1
) -> np.ndarray:
    """Matrix of squared Chamfer distances ``D[i, j] = CD(sets_a[i], sets_b[j])`` (``sets_b=None``: ``sets_a`` itself).

    ``None`` entries (failed shapes) give ``+inf`` rows/columns, the diagonal between a failure and itself included.
    One KD-tree is built per non-empty set; ``workers`` is passed to ``cKDTree.query`` (-1: all cores).
    """
    a = [_check_set(p, "sets_a", i) for i, p in enumerate(sets_a)]
    symmetric = sets_b is None
    b = a if symmetric else [_check_set(p, "sets_b", i) for i, p in enumerate(sets_b)]
    dims = {p.shape[1] for p in a + b if p is not None}
    if len(dims) > 1:
        raise ValueError(f"point sets have different dimensions: {sorted(dims)}")
    D = np.full((len(a), len(b)), np.inf)
    ia = [i for i, p in enumerate(a) if p is not None]
    ib = [j for j, p in enumerate(b) if p is not None]
    if not ia or not ib:
        return D
    pa = [a[i] for i in ia]
    pb = [b[j] for j in ib]
    trees_b = [cKDTree(p) for p in pb]
    ab = _directed(trees_b, pa, workers)  # A -> B
    if symmetric:
        sub = ab + ab.T
        np.fill_diagonal(sub, 0.0)
    else:
        trees_a = [cKDTree(p) for p in pa]
        ba = _directed(trees_a, pb, workers)  # B -> A, [len(ib), len(ia)]
        sub = ab + ba.T
    D[np.ix_(ia, ib)] = sub
    return D


# ---------------------------------------------------------------------------------------------------------------------
# COV, MMD, 1-NNA from distance matrices


def coverage(d_sr: np.ndarray) -> float:
    """COV from the ``[S, R]`` sample-to-reference matrix: share of references that some sample has as its nearest."""
    S, R = d_sr.shape
    if R == 0:
        raise ValueError("coverage needs at least one reference")
    ok = np.isfinite(d_sr).any(axis=1)
    if not ok.any():
        return 0.0
    nearest = np.argmin(d_sr[ok], axis=1)
    return float(len(np.unique(nearest)) / R)


def minimum_matching_distance(d_sr: np.ndarray) -> float:
    """MMD from the ``[S, R]`` matrix: mean over references of the distance to the nearest sample (+inf if none)."""
    if d_sr.shape[1] == 0:
        raise ValueError("MMD needs at least one reference")
    if d_sr.shape[0] == 0:
        return float("inf")
    return float(d_sr.min(axis=0).mean())


def one_nna(d_all: np.ndarray, num_samples: int) -> dict[str, float]:
    """Leave-one-out 1-NN accuracy over the union; rows/columns ``[:num_samples]`` are samples, the rest references.

    A point whose distances are all ``+inf`` (a failed sample) counts as misclassified. Ties go to the lowest index.
    Returns ``{"acc", "acc_samples", "acc_references"}``.
    """
    n = d_all.shape[0]
    if d_all.shape != (n, n) or not 0 < num_samples < n:
        raise ValueError(f"1-NNA needs an [N, N] matrix with both sets non-empty, got {d_all.shape}, S={num_samples}")
    d = d_all.copy()
    np.fill_diagonal(d, np.inf)
    labels = np.arange(n) < num_samples
    nn = np.argmin(d, axis=1)
    has = np.isfinite(d[np.arange(n), nn])
    correct = has & (labels[nn] == labels)
    return {
        "acc": float(correct.mean()),
        "acc_samples": float(correct[:num_samples].mean()),
        "acc_references": float(correct[num_samples:].mean()),
    }


@register_metric("shapes3d")
def shape_metrics(samples: Sequence[PointSet], references: Sequence[PointSet], workers: int = -1) -> dict[str, Any]:
    """COV, MMD and 1-NNA with squared Chamfer distance between sampled and reference point sets.

    ``samples``: point sets ``[P, 3]`` or ``None`` for a failed sample (counted, see the module docstring).
    ``references``: point sets; ``None`` entries are dropped and counted as ``num_ref_failed``.
    """
    samples = list(samples)
    refs_all = list(references)
    refs = [r for r in refs_all if r is not None]
    if not samples:
        raise ValueError("shape metrics need at least one sample")
    if not refs:
        raise ValueError("shape metrics need at least one reference with a surface")
    S, R = len(samples), len(refs)
    D = chamfer_matrix(samples + refs, workers=workers)
    # a failure is at +inf from everything, itself included (chamfer_matrix's diagonal is 0 only between real sets)
    d_sr = D[:S, S:]
    nna = one_nna(D, S)
    num_failed = sum(p is None for p in samples)
    points = sorted({len(p) for p in samples + refs if p is not None})
    return {
        "results": {
            "cov": coverage(d_sr),
            "mmd": minimum_matching_distance(d_sr),
            "1nna": nna["acc"],
            "1nna_samples": nna["acc_samples"],
            "1nna_references": nna["acc_references"],
            "num_failed": int(num_failed),
            "failure_rate": num_failed / S,
        },
        "protocol": {
            "distance": DISTANCE_NAME,
            "num_samples": S,
            "num_references": R,
            "num_ref_failed": len(refs_all) - R,
            "points_per_shape": points[0] if len(points) == 1 else points,
            "failed_samples": "kept: +inf distance to everything (cover nothing, never matched, 1-NNA misclassified)",
            "1nna_ideal": 0.5 if S == R else None,
            "balanced": S == R,
        },
    }


# ---------------------------------------------------------------------------------------------------------------------
# From volumes and meshes to point sets


def sample_mesh_points(mesh: Any, num_points: int = DEFAULT_POINTS, seed: Any = 0) -> np.ndarray | None:
    """``num_points`` points uniformly on the surface of a trimesh mesh (``None`` for an empty or zero-area mesh).

    ``seed`` is anything ``numpy.random.default_rng`` takes (an int, a sequence of ints, a Generator).
    """
    import trimesh

    if mesh is None or len(mesh.faces) == 0 or not np.isfinite(mesh.area) or mesh.area <= 0:
        return None
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    points, _ = trimesh.sample.sample_surface(mesh, int(num_points), seed=rng)
    return np.asarray(points, dtype=np.float64)


def volume_point_set(
    volume: np.ndarray, num_points: int = DEFAULT_POINTS, seed: Any = 0, level: float = 0.0
) -> np.ndarray | None:
    """Mesh a ``[R, R, R]`` occupancy grid (values in [-1, 1], surface at ``level``) and sample its surface.

    Returns ``None`` when there is no surface (a failed shape).
    """
    from nfd.viz.mesh import EmptySurfaceError, extract_mesh

    try:
        mesh = extract_mesh(np.asarray(volume, dtype=np.float32), level=level)
    except EmptySurfaceError:
        return None
    return sample_mesh_points(mesh, num_points, seed)


def volumes_point_sets(
    volumes: Sequence[np.ndarray] | np.ndarray,
    num_points: int = DEFAULT_POINTS,
    seed: int = 0,
    role: int = 0,
    level: float = 0.0,
    offset: int = 0,
    progress: bool = False,
) -> list[np.ndarray | None]:
    """Point sets of many volumes; volume ``i`` uses the RNG ``default_rng([seed, role, offset + i])`` (reproducible,
    distinct between samples, ``role=0``, and references, ``role=1``; ``offset`` when processing a list in chunks).
    ``progress``: a bar of the volumes meshed (``nfd.progressbar``)."""
    from nfd.progressbar import progress_bar

    bar = progress_bar(volumes, desc="surface points", unit="shape", enabled=progress)
    return [volume_point_set(v, num_points, [seed, role, offset + i], level) for i, v in enumerate(bar)]
