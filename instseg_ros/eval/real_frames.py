"""Folders of real, hand-labelled RGB-D frames, as a user with a few annotated frames of their own cell has them.

Layout of a folder (one frame = three PNGs sharing a stem, plus one intrinsics file for all frames)::

    <stem>_rgb.png        uint8 RGB (or RGBA / grey), H x W
    <stem>_depth_mm.png   uint16 depth in millimetres, registered to the RGB image; 0 = no depth
    <stem>_label.png      uint8 / uint16 labels: 0 = unlabelled / no depth (ignored), 1 = support surface
                          (table, bin floor: background), 2.. = one id per object
    intrinsics.json       {"fx", "fy", "cx", "cy"[, "width", "height"]} in pixels

(This is the convention of the relabelled OSD frames the team measures on; any folder written the same way
works.) Scoring follows the unseen-object segmentation literature: only pixels with valid depth are scored,
boundaries match within :data:`BOUNDARY_TOL_PX` pixels.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

#: Boundary tolerance in pixels for real labelled folders (UOIS-Net-3D / UCN use 2 px).
BOUNDARY_TOL_PX = 2
#: Label value of the support surface: background, scored like label 0 only where depth is valid.
SUPPORT_LABEL = 1
_RGB_SUFFIX = "_rgb.png"


def _read(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path}: {e}") from e


def read_intrinsics(path: str | os.PathLike) -> np.ndarray:
    """3x3 K from a JSON file with fx, fy, cx, cy (pixels). Raises ValueError naming a missing key."""
    with open(path) as f:
        d = json.load(f)
    missing = [k for k in ("fx", "fy", "cx", "cy") if k not in d]
    if missing:
        raise ValueError(f"{path}: missing {missing} (need fx, fy, cx, cy in pixels)")
    return np.array([[float(d["fx"]), 0.0, float(d["cx"])], [0.0, float(d["fy"]), float(d["cy"])],
                     [0.0, 0.0, 1.0]])


def _natural_key(s: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def list_labelled_frames(folder: str | os.PathLike) -> list[Path]:
    """Stems (``folder/<stem>``) of every frame with all three PNGs, in natural order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    stems = []
    for p in sorted(folder.glob("*" + _RGB_SUFFIX), key=lambda q: _natural_key(q.name)):
        stem = folder / p.name[:-len(_RGB_SUFFIX)]
        if Path(f"{stem}_depth_mm.png").exists() and Path(f"{stem}_label.png").exists():
            stems.append(stem)
    return stems


def is_labelled_folder(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds intrinsics.json and at least one complete labelled frame."""
    folder = Path(folder)
    return folder.is_dir() and (folder / "intrinsics.json").exists() and bool(list_labelled_frames(folder))


def load_labelled_frame(stem: str | os.PathLike, K: np.ndarray) -> dict[str, Any]:
    """One frame as the evaluator takes it.

    Returns:
        dict: "rgb" uint8 (H, W, 3); "depth" float32 (H, W) metres (0 = invalid); "K" (3, 3);
        "labels" int32 (H, W): object ids 1..N (label PNG value - 1), 0 = support / unlabelled;
        "valid" bool (H, W): pixels that are scored (valid depth and labelled); "id" the stem name.
    Raises:
        ValueError: a file is unreadable or the three images disagree in size.
    """
    stem = Path(stem)
    rgb = _read(Path(f"{stem}_rgb.png"))
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    rgb = np.ascontiguousarray(rgb[:, :, :3]).astype(np.uint8)
    depth_mm = _read(Path(f"{stem}_depth_mm.png"))
    lab = _read(Path(f"{stem}_label.png"))
    if depth_mm.ndim != 2 or lab.ndim != 2:
        raise ValueError(f"{stem}: depth and label PNGs must be single-channel")
    if not (rgb.shape[:2] == depth_mm.shape == lab.shape):
        raise ValueError(f"{stem}: rgb {rgb.shape[:2]}, depth {depth_mm.shape} and label {lab.shape} differ in size")
    depth = depth_mm.astype(np.float32) / np.float32(1000.0)
    lab = lab.astype(np.int32)
    labels = np.where(lab > SUPPORT_LABEL, lab - SUPPORT_LABEL, 0).astype(np.int32)
    valid = (depth > 0) & (lab > 0)
    labels[~valid] = 0
    return {"rgb": rgb, "depth": depth, "K": np.asarray(K, np.float64), "labels": labels, "valid": valid,
            "id": stem.name, "instances": []}


def load_labelled_folder(folder: str | os.PathLike, max_frames: int = 0) -> list[dict[str, Any]]:
    """Every frame of a labelled folder (see the module docstring), the first ``max_frames`` if > 0."""
    folder = Path(folder)
    stems = list_labelled_frames(folder)
    if not stems:
        raise ValueError(f"{folder}: no <stem>_rgb.png / _depth_mm.png / _label.png triples")
    K = read_intrinsics(folder / "intrinsics.json")
    if max_frames:
        stems = stems[:max_frames]
    return [load_labelled_frame(s, K) for s in stems]
