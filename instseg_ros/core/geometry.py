"""Camera and point-set geometry shared by both pipelines (numpy, no ROS).

Conventions: camera optical frame (x right, y down, z forward), metres; K is the 3x3 pinhole
matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] in pixels; a pose ``T_a_b`` is a 4x4 rigid transform
mapping points in frame b to frame a.
"""
from __future__ import annotations

import numpy as np


def validate_intrinsics(K: np.ndarray, name: str = "K") -> np.ndarray:
    """Return K as float64 (3, 3); ValueError for a wrong shape, NaN or non-positive focal length."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"{name} must be 3x3, got shape {K.shape}")
    if not np.isfinite(K).all():
        raise ValueError(f"{name} contains NaN/inf")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"{name} has a non-positive focal length (fx={K[0, 0]}, fy={K[1, 1]})")
    return K


def backproject(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixel grid -> 3D points in the camera optical frame.

    Args:
        depth: float32 (H, W) metres; 0 / NaN = invalid (gives a (0, 0, 0) point).
        K: (3, 3) intrinsics.
    Returns:
        float32 (H, W, 3) points, metres.
    """
    K = validate_intrinsics(K)
    h, w = depth.shape
    z = np.nan_to_num(np.asarray(depth, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    u = np.arange(w, dtype=np.float32)
    v = np.arange(h, dtype=np.float32)
    x = (u[None, :] - np.float32(K[0, 2])) / np.float32(K[0, 0]) * z
    y = (v[:, None] - np.float32(K[1, 2])) / np.float32(K[1, 1]) * z
    return np.stack([x, y, z], axis=-1)


def validate_pose(T: np.ndarray, name: str = "T", tol: float = 1e-3) -> np.ndarray:
    """Return T as float64 (4, 4); ValueError if not a finite rigid transform."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"{name} must be 4x4, got shape {T.shape}")
    if not np.isfinite(T).all():
        raise ValueError(f"{name} contains NaN/inf")
    R = T[:3, :3]
    if (np.abs(R @ R.T - np.eye(3)).max() > tol or abs(np.linalg.det(R) - 1.0) > tol
            or np.abs(T[3] - [0, 0, 0, 1]).max() > tol):
        raise ValueError(f"{name} is not a rigid transform (rotation not orthonormal or last row != 0 0 0 1)")
    return T


def moments(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid (3,) and covariance (3, 3) (population, 1/n) of an (n, 3) point set."""
    p = np.asarray(points, dtype=np.float64)
    c = p.mean(axis=0)
    d = p - c
    return c, d.T @ d / len(p)


def principal_axes(cov: np.ndarray) -> np.ndarray:
    """Right-handed rotation whose columns are the covariance's principal axes.

    Column 0 = largest-variance axis, column 1 = second, column 2 = column 0 x column 1. The sign of
    each eigenvector is fixed so that its largest-magnitude component is positive (deterministic
    output for the same covariance), then column 2 is recomputed to keep det = +1.
    """
    w, V = np.linalg.eigh(np.asarray(cov, dtype=np.float64))
    V = V[:, np.argsort(w)[::-1]]
    for k in range(2):
        j = np.argmax(np.abs(V[:, k]))
        if V[j, k] < 0:
            V[:, k] = -V[:, k]
    V[:, 2] = np.cross(V[:, 0], V[:, 1])
    return V


def rotation_to_quaternion(R: np.ndarray) -> np.ndarray:
    """3x3 rotation -> unit quaternion (x, y, z, w) with w >= 0."""
    R = np.asarray(R, dtype=np.float64)
    m = R
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = np.sqrt(tr + 1.0) * 2
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def quaternion_to_rotation(q: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -> 3x3 rotation."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])
