"""Accuracy and identity metrics of the demo (``instseg demo``) against the recording's ground truth.

Numpy only: the demo unpacks the published messages and the recording into arrays and calls these.
Labels are instance ids (0 = background / no instance); ids of prediction and ground truth are
independent numbering schemes, matched here by overlap.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: IoU at which a predicted instance counts as matching a ground-truth instance.
MATCH_IOU = 0.5


def match_instances(pred: np.ndarray, gt: np.ndarray, iou_threshold: float = MATCH_IOU,
                    ignore: np.ndarray | None = None) -> dict:
    """Match predicted to ground-truth instances by IoU over the same pixels / points.

    Args:
        pred, gt: int label arrays of the same shape (0 = background / no instance).
        iou_threshold: a pair matches when IoU >= this (one-to-one, greedy by decreasing IoU).
        ignore: optional bool mask of elements left out of every count (e.g. no ground truth).
    Returns:
        dict: n_pred, n_gt, matched, precision, recall (0 when undefined), mean_iou_matched,
        mean_best_iou (per ground-truth instance, its best IoU with any prediction: coverage),
        pairs: [(pred id, gt id, IoU)] of the matches.
    """
    p = np.asarray(pred).reshape(-1).astype(np.int64)
    g = np.asarray(gt).reshape(-1).astype(np.int64)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt must have the same shape, got {np.shape(pred)} and {np.shape(gt)}")
    if ignore is not None:
        keep = ~np.asarray(ignore).reshape(-1)
        p, g = p[keep], g[keep]
    pid = np.unique(p[p > 0])
    gid = np.unique(g[g > 0])
    out = {"n_pred": int(len(pid)), "n_gt": int(len(gid)), "matched": 0, "precision": 0.0, "recall": 0.0,
           "mean_iou_matched": 0.0, "mean_best_iou": 0.0, "pairs": []}
    if not len(pid) or not len(gid):
        return out
    pi = np.searchsorted(pid, p)
    gi = np.searchsorted(gid, g)
    both = (p > 0) & (g > 0)
    inter = np.bincount(pi[both] * len(gid) + gi[both], minlength=len(pid) * len(gid)).reshape(len(pid), len(gid))
    sp = np.bincount(pi[p > 0], minlength=len(pid))
    sg = np.bincount(gi[g > 0], minlength=len(gid))
    iou = inter / (sp[:, None] + sg[None, :] - inter)
    used_p, used_g, ious = set(), set(), []
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        a, b = np.unravel_index(flat, iou.shape)
        if iou[a, b] < iou_threshold:
            break
        if a in used_p or b in used_g:
            continue
        used_p.add(a)
        used_g.add(b)
        ious.append(float(iou[a, b]))
        out["pairs"].append((int(pid[a]), int(gid[b]), float(iou[a, b])))
    out.update(matched=len(ious), precision=len(ious) / len(pid), recall=len(ious) / len(gid),
               mean_iou_matched=float(np.mean(ious)) if ious else 0.0,
               mean_best_iou=float(iou.max(axis=0).mean()))
    return out


def track_metrics(pairs_per_frame: list[list[tuple[int, int, float]]]) -> dict:
    """Identity consistency of tracked instances against the ground truth over a frame sequence.

    Args:
        pairs_per_frame: for each processed frame in stamp order, its (published id, ground-truth id,
            IoU) matches (``match_instances(...)["pairs"]``; one-to-one within a frame).
    Returns:
        dict: ``id_switches`` = over all ground-truth objects, the number of times the id matched to
        the object differs from the id matched in the previous frame where the object was matched
        (frames where it is unmatched are skipped, not counted as a switch);
        ``tracks_per_object`` = distinct ids matched to an object, averaged over the objects matched
        in at least one frame (None when there are none); ``objects_seen`` = that number of objects;
        ``ids_per_object`` = {ground-truth id: [matched id per frame where matched]}.
    """
    seq: dict[int, list[int]] = {}
    for pairs in pairs_per_frame:
        for pid, gid, _ in pairs:
            seq.setdefault(int(gid), []).append(int(pid))
    switches = sum(sum(a != b for a, b in zip(ids, ids[1:])) for ids in seq.values())
    per_obj = [len(set(ids)) for ids in seq.values()]
    return {"id_switches": int(switches), "tracks_per_object": float(np.mean(per_obj)) if per_obj else None,
            "objects_seen": len(seq), "ids_per_object": {str(g): ids for g, ids in sorted(seq.items())}}


def centroid_errors(published: Mapping[int, np.ndarray], pairs: list[tuple[int, int, float]], gt_labels: np.ndarray,
                    points: np.ndarray, valid: np.ndarray) -> list[float]:
    """Distance (m) between each matched instance's published centroid and the centroid of its
    ground-truth object's visible pixels with valid depth.

    Args:
        published: {published id: centroid float (3,)}, metres, camera frame.
        pairs: (published id, ground-truth id, IoU) matches (``match_instances(...)["pairs"]``).
        gt_labels: int (H, W) ground-truth instance ids of the view.
        points: float (H, W, 3) the view's depth back-projected in the camera frame, metres.
        valid: bool (H, W) pixels with valid depth.
    Returns:
        One distance per pair, in pair order, skipping pairs whose id was not published or whose
        object has no valid pixel.
    """
    out = []
    for pid, gid, _ in pairs:
        m = (gt_labels == gid) & valid
        if m.any() and pid in published:
            out.append(float(np.linalg.norm(points[m].astype(np.float64).mean(0) - published[pid])))
    return out


def transfer_gt_to_points(points: np.ndarray, gt_coords: np.ndarray, gt_instance: np.ndarray,
                          max_dist: float) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth instance of each map point = that of the nearest ground-truth voxel centre.

    Returns (labels int (M,), has_gt bool (M,)): points farther than ``max_dist`` (m) from every
    ground-truth voxel get no ground truth (left out of the accuracy).
    """
    from scipy.spatial import cKDTree

    if len(points) == 0:
        return np.zeros(0, np.int64), np.zeros(0, bool)
    d, idx = cKDTree(gt_coords).query(points, k=1)
    has = d <= max_dist
    return np.where(has, gt_instance[idx], 0).astype(np.int64), has
