"""Per-instance geometry from an :class:`~instseg_ros.core.instances.Instances` (numpy, no ROS).

What a grasp planner, the RViz markers, the ObjectInstance messages and a JSON export all derive from
an instance's centroid (3,) and covariance (3, 3): its principal axes as a rotation / quaternion, the
standard deviations along them, and the size of its oriented bounding box. Frame: that of the
instances (camera optical frame for the camera pipeline, map frame for the mapping pipeline), metres.
"""
from __future__ import annotations

import numpy as np

from instseg_ros.core.geometry import principal_axes, rotation_to_quaternion
from instseg_ros.core.instances import BACKGROUND, Instances

#: Ellipsoid half-axes in standard deviations: the marker spans +-N_SIGMA * sqrt(eigenvalue) along
#: each principal axis (RViz SPHERE scale = full diameter = 2 * N_SIGMA * sqrt(eigenvalue)). For a
#: solid uniform ellipsoid of semi-axis a, sigma = a / sqrt(5) (2 sigma = 0.89 a); for points on a
#: sphere's surface sigma = r / sqrt(3) (2 sigma = 1.15 r): 2 sigma draws roughly the object.
N_SIGMA = 2.0


def validated_covariances(inst: Instances) -> np.ndarray:
    """``inst.covariances`` (N, 3, 3) after checking every one, and the centroids.

    Raises:
        ValueError naming the index and id: a covariance with NaN/inf, not symmetric, or not positive
        semi-definite (relative tolerance 1e-9 of its largest entry); a centroid with NaN/inf.
    """
    cov = inst.covariances
    for i in range(len(inst)):
        c = cov[i]
        if not np.isfinite(c).all():
            raise ValueError(f"Instances.covariances[{i}] (id {inst.ids[i]}) contains NaN/inf")
        if np.abs(c - c.T).max() > 1e-9 * max(1.0, np.abs(c).max()):
            raise ValueError(f"Instances.covariances[{i}] (id {inst.ids[i]}) is not symmetric")
        if np.linalg.eigvalsh(c).min() < -1e-9 * max(1.0, np.abs(c).max()):
            raise ValueError(f"Instances.covariances[{i}] (id {inst.ids[i]}) is not positive semi-definite")
    if not np.isfinite(inst.centroids).all():
        bad = int(np.flatnonzero(~np.isfinite(inst.centroids).all(axis=1))[0])
        raise ValueError(f"Instances.centroids[{bad}] (id {inst.ids[bad]}) contains NaN/inf")
    return cov


def covariance_to_pose(centroid: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroid (3,) + covariance (3, 3) -> (R (3, 3), quaternion (x, y, z, w), sigmas (3,)).

    R = :func:`~instseg_ros.core.geometry.principal_axes` (columns: largest, middle, smallest
    variance axis, right-handed); sigmas = standard deviations along those columns (m).
    """
    R = principal_axes(cov)
    var = np.einsum("ji,jk,ki->i", R, np.asarray(cov, np.float64), R)  # diag(R^T C R)
    return R, rotation_to_quaternion(R), np.sqrt(np.clip(var, 0.0, None))


def oriented_extents(instances: Instances, points: np.ndarray | None = None,
                     labels: np.ndarray | None = None) -> np.ndarray:
    """Size (N, 3) of each object's oriented bounding box along its principal axes, metres.

    The box is measured on the object's points: ``points`` (float (H, W, 3) aligned with an image
    ``labels`` (H, W), or (M, 3) aligned with per-point labels (M,)), defaulting to
    ``instances.points`` / ``instances.labels``. Points that are not finite or exactly (0, 0, 0)
    (what :func:`~instseg_ros.core.geometry.backproject` returns for invalid depth) are ignored.
    Where no points are given (or an object has none), the extent is the 2 * N_SIGMA * sigma
    ellipsoid diameter (NaN-free, an estimate; the size of the RViz marker).
    Raises ValueError for invalid covariances (:func:`validated_covariances`) or misaligned points.
    """
    n = len(instances)
    cov = validated_covariances(instances)
    axes = [covariance_to_pose(instances.centroids[i], cov[i]) for i in range(n)]
    ext = np.array([2.0 * N_SIGMA * a[2] for a in axes]).reshape(n, 3)
    if points is None and instances.points is not None:
        points = instances.points
    if labels is None:
        labels = instances.labels
    if points is None or n == 0:
        return ext
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    lab = np.asarray(labels).reshape(-1)
    if lab.shape[0] != p.shape[0]:
        raise ValueError(f"points ({p.shape[0]}) and labels ({lab.shape[0]}) must be aligned")
    valid = np.isfinite(p).all(axis=1) & (p != 0).any(axis=1) & (lab != BACKGROUND)
    p, lab = p[valid], lab[valid]
    order = np.argsort(lab, kind="stable")
    lab_sorted = lab[order]
    for i in range(n):
        lo, hi = np.searchsorted(lab_sorted, [instances.ids[i], instances.ids[i] + 1])
        if hi <= lo:
            continue
        local = (p[order[lo:hi]] - instances.centroids[i]) @ axes[i][0]
        ext[i] = local.max(axis=0) - local.min(axis=0)
    return ext
