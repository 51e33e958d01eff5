"""Voxel adjacency graph and Felzenszwalb-Huttenlocher graph segmentation into supervoxels (numba).

Felzenszwalb & Huttenlocher (IJCV 2004): edges sorted by increasing dissimilarity; two components
merge when the edge weight is at most both components' internal difference Int(C) + k / |C|;
afterwards components smaller than ``min_size`` are merged into a neighbour along the cheapest edges.

Surface voxels of a fused TSDF map (iso-surface points snapped to cells) are not a closed 26-connected
sheet: they have one-cell holes, and a held-out map of 20-45k voxels falls into 90-520 26-connected
pieces, so FH supervoxels and their adjacency stop at the holes and objects come out in fragments. The
voxel graph (for the segmentation and for supervoxel adjacency in the clustering) can therefore join voxels up
to ``radius`` cells apart (:class:`SupervoxelConfig`), bridging such holes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

#: Radius (in cells) of the 26-neighbourhood: offsets with Euclidean length <= sqrt(3).
RADIUS_26 = float(np.sqrt(3.0))


def half_neighbours(radius: float = RADIUS_26) -> np.ndarray:
    """Integer offsets (dx, dy, dz) with 0 < ||(dx, dy, dz)|| <= radius (cells), each undirected pair once
    (lexicographically positive). int64 (N, 3); radius sqrt(3) gives the 13 of the 26-neighbourhood."""
    if not radius >= 1.0:
        raise ValueError(f"neighbourhood radius must be >= 1 cell, got {radius}")
    r = int(np.floor(radius + 1e-9))
    rng = range(-r, r + 1)
    return np.array([(dx, dy, dz) for dx in rng for dy in rng for dz in rng
                     if (dx, dy, dz) > (0, 0, 0) and dx * dx + dy * dy + dz * dz <= radius * radius + 1e-9],
                    dtype=np.int64)


#: The 13 neighbour offsets of the 26-neighbourhood with the first non-zero component positive
#: (each undirected edge once).
HALF_NEIGHBOURS = half_neighbours(RADIUS_26)


@dataclass
class SupervoxelConfig:
    """k: FH scale (larger -> larger supervoxels), in units of the dissimilarity below.
    min_size: components with fewer voxels are merged into a neighbour.
    normal_weight / color_weight: dissimilarity = normal_weight * (1 - n_i . n_j)
        + color_weight * ||rgb_i - rgb_j|| / (255 sqrt 3).
    radius: cells (Euclidean); voxels at most this far apart are joined in the voxel graph that the FH
        segmentation runs on and that defines supervoxel adjacency for the clustering. sqrt(3) =
        26-neighbourhood (the default); 2.0 adds the offsets (+-2, 0, 0), ..., which bridge one-cell holes
        along the grid axes.
    """

    k: float = 0.2
    min_size: int = 10
    normal_weight: float = 1.0
    color_weight: float = 0.5
    radius: float = RADIUS_26


def voxel_adjacency(coords: np.ndarray, radius: float = RADIUS_26) -> np.ndarray:
    """Edges between voxels at most ``radius`` cells apart (default: 26-adjacent).

    Args: coords int (V, 3) unique voxel indices; radius float >= 1, cells (Euclidean).
    Returns: int64 (E, 2) pairs of row indices into ``coords`` (each undirected edge once).
    """
    offsets = half_neighbours(radius)
    c = np.asarray(coords, np.int64)
    if c.ndim != 2 or c.shape[1] != 3:
        raise ValueError(f"coords must be (V, 3), got {c.shape}")
    if len(c) == 0:
        return np.zeros((0, 2), np.int64)
    pad = int(np.abs(offsets).max())     # keys of c + offset stay inside the padded box (no wrap-around)
    c = c - c.min(axis=0) + pad
    dims = c.max(axis=0) + pad + 1
    key = (c[:, 0] * dims[1] + c[:, 1]) * dims[2] + c[:, 2]
    order = np.argsort(key, kind="stable")
    sk = key[order]
    if len(sk) > 1 and (np.diff(sk) == 0).any():
        raise ValueError("coords contain duplicate voxels")
    edges = []
    for dx, dy, dz in offsets:
        nk = key + (dx * dims[1] + dy) * dims[2] + dz
        pos = np.searchsorted(sk, nk)
        pos = np.minimum(pos, len(sk) - 1)
        hit = sk[pos] == nk
        edges.append(np.stack([np.flatnonzero(hit), order[pos[hit]]], axis=1))
    return np.concatenate(edges).astype(np.int64)


def edge_dissimilarity(edges: np.ndarray, normals: np.ndarray, colors: np.ndarray,
                       cfg: SupervoxelConfig) -> np.ndarray:
    """float64 (E,) normal + colour dissimilarity of each edge (see :class:`SupervoxelConfig`)."""
    n = np.asarray(normals, np.float64)
    c = np.asarray(colors, np.float64)
    a, b = edges[:, 0], edges[:, 1]
    dn = 1.0 - np.clip((n[a] * n[b]).sum(axis=1), -1.0, 1.0)
    dc = np.linalg.norm(c[a] - c[b], axis=1) / (255.0 * np.sqrt(3.0))
    return cfg.normal_weight * dn + cfg.color_weight * dc


@numba.njit(cache=True)
def _find(parent, x):
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@numba.njit(cache=True)
def _fh(n, ea, eb, w, k, min_size):
    order = np.argsort(w, kind="mergesort")
    parent = np.arange(n)
    size = np.ones(n, np.int64)
    thresh = np.full(n, k)
    for t in range(len(order)):
        e = order[t]
        a = _find(parent, ea[e])
        b = _find(parent, eb[e])
        if a != b and w[e] <= thresh[a] and w[e] <= thresh[b]:
            if size[a] < size[b]:
                a, b = b, a
            parent[b] = a
            size[a] += size[b]
            thresh[a] = w[e] + k / size[a]
    for t in range(len(order)):
        e = order[t]
        a = _find(parent, ea[e])
        b = _find(parent, eb[e])
        if a != b and (size[a] < min_size or size[b] < min_size):
            if size[a] < size[b]:
                a, b = b, a
            parent[b] = a
            size[a] += size[b]
    out = np.empty(n, np.int64)
    for i in range(n):
        out[i] = _find(parent, i)
    return out


def felzenszwalb_graph(num_vertices: int, edges: np.ndarray, weights: np.ndarray, k: float,
                       min_size: int = 1) -> np.ndarray:
    """FH segmentation of a general graph.

    Args: num_vertices V; edges int (E, 2); weights float (E,) dissimilarities >= 0; k scale; min_size.
    Returns: int64 (V,) segment labels 0..S-1 (numbered by first occurrence).
    """
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    weights = np.asarray(weights, np.float64).reshape(-1)
    if len(edges) != len(weights):
        raise ValueError("edges and weights must have the same length")
    if len(edges) and (edges.min() < 0 or edges.max() >= num_vertices):
        raise ValueError("edge index out of range")
    if not k > 0:
        raise ValueError(f"k must be > 0, got {k}")
    roots = _fh(int(num_vertices), edges[:, 0].copy(), edges[:, 1].copy(), weights, float(k), int(min_size))
    _, first, labels = np.unique(roots, return_index=True, return_inverse=True)
    # renumber by first occurrence for determinism
    rank = np.argsort(np.argsort(first))
    return rank[labels.reshape(-1)].astype(np.int64)


def supervoxels(coords: np.ndarray, normals: np.ndarray, colors: np.ndarray,
                cfg: SupervoxelConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Supervoxels of a surface-voxel set.

    Args: coords int (V, 3); normals float (V, 3) unit; colors uint8 (V, 3).
    Returns: (labels int64 (V,) 0..S-1, voxel edges int64 (E, 2) of the graph of radius ``cfg.radius``,
    which define supervoxel adjacency for :func:`..clustering.cluster_voxels`).
    """
    cfg = cfg or SupervoxelConfig()
    edges = voxel_adjacency(coords, cfg.radius)
    w = edge_dissimilarity(edges, normals, colors, cfg)
    return felzenszwalb_graph(len(coords), edges, w, cfg.k, cfg.min_size), edges
