"""The package's one instance palette: RViz marker colours, label images and overlays (numpy, no ROS).

An id's colour depends on the id alone (golden-ratio hue steps at fixed saturation and value), so an
instance keeps its colour across frames, across images and between RViz and the PNGs the tools write.
Id 0 (and any negative id) is background: black in label images, left as is in overlays.
"""
from __future__ import annotations

import colorsys

import numpy as np

#: Hue step between consecutive ids (1 / golden ratio): consecutive ids land far apart on the hue circle.
HUE_STEP = 0.618033988749895
#: HSV saturation and value of every instance colour.
SATURATION = 0.75
VALUE = 0.95
#: Default weight of the instance colour in :func:`overlay` (1 - ALPHA of the image).
OVERLAY_ALPHA = 0.55


def instance_color(instance_id: int) -> tuple[float, float, float]:
    """RGB in [0, 1] (floats) of an instance id; the colour of its RViz marker."""
    hue = (int(instance_id) * HUE_STEP) % 1.0
    return colorsys.hsv_to_rgb(hue, SATURATION, VALUE)


def colorize(labels: np.ndarray) -> np.ndarray:
    """int labels of any shape (...) -> uint8 (..., 3) RGB: :func:`instance_color` of each id rounded
    to 0..255, background (<= 0) black. Costs one colour per distinct id, whatever the id values."""
    lab = np.asarray(labels)
    if lab.size and not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be integer instance ids, got {lab.dtype}")
    ids, inverse = np.unique(lab.astype(np.int64), return_inverse=True)
    lut = np.zeros((len(ids), 3), np.uint8)
    for k, i in enumerate(ids):
        if i > 0:
            lut[k] = np.round(np.asarray(instance_color(int(i))) * 255).astype(np.uint8)
    return lut[inverse.reshape(lab.shape)]


def overlay(rgb: np.ndarray, labels: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """Instance colours blended over an image, instance boundaries drawn black.

    Args:
        rgb: uint8 (H, W, 3) image.
        labels: int (H, W) instance ids aligned with ``rgb`` (0 = background, left as is).
        alpha: weight of the instance colour, in [0, 1].
    Returns:
        uint8 (H, W, 3). Boundary pixels (where the id differs from the left or upper neighbour,
        background included) are black, so touching objects of similar colour stay apart.
    """
    img = np.asarray(rgb)
    labels = np.asarray(labels)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[:2] != labels.shape:
        raise ValueError(f"rgb must be (H, W, 3) and labels (H, W) of the same size, got {img.shape} and "
                         f"{labels.shape}")
    rgbf = img.astype(np.float32)
    col = colorize(labels).astype(np.float32)
    fg = (labels > 0)[..., None]
    out = np.where(fg, (1 - alpha) * rgbf + alpha * col, rgbf)
    edge = np.zeros(labels.shape, bool)
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    out[edge] = 0
    return out.clip(0, 255).astype(np.uint8)
