"""Map export: the labelled surface as a binary PLY and the instances as JSON (what ``~/save`` writes)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from instseg_ros.core.instance_geometry import oriented_extents
from instseg_ros.core.instances import Instances

#: File names :func:`save_map` writes in its directory.
PLY_NAME = "map.ply"
JSON_NAME = "instances.json"


def write_ply(path: str | Path, points: np.ndarray, colors: np.ndarray, labels: np.ndarray) -> None:
    """Binary little-endian PLY: float x y z (m), uchar red green blue, uint label (instance id)."""
    n = len(points)
    rec = np.empty(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
                             ("blue", "u1"), ("label", "<u4")])
    rec["x"], rec["y"], rec["z"] = points[:, 0], points[:, 1], points[:, 2]
    rec["red"], rec["green"], rec["blue"] = colors[:, 0], colors[:, 1], colors[:, 2]
    rec["label"] = labels
    head = ("ply\nformat binary_little_endian 1.0\ncomment instseg_ros labelled map, metres, map frame\n"
            f"element vertex {n}\nproperty float x\nproperty float y\nproperty float z\n"
            "property uchar red\nproperty uchar green\nproperty uchar blue\nproperty uint label\nend_header\n")
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(head.encode("ascii"))
        f.write(rec.tobytes())
    os.replace(tmp, path)


def instances_to_json(inst: Instances, frame: str, stamp_ns: int) -> dict:
    """JSON-serialisable description of map instances (metres, m^2, ``frame``)."""
    ext = oriented_extents(inst) if len(inst) else np.zeros((0, 3))
    return {"frame_id": frame, "stamp_ns": int(stamp_ns), "instances": [
        {"id": int(inst.ids[i]), "score": float(inst.scores[i]), "num_points": int(inst.num_points[i]),
         "centroid": inst.centroids[i].tolist(), "covariance": inst.covariances[i].reshape(-1).tolist(),
         "extent": ext[i].tolist(), "class_id": int(inst.class_ids[i]), "occupancy": float(inst.occupancy[i])}
        for i in range(len(inst))]}


def save_map(out_dir: str | Path, inst: Instances, frame: str, stamp_ns: int) -> Path:
    """Write ``out_dir``/:data:`PLY_NAME` (:func:`write_ply` of ``inst.points`` / ``colors`` / ``labels``)
    and ``out_dir``/:data:`JSON_NAME` (:func:`instances_to_json`), each through a temporary file and a
    rename so a reader never sees half a file. Creates ``out_dir``; returns it resolved. OSError when
    it cannot be written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_ply(out / PLY_NAME, inst.points, inst.colors, inst.labels.astype(np.uint32))
    tmp = out / f"{JSON_NAME}.tmp"
    tmp.write_text(json.dumps(instances_to_json(inst, frame, stamp_ns), indent=1))
    os.replace(tmp, out / JSON_NAME)
    return out.resolve()
