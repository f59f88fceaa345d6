"""Neighbour search and query-point selection for the point-cloud discriminator (paper Sec. 3.4).

Neighbourhoods depend only on the coordinates, and in every paper configuration all examples of a batch share their
coordinates, so everything a discriminator needs (queries, neighbour indices, offsets) is computed once per coordinate
set into a :class:`NeighbourPlan` and cached by content.

Determinism: points are put in lexicographic order of their coordinates before any search, so that which of several
equidistant points is chosen depends on the coordinates, never on the input order. That makes the discriminator
exactly permutation invariant, also on grids, where such ties are everywhere.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from scipy.spatial import cKDTree

Tensor = torch.Tensor

_BACKENDS = ("auto", "kdtree", "torch", "naive")
_CHUNK_ELEMENTS = 1 << 25
"""Distance-matrix entries per chunk of the torch backend (128 MiB of float32): bounds its peak memory."""
_TIE_RTOL = 1e-9
"""Farthest-point sampling treats distances this close to the maximum as ties, broken by coordinate order."""


def _check_p(p: float) -> None:
    if not p >= 1.0:
        raise ValueError(f"the l_p neighbour metric needs p >= 1 (inf allowed), got {p}")


def _check_k(k: int, n: int) -> None:
    if not 1 <= k <= n:
        raise ValueError(f"cannot find k={k} neighbours among {n} points")


def _lp_distance(diff: Tensor, p: float) -> Tensor:
    return torch.linalg.vector_norm(diff, ord=p, dim=-1)


def knn_naive(query: Tensor, points: Tensor, k: int, p: float = 2.0) -> Tensor:
    """Brute-force reference: the full distance matrix and a stable argsort (ties go to the lower index)."""
    _check_p(p)
    _check_k(k, points.shape[-2])
    dist = _lp_distance(query.unsqueeze(-2) - points.unsqueeze(-3), p)
    return torch.argsort(dist, dim=-1, stable=True)[..., :k]


def _knn_kdtree(query: Tensor, points: Tensor, k: int, p: float) -> Tensor:
    q = query.detach().cpu().double().numpy()
    x = points.detach().cpu().double().numpy()
    if x.ndim == 2:
        _, idx = cKDTree(x).query(q, k=k, p=p, workers=-1)
        out = np.asarray(idx).reshape(q.shape[0], k)
    else:
        out = np.stack(
            [np.asarray(cKDTree(xb).query(qb, k=k, p=p, workers=-1)[1]).reshape(qb.shape[0], k) for qb, xb in zip(q, x)]
        )
    return torch.from_numpy(out.astype(np.int64)).to(points.device)


def _knn_torch(query: Tensor, points: Tensor, k: int, p: float) -> Tensor:
    squeeze = points.dim() == 2
    q, x = (query[None], points[None]) if squeeze else (query, points)
    rows = max(1, _CHUNK_ELEMENTS // max(1, x.shape[0] * x.shape[1]))
    parts = []
    for start in range(0, q.shape[1], rows):
        # The matmul shortcut for l2 loses digits and reorders near-ties; the direct form is exact enough.
        dist = torch.cdist(q[:, start : start + rows], x, p=p, compute_mode="donot_use_mm_for_euclid_dist")
        parts.append(torch.topk(dist, k, dim=-1, largest=False, sorted=True).indices)
    idx = torch.cat(parts, dim=1)
    return idx[0] if squeeze else idx


def knn(query: Tensor, points: Tensor, k: int, p: float = 2.0, backend: str = "auto") -> Tensor:
    """Indices ``[..., M, k]`` of the k nearest ``points`` ``[..., N, d]`` to each ``query`` ``[..., M, d]`` under l_p.

    Sorted by distance. ``backend``: 'kdtree' (scipy cKDTree, all cores), 'torch' (chunked ``cdist`` + ``topk``, for
    CUDA), 'naive' (:func:`knn_naive`) or 'auto' (kdtree for CPU tensors, torch otherwise).
    """
    if backend not in _BACKENDS:
        raise ValueError(f"unknown knn backend '{backend}' (known: {', '.join(_BACKENDS)})")
    _check_p(p)
    _check_k(k, points.shape[-2])
    if query.dim() != points.dim() or query.dim() not in (2, 3) or query.shape[-1] != points.shape[-1]:
        raise ValueError(
            f"knn expects query [M, d] / points [N, d] or batched [B, M, d] / [B, N, d], "
            f"got {tuple(query.shape)} and {tuple(points.shape)}"
        )
    if backend == "auto":
        backend = "kdtree" if points.device.type == "cpu" else "torch"
    if backend == "kdtree":
        return _knn_kdtree(query, points, k, p)
    if backend == "torch":
        return _knn_torch(query, points, k, p)
    return knn_naive(query, points, k, p)


def lexsort(points: Tensor) -> Tensor:
    """Permutation putting ``points`` ``[N, d]`` in lexicographic order of (x_0, x_1, ...): a canonical order."""
    order = torch.arange(points.shape[0], device=points.device)
    for col in reversed(range(points.shape[1])):
        order = order[torch.argsort(points[order, col], stable=True)]
    return order


def _pow_distance(diff: Tensor, p: float) -> Tensor:
    """sum_j |diff_j|^p (max_j for p = inf) over the last axis, one element-wise op per coordinate: the same bits for
    the same pair of points wherever it sits in a tensor (a reduction kernel may round differently by position)."""
    a = diff.abs()
    cols = a.unbind(-1)
    out = cols[0] if math.isinf(p) or p == 1.0 else (cols[0] * cols[0] if p == 2.0 else cols[0].pow(p))
    for col in cols[1:]:
        if math.isinf(p):
            out = torch.maximum(out, col)
        else:
            out = out + (col if p == 1.0 else col * col if p == 2.0 else col.pow(p))
    return out


def _rerank(query: Tensor, points: Tensor, cand: Tensor, k: int, p: float) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest of the candidate indices ``cand [M, S]`` by :func:`_pow_distance`, exact ties going to the
    lower index; also whether each query's candidates provably hold every point as near as its k-th neighbour."""
    cand = cand.sort(dim=-1).values
    key = _pow_distance(points[cand] - query.unsqueeze(-2), p)  # [M, S]
    order = torch.argsort(key, dim=-1, stable=True)
    kth = torch.gather(key, -1, order[..., k - 1 : k]).squeeze(-1)
    farthest = key.amax(dim=-1)
    complete = (
        farthest > kth * (1.0 + 1e-9) + 1e-300
        if cand.shape[-1] < points.shape[0]
        else torch.ones_like(kth, dtype=torch.bool)
    )
    return torch.gather(cand, -1, order[..., :k]), complete


def canonical_knn(query: Tensor, points: Tensor, k: int, p: float = 2.0, backend: str = "auto") -> Tensor:
    """:func:`knn` run on the points in canonical order, so ties are broken by coordinates, not by input order.

    Equidistant candidates for the last places are resolved the same way by every backend: each backend only
    proposes candidates (more than ``k``, widened until they provably include every point as near as the k-th), and
    one exact re-ranking (:func:`_pow_distance`, stable sort in canonical order) chooses among them. So the KD-tree,
    the chunked-cdist and the brute-force backends return the same neighbourhoods, also on grids, where such ties
    are everywhere; the discriminator's naive reference path therefore computes exactly the fast path's numbers.
    """
    order = lexsort(points)
    pts = points[order]
    n = pts.shape[0]
    _check_k(k, n)
    _check_p(p)
    slack = k
    while True:
        s = min(n, k + slack)
        cand, complete = _rerank(query, pts, knn(query, pts, s, p, backend), k, p)
        if s == n or bool(complete.all()):
            return order[cand]
        slack *= 4


def select_queries(points: Tensor, m: int, p: float = 2.0) -> Tensor:
    """Indices ``[m]`` of ``m`` well-spread points chosen by farthest-point sampling under l_p.

    Deterministic and permutation invariant: the points are visited in lexicographic order, the lexicographically
    first point starts, and (near-)ties in distance go to the lexicographically first point. Each of the m steps
    is one vectorised pass over all N points.
    """
    _check_p(p)
    n = points.shape[0]
    if not 1 <= m <= n:
        raise ValueError(f"cannot select {m} query points among {n}")
    x = points.detach().cpu().double().numpy()
    order = np.lexsort(x.T[::-1])
    cols = [np.ascontiguousarray(x[order, j]) for j in range(x.shape[1])]
    chosen = np.empty(m, dtype=np.int64)
    chosen[0] = 0
    dist = np.full(n, np.inf)
    dist[0] = -np.inf
    new, term, ties = np.empty(n), np.empty(n), np.empty(n, dtype=bool)
    for s in range(1, m):
        # Distance to the last chosen point (the p-th power suffices for comparisons), in preallocated buffers.
        new.fill(0.0)
        for col in cols:
            np.subtract(col, col[chosen[s - 1]], out=term)
            np.abs(term, out=term)
            if math.isinf(p):
                np.maximum(new, term, out=new)
            else:
                np.power(term, p, out=term)
                np.add(new, term, out=new)
        np.minimum(dist, new, out=dist)
        np.greater_equal(dist, dist.max() * (1.0 - _TIE_RTOL), out=ties)
        nxt = int(np.argmax(ties))
        chosen[s] = nxt
        dist[nxt] = -np.inf
    return torch.from_numpy(order[chosen]).to(points.device)


@dataclass
class OffsetGroups:
    """The (query, neighbour) pairs of one shared neighbourhood table grouped by their offset x_i - x_q.

    On a grid, and on points taken from a grid, the same few offsets recur across the whole level (64^2 images: 74
    distinct offsets among the 9,216 pairs of the second level), so a PointConv needs its weight matrix W(u) once per
    distinct u instead of once per pair (see :meth:`nfd.models.pointconv.PointConv.forward_grouped`). Offsets equal up
    to rounding (16 units in the last place of the coordinates) share a group.
    """

    pair_group: Tensor
    """[M * k]: the group of each pair, pairs in row-major order of the ``[M, k]`` table."""
    counts: Tensor
    """[G]: pairs per group, in the offsets' dtype (for averaging over a group)."""
    rows: Tensor
    """[M * k]: the query of each pair, pairs sorted by group."""
    src: Tensor
    """[M * k]: the neighbour of each pair, in the same order as ``rows``."""
    sizes: list[int]
    """Pairs per group, as Python ints (the split sizes of ``rows`` and ``src``)."""


def _row_key(key: Tensor) -> Tensor:
    """One int64 per row of the integer matrix ``key [R, d]`` that sorts as the rows do lexicographically (a mixed
    radix over each column's range), so a 1-D ``unique`` groups them: ``unique(dim=0)`` compares rows one pair at a
    time (~0.03 s for the 6,912 pairs of a 256-point 3D level, paid every step on fresh points). Rows whose ranges
    do not fit 63 bits keep their columns (the row-wise ``unique``)."""
    low = key.amin(dim=0)
    span = (key.amax(dim=0) - low + 1).tolist()
    if math.prod(span) >= 2**62:
        return torch.unique(key, dim=0, return_inverse=True)[1]
    out = torch.zeros(key.shape[0], dtype=torch.long, device=key.device)
    for col, s in enumerate(span):
        out = out * s + (key[:, col] - low[col])
    return out


def offset_groups(nbr_idx: Tensor, offsets: Tensor, coord_scale: float) -> OffsetGroups:
    """Group the pairs of ``nbr_idx [M, k]`` by their ``offsets [M, k, d]``, merging offsets closer than 16 units in
    the last place of ``coord_scale`` (the largest coordinate magnitude). Offsets near a bin edge may land in two
    groups: that only costs speed, never correctness."""
    m, k = nbr_idx.shape
    tol = 16.0 * torch.finfo(offsets.dtype).eps * max(coord_scale, 1e-30)
    key = torch.round(offsets.reshape(m * k, -1).double() / tol).long()
    _, inv = torch.unique(_row_key(key), return_inverse=True)
    order = torch.argsort(inv, stable=True)
    counts = torch.bincount(inv)
    rows = torch.arange(m, device=nbr_idx.device).repeat_interleave(k)
    return OffsetGroups(inv, counts.to(offsets.dtype), rows[order], nbr_idx.reshape(-1)[order], counts.tolist())


LevelSpec = tuple[str, int]
"""One discriminator level: (mode, neighbours), mode 'pool', 'conv' or 'strided' (see
``nfd.config.DiscriminatorConfig.layers``)."""


def pool_levels(num_levels: int, k: int) -> list[LevelSpec]:
    """``num_levels`` conv-then-pool levels with ``k`` neighbours each: the paper text's layout."""
    return [("pool", k)] * num_levels


@dataclass
class PlanLevel:
    """Neighbourhoods of one discriminator level; indices refer to this level's points (``[B, ...]`` if per-example).

    'pool' levels convolve at every point and pool onto the queries; 'conv' levels convolve at every point and keep
    them (no queries, no pooling); 'strided' levels convolve at the queries only."""

    mode: str
    """'pool', 'conv' or 'strided'."""
    query_idx: Tensor | None
    """[M]: the points kept by pooling or striding, in farthest-point order, the next level's points (None: all)."""
    conv_idx: Tensor
    """[N, k] (or [M, k] when strided): neighbours of each PointConv query among this level's points."""
    conv_offsets: Tensor
    """[N, k, d] (or [M, k, d]): x_i - x_q for those neighbours, the inputs of the weight MLPs."""
    pool_idx: Tensor | None
    """[M, k]: neighbours of every query point, averaged by pooling ('pool' levels only)."""
    coord_scale: float = 1.0
    """The largest coordinate magnitude: sets the rounding tolerance of :meth:`conv_groups`."""
    _groups: OffsetGroups | None = field(default=None, init=False, repr=False, compare=False)

    def conv_groups(self) -> OffsetGroups:
        """The conv pairs grouped by offset (shared tables only), computed on first use and kept with the plan:
        only layers that may use the grouped form ask (grouping the 110,592 pairs of a 4,096-point 3D level
        takes ~0.2 s, which freshly sampled point sets would pay every step)."""
        if self.conv_idx.dim() != 2:
            raise ValueError("offset groups exist for neighbourhoods shared by the batch only")
        if self._groups is None:
            self._groups = offset_groups(self.conv_idx, self.conv_offsets, self.coord_scale)
        return self._groups


@dataclass
class NeighbourPlan:
    """Everything coordinate-dependent in a PointConv discriminator, computed once per coordinate set."""

    levels: list[PlanLevel]
    final_idx: Tensor
    """[1, n_L]: every point left after the last level, gathered by the final PointConv."""
    final_offsets: Tensor
    """[1, n_L, d]: their offsets from their centroid, the final PointConv's single query."""
    shared: bool
    """True when one plan serves the whole batch (coordinates [N, d]); False for per-example [B, N, d]."""


_MODES = ("pool", "conv", "strided")


def _plan_one(coords: Tensor, levels: list[LevelSpec], p: float, keep_fraction: float, backend: str) -> NeighbourPlan:
    out = []
    cur = coords
    for mode, k in levels:
        n = cur.shape[0]
        k = min(k, n)
        scale = float(cur.abs().max())
        if mode == "conv":
            conv_idx = canonical_knn(cur, cur, k, p, backend)
            out.append(PlanLevel(mode, None, conv_idx, cur[conv_idx] - cur[:, None, :], None, scale))
            continue
        query_idx = select_queries(cur, max(1, math.ceil(n * keep_fraction)), p)
        queries = cur[query_idx]
        if mode == "strided":
            conv_idx = canonical_knn(queries, cur, k, p, backend)
            out.append(PlanLevel(mode, query_idx, conv_idx, cur[conv_idx] - queries[:, None, :], None, scale))
        else:
            conv_idx = canonical_knn(cur, cur, k, p, backend)
            pool_idx = canonical_knn(queries, cur, k, p, backend)
            out.append(PlanLevel(mode, query_idx, conv_idx, cur[conv_idx] - cur[:, None, :], pool_idx, scale))
        cur = queries
    final_idx = torch.arange(cur.shape[0], device=cur.device)[None]
    final_offsets = (cur - cur.mean(dim=0, keepdim=True))[None]
    return NeighbourPlan(out, final_idx, final_offsets, shared=True)


def _stack(parts: list[Tensor | None]) -> Tensor | None:
    return None if parts[0] is None else torch.stack(parts)  # type: ignore[arg-type]


@torch.no_grad()
def build_plan(
    coords: Tensor, levels: Sequence[LevelSpec], p: float = 2.0, keep_fraction: float = 0.25, backend: str = "auto"
) -> NeighbourPlan:
    """Plan the discriminator ``levels`` (see :class:`PlanLevel`) and the final PointConv over shared ``[N, d]`` or
    per-example ``[B, N, d]`` coordinates.

    Neighbour counts are clipped to the points available; pooling and striding keep ``ceil(N * keep_fraction)``
    farthest-point queries.
    """
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    levels = [(str(m), int(k)) for m, k in levels]
    for mode, k in levels:
        if mode not in _MODES or k < 1:
            raise ValueError(f"bad plan level ({mode!r}, {k}): mode must be one of {', '.join(_MODES)}, k >= 1")
    if coords.dim() == 2:
        return _plan_one(coords, levels, p, keep_fraction, backend)
    if coords.dim() != 3:
        raise ValueError(f"coordinates must be [N, d] or [B, N, d], got {tuple(coords.shape)}")
    plans = [_plan_one(c, levels, p, keep_fraction, backend) for c in coords]
    stacked = [
        PlanLevel(
            levels[i][0],
            **{
                f.name: _stack([getattr(pl.levels[i], f.name) for pl in plans])
                for f in fields(PlanLevel)
                if f.init and f.name not in ("mode", "coord_scale")
            },
            coord_scale=max(pl.levels[i].coord_scale for pl in plans),
        )
        for i in range(len(levels))
    ]
    return NeighbourPlan(
        stacked,
        torch.stack([pl.final_idx for pl in plans]),
        torch.stack([pl.final_offsets for pl in plans]),
        shared=False,
    )


class PlanCache:
    """A small LRU of plans keyed on the coordinates' content (shape, dtype, device, bytes) and the plan settings.

    A fixed full grid is therefore planned once per run; freshly subsampled coordinates just miss.
    """

    def __init__(self, maxsize: int = 8) -> None:
        self.maxsize = maxsize
        self._plans: OrderedDict[tuple, NeighbourPlan] = OrderedDict()
        self._lock = threading.Lock()  # the trainer builds the next step's plan on a side thread
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(coords: Tensor, *settings: object) -> tuple:
        """Content key: a hash of the coordinate bytes plus everything else the plan depends on."""
        digest = hashlib.blake2b(coords.detach().cpu().contiguous().numpy().tobytes(), digest_size=16).hexdigest()
        return (tuple(coords.shape), str(coords.dtype), str(coords.device), digest, *settings)

    def get(
        self, coords: Tensor, levels: Sequence[LevelSpec], p: float = 2.0, keep_fraction: float = 0.25
    ) -> NeighbourPlan:
        """The cached plan for these coordinates and settings, building it on a miss."""
        levels = tuple((str(m), int(k)) for m, k in levels)
        key = self.key(coords, levels, float(p), float(keep_fraction))
        with self._lock:
            plan = self._plans.get(key)
            if plan is not None:
                self.hits += 1
                self._plans.move_to_end(key)
                return plan
            self.misses += 1
        plan = build_plan(coords, levels, p, keep_fraction)
        with self._lock:
            self._plans[key] = plan
            if len(self._plans) > self.maxsize:
                self._plans.popitem(last=False)
        return plan


plan_cache = PlanCache()
"""The process-wide cache used by the discriminators."""
