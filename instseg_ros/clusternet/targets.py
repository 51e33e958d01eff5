"""Ground-truth targets of ClusterNet (paper §III-A, §III-B): object features ξ, centroid candidates η,
cluster radius B and the foreground mask, computed from a label image and a noise-free depth image.

Object feature (eq. 1), from the visible 3D points P_k of object k in the camera optical frame (metres):
    c = mean(P_k)  (first-order moment; the paper's text says "bounding box center", its abstract and
                    introduction say first-order moment: we use the mean so that ξ, the clustering and
                    the published ``Instances.centroids`` agree)
    xx, yy, zz, xy, yz, zx = second central moments E[(p - c)(p - c)^T] (1/n)
    ξ = (cx, cy, cz, cx + xx, cy + yy, cz + zz, cx + xy, cy + yz, cz + zx)
Radius (eq. 2): B_k = 1/2 min_{l != k} ||ξ_k - ξ_l||_2 over the other objects of the same image, using the
feature dimensions the model regresses (3 for "c", 9 for "c+cov"); an object alone in its image gets
``max_radius``, and every radius is clipped to ``max_radius``.
Centroid candidates: the ``centroid_fraction`` (paper: 10-30 %) of an object's pixels nearest to its
2D pixel centroid are 1, every other pixel 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from instseg_ros.core.geometry import backproject, validate_intrinsics

#: Feature dimension per feature mode ("c": centroid only, "c+cov": centroid and second moments).
FEATURE_DIMS = {"c": 3, "c+cov": 9}


@dataclass
class Targets:
    """Per-pixel and per-object training targets of one frame (all at the label image's resolution).

    Attributes:
        xi: float32 (H, W, 9) object feature ξ of each pixel's object (eq. 1), metres / m^2; 0 on background.
        centroid: float32 (H, W) 1 on centroid candidates, else 0.
        radius: float32 (H, W) cluster radius B of each pixel's object (eq. 2), metres; 0 on background.
        foreground: bool (H, W) pixel belongs to an object (label > 0 and the object has >= 1 valid point).
        instance: int32 (H, W) dense object index 1..N for foreground pixels, 0 elsewhere.
        ids: int32 (N,) original label ids, ``ids[i - 1]`` belongs to dense index i.
        features: float32 (N, 9) ξ per object. radii: float32 (N,) B per object, metres.
    """

    xi: np.ndarray
    centroid: np.ndarray
    radius: np.ndarray
    foreground: np.ndarray
    instance: np.ndarray
    ids: np.ndarray
    features: np.ndarray
    radii: np.ndarray


def object_features(points: np.ndarray) -> np.ndarray:
    """ξ (9,) of eq. (1) from an object's visible points (n, 3), camera frame, metres (float64 math)."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3 or len(p) == 0:
        raise ValueError(f"points must be (n>0, 3), got {p.shape}")
    c = p.mean(axis=0)
    d = p - c
    cov = d.T @ d / len(p)
    return np.array([c[0], c[1], c[2], c[0] + cov[0, 0], c[1] + cov[1, 1], c[2] + cov[2, 2],
                     c[0] + cov[0, 1], c[1] + cov[1, 2], c[2] + cov[2, 0]])


def radii_from_features(features: np.ndarray, max_radius: float) -> np.ndarray:
    """Eq. (2): half the distance to the nearest other object's feature, clipped to ``max_radius``.

    Args:
        features: (N, D) object features. max_radius: metres, also the radius of a lone object.
    Returns:
        float64 (N,) radii.
    """
    f = np.asarray(features, dtype=np.float64)
    n = len(f)
    if n == 0:
        return np.zeros(0)
    if n == 1:
        return np.full(1, float(max_radius))
    d = np.sqrt(((f[:, None, :] - f[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    return np.minimum(0.5 * d.min(axis=1), float(max_radius))


def compute_targets(labels: np.ndarray, depth_gt: np.ndarray, K: np.ndarray, *, feature: str = "c",
                    centroid_fraction: float = 0.2, max_radius: float = 0.1,
                    min_points: int = 1) -> Targets:
    """Targets of one frame.

    Args:
        labels: int (H, W) visible instance ids, 0 = background.
        depth_gt: float32 (H, W) noise-free depth, metres, 0 = no surface.
        K: (3, 3) intrinsics of this (possibly resized / cropped) image.
        feature: "c" or "c+cov": the feature dims that define the radius B (eq. 2).
        centroid_fraction: share of each object's pixels marked as centroid candidates, in (0, 1].
        max_radius: metres; radius of a lone object and upper clip of every radius.
        min_points: objects with fewer pixels of valid depth are treated as background (their
            feature is undefined).
    Raises:
        ValueError: shapes disagree, bad K, a bad fraction or an unknown feature mode.
    """
    labels = np.asarray(labels)
    depth_gt = np.asarray(depth_gt, dtype=np.float32)
    K = validate_intrinsics(K)
    if labels.ndim != 2 or labels.shape != depth_gt.shape:
        raise ValueError(f"labels {labels.shape} and depth_gt {depth_gt.shape} must be the same (H, W)")
    if not 0.0 < centroid_fraction <= 1.0:
        raise ValueError(f"centroid_fraction must be in (0, 1], got {centroid_fraction}")
    if feature not in FEATURE_DIMS:
        raise ValueError(f"feature must be one of {sorted(FEATURE_DIMS)}, got {feature!r}")
    if (labels < 0).any():
        raise ValueError("labels must be >= 0")
    h, w = labels.shape
    pts = backproject(depth_gt, K).reshape(-1, 3).astype(np.float64)
    lab = labels.reshape(-1).astype(np.int64)
    valid = (depth_gt.reshape(-1) > 0) & np.isfinite(depth_gt.reshape(-1))

    uniq, inv = np.unique(lab, return_inverse=True)
    # per-label sums over valid pixels, vectorised with bincount
    nlab = len(uniq)
    wv = valid.astype(np.float64)
    cnt = np.bincount(inv, weights=wv, minlength=nlab)
    keep = (uniq > 0) & (cnt >= max(1, min_points))
    s1 = np.stack([np.bincount(inv, weights=pts[:, j] * wv, minlength=nlab) for j in range(3)], 1)
    mean = s1 / np.maximum(cnt, 1)[:, None]
    d = pts - mean[inv]
    pairs = ((0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (2, 0))
    m2 = np.stack([np.bincount(inv, weights=d[:, a] * d[:, b] * wv, minlength=nlab) for a, b in pairs], 1)
    m2 = m2 / np.maximum(cnt, 1)[:, None]
    feats_all = np.concatenate([mean, mean + m2[:, :3], mean + m2[:, 3:]], axis=1)  # (nlab, 9)

    kept = np.flatnonzero(keep)
    dense_of_label = np.zeros(nlab, np.int64)
    dense_of_label[kept] = np.arange(1, len(kept) + 1)
    inst = dense_of_label[inv]                      # (HW,) 0 = background
    fg = inst > 0
    feats = feats_all[kept]
    radii = radii_from_features(feats[:, :FEATURE_DIMS[feature]], max_radius)

    xi = np.zeros((h * w, 9), np.float32)
    radius = np.zeros(h * w, np.float32)
    xi[fg] = feats[inst[fg] - 1]
    radius[fg] = radii[inst[fg] - 1]

    # centroid candidates: rank each object's pixels by distance to its 2D centroid
    centroid = np.zeros(h * w, np.float32)
    if len(kept):
        vv, uu = np.divmod(np.arange(h * w), w)
        n_obj = len(kept)
        idx = inst[fg]
        npx = np.bincount(idx, minlength=n_obj + 1).astype(np.float64)
        cu = np.bincount(idx, weights=uu[fg], minlength=n_obj + 1) / np.maximum(npx, 1)
        cv = np.bincount(idx, weights=vv[fg], minlength=n_obj + 1) / np.maximum(npx, 1)
        dist = (uu[fg] - cu[idx]) ** 2 + (vv[fg] - cv[idx]) ** 2
        order = np.lexsort((dist, idx))             # by object, then by distance
        sorted_idx = idx[order]
        start = np.searchsorted(sorted_idx, np.arange(n_obj + 1))
        rank = np.arange(len(order)) - start[sorted_idx]
        n_keep = np.maximum(1, np.ceil(centroid_fraction * npx[sorted_idx] - 1e-9)).astype(np.int64)
        fg_pos = np.flatnonzero(fg)
        centroid[fg_pos[order[rank < n_keep]]] = 1.0

    return Targets(xi=xi.reshape(h, w, 9), centroid=centroid.reshape(h, w), radius=radius.reshape(h, w),
                   foreground=fg.reshape(h, w), instance=inst.reshape(h, w).astype(np.int32),
                   ids=uniq[kept].astype(np.int32), features=feats.astype(np.float32),
                   radii=radii.astype(np.float32))
