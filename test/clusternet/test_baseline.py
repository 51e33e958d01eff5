"""RANSAC-plane + DBSCAN baseline on ray-cast boxes: the table goes, separated boxes come back one by one."""
import numpy as np

from instseg_ros.clusternet.baseline import BaselineParams, plane_dbscan_segment


def _same_partition(a, b):
    pairs = set(zip(a[(a > 0) & (b > 0)].tolist(), b[(a > 0) & (b > 0)].tolist()))
    return len(pairs) == len(np.unique(a[a > 0])) == len(np.unique(b[b > 0]))


def test_boxes_on_a_table_are_separated(make_scene):
    rng = np.random.default_rng(3)
    f = make_scene(rng, 120, 160, 4, table_z=0.7)
    # 5 mm pixels at 160x120
    labels, scores = plane_dbscan_segment(f["depth_gt"], f["K"], BaselineParams(stride=1, min_size=10, min_points=5))
    gt = f["labels"]
    assert len(scores) == gt.max() and scores.max() == 1.0
    # each object's pixels carry one predicted label (plane / edge pixels may be dropped)
    assert _same_partition(labels, gt)
    assert (labels[gt == 0] == 0).mean() > 0.98           # the table plane was removed
    # most of each box survives; the band within plane_distance of the table goes with the plane
    for k in range(1, gt.max() + 1):
        assert (labels[gt == k] > 0).mean() > 0.6


def test_no_points_gives_no_objects():
    K = np.array([[30.0, 0, 15], [0, 30, 10], [0, 0, 1]])
    labels, scores = plane_dbscan_segment(np.zeros((20, 30), np.float32), K)
    assert labels.shape == (20, 30) and not labels.any() and len(scores) == 0
