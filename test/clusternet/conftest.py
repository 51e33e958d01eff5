"""Hand-built RGB-D scenes for the ClusterNet tests: axis-aligned boxes on a plane, ray-cast exactly."""
from __future__ import annotations

import numpy as np
import pytest


def make_K(h: int, w: int, f_scale: float = 1.0) -> np.ndarray:
    f = 0.9 * w * f_scale
    return np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1.0]])


def render_boxes(boxes: list[tuple], h: int, w: int, K: np.ndarray, table_z: float = 1.0):
    """Ray-cast axis-aligned boxes ((x0, x1), (y0, y1), (z0, z1)) in the camera frame over a plane z = table_z.

    Returns depth float32 (H, W) metres and labels int32 (H, W) (box i -> id i + 1, plane -> 0).
    """
    u = np.arange(w, dtype=np.float64)
    v = np.arange(h, dtype=np.float64)
    dx = ((u[None, :] - K[0, 2]) / K[0, 0]) * np.ones((h, 1))
    dy = ((v[:, None] - K[1, 2]) / K[1, 1]) * np.ones((1, w))
    depth = np.full((h, w), table_z)
    labels = np.zeros((h, w), np.int32)
    for i, ((x0, x1), (y0, y1), (z0, z1)) in enumerate(boxes):
        # ray p = t * (dx, dy, 1): slab intersection, t equals z
        with np.errstate(divide="ignore", invalid="ignore"):
            tx0, tx1 = np.sort(np.stack([x0 / dx, x1 / dx]), axis=0)
            ty0, ty1 = np.sort(np.stack([y0 / dy, y1 / dy]), axis=0)
        tx0 = np.where(dx == 0, np.where((x0 <= 0) & (0 <= x1), -np.inf, np.inf), tx0)
        tx1 = np.where(dx == 0, np.where((x0 <= 0) & (0 <= x1), np.inf, -np.inf), tx1)
        ty0 = np.where(dy == 0, np.where((y0 <= 0) & (0 <= y1), -np.inf, np.inf), ty0)
        ty1 = np.where(dy == 0, np.where((y0 <= 0) & (0 <= y1), np.inf, -np.inf), ty1)
        tn = np.maximum(np.maximum(tx0, ty0), z0)
        tf = np.minimum(np.minimum(tx1, ty1), z1)
        hit = (tn <= tf) & (tn > 0) & (tn < depth)
        depth[hit] = tn[hit]
        labels[hit] = i + 1
    return depth.astype(np.float32), labels


def random_scene(rng: np.random.Generator, h: int, w: int, n: int, table_z: float = 1.0):
    """A frame dict like ``load_frame``'s: n boxes with random sizes / colours, noisy depth copy."""
    K = make_K(h, w)
    boxes, tries = [], 0
    while len(boxes) < n and tries < 500:
        tries += 1
        sx, sy, sz = rng.uniform(0.05, 0.12, 3)
        cx, cy = rng.uniform(-0.25, 0.25), rng.uniform(-0.18, 0.18)
        b = ((cx - sx / 2, cx + sx / 2), (cy - sy / 2, cy + sy / 2), (table_z - sz, table_z))
        if all(b[0][1] + 0.01 < o[0][0] or o[0][1] + 0.01 < b[0][0] or b[1][1] + 0.01 < o[1][0]
               or o[1][1] + 0.01 < b[1][0] for o in boxes):
            boxes.append(b)
    depth_gt, labels = render_boxes(boxes, h, w, K, table_z)
    colors = rng.integers(40, 255, size=(len(boxes) + 1, 3))
    colors[0] = (120, 110, 100)
    rgb = colors[labels].astype(np.float64) + rng.normal(0, 6, size=(h, w, 3))
    # shade by depth so faces differ a bit
    rgb *= (1.2 - 0.2 * depth_gt[..., None])
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    depth = depth_gt + rng.normal(0, 0.002, size=depth_gt.shape).astype(np.float32)
    depth[rng.random(size=depth.shape) < 0.02] = 0
    insts = []
    for i in range(len(boxes)):
        px = int((labels == i + 1).sum())
        insts.append({"id": i + 1, "family": "box", "family_id": 1, "visible_px": px, "amodal_px": px,
                      "occlusion": 1.0, "bbox": [0, 0, 1, 1]})
    return {"rgb": rgb, "depth": depth.astype(np.float32), "depth_gt": depth_gt, "labels": labels, "K": K,
            "T_world_camera": np.eye(4), "instances": insts, "id": "s", "boxes": boxes}


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def randomize_batchnorm(model, shift: float, var: tuple[float, float]) -> None:
    """Random BatchNorm statistics and affine parameters (running mean and bias in [-shift, shift], running variance
    in ``var``, weight in [0.5, 1.5]) so that no normalisation layer is an identity; in place, no grad."""
    import torch

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-shift, shift)
                m.running_var.uniform_(*var)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-shift, shift)


@pytest.fixture
def random_bn():
    """:func:`randomize_batchnorm` (conftest is not importable under --import-mode=importlib)."""
    return randomize_batchnorm


@pytest.fixture
def make_scene():
    """The :func:`random_scene` builder (conftest is not importable under --import-mode=importlib)."""
    return random_scene


#: a ClusterNet small enough to train a few steps in a test (ModelConfig fields, as in a training YAML)
TINY_MODEL = {"base_width": 8, "c1_channels": 8, "aspp_channels": 8, "decoder_channels": 8,
              "depth_widths": [8, 8, 8, 8], "input_height": 32, "input_width": 48}


def write_train_split(root, n: int, seed: int) -> None:
    """n :func:`random_scene` frames (48 x 64, 2 boxes) as ``<root>/train/frames`` in the dataset layout."""
    from instseg_ros.data.io import write_frame

    rng = np.random.default_rng(seed)
    for i in range(n):
        f = random_scene(rng, 48, 64, 2)
        write_frame(root / "train" / "frames", f"{i:04d}", rgb=f["rgb"], depth=f["depth"], depth_gt=f["depth_gt"],
                    labels=f["labels"], K=f["K"], T_world_camera=np.eye(4), instances=f["instances"])


@pytest.fixture
def train_rig():
    """(write_train_split, TINY_MODEL) for the training-CLI tests."""
    return write_train_split, dict(TINY_MODEL)
