"""RealSense-like (active stereo, D400 / SR300) depth corruption of a perfect z-depth image.

Effects, in the order applied (each parameter randomised per frame by :func:`sample_noise_config`):

1. Stereo shadow: the second imager sits ``baseline`` metres to the +x side of the depth reference, so
   background just left of a nearer surface is not seen by both imagers -> 0 (the black bands on the left
   of objects in real D435 frames).
2. Axial noise in disparity space: sigma_z = z^2 * sigma_d / (f * baseline), part per pixel and part
   spatially correlated (the low-frequency "wavy" surface of real frames); sigma grows with distance.
3. Disparity quantisation to 1/``subpixel`` px (terracing at long range).
4. Depth edges: flying pixels (a mix of the near and far depth) and eroded holes along discontinuities.
5. Dropout: random speckle and blob-shaped holes (specular / dark / low-texture areas), holes on
   grazing-angle surfaces, and per-object "hard material" holes.
6. Range limits (min_z, max_z) and mm quantisation; 0 = invalid.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class DepthNoiseConfig:
    """Units: metres, pixels. sigma_disp: disparity noise std (px); corr_frac: share of the noise
    variance that is spatially correlated; corr_scale: correlation length (px)."""
    baseline: float = 0.05
    sigma_disp: float = 0.08
    corr_frac: float = 0.5
    corr_scale: float = 12.0
    subpixel: float = 8.0
    flying_prob: float = 0.5
    edge_hole_prob: float = 0.3
    edge_threshold: float = 0.03
    speckle_prob: float = 0.003
    blob_frac: float = 0.02
    grazing_cos: float = 0.15
    hard_object_prob: float = 0.08
    min_z: float = 0.17
    max_z: float = 6.0
    shadow: bool = True


def sample_noise_config(rng: np.random.Generator) -> DepthNoiseConfig:
    """Per-frame randomised noise parameters around D435 / SR300 behaviour."""
    return DepthNoiseConfig(
        baseline=float(rng.uniform(0.045, 0.055)) if rng.random() < 0.8 else float(rng.uniform(0.02, 0.03)),
        sigma_disp=float(rng.uniform(0.04, 0.15)),
        corr_frac=float(rng.uniform(0.2, 0.8)),
        corr_scale=float(rng.uniform(5, 25)),
        subpixel=float(rng.choice([8.0, 16.0, 32.0])),
        flying_prob=float(rng.uniform(0.2, 0.8)),
        edge_hole_prob=float(rng.uniform(0.1, 0.6)),
        speckle_prob=float(rng.uniform(0.0, 0.002)),
        blob_frac=float(rng.uniform(0.0, 0.02)) if rng.random() < 0.5 else 0.0,
        grazing_cos=float(rng.uniform(0.05, 0.25)),
        hard_object_prob=float(rng.uniform(0.0, 0.15)),
        min_z=float(rng.uniform(0.12, 0.25)),
        max_z=float(rng.uniform(3.0, 8.0)),
        shadow=bool(rng.random() < 0.9),
    )


def stereo_shadow(depth: np.ndarray, fx: float, baseline: float) -> np.ndarray:
    """bool (H, W): pixels hidden from an imager displaced by +baseline along camera x.

    In that imager a pixel u at depth z appears at u - fx * baseline / z. Pixel u is hidden when some
    pixel to its right lands at or left of it there: min over u' > u of (u' - d(u')) < u - d(u).
    """
    H, W = depth.shape
    z = np.where(depth > 0, depth, np.inf)
    x2 = np.arange(W)[None, :] - fx * baseline / z
    right_min = np.minimum.accumulate(x2[:, ::-1], axis=1)[:, ::-1]
    nxt = np.full_like(right_min, np.inf)
    nxt[:, :-1] = right_min[:, 1:]
    return (nxt < x2 - 0.5) & (depth > 0)


def _smooth_noise(rng, shape, scale):
    from scipy.ndimage import zoom

    H, W = shape
    gh, gw = max(2, int(H / scale) + 2), max(2, int(W / scale) + 2)
    g = rng.normal(size=(gh, gw))
    z = zoom(g, (H / (gh - 1), W / (gw - 1)), order=1)[:H, :W]
    return z / max(z.std(), 1e-6)


def apply_depth_noise(depth_gt: np.ndarray, K: np.ndarray, rng: np.random.Generator,
                      cfg: DepthNoiseConfig | None = None, instance: np.ndarray | None = None,
                      normal_cos: np.ndarray | None = None) -> np.ndarray:
    """Corrupt a perfect z-depth image like a RealSense sensor.

    Args:
        depth_gt: float32 (H, W) metres, 0 = no surface.
        K: (3, 3) intrinsics (fx sets the disparity scale).
        instance: optional int (H, W) instance ids, for per-object "hard material" holes.
        normal_cos: optional float (H, W) |cos| of the angle between surface normal and viewing ray.
    Returns:
        float32 (H, W) metres quantised to 1 mm, 0 = invalid.
    """
    if depth_gt.ndim != 2:
        raise ValueError(f"depth_gt must be (H, W), got {depth_gt.shape}")
    cfg = cfg or DepthNoiseConfig()
    H, W = depth_gt.shape
    fx = float(K[0, 0])
    valid = depth_gt > 0
    z = np.where(valid, depth_gt, 1.0).astype(np.float64)
    disp = fx * cfg.baseline / z
    # 2. axial noise (disparity space) + 3. subpixel quantisation
    white = rng.normal(size=(H, W))
    corr = _smooth_noise(rng, (H, W), cfg.corr_scale)
    nd = cfg.sigma_disp * (np.sqrt(1 - cfg.corr_frac) * white + np.sqrt(cfg.corr_frac) * corr)
    disp_n = np.round((disp + nd) * cfg.subpixel) / cfg.subpixel
    disp_n = np.maximum(disp_n, 1.0 / cfg.subpixel)
    zn = fx * cfg.baseline / disp_n
    out = np.where(valid, zn, 0.0)
    invalid = ~valid
    # 1. stereo shadow
    if cfg.shadow:
        invalid |= stereo_shadow(depth_gt, fx, cfg.baseline)
    # 4. depth edges: neighbours whose depth differs by more than a relative threshold
    dz = np.zeros((H, W))
    dpad = np.pad(np.where(valid, depth_gt, 0.0), 1, mode="edge")
    neighbour_max = np.zeros((H, W))
    neighbour_min = np.full((H, W), np.inf)
    for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        nb = dpad[1 + dy:1 + dy + H, 1 + dx:1 + dx + W]
        neighbour_max = np.maximum(neighbour_max, nb)
        neighbour_min = np.minimum(neighbour_min, np.where(nb > 0, nb, np.inf))
    dz = np.maximum(neighbour_max - depth_gt, depth_gt - np.where(np.isfinite(neighbour_min), neighbour_min, depth_gt))
    edge = valid & (dz > cfg.edge_threshold * np.maximum(depth_gt, 0.2))
    r = rng.random((H, W))
    fly = edge & (r < cfg.flying_prob)
    mix = rng.random((H, W))
    far = np.where(neighbour_max > depth_gt, neighbour_max, depth_gt)
    near = np.where(np.isfinite(neighbour_min), np.minimum(neighbour_min, depth_gt), depth_gt)
    out = np.where(fly, near + mix * (far - near), out)
    invalid |= edge & ~fly & (r < cfg.flying_prob + cfg.edge_hole_prob)
    # 5. dropout: speckle, blobs, grazing angles, hard objects
    invalid |= rng.random((H, W)) < cfg.speckle_prob
    if cfg.blob_frac > 0:
        b = _smooth_noise(rng, (H, W), rng.uniform(15, 40))
        thr = np.quantile(b, 1 - cfg.blob_frac)
        invalid |= b > thr
    if normal_cos is not None:
        invalid |= (normal_cos < cfg.grazing_cos) & (rng.random((H, W)) < 0.7)
    if instance is not None and cfg.hard_object_prob > 0:
        ids = np.unique(instance[instance > 0])
        hard = ids[rng.random(len(ids)) < cfg.hard_object_prob]
        if len(hard):
            m = np.isin(instance, hard)
            holes = _smooth_noise(rng, (H, W), rng.uniform(3, 10)) > rng.uniform(-0.5, 1.0)
            invalid |= m & holes
    # 6. range and quantisation
    invalid |= (out < cfg.min_z) | (out > cfg.max_z)
    out = np.where(invalid, 0.0, np.round(out * 1000.0) / 1000.0)
    return out.astype(np.float32)
