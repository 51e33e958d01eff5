"""COCO / occlusion-AR / unseen-object metrics against hand-derived values."""
import numpy as np
import pytest

from instseg_ros.eval.coco import (
    coco_dataset,
    coco_metrics,
    dt_results,
    gt_annotations,
    mean_unseen,
    occlusion_recall,
    unseen_object_metrics,
)


def _two_objects():
    gt = np.zeros((60, 80), np.int32)
    gt[5:25, 5:25] = 1        # 400 px < 32^2: small
    gt[30:58, 40:78] = 2      # 28 x 38 = 1064 px in [32^2, 96^2): medium
    return gt


def _eval(gt, pred, ids, scores, occ=None):
    images = [{"id": 1, "width": gt.shape[1], "height": gt.shape[0]}]
    g = coco_dataset(images, gt_annotations(1, gt, occ))
    d = dt_results(1, pred, np.asarray(ids), np.asarray(scores))
    return g, d


def test_perfect_prediction_scores_100():
    gt = _two_objects()
    g, d = _eval(gt, gt, [1, 2], [0.9, 0.8])
    m = coco_metrics(g, d)
    for k in ("AP", "AP50", "AP75", "AR10", "AR100", "AP_S", "AP_M", "AR_S", "AR_M"):
        assert m[k] == pytest.approx(100.0), k
    assert np.isnan(m["AP_L"])                           # no large object
    # AR1: only the top-scored detection per image counts -> 1 of 2 objects
    assert m["AR1"] == pytest.approx(50.0)


def test_half_iou_detection():
    # prediction of object 2 covers exactly 2/3 of it (IoU = 2/3): matched for thresholds 0.5..0.65 only
    gt = _two_objects()
    pred = gt.copy()
    pred[30:58, 40:78] = 0
    pred[30:58, 40:65] = 2     # 28 x 25 = 700 of 1064 px -> IoU = 700 / 1064 = 0.658
    g, d = _eval(gt, pred, [1, 2], [0.9, 0.8])
    m = coco_metrics(g, d)
    # object 1: recall 1 at all 10 thresholds ; object 2: recall 1 at 0.50, 0.55, 0.60, 0.65 (4 of 10)
    assert m["AR100"] == pytest.approx(100 * (10 + 4) / 20)
    assert m["AP50"] == pytest.approx(100.0)


def test_occlusion_bands():
    gt = _two_objects()
    pred = np.where(gt == 1, 1, 0)                      # only object 1 is found
    g, d = _eval(gt, pred, [1], [0.9], occ={1: 0.2, 2: 0.9})
    assert coco_metrics(g, d)["AR100"] == pytest.approx(50.0)   # the same results evaluated twice
    o = occlusion_recall(g, d)
    assert o["AR_HO"] == pytest.approx(100.0) and o["AR_LO"] == pytest.approx(0.0)
    assert np.isnan(o["AR_MO"]) and (o["n_HO"], o["n_MO"], o["n_LO"]) == (1, 0, 1)
    g, d = _eval(gt, pred, [1], [0.9], occ={1: 0.75, 2: 0.3})
    o = occlusion_recall(g, d)
    assert o["AR_LO"] == pytest.approx(100.0) and o["AR_MO"] == pytest.approx(0.0)
    assert (o["n_MO"], o["n_LO"]) == (1, 1)


def test_unseen_object_metrics_by_hand():
    gt = np.zeros((20, 20), np.int32)
    gt[0:10, 0:10] = 1          # 100 px
    gt[10:20, 10:20] = 2        # 100 px
    pred = np.zeros_like(gt)
    pred[0:10, 0:5] = 7         # 50 px inside object 1
    pred[10:20, 10:20] = 3      # exact object 2
    pred[0:5, 15:20] = 9        # 25 px false positive on background
    m = unseen_object_metrics(gt, pred, boundary_tol=1)
    # matching: 7<->1 (F = 2*50/150 = 2/3), 3<->2 (F = 1); tp = 150 ; |pred| = 175 ; |gt| = 200
    assert m["overlap_P"] == pytest.approx(150 / 175)
    assert m["overlap_R"] == pytest.approx(150 / 200)
    P, R = 150 / 175, 150 / 200
    assert m["overlap_F"] == pytest.approx(2 * P * R / (P + R))
    assert m["obj_f75"] == pytest.approx(0.5)
    # exact prediction: every boundary metric 1
    e = unseen_object_metrics(gt, gt)
    assert e["boundary_F"] == pytest.approx(1.0) and e["overlap_F"] == pytest.approx(1.0)
    mm = mean_unseen([m, e])
    assert mm["obj_F>=0.75"] == pytest.approx(100 * 3 / 4)
    with pytest.raises(ValueError):
        unseen_object_metrics(gt, gt[:5])
    empty = unseen_object_metrics(gt, np.zeros_like(gt))
    assert empty["overlap_F"] == 0 and empty["obj_f75"] == 0
