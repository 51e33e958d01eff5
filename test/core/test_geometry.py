"""principal_axes / rotation_to_quaternion / quaternion_to_rotation / moments against rotations derived by hand."""
from __future__ import annotations

import numpy as np
import pytest

from instseg_ros.core.geometry import moments, principal_axes, quaternion_to_rotation, rotation_to_quaternion

S3 = np.sqrt(3.0) / 2.0  # sin 60 = cos 30


def rot_z(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_axis_aligned_covariance_orders_axes_by_variance():
    # variances x=4, y=1, z=9 -> largest z, then x; third = z cross x = y.
    R = principal_axes(np.diag([4.0, 1.0, 9.0]))
    np.testing.assert_allclose(R, [[0, 1, 0], [0, 0, 1], [1, 0, 0]], atol=1e-12)
    # R maps x->z, y->x, z->y: -120 deg about (1,1,1)/sqrt(3): q = (sin(-60) n, cos(-60)).
    np.testing.assert_allclose(rotation_to_quaternion(R), [-0.5, -0.5, -0.5, 0.5], atol=1e-12)


def test_rotated_covariance_recovers_rotation():
    # C = Rz(30) diag(9, 1, 0.25) Rz(30)^T: axes (cos30, sin30, 0), (-sin30, cos30, 0), z;
    # each eigenvector's largest component is already positive, so R = Rz(30).
    R30 = rot_z(30)
    C = R30 @ np.diag([9.0, 1.0, 0.25]) @ R30.T
    R = principal_axes(C)
    np.testing.assert_allclose(R, [[S3, -0.5, 0], [0.5, S3, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(rotation_to_quaternion(R), [0, 0, np.sin(np.radians(15)), np.cos(np.radians(15))],
                               atol=1e-12)


def test_sign_rule_flips_second_axis_and_keeps_right_handed():
    # Rz(120): axis 0 = (-1/2, s3, 0) keeps its sign (s3 > 0); axis 1 = (-s3, -1/2, 0) is flipped to
    # (s3, 1/2, 0); axis 2 = axis0 x axis1 = (0, 0, -1/4 - 3/4) = -z. That R is symmetric: a half turn
    # about n = (cos 60, sin 60, 0), so q = +-(1/2, s3, 0, 0).
    R120 = rot_z(120)
    C = R120 @ np.diag([2.0, 1.0, 0.5]) @ R120.T
    R = principal_axes(C)
    np.testing.assert_allclose(R, [[-0.5, S3, 0], [S3, 0.5, 0], [0, 0, -1]], atol=1e-12)
    assert np.isclose(np.linalg.det(R), 1.0)
    q = rotation_to_quaternion(R)
    assert np.allclose(q, [0.5, S3, 0, 0], atol=1e-9) or np.allclose(q, [-0.5, -S3, 0, 0], atol=1e-9)


def test_identity_and_half_turns_to_quaternion():
    np.testing.assert_allclose(rotation_to_quaternion(np.eye(3)), [0, 0, 0, 1], atol=1e-12)
    # 90 deg about x: q = (sin45, 0, 0, cos45)
    Rx90 = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], float)
    np.testing.assert_allclose(rotation_to_quaternion(Rx90), [np.sqrt(0.5), 0, 0, np.sqrt(0.5)], atol=1e-12)
    # 180 deg about y: q = +-(0, 1, 0, 0)
    q = rotation_to_quaternion(np.diag([-1.0, 1.0, -1.0]))
    np.testing.assert_allclose(np.abs(q), [0, 1, 0, 0], atol=1e-12)


def test_quaternion_round_trip_random_rotations():
    rng = np.random.default_rng(0)
    for _ in range(50):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        R = quaternion_to_rotation(q)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.isclose(np.linalg.det(R), 1.0)
        q2 = rotation_to_quaternion(R)
        assert q2[3] >= 0
        np.testing.assert_allclose(q2, q if q[3] >= 0 else -q, atol=1e-9)


def test_principal_axes_random_covariances_are_right_handed_eigenvectors():
    rng = np.random.default_rng(1)
    for _ in range(30):
        A = rng.normal(size=(3, 3))
        C = A @ A.T
        R = principal_axes(C)
        np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-10)
        assert np.isclose(np.linalg.det(R), 1.0)
        D = R.T @ C @ R  # diagonal, descending
        np.testing.assert_allclose(D - np.diag(np.diag(D)), 0, atol=1e-9)
        assert D[0, 0] >= D[1, 1] >= D[2, 2]


def test_moments_by_hand():
    # four points: centroid (1, 2, 3); deviations +-1 in x (two points), +-2 in y (two points)
    pts = np.array([[0, 2, 3], [2, 2, 3], [1, 0, 3], [1, 4, 3]], float)
    c, C = moments(pts)
    np.testing.assert_allclose(c, [1, 2, 3])
    np.testing.assert_allclose(C, np.diag([2 / 4, 8 / 4, 0]))  # (1+1)/4, (4+4)/4


@pytest.mark.parametrize("deg", [0, 45, 170])
def test_box_point_cloud_axes(deg):
    # grid points of a 0.3 x 0.2 x 0.1 box, rotated about z: the axes come back as Rz(deg) up to sign.
    g = np.stack(np.meshgrid(np.linspace(-0.15, 0.15, 13), np.linspace(-0.1, 0.1, 9), np.linspace(-0.05, 0.05, 5),
                             indexing="ij"), -1).reshape(-1, 3)
    Rt = rot_z(deg)
    _, C = moments(g @ Rt.T + [1, 2, 3])
    R = principal_axes(C)
    np.testing.assert_allclose(np.abs(R.T @ Rt), np.eye(3), atol=1e-9)
