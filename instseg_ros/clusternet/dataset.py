"""Training data for ClusterNet: frames of the synthetic layout (:mod:`instseg_ros.data.io`) resized to the
training resolution with K adjusted, augmented for synthetic-to-real transfer, with the targets of
:mod:`instseg_ros.clusternet.targets` computed *after* the geometric augmentation.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from instseg_ros.core.geometry import validate_intrinsics

from .config import AugmentConfig, LossConfig
from .targets import compute_targets


def crop_resize(rgb: np.ndarray, depth: np.ndarray | None, K: np.ndarray, box: tuple[int, int, int, int],
                size: tuple[int, int], nearest: list[np.ndarray] | None = None):
    """Crop ``box`` = (x0, y0, x1, y1) (pixels, exclusive end) and resize to ``size`` = (H, W).

    RGB is resampled bilinearly (with antialiasing); depth and every array of ``nearest`` by nearest
    neighbour (so invalid depth and labels never mix). K follows the pixel-centre convention:
    u' = (u - x0 + 0.5) * sx - 0.5.
    Returns:
        (rgb uint8 (H, W, 3), depth float32 (H, W) or None, K' float64 (3, 3), list of nearest arrays).
    """
    x0, y0, x1, y1 = box
    h, w = size
    if not (0 <= x0 < x1 <= rgb.shape[1] and 0 <= y0 < y1 <= rgb.shape[0]):
        raise ValueError(f"crop box {box} outside the {rgb.shape[1]}x{rgb.shape[0]} image")
    sx, sy = w / (x1 - x0), h / (y1 - y0)
    im = Image.fromarray(np.ascontiguousarray(rgb))
    rgb2 = np.asarray(im.resize((w, h), Image.BILINEAR, box=(x0, y0, x1, y1)), dtype=np.uint8)
    us = np.clip(np.floor((np.arange(w) + 0.5) / sx + x0).astype(np.int64), x0, x1 - 1)
    vs = np.clip(np.floor((np.arange(h) + 0.5) / sy + y0).astype(np.int64), y0, y1 - 1)
    K2 = np.array(K, dtype=np.float64)
    K2[0, 0] *= sx
    K2[1, 1] *= sy
    K2[0, 2] = (K[0, 2] - x0 + 0.5) * sx - 0.5
    K2[1, 2] = (K[1, 2] - y0 + 0.5) * sy - 0.5
    d2 = None if depth is None else np.asarray(depth, np.float32)[vs[:, None], us[None, :]]
    rest = [np.asarray(a)[vs[:, None], us[None, :]] for a in (nearest or [])]
    return rgb2, d2, K2, rest


def augment_rgb(rgb: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Colour jitter, per-channel gain, blur and noise; uint8 (H, W, 3) in and out."""
    x = rgb.astype(np.float32)
    x = x * (1 + rng.uniform(-cfg.brightness, cfg.brightness))
    mean = x.mean()
    x = (x - mean) * (1 + rng.uniform(-cfg.contrast, cfg.contrast)) + mean
    gray = x.mean(axis=2, keepdims=True)
    x = (x - gray) * (1 + rng.uniform(-cfg.saturation, cfg.saturation)) + gray
    x = x * (1 + rng.uniform(-cfg.channel_gain, cfg.channel_gain, size=3)).astype(np.float32)
    if rng.random() < cfg.blur:
        p = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
        x = sum(p[i:i + x.shape[0], j:j + x.shape[1]] for i in range(3) for j in range(3)) / 9.0
    if cfg.rgb_noise > 0:
        x = x + rng.normal(0, cfg.rgb_noise, size=x.shape).astype(np.float32)
    return np.clip(x, 0, 255).astype(np.uint8)


def augment_depth(depth: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Depth noise, global scale error, pixel / blob / edge dropout; float32 (H, W) metres, 0 = invalid."""
    d = depth.astype(np.float32).copy()
    valid = d > 0
    h, w = d.shape
    d = d * np.float32(1 + rng.uniform(-cfg.depth_scale, cfg.depth_scale))
    if cfg.depth_noise > 0:
        d = d + rng.normal(0, 1, size=d.shape).astype(np.float32) * np.float32(cfg.depth_noise) * d * d
    if cfg.edge_dropout > 0 and rng.random() < cfg.edge_dropout:
        gx = np.abs(np.diff(depth, axis=1, prepend=depth[:, :1]))
        gy = np.abs(np.diff(depth, axis=0, prepend=depth[:1]))
        edge = (gx > 0.02) | (gy > 0.02)
        # widen to 1-2 px, like the RealSense shadow bands next to occluding contours
        edge = edge | np.roll(edge, 1, axis=1) | (np.roll(edge, -1, axis=1) & (rng.random() < 0.5))
        d[edge & (rng.random(size=d.shape) < 0.7)] = 0
    if cfg.dropout_pixels > 0:
        d[rng.random(size=d.shape) < cfg.dropout_pixels] = 0
    for _ in range(int(rng.integers(0, cfg.dropout_blobs + 1))):
        bh, bw = int(rng.integers(2, max(3, h // 10))), int(rng.integers(2, max(3, w // 10)))
        y, x = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        d[y:y + bh, x:x + bw] = 0
    d[~valid] = 0
    return np.maximum(d, 0)


def prepare_frame(frame: dict[str, Any], size: tuple[int, int], feature: str, loss_cfg: LossConfig,
                  aug: AugmentConfig | None, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """One training sample from a :func:`instseg_ros.data.io.load_frame` dict.

    Returns:
        dict of tensors: "rgb" uint8 (3, H, W); "depth" float32 (1, H, W) metres (noisy, augmented);
        "K" float32 (3, 3); targets "xi" (9, H, W), "centroid" (H, W), "radius" (H, W),
        "foreground" bool (H, W), "instance" int64 (H, W); "fg_valid_depth" () share of foreground
        pixels with valid input depth.
    """
    rgb, depth, depth_gt, labels = frame["rgb"], frame["depth"], frame["depth_gt"], frame["labels"]
    K = validate_intrinsics(frame["K"])
    H0, W0 = labels.shape
    h, w = size
    use_aug = aug is not None and aug.enabled
    # largest crop with the training aspect ratio, then a random scale of it
    ar = w / h
    cw, ch = (W0, W0 / ar) if W0 / H0 < ar else (H0 * ar, H0)
    s = rng.uniform(*aug.crop_scale) if use_aug else 1.0
    cw, ch = max(8, int(round(cw * s))), max(8, int(round(ch * s)))
    cw, ch = min(cw, W0), min(ch, H0)
    x0 = int(rng.integers(0, W0 - cw + 1)) if use_aug else (W0 - cw) // 2
    y0 = int(rng.integers(0, H0 - ch + 1)) if use_aug else (H0 - ch) // 2
    rgb2, d2, K2, (dg2, lab2) = crop_resize(rgb, depth, K, (x0, y0, x0 + cw, y0 + ch), (h, w),
                                            nearest=[depth_gt, labels])
    if use_aug and rng.random() < aug.flip:
        rgb2, d2, dg2, lab2 = rgb2[:, ::-1], d2[:, ::-1], dg2[:, ::-1], lab2[:, ::-1]
        K2 = K2.copy()
        K2[0, 2] = (w - 1) - K2[0, 2]
    if use_aug:
        rgb2 = augment_rgb(rgb2, aug, rng)
        d2 = augment_depth(d2, aug, rng)
    t = compute_targets(np.ascontiguousarray(lab2), np.ascontiguousarray(dg2), K2, feature=feature,
                        centroid_fraction=loss_cfg.centroid_fraction, max_radius=loss_cfg.max_radius)
    return {
        "rgb": torch.from_numpy(np.ascontiguousarray(rgb2.transpose(2, 0, 1))),
        "depth": torch.from_numpy(np.ascontiguousarray(d2, dtype=np.float32))[None],
        "K": torch.from_numpy(K2.astype(np.float32)),
        "xi": torch.from_numpy(np.ascontiguousarray(t.xi.transpose(2, 0, 1))),
        "centroid": torch.from_numpy(t.centroid),
        "radius": torch.from_numpy(t.radius),
        "foreground": torch.from_numpy(t.foreground),
        "instance": torch.from_numpy(t.instance.astype(np.int64)),
        "fg_valid_depth": torch.tensor(float((d2[t.foreground] > 0).mean()) if t.foreground.any() else 1.0),
    }


class ClusterNetDataset(Dataset):
    """Frames of ``<root>/<split>`` (or an explicit list of frame dicts / prefixes) as training samples.

    Args:
        frames: list of frame path prefixes (loaded lazily with ``load_frame``) or of already-loaded
            frame dicts (same keys as ``load_frame``).
        size: (H, W) training resolution. feature: "c" or "c+cov". loss_cfg: target parameters.
        augment: AugmentConfig or None (no augmentation: centred full-frame resize).
        seed: base seed; sample i of epoch e uses a generator seeded from (seed, e, i).
        min_fg_valid_depth: samples whose foreground has a smaller share of valid input depth are
            replaced by another frame (objects closer than the sensor's minimum range have no depth at
            all; their ξ cannot be inferred from XYZ and their L2 errors of tens of cm dominate batches).
    """

    def __init__(self, frames: list, size: tuple[int, int], feature: str = "c",
                 loss_cfg: LossConfig | None = None, augment: AugmentConfig | None = None, seed: int = 0,
                 min_fg_valid_depth: float = 0.0) -> None:
        if not frames:
            raise ValueError("ClusterNetDataset needs at least one frame")
        self.frames = list(frames)
        self.size = (int(size[0]), int(size[1]))
        self.feature = feature
        self.loss_cfg = loss_cfg or LossConfig()
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.min_fg_valid_depth = float(min_fg_valid_depth)

    @classmethod
    def from_split(cls, root: str, split: str, max_frames: int = 0, **kw) -> ClusterNetDataset:
        from instseg_ros.data.io import list_frames

        prefixes = list_frames(root, split)
        if not prefixes:
            raise ValueError(f"no frames in {root}/{split}")
        if max_frames:
            prefixes = prefixes[:max_frames]
        return cls(prefixes, **kw)

    def __len__(self) -> int:
        return len(self.frames)

    def load(self, i: int) -> dict[str, Any]:
        f = self.frames[i]
        if isinstance(f, dict):
            return f
        from instseg_ros.data.io import load_frame

        return load_frame(f)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        for attempt in range(8):
            j = i if attempt == 0 else int(rng.integers(0, len(self.frames)))
            s = prepare_frame(self.load(j), self.size, self.feature, self.loss_cfg, self.augment, rng)
            if float(s["fg_valid_depth"]) >= self.min_fg_valid_depth:
                break
        return s
