"""``instseg segment --rgb RGB.png --depth DEPTH.png --intrinsics K.json --out DIR``: segment one RGB-D frame.

Writes ``<out>/<stem>.labels.png`` (uint16 instance ids, 0 = background), ``<out>/<stem>.overlay.png`` and
``<out>/<stem>.objects.json`` (per object: id, score, num_points, centroid m, covariance m^2, camera
optical frame), and prints the JSON summary as the last line.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
from PIL import Image

DEFAULT_CHECKPOINT = os.path.join(os.path.dirname(__file__), "..", "..", "models", "clusternet_lite.pt")


def read_intrinsics(path: str) -> np.ndarray:
    """K (3, 3) from JSON: {"K": 3x3} | {"fx", "fy", "cx", "cy"} | {"fx", "fy", "x_offset", "y_offset"}
    (the last is the RealSense dump format) | ROS CameraInfo-like {"k": 9 values}."""
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read intrinsics {path}: {e}") from e
    if "K" in d:
        return np.asarray(d["K"], dtype=np.float64).reshape(3, 3)
    if "k" in d:
        return np.asarray(d["k"], dtype=np.float64).reshape(3, 3)
    cx = d.get("cx", d.get("x_offset"))
    cy = d.get("cy", d.get("y_offset"))
    if "fx" in d and "fy" in d and cx is not None and cy is not None:
        return np.array([[d["fx"], 0, cx], [0, d["fy"], cy], [0, 0, 1]], dtype=np.float64)
    raise ValueError(f"{path}: no intrinsics found (need K, k, or fx/fy/cx/cy or fx/fy/x_offset/y_offset)")


def read_depth(path: str, scale: float) -> np.ndarray:
    """Depth PNG (uint16, ``scale`` units per metre) or .npy (float metres) -> float32 (H, W) metres."""
    if path.endswith(".npy"):
        return np.load(path).astype(np.float32)
    with Image.open(path) as im:
        d = np.asarray(im)
    if d.ndim != 2:
        raise ValueError(f"{path}: depth must be single-channel, got shape {d.shape}")
    return d.astype(np.float32) / np.float32(scale)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="instseg segment", description=__doc__.split("\n")[0])
    p.add_argument("--rgb", required=True)
    p.add_argument("--depth", required=True, help="uint16 PNG (see --depth-scale) or float .npy in metres")
    p.add_argument("--intrinsics", required=True, help="JSON with K or fx/fy/cx/cy")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    p.add_argument("--depth-scale", type=float, default=1000.0, help="depth PNG units per metre (mm: 1000)")
    p.add_argument("--device", default="auto")
    p.add_argument("--fg-threshold", type=float, default=0.5)
    p.add_argument("--min-size", type=int, default=20)
    a = p.parse_args(argv)
    from instseg_ros.core.geometry import principal_axes
    from instseg_ros.core.palette import overlay

    from .clustering import ClusterParams
    from .predictor import ClusterNetPredictor

    with Image.open(a.rgb) as im:
        rgb = np.asarray(im.convert("RGB"))
    depth = read_depth(a.depth, a.depth_scale)
    K = read_intrinsics(a.intrinsics)
    pred = ClusterNetPredictor.from_checkpoint(a.checkpoint, device=a.device,
                                               params=ClusterParams(fg_threshold=a.fg_threshold,
                                                                    min_size=a.min_size))
    inst = pred.predict(rgb, depth, K)
    os.makedirs(a.out, exist_ok=True)
    stem = os.path.splitext(os.path.basename(a.rgb))[0]
    Image.fromarray(inst.labels.astype(np.uint16)).save(os.path.join(a.out, f"{stem}.labels.png"))
    Image.fromarray(overlay(rgb, inst.labels)).save(os.path.join(a.out, f"{stem}.overlay.png"))
    objs = []
    for i in range(len(inst)):
        objs.append({"id": int(inst.ids[i]), "score": float(inst.scores[i]), "num_points": int(inst.num_points[i]),
                     "centroid_m": inst.centroids[i].tolist(), "covariance_m2": inst.covariances[i].tolist(),
                     "principal_axes": principal_axes(inst.covariances[i]).tolist()})
    summary = {"frame": "camera optical frame (x right, y down, z forward)", "rgb": a.rgb, "objects": objs,
               "timings_ms": pred.last_timings}
    with open(os.path.join(a.out, f"{stem}.objects.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps({"objects": len(objs), "out": a.out, "timings_ms": pred.last_timings}))
    return 0
