"""OccuSeg on real depth you can check yourself: every frame of a folder of real labelled RGB-D frames
(:mod:`instseg_ros.eval.real_frames`) fused as a one-view TSDF map, segmented, and scored in 3D.

``instseg evaluate occuseg --data DIR --checkpoint FILE`` takes this route when ``DIR`` is such a folder.

- **World frame.** A map needs gravity: OccuSeg's input holds each voxel's height and normal in a z-up frame
  with the support surface at z = 0, as the package's maps have (a robot gives the map frame). A single real
  frame has no pose, so the frame's dominant plane, found by RANSAC on the depth alone (never on the labels),
  becomes z = 0 with z towards the camera: what a user would measure once for a fixed camera over a bin.
- **Ground truth in 3D.** The labelled pixels are back-projected into the world frame and each surface voxel
  takes the label most of the pixels in and around its cell carry (its own cell weighted 4, the 26
  neighbours 1: surface points sit between pixel samples); label 1 (the support) is background.
- **Scores.** Class-agnostic 3D AP (:func:`~instseg_ros.eval.occuseg_eval.evaluate_ap`, objects of at least
  ``min_gt_voxels`` voxels), map instances per object, objects split / missed
  (:func:`~instseg_ros.eval.occuseg_eval.object_outcomes`), and one PNG per frame: the image with the
  predicted and the true voxel labels projected back onto its pixels.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from instseg_ros.core.geometry import backproject

#: RANSAC inlier distance (m) and iterations of the support-plane fit.
PLANE_INLIER_M = 0.006
PLANE_ITERATIONS = 300
#: weight of a voxel's own cell against each of its 26 neighbours in the label vote
OWN_CELL_WEIGHT = 4
#: map range (m): farther depth is ignored
DEPTH_MAX_M = 2.0


def support_plane_pose(depth: np.ndarray, K: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """T_world_camera (4, 4) putting the frame's dominant plane at z = 0, z pointing to the camera side.

    depth float32 (H, W) m (0 = invalid), K (3, 3). RANSAC over back-projected points, refined by a least-squares
    plane through the inliers; x follows the camera's x axis projected onto the plane. ValueError when the frame
    has fewer than 100 valid pixels.
    """
    P = backproject(depth, K).reshape(-1, 3).astype(np.float64)
    P = P[P[:, 2] > 0]
    if len(P) < 100:
        raise ValueError(f"a support plane needs at least 100 valid depth pixels, got {len(P)}")
    best, n_best = None, -1
    for _ in range(PLANE_ITERATIONS):
        s = P[rng.choice(len(P), 3, replace=False)]
        n = np.cross(s[1] - s[0], s[2] - s[0])
        norm = np.linalg.norm(n)
        if norm < 1e-12:
            continue
        n /= norm
        inl = np.abs((P - s[0]) @ n) < PLANE_INLIER_M
        if inl.sum() > n_best:
            best, n_best = inl, int(inl.sum())
    Q = P[best]
    c = Q.mean(0)
    z = np.linalg.svd(Q - c, full_matrices=False)[2][-1]
    if z @ (-c) < 0:  # the camera (origin) lies on the +z side
        z = -z
    x = np.array([1.0, 0.0, 0.0]) - z[0] * z
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(z, x), z])  # rows: the world axes in camera coordinates
    T = np.eye(4)  # p_world = R (p_camera - c): the plane point c is the world origin
    T[:3, :3] = R
    T[:3, 3] = -R @ c
    return T


def _cell_keys(cells: np.ndarray) -> np.ndarray:
    c = cells.astype(np.int64) + (1 << 20)
    return (c[:, 0] << 42) | (c[:, 1] << 21) | c[:, 2]


def voxel_labels(coords: np.ndarray, depth: np.ndarray, labels: np.ndarray, K: np.ndarray,
                 T_world_camera: np.ndarray, voxel_size: float) -> np.ndarray:
    """Ground-truth instance id of each surface voxel from labelled pixels.

    coords int (V, 3) voxel cells; labels int (H, W): 0 unscored, 1 support, 2.. objects (the label PNG's
    convention). Returns int64 (V,): object id - 1 (1..), 0 = support / no labelled pixel near.
    """
    P = backproject(depth, K).reshape(-1, 3).astype(np.float64)
    lab = np.asarray(labels).reshape(-1).astype(np.int64)
    ok = (P[:, 2] > 0) & (lab > 0)
    Pw = P[ok] @ T_world_camera[:3, :3].T + T_world_camera[:3, 3]
    keys = _cell_keys(np.floor(Pw / voxel_size))
    uk, inv = np.unique(keys, return_inverse=True)
    n_lab = int(lab.max(initial=1)) + 1
    votes = np.zeros((len(uk), n_lab), np.int64)
    np.add.at(votes, (inv.reshape(-1), lab[ok]), 1)
    acc = np.zeros((len(coords), n_lab), np.int64)
    for d in np.stack(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1], indexing="ij"), -1).reshape(-1, 3):
        k = _cell_keys(np.asarray(coords, np.int64) + d)
        i = np.minimum(np.searchsorted(uk, k), len(uk) - 1)
        hit = uk[i] == k
        acc[hit] += votes[i[hit]] * (OWN_CELL_WEIGHT if not d.any() else 1)
    top = acc.argmax(1)
    return np.where((acc.sum(1) > 0) & (top >= 2), top - 1, 0).astype(np.int64)


def _pixel_labels(voxel_ids: np.ndarray, coords: np.ndarray, depth: np.ndarray, K: np.ndarray,
                  T_world_camera: np.ndarray, voxel_size: float) -> np.ndarray:
    """Each valid pixel takes the label of the surface voxel of its cell, or else of the first neighbouring
    cell (26-neighbourhood) that has one; 0 where none does. int64 (H, W), for pictures."""
    P = backproject(depth, K).reshape(-1, 3).astype(np.float64)
    ok = np.flatnonzero(P[:, 2] > 0)
    out = np.zeros(len(P), np.int64)
    if len(coords) == 0 or len(ok) == 0:
        return out.reshape(depth.shape)
    kv = _cell_keys(np.asarray(coords, np.int64))
    order = np.argsort(kv)
    kv, ids = kv[order], np.asarray(voxel_ids)[order]
    cells = np.floor((P[ok] @ T_world_camera[:3, :3].T + T_world_camera[:3, 3]) / voxel_size).astype(np.int64)
    todo = np.ones(len(ok), bool)
    offsets = sorted(np.stack(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1], indexing="ij"), -1).reshape(-1, 3),
                     key=lambda d: int(np.abs(d).sum()))  # own cell first, then faces, edges, corners
    for d in offsets:
        k = _cell_keys(cells[todo] + d)
        i = np.minimum(np.searchsorted(kv, k), len(kv) - 1)
        hit = kv[i] == k
        idx = np.flatnonzero(todo)[hit]
        out[ok[idx]] = ids[i[hit]]
        todo[idx] = False
    return out.reshape(depth.shape)


def evaluate_folder(checkpoint: str, folder: str, out_dir: str, min_gt_voxels: int = 30, device: str = "cpu",
                    use_occupancy: bool = True, max_frames: int = 0, seed: int = 0) -> dict:
    """Score ``checkpoint`` on one-view maps of every frame of a real labelled folder; writes
    ``oneview_eval.json`` and ``<frame>_oneview.png`` into ``out_dir`` and returns the summary dict."""
    from PIL import Image

    from instseg_ros.core.palette import overlay
    from instseg_ros.eval.occuseg_eval import ScenePredictions, evaluate_ap, object_outcomes, summarize_ap
    from instseg_ros.eval.real_frames import load_labelled_folder
    from instseg_ros.mapping.tsdf import TsdfConfig, TsdfMap
    from instseg_ros.occuseg.segmenter import MapSegmenter

    seg = MapSegmenter.from_checkpoint(checkpoint, device=device)
    vs = seg.config.voxel_size
    cluster = replace(seg.config.cluster, use_occupancy=use_occupancy)
    rng = np.random.default_rng(seed)
    frames = load_labelled_folder(folder, max_frames)
    if not frames:
        raise ValueError(f"no labelled frames in {folder}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scenes, per_frame, outcomes = [], [], []
    for fr in tqdm(frames, desc="one-view maps", unit="frame"):
        lab_png = np.where(fr["valid"], fr["labels"] + 1, 0)  # back to the PNG convention: 1 support, 2.. objects
        T = support_plane_pose(fr["depth"], fr["K"], rng)
        m = TsdfMap(TsdfConfig(voxel_size=vs, depth_max=DEPTH_MAX_M, device="cpu"))
        m.integrate(fr["depth"], fr["rgb"], fr["K"], T)
        sv = m.surface_voxels()
        inst = seg.predict(sv, cluster)   # labels in the order of sv, so sv.coords are their cells
        coords = sv.coords.astype(np.int64)
        gt = voxel_labels(coords, fr["depth"], lab_png, fr["K"], T, vs)
        pred = np.zeros(len(coords), np.int64)
        for k, i in enumerate(inst.ids):
            pred[inst.labels == i] = k + 1
        scenes.append(ScenePredictions(pred, np.asarray(inst.scores, np.float64), np.asarray(inst.class_ids),
                                       gt, (gt > 0).astype(np.int64)))
        oc = object_outcomes(pred, gt, min_gt_voxels)
        outcomes.append(oc)
        on_object = [sum(1 for k in range(1, len(inst.ids) + 1) if (pred == k).any()
                         and np.bincount(gt[pred == k]).argmax() == o) for o in oc]
        per_frame.append({"frame": fr["id"], "objects": len(oc), "predictions": len(inst.ids),
                          "instances_on_objects": on_object})
        pix_pred = _pixel_labels(pred, coords, fr["depth"], fr["K"], T, vs)
        pix_gt = _pixel_labels(gt, coords, fr["depth"], fr["K"], T, vs)
        Image.fromarray(np.concatenate([overlay(fr["rgb"], pix_pred), overlay(fr["rgb"], pix_gt)], 1)).save(
            out / f"{fr['id']}_oneview.png")
    ap = summarize_ap(evaluate_ap(scenes, min_gt_voxels=min_gt_voxels))
    counts = [n for f in per_frame for n in f["instances_on_objects"]]
    n_obj = sum(f["objects"] for f in per_frame)
    summary = {
        "checkpoint": checkpoint, "folder": os.fspath(folder), "frames": len(frames), "objects": n_obj,
        "use_occupancy": use_occupancy, **{k: round(v, 2) for k, v in ap.items()},
        "map_instances_per_object": round(sum(f["predictions"] for f in per_frame) / max(n_obj, 1), 3),
        "objects_split": int(sum(o["split"] for oc in outcomes for o in oc.values())),
        "objects_matched_50": int(sum(o["matched"] for oc in outcomes for o in oc.values())),
        "objects_without_instance": int(sum(1 for n in counts if n == 0)),
        "per_frame": per_frame,
    }
    with open(out / "oneview_eval.json", "w") as f:
        json.dump(summary, f, indent=2)
    return summary
