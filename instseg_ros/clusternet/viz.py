"""Label-image visualisation (numpy only): deterministic colours per id and RGB overlays."""
from __future__ import annotations

import numpy as np


def label_colors(n: int) -> np.ndarray:
    """uint8 (n + 1, 3) colours; row 0 (background) black, ids spread over hue by the golden ratio."""
    out = np.zeros((n + 1, 3), np.uint8)
    for i in range(1, n + 1):
        h = (i * 0.618033988749895) % 1.0
        s, v = 0.75 + 0.25 * ((i * 7) % 3) / 2, 0.95
        k = np.array([5.0, 3.0, 1.0])
        rgb = v - v * s * np.clip(np.minimum(np.mod(k + h * 6, 6), 4 - np.mod(k + h * 6, 6)), 0, 1)
        out[i] = np.round(rgb * 255).astype(np.uint8)
    return out


def colorize(labels: np.ndarray) -> np.ndarray:
    """int (H, W) labels -> uint8 (H, W, 3) colours (0 = black)."""
    labels = np.asarray(labels)
    lut = label_colors(int(labels.max()) if labels.size else 0)
    return lut[np.clip(labels, 0, None)]


def overlay(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """uint8 (H, W, 3): instance colours blended over ``rgb`` with dark instance boundaries."""
    rgb = np.asarray(rgb, dtype=np.float32)
    labels = np.asarray(labels)
    col = colorize(labels).astype(np.float32)
    fg = (labels > 0)[..., None]
    out = np.where(fg, (1 - alpha) * rgb + alpha * col, rgb)
    edge = np.zeros(labels.shape, bool)
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    out[edge] = 0
    return out.clip(0, 255).astype(np.uint8)
