"""Class-agnostic instance-segmentation metrics shared by the evaluators.

- COCO mask AP / AR (pycocotools): AP, AP50, AP75, AP_S/M/L, AR1/10/100, AR_S/M/L (ClusterNet Table I).
- Occlusion-banded recall AR_HO / AR_MO / AR_LO (ClusterNet Table II): the occlusion score is visible /
  amodal pixels; heavy [0, 0.3), medium [0.3, 0.75), little [0.75, 1.0]. Computed with COCOeval's own
  range mechanism (objects outside a band are ignored, as COCO does for area ranges), applied to a copy
  of the ground truth whose "area" field carries the occlusion score.
- Unseen-object metrics (overlap and boundary precision / recall / F-measure with Hungarian matching on
  the F-measure, and the share of ground-truth objects with F >= 0.75), per image then averaged.

Label images: int (H, W), 0 = background, > 0 = instance id.
"""
from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np

#: (name, lo, hi) of the occlusion-score bands of Table II (score = visible / amodal pixels).
OCCLUSION_BANDS = (("HO", 0.0, 0.3), ("MO", 0.3, 0.75), ("LO", 0.75, 1.0))
_OCC_SCALE = 1e6   # occlusion score -> pseudo "area" for COCOeval's range filter
COCO_KEYS = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "AR1", "AR10", "AR100", "AR_S", "AR_M", "AR_L")


def _rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


def gt_annotations(image_id: int, labels: np.ndarray, occlusion: dict[int, float] | None = None,
                   start_id: int = 1) -> list[dict[str, Any]]:
    """COCO ground-truth annotations of one label image (one per id > 0 with >= 1 pixel).

    occlusion: instance id -> visible/amodal score (missing ids get 1.0, i.e. unoccluded).
    """
    from pycocotools import mask as mask_utils

    anns = []
    for k in np.unique(labels):
        if k <= 0:
            continue
        m = labels == k
        r = _rle(m)
        anns.append({"id": start_id + len(anns), "image_id": int(image_id), "category_id": 1,
                     "segmentation": r, "area": float(m.sum()), "bbox": [float(v) for v in mask_utils.toBbox(r)],
                     "iscrowd": 0, "instance_id": int(k),
                     "occlusion": float((occlusion or {}).get(int(k), 1.0))})
    return anns


def dt_results(image_id: int, labels: np.ndarray, ids: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
    """COCO results (segm) of one predicted label image; ``ids[i]`` has score ``scores[i]``."""
    out = []
    for k, s in zip(np.asarray(ids).tolist(), np.asarray(scores).tolist()):
        m = labels == k
        if not m.any():
            continue
        out.append({"image_id": int(image_id), "category_id": 1, "segmentation": _rle(m), "score": float(s)})
    return out


def coco_dataset(images: list[dict[str, Any]], annotations: list[dict[str, Any]]) -> dict[str, Any]:
    return {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "object", "supercategory": "object"}]}


def _run_cocoeval(gt_dict: dict[str, Any], dts: list[dict[str, Any]], area_rngs=None, area_lbls=None):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        # loadRes writes bbox / area / id into the dicts it gets: hand it fresh copies so that the same
        # results can be evaluated again (occlusion bands after the main evaluation)
        dts = [{k: d[k] for k in ("image_id", "category_id", "segmentation", "score")} for d in dts]
        dt = gt.loadRes(dts) if dts else COCO()
        if not dts:
            dt.dataset = {"images": gt_dict["images"], "annotations": [], "categories": gt_dict["categories"]}
            dt.createIndex()
        ev = COCOeval(gt, dt, "segm")
        ev.params.imgIds = [im["id"] for im in gt_dict["images"]]
        if area_rngs is not None:
            ev.params.areaRng = area_rngs
            ev.params.areaRngLbl = area_lbls
        ev.evaluate()
        ev.accumulate()
    return ev


def _mean_valid(a: np.ndarray) -> float:
    a = a[a > -1]
    return float(a.mean()) if a.size else float("nan")


def coco_metrics(gt_dict: dict[str, Any], dts: list[dict[str, Any]]) -> dict[str, float]:
    """Class-agnostic COCO segm metrics in percent (NaN where a range holds no ground truth).

    Equal to pycocotools' ``summarize()`` numbers (computed from ``eval["precision"/"recall"]`` the same
    way, without printing).
    """
    ev = _run_cocoeval(gt_dict, dts)
    p, r = ev.eval["precision"], ev.eval["recall"]      # p: [T, R, K, A, M], r: [T, K, A, M]
    t = ev.params.iouThrs
    mi = {m: i for i, m in enumerate(ev.params.maxDets)}    # (1, 10, 100)
    res = {
        "AP": _mean_valid(p[:, :, :, 0, mi[100]]),
        "AP50": _mean_valid(p[np.isclose(t, 0.5)][:, :, :, 0, mi[100]]),
        "AP75": _mean_valid(p[np.isclose(t, 0.75)][:, :, :, 0, mi[100]]),
        "AP_S": _mean_valid(p[:, :, :, 1, mi[100]]), "AP_M": _mean_valid(p[:, :, :, 2, mi[100]]),
        "AP_L": _mean_valid(p[:, :, :, 3, mi[100]]),
        "AR1": _mean_valid(r[:, :, 0, mi[1]]), "AR10": _mean_valid(r[:, :, 0, mi[10]]),
        "AR100": _mean_valid(r[:, :, 0, mi[100]]),
        "AR_S": _mean_valid(r[:, :, 1, mi[100]]), "AR_M": _mean_valid(r[:, :, 2, mi[100]]),
        "AR_L": _mean_valid(r[:, :, 3, mi[100]]),
    }
    return {k: 100.0 * v for k, v in res.items()}


def occlusion_recall(gt_dict: dict[str, Any], dts: list[dict[str, Any]]) -> dict[str, float]:
    """AR_HO, AR_MO, AR_LO in percent (max 100 detections, IoU 0.5:0.95), plus the object counts per band."""
    anns = []
    for a in gt_dict["annotations"]:
        b = dict(a)
        b["area"] = float(np.clip(a.get("occlusion", 1.0), 0.0, 1.0)) * _OCC_SCALE
        anns.append(b)
    g2 = dict(gt_dict, annotations=anns)
    # band edges: [lo, hi) except the last band, which is closed; COCOeval tests area < lo or > hi
    eps = 1e-3
    rngs = [[0.0, 2 * _OCC_SCALE]] + [[lo * _OCC_SCALE, hi * _OCC_SCALE - (eps if hi < 1.0 else -eps)]
                                       for _, lo, hi in OCCLUSION_BANDS]
    lbls = ["all"] + [n for n, _, _ in OCCLUSION_BANDS]
    d2 = [dict(d) for d in dts]
    ev = _run_cocoeval(g2, d2, rngs, lbls)
    r = ev.eval["recall"]
    out = {}
    for i, (name, lo, hi) in enumerate(OCCLUSION_BANDS, start=1):
        out[f"AR_{name}"] = 100.0 * _mean_valid(r[:, :, i, -1])
        occ = np.array([a.get("occlusion", 1.0) for a in gt_dict["annotations"]])
        out[f"n_{name}"] = int(((occ >= lo) & ((occ < hi) if hi < 1.0 else (occ <= hi))).sum())
    return out


def _boundary(mask: np.ndarray, connectivity: int = 8) -> np.ndarray:
    """Mask pixels with a neighbour outside the mask (8- or 4-neighbourhood)."""
    from scipy import ndimage

    se = np.ones((3, 3), bool) if connectivity == 8 else ndimage.generate_binary_structure(2, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=se, border_value=0)


def _prf(tp_p: float, n_p: float, tp_r: float, n_r: float) -> tuple[float, float, float]:
    p = tp_p / n_p if n_p > 0 else 0.0
    r = tp_r / n_r if n_r > 0 else 0.0
    return p, r, (2 * p * r / (p + r) if p + r > 0 else 0.0)


def unseen_object_metrics(gt: np.ndarray, pred: np.ndarray, boundary_tol: int | None = None,
                          f_threshold: float = 0.75, boundary_connectivity: int = 8) -> dict[str, float]:
    """Overlap and boundary P/R/F of one image with Hungarian matching (unseen-object benchmarks).

    Every predicted object i and ground-truth object j get an overlap F-measure
    F_ij = 2 |i ∩ j| / (|i| + |j|); the Hungarian algorithm maximises the total F. Overlap precision =
    Σ_matched |i ∩ j| / Σ_i |i|, recall = Σ_matched |i ∩ j| / Σ_j |j| (unmatched objects count in the
    denominators). Boundary P/R/F: the same matching, with boundary pixels (mask minus its 3x3
    erosion) counted as true where they lie within ``boundary_tol`` pixels of the matched partner's
    boundary (default: 0.75 % of the image diagonal, at least 1); ``boundary_connectivity`` 4 takes the
    4-neighbour boundary of the real-frame benchmarks (UOIS-Net-3D / UCN) instead. ``obj_f75`` = share of ground-truth
    objects whose matched overlap F >= f_threshold.
    """
    from scipy import ndimage
    from scipy.optimize import linear_sum_assignment

    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"gt {gt.shape} and pred {pred.shape} label images differ in shape")
    gids = [int(k) for k in np.unique(gt) if k > 0]
    pids = [int(k) for k in np.unique(pred) if k > 0]
    if boundary_connectivity not in (4, 8):
        raise ValueError(f"boundary_connectivity must be 4 or 8, got {boundary_connectivity}")
    if boundary_tol is None:
        boundary_tol = max(1, int(round(0.0075 * np.hypot(*gt.shape))))
    out = {"n_gt": len(gids), "n_pred": len(pids)}
    if not gids and not pids:
        return {**out, "overlap_P": 1.0, "overlap_R": 1.0, "overlap_F": 1.0, "boundary_P": 1.0,
                "boundary_R": 1.0, "boundary_F": 1.0, "obj_f75": float("nan")}
    if not gids or not pids:
        return {**out, "overlap_P": 0.0, "overlap_R": 0.0, "overlap_F": 0.0, "boundary_P": 0.0,
                "boundary_R": 0.0, "boundary_F": 0.0, "obj_f75": 0.0 if gids else float("nan")}
    # intersection counts by a joint histogram
    gi = np.searchsorted(gids, gt.reshape(-1))
    pi = np.searchsorted(pids, pred.reshape(-1))
    both = (gt.reshape(-1) > 0) & (pred.reshape(-1) > 0)
    inter = np.zeros((len(pids), len(gids)))
    np.add.at(inter, (pi[both], gi[both]), 1)
    a_p = np.array([(pred == k).sum() for k in pids], float)
    a_g = np.array([(gt == k).sum() for k in gids], float)
    F = 2 * inter / (a_p[:, None] + a_g[None, :])
    rows, cols = linear_sum_assignment(-F)
    tp = inter[rows, cols].sum()
    P, R, Fm = _prf(tp, a_p.sum(), tp, a_g.sum())
    matched_f = np.zeros(len(gids))
    matched_f[cols] = F[rows, cols]
    # boundaries
    se = ndimage.generate_binary_structure(2, 1)
    bp_tp = br_tp = 0.0
    n_bp = n_br = 0.0
    pb = {k: _boundary(pred == k, boundary_connectivity) for k in pids}
    gb = {k: _boundary(gt == k, boundary_connectivity) for k in gids}
    for k in pids:
        n_bp += pb[k].sum()
    for k in gids:
        n_br += gb[k].sum()
    def grow(m: np.ndarray) -> np.ndarray:   # scipy dilates until nothing changes when iterations < 1
        return m if boundary_tol == 0 else ndimage.binary_dilation(m, se, iterations=boundary_tol)

    for r_, c_ in zip(rows, cols):
        bpk, bgk = pb[pids[r_]], gb[gids[c_]]
        bp_tp += (bpk & grow(bgk)).sum()
        br_tp += (bgk & grow(bpk)).sum()
    bP, bR, bF = _prf(bp_tp, n_bp, br_tp, n_br)
    return {**out, "overlap_P": P, "overlap_R": R, "overlap_F": Fm, "boundary_P": bP, "boundary_R": bR,
            "boundary_F": bF, "obj_f75": float((matched_f >= f_threshold).mean())}


def mean_unseen(per_image: list[dict[str, float]]) -> dict[str, float]:
    """Average of :func:`unseen_object_metrics` over images (in percent); obj_f75 pooled over objects."""
    keys = ("overlap_P", "overlap_R", "overlap_F", "boundary_P", "boundary_R", "boundary_F")
    out = {k: 100.0 * float(np.mean([m[k] for m in per_image])) if per_image else float("nan") for k in keys}
    n = sum(m["n_gt"] for m in per_image)
    hits = sum(m["obj_f75"] * m["n_gt"] for m in per_image if m["n_gt"])
    out["obj_F>=0.75"] = 100.0 * hits / n if n else float("nan")
    return out
