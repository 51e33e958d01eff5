"""``instseg evaluate clusternet --data DIR --checkpoint FILE``: ClusterNet vs the RANSAC-plane + DBSCAN
baseline on the same frames.

``--data`` is either a generated dataset root (``<root>/<split>/frames``) or a folder of real labelled frames
(``<stem>_rgb.png``, ``<stem>_depth_mm.png``, ``<stem>_label.png``, ``intrinsics.json``; see
:mod:`instseg_ros.eval.real_frames`), as a user with a few annotated frames of their own cell has it. Real
folders are scored on valid-depth pixels with 4-neighbour boundaries matched within 2 px, and every frame
gets an overlay PNG (``<out>/overlays/``).

Metrics per method: class-agnostic COCO mask AP / AR (Table I of the ClusterNet paper), occlusion AR_HO /
AR_MO / AR_LO (Table II), unseen-object overlap / boundary P/R/F and the share of objects with F >= 0.75.
Ground truth comes from the frames' label PNGs (visible masks) and the occlusion scores in their JSON.
Writes ``<out>/clusternet_eval.json`` and ``<out>/clusternet_eval.png`` (metric bars + example overlays),
and prints the result as a final JSON line.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from typing import Any

import numpy as np

from .coco import (
    COCO_KEYS,
    coco_dataset,
    coco_metrics,
    dt_results,
    gt_annotations,
    mean_unseen,
    occlusion_recall,
    unseen_object_metrics,
)

_log = logging.getLogger("instseg_ros.eval.clusternet")
N_EXAMPLES = 3
#: Clustering parameters searched by ``--tune-split`` (network outputs are computed once per frame).
#: min_size is in network pixels, so its best value grows with the network resolution.
TUNE_GRID = {"radius_multiplier": (1.0, 1.5, 2.0, 3.0, 4.0), "fg_threshold": (0.4, 0.5), "max_radius": (0.1, 0.2),
             "min_size": (20, 60)}


def tune_cluster_params(predictor, frames: list, grid: dict | None = None, progress: bool = True
                        ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Grid-search clustering parameters for COCO AP on ``frames`` (a validation split, never the test split).

    Returns:
        (best parameter dict for :class:`ClusterParams`, table of {params..., "AP", "AP50", "AR100"}).
    """
    import dataclasses
    import itertools

    from tqdm import tqdm

    from instseg_ros.clusternet.clustering import cluster_pixels
    from instseg_ros.data.io import load_frame

    grid = grid or TUNE_GRID
    cache = []
    for f in tqdm(frames, desc="tune: network", disable=not progress):
        fr = f if isinstance(f, dict) else load_frame(f)
        raw = predictor.raw(fr["rgb"], fr["depth"], fr["K"])
        cache.append((fr, {k: raw[k][0].cpu() for k in ("xi", "centroid_prob", "radius", "fg_prob")}))
    base = predictor.params
    table = []
    names = list(grid)
    for values in tqdm(list(itertools.product(*(grid[n] for n in names))), desc="tune: clustering",
                       disable=not progress):
        params = dataclasses.replace(base, **dict(zip(names, values)))
        images, anns, dts = [], [], []
        for image_id, (fr, raw) in enumerate(cache, start=1):
            lab, sc = cluster_pixels(raw["xi"], raw["centroid_prob"], raw["radius"][0], raw["fg_prob"], params)
            inst = predictor._postprocess(lab.numpy(), sc.numpy(), fr["depth"], fr["K"], raw["xi"][:3])
            gt = fr["labels"]
            images.append({"id": image_id, "width": int(gt.shape[1]), "height": int(gt.shape[0])})
            anns += gt_annotations(image_id, gt, start_id=len(anns) + 1)
            dts += dt_results(image_id, inst.labels, inst.ids, inst.scores)
        m = coco_metrics(coco_dataset(images, anns), dts)
        table.append({**dict(zip(names, values)), "AP": m["AP"], "AP50": m["AP50"], "AR100": m["AR100"]})
    best = max(table, key=lambda r: (np.nan_to_num(r["AP"]), np.nan_to_num(r["AR100"])))
    chosen = dataclasses.asdict(dataclasses.replace(base, **{n: best[n] for n in names}))
    return chosen, table


class _Collector:
    """Accumulates COCO results and per-image unseen-object metrics of one method."""

    def __init__(self) -> None:
        self.dts: list[dict[str, Any]] = []
        self.unseen: list[dict[str, float]] = []
        self.ms: list[float] = []

    def add(self, image_id: int, gt: np.ndarray, labels: np.ndarray, ids: np.ndarray, scores: np.ndarray,
            ms: float, valid: np.ndarray | None = None, boundary_tol: int | None = None,
            boundary_connectivity: int = 8) -> None:
        if valid is not None:   # only scored pixels count: predictions elsewhere are not seen by any metric
            labels = np.where(valid, labels, 0)
        self.dts += dt_results(image_id, labels, ids, scores)
        self.unseen.append(unseen_object_metrics(gt, labels, boundary_tol=boundary_tol,
                                                 boundary_connectivity=boundary_connectivity))
        self.ms.append(ms)

    def summary(self, gt_dict: dict[str, Any]) -> dict[str, float]:
        out = coco_metrics(gt_dict, self.dts)
        out.update(occlusion_recall(gt_dict, self.dts))
        out.update(mean_unseen(self.unseen))
        n_gt = sum(m["n_gt"] for m in self.unseen)
        out["instances_per_object"] = sum(m["n_pred"] for m in self.unseen) / n_gt if n_gt else float("nan")
        out["ms_per_frame"] = float(np.mean(self.ms)) if self.ms else float("nan")
        return out


def evaluate(frames: list, predictor=None, baseline: bool = True, baseline_params=None,
             progress: bool = True, boundary_tol: int | None = None, keep_examples: int = N_EXAMPLES,
             boundary_connectivity: int = 8) -> dict[str, Any]:
    """Evaluate on frames (``load_frame`` prefixes or dicts).

    A frame dict may carry "valid" (bool (H, W)): only those pixels are scored (real labelled frames:
    valid depth and labelled). ``boundary_tol`` (pixels), ``boundary_connectivity``: see
    :func:`unseen_object_metrics`. ``keep_examples``: frames returned in "examples" for pictures.

    Returns:
        {"frames": n, "objects": n_gt, "clusternet": metrics or None, "baseline": metrics or None,
         "examples": [(rgb, gt, clusternet labels, baseline labels)] for the first frames}.
    """
    from tqdm import tqdm

    from instseg_ros.clusternet.baseline import plane_dbscan_segment
    from instseg_ros.data.io import load_frame

    if not frames:
        raise ValueError("no frames to evaluate")
    images, anns = [], []
    cn, bl = _Collector(), _Collector()
    examples = []
    for image_id, f in enumerate(tqdm(frames, desc="evaluate", disable=not progress), start=1):
        fr = f if isinstance(f, dict) else load_frame(f)
        gt = fr["labels"]
        occ = {int(i["id"]): float(i.get("occlusion", 1.0)) for i in fr.get("instances", [])}
        images.append({"id": image_id, "width": int(gt.shape[1]), "height": int(gt.shape[0])})
        anns += gt_annotations(image_id, gt, occ, start_id=len(anns) + 1)
        cl = bll = None
        if predictor is not None:
            t = time.perf_counter()
            inst = predictor.predict(fr["rgb"], fr["depth"], fr["K"])
            cn.add(image_id, gt, inst.labels, inst.ids, inst.scores, (time.perf_counter() - t) * 1e3,
                   fr.get("valid"), boundary_tol, boundary_connectivity)
            cl = inst.labels
        if baseline:
            t = time.perf_counter()
            lab, sc = plane_dbscan_segment(fr["depth"], fr["K"], baseline_params)
            bl.add(image_id, gt, lab, np.arange(1, len(sc) + 1), sc, (time.perf_counter() - t) * 1e3,
                   fr.get("valid"), boundary_tol, boundary_connectivity)
            bll = lab
        if len(examples) < keep_examples:
            examples.append((fr["rgb"], gt, cl, bll))
    gt_dict = coco_dataset(images, anns)
    return {"frames": len(frames), "objects": len(anns),
            "clusternet": cn.summary(gt_dict) if predictor is not None else None,
            "baseline": bl.summary(gt_dict) if baseline else None, "examples": examples}


def save_plot(result: dict[str, Any], path: str, title: str = "") -> None:
    """Metric bars (ClusterNet vs baseline) above example overlays (RGB+GT, ClusterNet, baseline)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from instseg_ros.core.palette import overlay

    keys = list(COCO_KEYS) + ["AR_HO", "AR_MO", "AR_LO", "overlap_F", "boundary_F", "obj_F>=0.75"]
    ex = result.get("examples", [])
    rows = 1 + len(ex)
    fig = plt.figure(figsize=(14, 3.2 + 2.6 * len(ex)))
    ax = fig.add_subplot(rows, 1, 1)
    x = np.arange(len(keys))
    methods = [(m, result[m]) for m in ("clusternet", "baseline") if result.get(m)]
    wdt = 0.8 / max(1, len(methods))
    for i, (name, met) in enumerate(methods):
        vals = [np.nan_to_num(met.get(k, np.nan)) for k in keys]
        ax.bar(x + i * wdt - 0.4 + wdt / 2, vals, wdt, label=name)
    ax.set_xticks(x, keys, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title(title or f"{result['frames']} frames, {result['objects']} objects")
    for r, (rgb, gt, cl, bl) in enumerate(ex, start=1):
        panels = [("ground truth", gt), ("ClusterNet", cl), ("RANSAC+DBSCAN", bl)]
        for c, (name, lab) in enumerate(panels):
            a = fig.add_subplot(rows, 3, 3 * r + c + 1)
            a.imshow(overlay(rgb, lab) if lab is not None else rgb)
            a.set_title(name if lab is not None else f"{name}: not run", fontsize=8)
            a.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def save_overlays(examples: list, names: list[str], folder: str) -> None:
    """One PNG per frame: RGB with the ground truth | ClusterNet | RANSAC + DBSCAN (instance colours over the
    image, boundaries dark; a method that did not run shows the plain image)."""
    from PIL import Image

    from instseg_ros.core.palette import overlay

    os.makedirs(folder, exist_ok=True)
    for (rgb, gt, cl, bl), name in zip(examples, names):
        panels = [overlay(rgb, lab) if lab is not None else rgb for lab in (gt, cl, bl)]
        Image.fromarray(np.concatenate(panels, axis=1)).save(os.path.join(folder, f"{name}.png"))


def _clean(d):
    if isinstance(d, dict):
        return {k: _clean(v) for k, v in d.items() if k != "examples"}
    if isinstance(d, float) and not np.isfinite(d):
        return None
    if isinstance(d, (np.floating, np.integer)):
        return _clean(d.item())
    return d


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="instseg evaluate clusternet", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True,
                   help="dataset root (<root>/<split>/frames) or a folder of real labelled frames")
    p.add_argument("--split", default="test", help="split of a dataset root (ignored for a real folder)")
    p.add_argument("--no-refine", action="store_true",
                   help="the network's labels without the geometric refinement (clusternet.refine), for comparison")
    p.add_argument("--checkpoint", help="ClusterNet checkpoint (.pt); omit with --baseline-only")
    p.add_argument("--baseline-only", action="store_true")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--max-frames", type=int, default=0, help="first N frames only (0 = all)")
    p.add_argument("--out", default="out/eval_clusternet", help="output directory")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"),
                   help="network arithmetic (autocast); compare runs to measure its accuracy cost")
    p.add_argument("--channels-last", action="store_true", help="NHWC convolutions")
    p.add_argument("--resolution", type=int, nargs=2, metavar=("H", "W"), help="network resolution override")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--tune-split", help="first grid-search the clustering parameters on this split (e.g. val)")
    p.add_argument("--tune-frames", type=int, default=20, help="frames of --tune-split used for tuning")
    p.add_argument("--save-params", action="store_true",
                   help="store the tuned clustering parameters and the network resolution they were tuned at in the "
                        "checkpoint's meta (cluster_params, resolution): from_checkpoint applies both")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from instseg_ros.data.io import list_frames
    from instseg_ros.eval.real_frames import BOUNDARY_TOL_PX, is_labelled_folder, load_labelled_folder

    real = is_labelled_folder(a.data)
    if real:
        frames = load_labelled_folder(a.data, a.max_frames)
        if a.tune_split:
            p.error("--tune-split needs a generated dataset root, not a real labelled folder")
    else:
        frames = list_frames(a.data, a.split)
        if not frames:
            raise SystemExit(f"no frames in {a.data}/{a.split} (nor a real labelled folder: see --help)")
        if a.max_frames:
            frames = frames[:a.max_frames]
    predictor = None
    if not a.baseline_only:
        if not a.checkpoint:
            p.error("--checkpoint is required unless --baseline-only")
        import torch

        from instseg_ros.clusternet.predictor import ClusterNetPredictor

        if a.threads:
            torch.set_num_threads(a.threads)
        from instseg_ros.clusternet.refine import RefineParams

        predictor = ClusterNetPredictor.from_checkpoint(a.checkpoint, device=a.device,
                                                        resolution=tuple(a.resolution) if a.resolution else None,
                                                        precision=a.precision, channels_last=a.channels_last,
                                                        refine=RefineParams(enabled=False) if a.no_refine else None)
    tuning = None
    if a.tune_split and predictor is not None:
        from instseg_ros.clusternet.clustering import ClusterParams

        tune_frames = list_frames(a.data, a.tune_split)[:a.tune_frames]
        chosen, table = tune_cluster_params(predictor, tune_frames)
        predictor.params = ClusterParams(**chosen)
        tuning = {"split": a.tune_split, "frames": len(tune_frames), "chosen": chosen, "table": table}
        _log.info("tuned clustering parameters on %s: %s", a.tune_split, chosen)
        if a.save_params:
            from instseg_ros.clusternet.checkpoint import load_checkpoint, save_checkpoint

            ck = load_checkpoint(a.checkpoint)
            meta = dict(ck["meta"], cluster_params=chosen, cluster_params_tuning=tuning,
                        resolution=[int(v) for v in predictor.resolution])
            extra = {k: v for k, v in ck.items() if k not in ("config", "model", "meta", "model_config")}
            save_checkpoint(a.checkpoint, ck["model_config"], ck["model"], meta, **extra)
    res = evaluate(frames, predictor, baseline=not a.no_baseline,
                   boundary_tol=BOUNDARY_TOL_PX if real else None, boundary_connectivity=4 if real else 8,
                   keep_examples=len(frames) if real else N_EXAMPLES)
    os.makedirs(a.out, exist_ok=True)
    if real:
        save_overlays(res["examples"], [f["id"] for f in frames], os.path.join(a.out, "overlays"))
        res["examples"] = res["examples"][:N_EXAMPLES]
    res_json = _clean({**res, "data": os.path.abspath(a.data), "split": None if real else a.split,
                       "real_folder": real,
                       "refine": (dataclasses.asdict(predictor.refine) if predictor else None),
                       "checkpoint": a.checkpoint,
                       "steps": (predictor.meta.get("steps") if predictor else None),
                       "cluster_params": (dataclasses.asdict(predictor.params) if predictor else None),
                       "tuning": tuning, "resolution": (list(predictor.resolution) if predictor else None),
                       "precision": a.precision, "channels_last": a.channels_last})
    jpath = os.path.join(a.out, "clusternet_eval.json")
    with open(jpath, "w") as f:
        json.dump(res_json, f, indent=2)
    save_plot(res, os.path.join(a.out, "clusternet_eval.png"))
    _log.info("wrote %s and clusternet_eval.png", jpath)
    print(json.dumps(res_json))
    return 0
