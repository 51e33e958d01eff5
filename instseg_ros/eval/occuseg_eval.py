"""`instseg evaluate occuseg`: 3D instance AP (ScanNet-style) and occupancy error of OccuSeg on held-out maps.

Each held-out sequence is fused into a TSDF map (the same :class:`TsdfConfig` as training), its surface
voxels are labelled from ``gt_voxels`` by nearest voxel, and the segmenter runs once per scene; the
clustering is then repeated for the ablations of Table 6 (w/o occupancy: r = 1, no ratio filter;
w/o feature: no S term in eq. 14; w/o spatial: no D term).

Metrics (point = surface voxel):
- class-agnostic and per-class (shape family) AP at IoU 0.25, 0.5 and mAP over 0.5:0.95:0.05; a
  prediction matches the unmatched ground-truth instance of highest IoU >= threshold in its scene
  (same class for per-class AP); AP = area under the precision-recall curve with monotone precision.
  Ground-truth instances with fewer than ``--min-gt-voxels`` voxels (barely seen fragments) are not
  counted, and predictions lying mostly (> 50 %) on them are ignored (neither TP nor FP), as ScanNet's
  evaluation does with its minimum region size.
- occupancy: R_c = |N_c - exp(mean_{i in c} o_i)| / N_c (eq. 11) per ground-truth instance, and the
  share of instances with R_c < 0.3 (paper: 68 % on ScanNet).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

IOU_THRESHOLDS = np.round(np.arange(0.5, 0.951, 0.05), 2)
VARIANTS = {
    "full": {},
    "no_occupancy": {"use_occupancy": False},
    "no_feature": {"use_feature": False},
    "no_spatial": {"use_spatial": False},
}


@dataclass
class ScenePredictions:
    """One scene: predicted instances (labels (V,) 0 = none, scores (N,), classes (N,)) + ground truth."""

    pred_labels: np.ndarray
    pred_scores: np.ndarray
    pred_classes: np.ndarray
    gt_instance: np.ndarray
    gt_semantic: np.ndarray


def _overlaps(pred: np.ndarray, gt: np.ndarray, n_pred: int, gt_ids: np.ndarray) -> np.ndarray:
    """Intersection counts (n_pred, len(gt_ids)) between pred labels 1..n_pred and gt ids."""
    gi = np.searchsorted(gt_ids, gt)
    valid = (pred > 0) & (gi < len(gt_ids))
    valid[valid] &= gt_ids[gi[valid]] == gt[valid]
    inter = np.zeros((n_pred, len(gt_ids)), np.int64)
    np.add.at(inter, (pred[valid] - 1, gi[valid]), 1)
    return inter


def average_precision(tp: np.ndarray, n_gt: int) -> float:
    """AP from TP flags (1/0) of score-sorted predictions: area under the monotone PR curve."""
    if n_gt == 0:
        return float("nan")
    tp = np.asarray(tp, np.float64)
    if len(tp) == 0:
        return 0.0
    ctp = np.cumsum(tp)
    recall = ctp / n_gt
    precision = ctp / np.arange(1, len(tp) + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    r_prev = np.concatenate([[0.0], recall[:-1]])
    return float(np.sum((recall - r_prev) * precision))


def evaluate_ap(scenes: list[ScenePredictions], thresholds=(0.25, 0.5, *IOU_THRESHOLDS), min_gt_voxels: int = 30,
                class_id: int | None = None) -> dict[float, float]:
    """AP per IoU threshold over all scenes; ``class_id`` restricts predictions and GT to one class."""
    thresholds = sorted(set(float(t) for t in thresholds))
    records = []      # (score, scene index, pred index)
    per_scene = []
    n_gt = 0
    for si, s in enumerate(scenes):
        n_pred = len(s.pred_scores)
        ids, counts = np.unique(s.gt_instance[s.gt_instance > 0], return_counts=True)
        gsem = np.array([np.bincount(np.maximum(s.gt_semantic[s.gt_instance == i], 0)).argmax() for i in ids],
                        dtype=np.int64)
        inter = _overlaps(s.pred_labels, s.gt_instance, n_pred, ids)
        psize = np.bincount(s.pred_labels, minlength=n_pred + 1)[1:]
        union = psize[:, None] + counts[None, :] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        counted = counts >= min_gt_voxels
        if class_id is not None:
            counted &= gsem == class_id
        # predictions mostly on uncounted GT (small fragments / other classes) are ignored
        on_ignored = (inter[:, ~counted].sum(axis=1) > 0.5 * np.maximum(psize, 1)) if n_pred else np.zeros(0, bool)
        take = ~on_ignored
        if class_id is not None:
            take &= s.pred_classes == class_id
        for p in np.flatnonzero(take):
            records.append((float(s.pred_scores[p]), si, int(p)))
        per_scene.append((iou, counted))
        n_gt += int(counted.sum())
    records.sort(key=lambda r: -r[0])
    out = {}
    for th in thresholds:
        used = [np.zeros(len(c), bool) for _, c in per_scene]
        tp = np.zeros(len(records))
        for k, (_, si, p) in enumerate(records):
            iou, counted = per_scene[si]
            cand = np.where(counted & ~used[si], iou[p], -1.0)
            if len(cand) and cand.max() >= th:
                used[si][int(cand.argmax())] = True
                tp[k] = 1
        out[th] = average_precision(tp, n_gt)
    return out


def summarize_ap(ap: dict[float, float]) -> dict[str, float]:
    """mAP (mean over 0.5:0.95), AP50, AP25 in percent."""
    m = np.nanmean([ap[float(t)] for t in IOU_THRESHOLDS])
    return {"mAP": 100 * float(m), "AP50": 100 * float(ap[0.5]), "AP25": 100 * float(ap[0.25])}


def object_outcomes(pred: np.ndarray, gt: np.ndarray, min_gt_voxels: int = 30) -> dict[int, dict]:
    """Per ground-truth object (>= ``min_gt_voxels`` voxels): its best IoU with one prediction, whether a
    prediction matches it at IoU >= 0.5, and whether it was split: no match, and two or more predictions
    each lying mostly (> 50 % of their voxels) on it. pred / gt int (V,) labels, 0 = none."""
    ids, counts = np.unique(gt[gt > 0], return_counts=True)
    n_pred = int(pred.max(initial=0))
    inter = _overlaps(pred, gt, n_pred, ids)
    psize = np.bincount(pred, minlength=n_pred + 1)[1:]
    union = psize[:, None] + counts[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    mostly_on = inter > 0.5 * np.maximum(psize[:, None], 1)
    out = {}
    for j, (i, c) in enumerate(zip(ids, counts)):
        if c < min_gt_voxels:
            continue
        best = float(iou[:, j].max(initial=0.0))
        out[int(i)] = {"best_iou": best, "matched": best >= 0.5,
                       "split": best < 0.5 and int(mostly_on[:, j].sum()) >= 2}
    return out


def group_outcomes(outcomes: list[tuple[dict[int, dict], dict[int, int]]]) -> dict[str, dict]:
    """Per grasp class (:data:`~instseg_ros.data.io.GRASP_CLASSES`, the ground truth's): objects, share matched
    at IoU 0.5, mean best IoU, share split. ``outcomes``: per map (object_outcomes, {gt id: grasp class})."""
    from instseg_ros.data.io import GRASP_CLASSES

    rows: dict[str, list[dict]] = {}
    for per_obj, group_of in outcomes:
        for i, o in per_obj.items():
            rows.setdefault(GRASP_CLASSES[group_of.get(i, GRASP_CLASSES.index("other"))], []).append(o)
    return {g: {"objects": len(v), "matched_50": 100 * float(np.mean([o["matched"] for o in v])),
                "mean_best_iou": float(np.mean([o["best_iou"] for o in v])),
                "split": 100 * float(np.mean([o["split"] for o in v]))} for g, v in sorted(rows.items())}


def _grasp_groups(data: str, split: str, name: str) -> dict[int, int]:
    """{instance id: grasp class} of a sequence from its sequence.json ({} when it has none)."""
    from instseg_ros.occuseg.dataset import grasp_classes_of

    meta_path = Path(data) / "sequences" / split / name / "sequence.json"
    return grasp_classes_of(json.loads(meta_path.read_text())) if meta_path.exists() else {}


def occupancy_errors(gt_instance: np.ndarray, log_occ: np.ndarray, min_gt_voxels: int = 30) -> np.ndarray:
    """R_c of eq. (11) for every GT instance with at least ``min_gt_voxels`` voxels."""
    ids, inv, counts = np.unique(gt_instance, return_inverse=True, return_counts=True)
    mean_o = np.bincount(inv.reshape(-1), weights=log_occ, minlength=len(ids)) / counts
    keep = (ids > 0) & (counts >= min_gt_voxels)
    return np.abs(counts[keep] - np.exp(mean_o[keep])) / counts[keep]


def _plot(results: dict, rc: np.ndarray, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    names = list(results)
    x = np.arange(3)
    for k, n in enumerate(names):
        v = [results[n]["class_agnostic"][m] for m in ("mAP", "AP50", "AP25")]
        axes[0].bar(x + k * 0.8 / len(names), v, 0.8 / len(names), label=n)
    axes[0].set_xticks(x + 0.4 - 0.4 / len(names), ["mAP", "AP50", "AP25"])
    axes[0].set_ylabel("class-agnostic AP (%)")
    axes[0].legend()
    axes[0].set_title("OccuSeg and Table-6 ablations")
    if len(rc):
        xs = np.sort(rc)
        axes[1].plot(xs, np.arange(1, len(xs) + 1) / len(xs))
        axes[1].axvline(0.3, color="k", ls="--", lw=0.8)
        axes[1].set_xlim(0, 1.5)
    axes[1].set_xlabel("relative occupancy error R_c (eq. 11)")
    axes[1].set_ylabel("CDF over instances")
    axes[1].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate(checkpoint: str, data: str, split: str, out_dir: str, limit: int | None = None,
             min_gt_voxels: int = 30, device: str = "cpu", cache_dir: str | None = None,
             variants: list[str] | None = None) -> dict:
    from instseg_ros.mapping.tsdf import TsdfConfig
    from instseg_ros.occuseg.dataset import load_scene, prepare_scenes
    from instseg_ros.occuseg.segmenter import MapSegmenter
    from instseg_ros.occuseg.supervoxels import supervoxels

    seg = MapSegmenter.from_checkpoint(checkpoint, device=device)
    tsdf_cfg = TsdfConfig(voxel_size=seg.config.voxel_size)
    # ground-truth classes in the label space the checkpoint's semantic head was trained in
    semantic = seg.meta.get("semantic", "family")
    paths = prepare_scenes(data, split, tsdf_cfg, cache_dir or os.path.join(data, "cache"), limit,
                           semantic=semantic)
    if not paths:
        raise ValueError(f"no sequences under {data}/sequences/{split}")
    variants = variants or list(VARIANTS)
    per_variant: dict[str, list[ScenePredictions]] = {v: [] for v in variants}
    rcs = []
    timings = []
    outcomes: dict[str, list] = {v: [] for v in variants}
    for p in tqdm(paths, desc=f"evaluate {split}", unit="map"):
        sc = load_scene(p)
        if len(sc.sv) == 0:
            continue
        pred = seg.predict_heads(sc.sv)
        svc = supervoxels(sc.sv.coords, sc.sv.normals, sc.sv.colors, seg.config.supervoxel)
        rcs.append(occupancy_errors(sc.instance, pred.log_occ, min_gt_voxels))
        groups = _grasp_groups(data, split, sc.name)
        for v in variants:
            res = seg.cluster(sc.sv, pred, replace(seg.config.cluster, **VARIANTS[v]), sv_cache=svc)
            per_variant[v].append(ScenePredictions(res.labels, res.scores, res.class_ids, sc.instance, sc.semantic))
            outcomes[v].append((object_outcomes(res.labels, sc.instance, min_gt_voxels), groups))
        timings.append(len(sc.sv))
    rc = np.concatenate(rcs) if rcs else np.zeros(0)
    results = {}
    classes = sorted({int(c) for s in per_variant[variants[0]] for c in np.unique(s.gt_semantic) if c > 0})
    for v in variants:
        agn = summarize_ap(evaluate_ap(per_variant[v], min_gt_voxels=min_gt_voxels))
        per_class = {}
        for c in classes:
            ap = evaluate_ap(per_variant[v], min_gt_voxels=min_gt_voxels, class_id=c)
            if not np.isnan(ap[0.5]):
                per_class[str(c)] = summarize_ap(ap)
        mean_pc = {m: float(np.mean([d[m] for d in per_class.values()])) if per_class else float("nan")
                   for m in ("mAP", "AP50", "AP25")}
        n_pred = int(sum(len(s.pred_scores) for s in per_variant[v]))
        results[v] = {"class_agnostic": agn, "per_class_mean": mean_pc, "per_class": per_class,
                      "predicted_instances": n_pred, "per_grasp_class": group_outcomes(outcomes[v])}
    summary = {
        "checkpoint": checkpoint, "split": split, "maps": len(timings),
        "mean_surface_voxels": float(np.mean(timings)) if timings else 0.0,
        "gt_instances": int(len(rc)), "min_gt_voxels": min_gt_voxels,
        "occupancy": {"share_Rc_below_0.3": float(np.mean(rc < 0.3)) if len(rc) else float("nan"),
                      "median_Rc": float(np.median(rc)) if len(rc) else float("nan")},
        "results": results,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "occuseg_eval.json", "w") as f:
        json.dump(summary, f, indent=2)
    _plot(results, rc, str(out / "occuseg_eval.png"))
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="instseg evaluate occuseg", description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True,
                    help="dataset root with sequences/<split>/ (the same option as training), or a folder of real "
                         "labelled frames (each frame fused as a one-view map: instseg_ros.eval.oneview_maps)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--out-dir", default="runs/occuseg_eval")
    ap.add_argument("--limit", type=int, default=None, help="at most this many maps")
    ap.add_argument("--min-gt-voxels", type=int, default=30)
    ap.add_argument("--cache-dir", default=None, help="fused-map cache (default <data>/cache)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--variants", nargs="*", choices=list(VARIANTS), default=None,
                    help="which of full / no_occupancy / no_feature / no_spatial (default all)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    torch.set_num_threads(1)
    from instseg_ros.eval.real_frames import is_labelled_folder

    if is_labelled_folder(args.data):  # real labelled frames: one-view maps (instseg_ros.eval.oneview_maps)
        from instseg_ros.eval.oneview_maps import evaluate_folder

        rows = {}
        for v in args.variants or ["full", "no_occupancy"]:
            if v not in ("full", "no_occupancy"):
                raise ValueError(f"a folder of real frames is scored with full / no_occupancy, not {v}")
            s = evaluate_folder(args.checkpoint, args.data, os.path.join(args.out_dir, v), args.min_gt_voxels,
                                args.device, use_occupancy=v == "full", max_frames=args.limit or 0)
            rows[v] = {k: s[k] for k in ("mAP", "AP50", "AP25", "map_instances_per_object", "objects",
                                         "objects_matched_50", "objects_split", "objects_without_instance")}
        print(json.dumps({"frames": s["frames"], "one_view_maps": rows}))
        return 0
    s = evaluate(args.checkpoint, args.data, args.split, args.out_dir, args.limit, args.min_gt_voxels,
                 args.device, args.cache_dir, args.variants)
    rows = {v: dict(r["class_agnostic"], per_class_mAP=r["per_class_mean"]["mAP"]) for v, r in s["results"].items()}
    print(json.dumps({"maps": s["maps"], "occupancy": s["occupancy"], "class_agnostic": rows}))
    return 0
