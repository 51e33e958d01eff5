import numpy as np
import pytest

from instseg_ros.core import Instances
from instseg_ros.core.geometry import backproject, moments, validate_intrinsics, validate_pose


def _two_objects():
    labels = np.array([[0, 3, 3], [7, 7, 0]], np.int32)
    return Instances(labels=labels, ids=[3, 7], centroids=[[0, 0, 1], [1, 1, 2]],
                     covariances=np.stack([np.eye(3), 2 * np.eye(3)]), scores=[0.9, 0.5],
                     num_points=[2, 2])


def test_select_drops_labels_of_removed_instances():
    inst = _two_objects()
    kept = inst.select(inst.scores > 0.6)
    assert kept.ids.tolist() == [3]
    assert kept.labels.tolist() == [[0, 3, 3], [0, 0, 0]]
    assert kept.covariances.shape == (1, 3, 3) and kept.class_ids.tolist() == [0]
    # the original is untouched
    assert inst.labels.tolist() == [[0, 3, 3], [7, 7, 0]]


def test_rejects_background_or_duplicate_ids():
    with pytest.raises(ValueError, match="> 0"):
        Instances(labels=np.zeros((2, 2)), ids=[0], centroids=np.zeros((1, 3)),
                  covariances=np.zeros((1, 3, 3)), scores=[1], num_points=[1])
    with pytest.raises(ValueError, match="unique"):
        Instances(labels=np.zeros((2, 2)), ids=[2, 2], centroids=np.zeros((2, 3)),
                  covariances=np.zeros((2, 3, 3)), scores=[1, 1], num_points=[1, 1])


def test_points_must_match_labels():
    with pytest.raises(ValueError, match="points"):
        Instances(labels=np.zeros(4), points=np.zeros((3, 3)))


def test_backproject_by_hand():
    K = np.array([[100.0, 0, 1], [0, 50.0, 0], [0, 0, 1]])
    depth = np.array([[2.0, 0.0, 1.0]], np.float32)
    xyz = backproject(depth, K)
    # pixel (u=0, v=0), z=2: x = (0-1)/100*2 = -0.02, y = (0-0)/50*2 = 0
    np.testing.assert_allclose(xyz[0, 0], [-0.02, 0.0, 2.0], atol=1e-7)
    np.testing.assert_allclose(xyz[0, 1], [0, 0, 0])
    np.testing.assert_allclose(xyz[0, 2], [0.01, 0.0, 1.0], atol=1e-7)


def test_moments_of_unit_square_corners():
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], float)
    c, cov = moments(pts)
    np.testing.assert_allclose(c, [0.5, 0.5, 0])
    np.testing.assert_allclose(cov, np.diag([0.25, 0.25, 0.0]))


@pytest.mark.parametrize("K", [np.zeros((3, 3)), np.eye(2), np.full((3, 3), np.nan)])
def test_bad_intrinsics(K):
    with pytest.raises(ValueError, match="K"):
        validate_intrinsics(K)


def test_bad_pose():
    T = np.eye(4)
    T[0, 0] = 2.0
    with pytest.raises(ValueError, match="rigid"):
        validate_pose(T)
    T = np.eye(4)
    T[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        validate_pose(T)
