"""3D AP and occupancy-error metrics of `instseg evaluate occuseg` on hand-built label arrays."""
import math

import numpy as np
import pytest

from instseg_ros.eval.occuseg_eval import (
    ScenePredictions,
    average_precision,
    evaluate_ap,
    group_outcomes,
    object_outcomes,
    occupancy_errors,
    summarize_ap,
)


def _scene():
    # 40 voxels: GT instance 1 = voxels 0-9, GT 2 = 10-19, a 5-voxel GT 3 = 20-24 (below min size), rest bg
    gt = np.zeros(40, np.int64)
    gt[:10], gt[10:20], gt[20:25] = 1, 2, 3
    sem = np.where(gt == 1, 1, np.where(gt == 2, 2, np.where(gt == 3, 1, 0)))
    pred = np.zeros(40, np.int32)
    pred[:10] = 1                  # perfect on GT 1
    pred[10:16] = 2                # 6 of GT 2 -> IoU 0.6
    pred[30:36] = 3                # on background: a false positive
    pred[20:25] = 4                # on the ignored small GT 3
    return ScenePredictions(pred, np.array([0.9, 0.8, 0.95, 0.99]), np.array([1, 2, 2, 1]), gt, sem)


def test_ap_by_hand():
    s = _scene()
    ap = evaluate_ap([s], thresholds=(0.25, 0.5, 0.7), min_gt_voxels=8)
    # score order: (pred 4 ignored), FP .95, TP .9, TP .8 -> precision 0, 1/2, 2/3 at recall 0, .5, 1
    # monotone precision 2/3 everywhere -> AP = 2/3 at IoU 0.25 and 0.5
    assert ap[0.5] == pytest.approx(2 / 3)
    assert ap[0.25] == pytest.approx(2 / 3)
    # at 0.7 pred 2 (IoU 0.6) is a FP: FP, TP, FP -> recall .5 at precision 1/2 -> AP = 0.25
    assert ap[0.7] == pytest.approx(0.25)


def test_per_class_ap():
    s = _scene()
    ap1 = evaluate_ap([s], thresholds=(0.5,), min_gt_voxels=8, class_id=1)
    assert ap1[0.5] == pytest.approx(1.0)       # class 1: one GT, one perfect prediction (pred 4 ignored)
    ap2 = evaluate_ap([s], thresholds=(0.5,), min_gt_voxels=8, class_id=2)
    # class 2: FP (.95) then TP (.8): precision 1/2 at recall 1
    assert ap2[0.5] == pytest.approx(0.5)


def test_perfect_and_empty_predictions():
    s = _scene()
    perfect = ScenePredictions(np.where(s.gt_instance <= 2, s.gt_instance, 0).astype(np.int32), np.array([0.5, 0.6]),
                               np.array([1, 2]), s.gt_instance, s.gt_semantic)
    summ = summarize_ap(evaluate_ap([perfect], min_gt_voxels=8))
    assert summ == {"mAP": 100.0, "AP50": 100.0, "AP25": 100.0}
    empty = ScenePredictions(np.zeros(40, np.int32), np.zeros(0), np.zeros(0, int), s.gt_instance, s.gt_semantic)
    assert summarize_ap(evaluate_ap([empty], min_gt_voxels=8))["AP50"] == 0.0


def test_average_precision_monotone_envelope():
    # TP FP TP with 2 GT: recall .5, .5, 1; precision 1, .5, 2/3 -> envelope 1, 2/3, 2/3 -> AP = .5 + .5 * 2/3
    assert average_precision(np.array([1, 0, 1]), 2) == pytest.approx(0.5 + 1 / 3)
    assert math.isnan(average_precision(np.array([1]), 0))


def test_occupancy_error_eq11():
    gt = np.array([1] * 40 + [2] * 50 + [0] * 5)
    o = np.r_[np.full(40, np.log(50.0)), np.full(50, np.log(50.0)), np.zeros(5)]
    rc = occupancy_errors(gt, o, min_gt_voxels=30)
    np.testing.assert_allclose(rc, [10 / 40, 0.0], atol=1e-12)


def test_object_outcomes_and_grasp_groups_by_hand():
    # GT 1: 100 voxels found whole by prediction 1 (plus 10 background voxels: IoU 100/110);
    # GT 2: 60 voxels cut into predictions 2 and 3 (30 each, IoU 0.5 -> not < 0.5: matched);
    # GT 3: 60 voxels cut into predictions 4 (25) and 5 (25): split; GT 4: 10 voxels, below the minimum
    gt = np.zeros(300, np.int64)
    gt[:100], gt[100:160], gt[160:220], gt[220:230] = 1, 2, 3, 4
    pred = np.zeros(300, np.int64)
    pred[:100], pred[290:300] = 1, 1
    pred[100:130], pred[130:160] = 2, 3
    pred[160:185], pred[185:210] = 4, 5
    out = object_outcomes(pred, gt, min_gt_voxels=30)
    assert sorted(out) == [1, 2, 3]
    assert out[1]["matched"] and out[1]["best_iou"] == pytest.approx(100 / 110) and not out[1]["split"]
    assert out[2]["best_iou"] == pytest.approx(0.5) and out[2]["matched"] and not out[2]["split"]
    assert out[3]["best_iou"] == pytest.approx(25 / 60) and not out[3]["matched"] and out[3]["split"]
    groups = group_outcomes([(out, {1: 1, 2: 3, 3: 3})])
    assert groups["box"] == {"objects": 1, "matched_50": 100.0, "mean_best_iou": pytest.approx(100 / 110),
                             "split": 0.0}
    assert groups["thin"]["objects"] == 2 and groups["thin"]["matched_50"] == 50.0 and groups["thin"]["split"] == 50.0
