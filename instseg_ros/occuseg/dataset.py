"""Training / evaluation scenes for OccuSeg: fuse a multi-view sequence with :class:`TsdfMap`, extract
its surface voxels and transfer the ground-truth labels of ``gt_voxels_<mm>mm.npz`` by nearest voxel.
"""
from __future__ import annotations

import colorsys
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from instseg_ros.mapping.tsdf import SURFACE_VERSION, SurfaceVoxels, TsdfConfig, TsdfMap

IGNORE = -1   #: semantic label of surface voxels with no ground-truth voxel nearby


@dataclass
class Scene:
    """One fused map with labels. ``sv``: the surface voxels; semantic int64 (V,) (0 = background,
    -1 = unlabelled); instance int64 (V,) (0 = background / unlabelled); ``name``: sequence id."""

    sv: SurfaceVoxels
    semantic: np.ndarray
    instance: np.ndarray
    name: str


def fuse_views(views: list[dict], tsdf_cfg: TsdfConfig, use_gt_depth: bool = False) -> TsdfMap:
    """Integrate :func:`instseg_ros.data.io.load_frame`-style views into a new map."""
    m = TsdfMap(tsdf_cfg)
    for v in views:
        depth = v["depth_gt"] if use_gt_depth else v["depth"]
        if not (depth > 0).any():
            continue
        m.integrate(depth, v["rgb"], v["K"], v["T_world_camera"])
    return m


def transfer_labels(points: np.ndarray, gt: dict, max_dist: float) -> tuple[np.ndarray, np.ndarray]:
    """Nearest ground-truth voxel's labels for each point.

    Args: points float (V, 3) world m; gt: dict(coords (G, 3) voxel centres m, instance (G,), semantic (G,));
        max_dist: metres; points farther from every GT voxel get semantic IGNORE, instance 0.
    Returns: (semantic int64 (V,), instance int64 (V,)).
    """
    from scipy.spatial import cKDTree

    if len(gt["coords"]) == 0:
        return np.full(len(points), IGNORE, np.int64), np.zeros(len(points), np.int64)
    dist, idx = cKDTree(np.asarray(gt["coords"], np.float64)).query(np.asarray(points, np.float64), k=1)
    ok = dist <= max_dist
    sem = np.where(ok, np.asarray(gt["semantic"])[np.minimum(idx, len(gt["coords"]) - 1)], IGNORE)
    ins = np.where(ok, np.asarray(gt["instance"])[np.minimum(idx, len(gt["coords"]) - 1)], 0)
    return sem.astype(np.int64), ins.astype(np.int64)


#: the label spaces of the semantic head: "family" (background + the shape families of the generator, the
#: first nine of :data:`~instseg_ros.data.io.FAMILIES`) or "grasp" (:data:`~instseg_ros.data.io.GRASP_CLASSES`)
SEMANTICS = ("family", "grasp")


def grasp_classes_of(meta: dict) -> dict[int, int]:
    """{instance id: grasp class} (:func:`~instseg_ros.data.io.grasp_class`) of a sequence's objects, from its
    ``meta["families"]`` and, when written, ``meta["kinds"]`` (both keyed by the instance id as a string)."""
    from instseg_ros.data.io import FAMILIES, grasp_class

    kinds = meta.get("kinds", {})
    return {int(k): grasp_class(FAMILIES[int(f) - 1], kinds.get(str(k))) for k, f in meta.get("families", {}).items()}


def grasp_labels(semantic: np.ndarray, instance: np.ndarray, meta: dict) -> np.ndarray:
    """Per-voxel grasp classes (:func:`grasp_classes_of`) from a sequence's meta; background and IGNORE stay."""
    cls = grasp_classes_of(meta)
    lut = np.zeros(max([0, *cls, int(instance.max(initial=0))]) + 1, np.int64)
    for i, g in cls.items():
        lut[i] = g
    missing = set(np.unique(instance[instance > 0]).tolist()) - set(cls)
    if missing:
        raise ValueError(f"instances {sorted(missing)} have no family in the sequence meta")
    return np.where(instance > 0, lut[instance], semantic).astype(np.int64)


def build_scene(seq_dir: str, tsdf_cfg: TsdfConfig, use_gt_depth: bool = False, semantic: str = "family") -> Scene:
    """Fuse one sequence and label its surface voxels (semantic labels in the ``semantic`` label space)."""
    if semantic not in SEMANTICS:
        raise ValueError(f"semantic must be one of {SEMANTICS}, got {semantic!r}")
    from instseg_ros.data.io import load_sequence

    seq = load_sequence(seq_dir)
    if seq["gt_voxels"] is None:
        raise ValueError(f"sequence {seq_dir} has no gt_voxels_<mm>mm.npz")
    bounds = seq["meta"].get("bounds")
    if bounds is not None and tsdf_cfg.workspace_min is None:
        # the sequence's workspace box (the bin / table region), as a robot would configure it
        from dataclasses import replace
        tsdf_cfg = replace(tsdf_cfg, workspace_min=tuple(bounds[0]), workspace_max=tuple(bounds[1]))
    m = fuse_views(seq["views"], tsdf_cfg, use_gt_depth)
    sv = m.surface_voxels()
    gt = seq["gt_voxels"]
    max_dist = 1.5 * max(gt["voxel_size"], tsdf_cfg.voxel_size) + tsdf_cfg.voxel_size
    sem, ins = transfer_labels(sv.points, gt, max_dist)
    if semantic == "grasp":
        sem = grasp_labels(sem, ins, seq["meta"])
    return Scene(sv=sv, semantic=sem, instance=ins, name=seq["id"])


def save_scene(path: str, s: Scene) -> None:
    tmp = str(path) + ".tmp.npz"
    np.savez_compressed(tmp, coords=s.sv.coords, points=s.sv.points, colors=s.sv.colors, normals=s.sv.normals,
                        voxel_size=np.float64(s.sv.voxel_size), semantic=s.semantic.astype(np.int32),
                        instance=s.instance.astype(np.int32), name=np.array(s.name))
    os.replace(tmp, path)


def load_scene(path: str) -> Scene:
    with np.load(path) as z:
        sv = SurfaceVoxels(z["coords"].astype(np.int32), z["points"].astype(np.float32),
                           z["colors"].astype(np.uint8), z["normals"].astype(np.float32), float(z["voxel_size"]))
        return Scene(sv, z["semantic"].astype(np.int64), z["instance"].astype(np.int64), str(z["name"]))


def prepare_scenes(root: str, split: str, tsdf_cfg: TsdfConfig, cache_dir: str,
                   limit: int | None = None, use_gt_depth: bool = False, semantic: str = "family") -> list[str]:
    """Fuse + label every sequence of ``<root>/sequences/<split>`` once, caching ``.npz`` scenes.

    Returns the cached scene paths (existing cache files are reused). Sequences without their
    ``sequence.json`` (which the generator writes last) are still being written and are skipped, so a
    training run that rescans while ``instseg generate`` runs never caches a half-written map.
    """
    from instseg_ros.data.io import list_sequences

    seqs = [sd for sd in list_sequences(root, split) if (Path(sd) / "sequence.json").exists()][:limit]
    out_dir = Path(cache_dir) / split
    out_dir.mkdir(parents=True, exist_ok=True)
    # the extraction version in the name: maps cached by an older extraction are fused again, not reused
    mm = (f"{tsdf_cfg.voxel_size * 1000:g}mm" + ("_gt" if use_gt_depth else "") + f"_s{SURFACE_VERSION}"
          + ("_grasp" if semantic == "grasp" else ""))
    paths = []
    for sd in tqdm(seqs, desc=f"fuse {split}", unit="seq"):
        p = out_dir / f"{Path(sd).name}_{mm}.npz"
        if not p.exists():
            save_scene(str(p), build_scene(sd, tsdf_cfg, use_gt_depth, semantic))
        paths.append(str(p))
    return paths


def augment(s: Scene, rng: np.random.Generator, bg_recolor_prob: float = 0.0) -> Scene:
    """Random quarter-turn about z, random x mirror, colour jitter; with probability ``bg_recolor_prob`` the
    background (semantic 0: table, bin floor, walls, rims) gets a new colour (:func:`recolor_background`).

    Only the eight symmetries of the voxel grid's xy square are used: they map voxel cells one-to-one,
    so every voxel survives and each instance keeps its exact voxel count (the occupancy target of
    eq. 10). A free rotation angle followed by re-voxelisation merges ~20 % of a surface's voxels
    (cells collide), which taught the occupancy head counts ~20 % below those of unrotated maps, and
    showed the network thinner surfaces than it gets at inference. The piles' own random object yaws
    supply the other orientations.
    """
    k = int(rng.integers(4))
    c, si = [1, 0, -1, 0][k], [0, 1, 0, -1][k]
    R = np.array([[c, -si, 0], [si, c, 0], [0, 0, 1]], np.int64)
    if rng.random() < 0.5:
        R = R @ np.diag([-1, 1, 1])
    pts = (s.sv.points.astype(np.float64) @ R.T).astype(np.float32)
    nrm = (s.sv.normals.astype(np.float64) @ R.T).astype(np.float32)
    # cell centres (c + 0.5) map to cell centres: new cell = R (c + 0.5) - 0.5, an integer bijection
    coords = ((2 * s.sv.coords.astype(np.int64) + 1) @ R.T - 1) // 2
    gain = rng.uniform(0.8, 1.2, size=3)
    col = np.clip(s.sv.colors.astype(np.float64) * gain + rng.normal(0, 5, size=3), 0, 255).astype(np.uint8)
    if bg_recolor_prob > 0 and rng.random() < bg_recolor_prob:
        col = recolor_background(col, s.semantic == 0, rng)
    sv = SurfaceVoxels(coords.astype(np.int32), pts, col, nrm, s.sv.voxel_size, dict(s.sv.extra))
    return Scene(sv, s.semantic.copy(), s.instance.copy(), s.name)


def recolor_background(colors: np.ndarray, background: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """New colours for the ``background`` voxels: one random colour (any hue, saturated or grey, dark or
    bright) times each voxel's luminance relative to the background's mean, so that shading and texture
    stay and only the paint changes. Teaches the semantic head that a support surface or a bin wall is
    background whatever its colour (a yellow bin wall is not an object). colors uint8 (V, 3);
    background bool (V,). Returns uint8 (V, 3); other voxels unchanged."""
    out = colors.copy()
    if not background.any():
        return out
    lum = colors[background].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    rel = lum / max(float(lum.mean()), 1.0)
    h, sat, val = rng.random(), rng.uniform(0.0, 1.0), rng.uniform(0.1, 1.0)
    rgb = np.array(colorsys.hsv_to_rgb(h, sat, val))
    out[background] = np.clip(np.round(rel[:, None] * rgb[None, :] * 255.0), 0, 255).astype(np.uint8)
    return out

