"""RealSense-like (active stereo, D400 / SR300) depth corruption of a perfect z-depth image.

Effects, in the order applied (each parameter randomised per frame by :func:`sample_noise_config`):

1. Stereo shadow: the second imager sits ``baseline`` metres to the +x side of the depth reference, so
   background just left of a nearer surface is not seen by both imagers -> 0 (the black bands on the left
   of objects in real D435 frames), nor is a band along the left image border, fx * baseline / z px wide
   (~40 px at 0.75 m: the black left margin of every real D435 depth frame).
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
from functools import lru_cache

import numpy as np
from numba import njit

from instseg_ros.data._kernels import hash_normal


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
    fatten_px: int = 0  #: foreground fattening: depth of a nearer surface spills up to this many px over edges


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
        blob_frac=float(rng.uniform(0.0, 0.04)) if rng.random() < 0.5 else 0.0,
        grazing_cos=float(rng.uniform(0.05, 0.25)),
        hard_object_prob=float(rng.uniform(0.0, 0.15)),
        min_z=float(rng.uniform(0.12, 0.25)),
        max_z=float(rng.uniform(3.0, 8.0)),
        shadow=bool(rng.random() < 0.9),
        fatten_px=int(rng.choice([0, 1, 2, 3], p=[0.2, 0.3, 0.3, 0.2])),
    )


def stereo_shadow(depth: np.ndarray, fx: float, baseline: float) -> np.ndarray:
    """bool (H, W): pixels hidden from an imager displaced by +baseline along camera x.

    In that imager a pixel u at depth z appears at u - fx * baseline / z. Pixel u is hidden when some
    pixel to its right lands at or left of it there: min over u' > u of (u' - d(u')) < u - d(u) - 0.5, or
    when it falls off that imager's left border: u - d(u) < -0.5.
    """
    return _stereo_shadow(np.ascontiguousarray(depth, np.float32), float(fx * baseline))


@njit(cache=True)
def _stereo_shadow(depth, fb):
    H, W = depth.shape
    out = np.zeros((H, W), np.bool_)
    for y in range(H):
        right_min = np.inf  # min over u' > u of the pixel's position in the second imager
        for x in range(W - 1, -1, -1):
            z = depth[y, x]
            x2 = x - fb / z if z > 0 else np.inf
            if z > 0 and (right_min < x2 - 0.5 or x2 < -0.5):
                out[y, x] = True
            right_min = min(right_min, x2)
    return out


@njit(cache=True)
def _fatten(dg, out, invalid, radius, thr):
    """In place: pixels within ``radius[y, x]`` px (square window) of a pixel (y, x) that is the near side of a
    depth edge (a 4-neighbour farther by > thr * z, or without surface) take that pixel's noisy depth and
    become valid. dg float32 (H, W) ground truth, out float32 (H, W), invalid bool (H, W), radius int (H, W)."""
    H, W = dg.shape
    for y in range(H):
        for x in range(W):
            z = dg[y, x]
            r = radius[y, x]
            if z <= 0 or r <= 0 or invalid[y, x]:
                continue
            lim = z * (1 + thr)
            near_edge = False
            for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                yy, xx = y + dy, x + dx
                if 0 <= yy < H and 0 <= xx < W and (dg[yy, xx] > lim or dg[yy, xx] <= 0):
                    near_edge = True
            if not near_edge:
                continue
            for yy in range(max(y - r, 0), min(y + r + 1, H)):
                for xx in range(max(x - r, 0), min(x + r + 1, W)):
                    if dg[yy, xx] > lim or dg[yy, xx] <= 0:
                        out[yy, xx] = out[y, x]
                        invalid[yy, xx] = False


@lru_cache(maxsize=256)  # ~300 distinct sizes at 640x480, ~0.2 MB each
def _bspline_matrix(n_out: int, n_in: int) -> np.ndarray:
    """float32 (n_out, n_in): cubic B-spline interpolation of n_in control values spread over n_out samples
    (C2-smooth, so thresholded noise gives round blobs rather than the diamonds of bilinear interpolation)."""
    x = np.arange(n_out) * (n_in - 3) / max(n_out - 1, 1) + 1.0  # stay inside [1, n_in - 2]
    i = np.floor(x).astype(int)
    f = x - i
    w = np.stack([(1 - f) ** 3 / 6, (3 * f ** 3 - 6 * f ** 2 + 4) / 6, (-3 * f ** 3 + 3 * f ** 2 + 3 * f + 1) / 6,
                  f ** 3 / 6], 1)
    m = np.zeros((n_out, n_in), np.float32)
    rows = np.arange(n_out)
    for k in range(4):
        np.add.at(m, (rows, np.clip(i - 1 + k, 0, n_in - 1)), w[:, k])
    m.flags.writeable = False  # cached and shared between calls
    return m


def _smooth_noise(rng, shape, scale):
    """float32 (H, W) spatially correlated unit-variance noise: a Gaussian grid every ``scale`` px, interpolated
    by cubic B-splines (two small matrix products instead of an image-sized zoom)."""
    H, W = shape
    gh, gw = max(4, int(H / scale) + 4), max(4, int(W / scale) + 4)
    g = rng.standard_normal((gh, gw), dtype=np.float32)
    z = _bspline_matrix(H, gh) @ g @ _bspline_matrix(W, gw).T
    sub = z[::3, ::3]  # the field is smooth over >= 3 px: its statistics from every 9th pixel
    z -= np.float32(sub.mean())
    z *= np.float32(1.0 / max(float(sub.std()), 1e-6))
    return z


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
    dg = np.ascontiguousarray(depth_gt, np.float32)
    # 2. axial noise (disparity space) + 3. subpixel quantisation; 4. depth edges (per pixel, one kernel)
    white_seed = np.uint64(rng.integers(0, 2 ** 63))  # per-pixel noise is drawn in the kernel
    corr = _smooth_noise(rng, (H, W), cfg.corr_scale)
    out, edge, near, far = _disparity_and_edges(
        dg, white_seed, corr, np.float32(cfg.sigma_disp * np.sqrt(1 - cfg.corr_frac)),
        np.float32(cfg.sigma_disp * np.sqrt(cfg.corr_frac)), np.float32(fx * cfg.baseline), np.float32(cfg.subpixel),
        np.float32(cfg.edge_threshold))
    invalid = dg <= 0
    # 1. stereo shadow
    if cfg.shadow:
        invalid |= stereo_shadow(dg, fx, cfg.baseline)
    ey, ex = np.nonzero(edge)  # edge pixels are few: draw their random numbers only
    if len(ey):
        r = rng.random(len(ey), dtype=np.float32)
        mix = rng.random(len(ey), dtype=np.float32)
        fly = r < cfg.flying_prob
        nr, fr = near[ey[fly], ex[fly]], far[ey[fly], ex[fly]]
        out[ey[fly], ex[fly]] = nr + mix[fly] * (fr - nr)
        hole = ~fly & (r < cfg.flying_prob + cfg.edge_hole_prob)
        invalid[ey[hole], ex[hole]] = True
    # 4b. foreground fattening (block matching assigns the nearer disparity to pixels next to an edge); the
    # spill width varies smoothly along the edge, so silhouettes in depth are wobbly and a little too large
    if cfg.fatten_px > 0:
        u = _smooth_noise(rng, (H, W), 8.0)
        radius = np.clip(np.floor((0.5 + 0.25 * u) * (cfg.fatten_px + 1)), 0, cfg.fatten_px).astype(np.int64)
        _fatten(dg, out, invalid, radius, np.float32(cfg.edge_threshold))
    # 5. dropout: speckle, blobs, grazing angles, hard objects; 6. range and mm quantisation (one kernel)
    u = rng.random((H, W), dtype=np.float32)
    blob, blob_thr = _NO_MAP, np.float32(np.inf)
    if cfg.blob_frac > 0:
        blob = _smooth_noise(rng, (H, W), rng.uniform(30, 90))  # few large holes (glare, dark or shiny patches)
        blob_thr = np.float32(np.quantile(blob[::3, ::3], 1 - cfg.blob_frac))
    cos = _NO_MAP if normal_cos is None else np.ascontiguousarray(normal_cos, np.float32)
    hard_mask = _NO_MASK
    if instance is not None and cfg.hard_object_prob > 0:
        ids = np.nonzero(np.bincount(np.asarray(instance, np.int64).reshape(-1)))[0]
        ids = ids[ids > 0]
        hard = ids[rng.random(len(ids)) < cfg.hard_object_prob]
        if len(hard):
            holes = _smooth_noise(rng, (H, W), rng.uniform(3, 10)) > rng.uniform(-0.5, 1.0)
            hard_mask = np.isin(instance, hard) & holes
    # u is reused for grazing angles: independent of the speckle test wherever u >= speckle_prob
    return _finalize(out, invalid, u, np.float32(cfg.speckle_prob), blob, blob_thr, cos, np.float32(cfg.grazing_cos),
                     hard_mask, np.float32(cfg.min_z), np.float32(cfg.max_z))


_NO_MAP = np.zeros((0, 0), np.float32)
_NO_MASK = np.zeros((0, 0), bool)


@njit(cache=True)
def _disparity_and_edges(dg, white_seed, corr, a_white, a_corr, fb, sub, edge_thr):
    """Per pixel of dg float32 (H, W) (0 = no surface): noisy depth fb / d' with d' = fb / z + a_white * n +
    a_corr * corr quantised to 1 / sub px (>= 1 / sub), 0 where no surface (n: unit white noise, sample
    y * W + x of :func:`_kernels.hash_normal` stream ``white_seed``); depth-edge flag (a 4-neighbour, edges
    clamped, differs by > edge_thr * max(z, 0.2)); near / far depth of the edge's two sides."""
    H, W = dg.shape
    out = np.zeros((H, W), np.float32)
    edge = np.zeros((H, W), np.bool_)
    near = np.zeros((H, W), np.float32)
    far = np.zeros((H, W), np.float32)
    for y in range(H):
        for x in range(W):
            z = dg[y, x]
            if z <= 0:
                continue
            d = fb / z + a_white * hash_normal(white_seed, y * W + x) + a_corr * corr[y, x]
            d = max(np.rint(d * sub) / sub, 1.0 / sub)
            out[y, x] = fb / d
            nmax = 0.0
            nmin = np.inf
            for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                q = dg[min(max(y + dy, 0), H - 1), min(max(x + dx, 0), W - 1)]
                nmax = max(nmax, q)
                if q > 0:
                    nmin = min(nmin, q)
            lo = nmin if np.isfinite(nmin) else z
            dz = max(nmax - z, z - lo)
            if dz > edge_thr * max(z, 0.2):
                edge[y, x] = True
                far[y, x] = max(nmax, z)
                near[y, x] = min(lo, z)
    return out, edge, near, far


@njit(cache=True)
def _finalize(out, invalid, u, speckle, blob, blob_thr, cos, grazing, hard, min_z, max_z):
    """0 where invalid, speckled (u < speckle), in a blob (blob > blob_thr), at a grazing angle (cos < grazing
    and u > 0.3), in a hard-material hole, or outside [min_z, max_z]; elsewhere depth rounded to 1 mm.
    Empty blob / cos / hard arrays mean "not used"."""
    H, W = out.shape
    res = np.zeros((H, W), np.float32)
    use_blob, use_cos, use_hard = blob.shape[0] > 0, cos.shape[0] > 0, hard.shape[0] > 0
    for y in range(H):
        for x in range(W):
            v = out[y, x]
            if invalid[y, x] or u[y, x] < speckle or v < min_z or v > max_z:
                continue
            if use_blob and blob[y, x] > blob_thr:
                continue
            if use_cos and cos[y, x] < grazing and u[y, x] > 0.3:
                continue
            if use_hard and hard[y, x]:
                continue
            res[y, x] = np.rint(v * np.float32(1000.0)) / np.float32(1000.0)
    return res

