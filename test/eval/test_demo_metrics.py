"""The demo's metrics (match_instances, track_metrics, centroid_errors, transfer_gt_to_points) worked out by hand."""
from __future__ import annotations

import numpy as np
import pytest

from instseg_ros.eval.demo_metrics import centroid_errors, match_instances, track_metrics, transfer_gt_to_points


def test_track_metrics_by_hand():
    # gt 1: ids 5, 5, (unmatched), 5 -> 0 switches, 1 track; gt 2: 6, 7, 6, 6 -> 2 switches, 2 tracks;
    # gt 3: seen once (9) -> 0, 1. Switches 2, tracks per object (1 + 2 + 1) / 3.
    frames = [[(5, 1, 0.9), (6, 2, 0.8)], [(5, 1, 0.9), (7, 2, 0.7)], [(6, 2, 0.8)],
              [(5, 1, 0.9), (6, 2, 0.8), (9, 3, 0.6)]]
    m = track_metrics(frames)
    assert m["id_switches"] == 2 and m["tracks_per_object"] == pytest.approx(4 / 3) and m["objects_seen"] == 3
    assert m["ids_per_object"] == {"1": [5, 5, 5], "2": [6, 7, 6, 6], "3": [9]}
    assert track_metrics([]) == {"id_switches": 0, "tracks_per_object": None, "objects_seen": 0,
                                 "ids_per_object": {}}


def test_track_metrics_from_label_sequences():
    # two objects; the prediction swaps their ids in frame 2, misses object 2 in frame 3 and puts a
    # half-size mask (IoU 0.5 -> still a match) with a new id 8 on object 1 in frame 4
    gt = np.array([[1, 1, 1, 1, 0, 2, 2]])
    preds = [np.array([[3, 3, 3, 3, 0, 4, 4]]), np.array([[3, 3, 3, 3, 0, 4, 4]]),
             np.array([[4, 4, 4, 4, 0, 3, 3]]), np.array([[4, 4, 4, 4, 0, 0, 0]]),
             np.array([[8, 8, 0, 0, 0, 3, 3]])]
    m = track_metrics([match_instances(p, gt)["pairs"] for p in preds])
    # object 1: 3, 3, 4, 4, 8 -> 2 switches, 3 tracks; object 2: 4, 4, 3, 3 -> 1 switch, 2 tracks
    assert m["ids_per_object"] == {"1": [3, 3, 4, 4, 8], "2": [4, 4, 3, 3]}
    assert m["id_switches"] == 3 and m["tracks_per_object"] == pytest.approx(2.5)


def test_match_instances_by_hand():
    gt = np.array([[1, 1, 1, 0], [2, 2, 0, 0]])
    pred = np.array([[5, 5, 0, 0], [6, 6, 6, 6]])
    # 5 vs 1: 2/3 ; 6 vs 2: 2/4 ; 5 vs 2 and 6 vs 1: 0
    r = match_instances(pred, gt, 0.5)
    assert (r["n_pred"], r["n_gt"], r["matched"]) == (2, 2, 2)
    assert r["precision"] == 1.0 and r["recall"] == 1.0
    assert r["mean_iou_matched"] == pytest.approx((2 / 3 + 0.5) / 2)
    r = match_instances(pred, gt, 0.6)
    assert r["matched"] == 1 and r["precision"] == 0.5
    ignore = np.array([[False, False, False, False], [True, True, True, True]])
    r = match_instances(pred, gt, 0.5, ignore=ignore)
    assert (r["n_pred"], r["n_gt"], r["matched"]) == (1, 1, 1)


def test_transfer_gt_uses_the_nearest_voxel_within_range():
    gt_coords = np.array([[0.0, 0, 0], [0.01, 0, 0]])
    lab, has = transfer_gt_to_points(np.array([[0.004, 0, 0], [0.0065, 0, 0], [0.05, 0, 0]]), gt_coords,
                                     np.array([3, 4]), 0.015)
    assert lab.tolist() == [3, 4, 0] and has.tolist() == [True, True, False]


def test_centroid_errors_use_only_valid_pixels_of_published_matches():
    # a 2 x 3 view; object 1 covers the top row, whose pixels sit at x = 0, 0.1, 0.2 (z = 1) except the
    # last, which has no depth: its visible centroid is (0.05, 0, 1). Published id 7 is at (0.08, 0.04, 1):
    # error sqrt(0.03^2 + 0.04^2) = 0.05. Object 2 has no valid pixel; id 9 was never published.
    gt = np.array([[1, 1, 1], [2, 2, 0]])
    pts = np.zeros((2, 3, 3), np.float32)
    pts[0, :, 0] = [0.0, 0.1, 0.2]
    pts[0, :, 2] = 1.0
    valid = np.array([[True, True, False], [False, False, False]])
    published = {7: np.array([0.08, 0.04, 1.0]), 8: np.array([0.0, 0.0, 1.0])}
    errs = centroid_errors(published, [(7, 1, 0.9), (8, 2, 0.8), (9, 1, 0.7)], gt, pts, valid)
    assert errs == [pytest.approx(0.05, abs=1e-7)]
    assert centroid_errors(published, [], gt, pts, valid) == []
