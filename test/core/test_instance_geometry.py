"""covariance_to_pose / oriented_extents / validated_covariances without ROS, against hand-derived values."""
from __future__ import annotations

import numpy as np
import pytest

from instseg_ros.core.instance_geometry import N_SIGMA, covariance_to_pose, oriented_extents, validated_covariances
from instseg_ros.core.instances import Instances


def test_covariance_to_pose_axis_aligned():
    # variances x=4, y=1, z=9 (cm^2): axes ordered z, x, y; sigmas 3, 2, 1 cm; R = [z x y] is a rotation
    # about (1, 1, 1) by 120 deg: q = (-1/2, -1/2, -1/2, 1/2) up to the sign convention of the package
    R, q, sig = covariance_to_pose(np.zeros(3), np.diag([4e-4, 1e-4, 9e-4]))
    np.testing.assert_allclose(R, [[0, 1, 0], [0, 0, 1], [1, 0, 0]], atol=1e-12)
    np.testing.assert_allclose(sig, [0.03, 0.02, 0.01], rtol=1e-9)
    np.testing.assert_allclose(q, [-0.5, -0.5, -0.5, 0.5], atol=1e-12)


def test_oriented_extents_of_a_rotated_box_and_the_sigma_fallback(rotated_grid_box):
    # a 0.3 x 0.2 x 0.1 grid box rotated 30 deg about z at (1, 2, 3), label 5; invalid (0, 0, 0) points
    # labelled 5 and far background points must be ignored
    box, c, C, pts, labels = rotated_grid_box
    inst = Instances(labels=labels, ids=[5], centroids=[c], covariances=[C], scores=[1.0], num_points=[len(box)])
    np.testing.assert_allclose(oriented_extents(inst, points=pts), [[0.3, 0.2, 0.1]], atol=1e-9)
    # without points: the 2 * N_SIGMA * sigma diameter; the x' variance of 7 even steps over 0.3 m is
    # 0.05^2 * (9 + 4 + 1) * 2 / 7 = 0.01
    ext = oriented_extents(inst)
    assert ext[0, 0] == pytest.approx(2 * N_SIGMA * np.sqrt(0.01), rel=1e-9)


def test_validated_covariances_names_the_bad_instance():
    inst = Instances(labels=np.zeros((2, 2), np.int32), ids=[4, 9], centroids=[[0, 0, 1.0], [0, 0, 2.0]],
                     covariances=[np.eye(3), np.eye(3)], scores=[1, 1], num_points=[1, 1])
    assert validated_covariances(inst) is inst.covariances
    inst.covariances[1, 0, 1] = 0.5
    with pytest.raises(ValueError, match=r"covariances\[1\] \(id 9\) is not symmetric"):
        validated_covariances(inst)
    inst.covariances[1] = np.diag([1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="not positive semi-definite"):
        oriented_extents(inst)
    inst.covariances[1] = np.eye(3)
    inst.centroids[0, 1] = np.nan
    with pytest.raises(ValueError, match=r"centroids\[0\] \(id 4\)"):
        validated_covariances(inst)
