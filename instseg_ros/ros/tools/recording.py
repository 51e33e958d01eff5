"""rosbag2 (MCAP) recordings with ``rosbags``: the shipped demo recording and the demo's output bag.

The bags are read and written with :mod:`instseg_ros.ros.bag` (``rosbags``, rclpy's CDR bytes).

The demo recording (``instseg_ros/data/demo/bin_sequence/``) is made from a multi-view sequence of
the synthetic generator (:func:`make_recording`; ``python -m instseg_ros.ros.tools.recording --help``).
Topics, as realsense2_camera 4.x names them under the default ``/camera/camera`` namespace:

==========================================================  =========================================
``/camera/camera/color/image_raw``                          sensor_msgs/Image rgb8
``/camera/camera/aligned_depth_to_color/image_raw``         sensor_msgs/Image 16UC1 (mm, noisy)
``/camera/camera/color/camera_info``                        sensor_msgs/CameraInfo (plumb_bob, D = 0)
``/camera/pose``                                            geometry_msgs/PoseStamped, T_map_camera
``/ground_truth/labels``                                    sensor_msgs/Image 16UC1 visible instance id
``/ground_truth/voxels``                                    sensor_msgs/PointCloud2 x y z rgb label
==========================================================  =========================================

The image, info, pose and label messages of view k share one header stamp
(``START_NS + k * period``); the ground-truth voxels (world = map frame, label = instance id,
rgb = semantic class id as a grey level) are one message stamped with the first view.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from instseg_ros.ros.bag import DEMO_BAG, BagWriter

CAMERA_NS = "/camera/camera"
COLOR_TOPIC = f"{CAMERA_NS}/color/image_raw"
DEPTH_TOPIC = f"{CAMERA_NS}/aligned_depth_to_color/image_raw"
INFO_TOPIC = f"{CAMERA_NS}/color/camera_info"
POSE_TOPIC = "/camera/pose"
GT_LABELS_TOPIC = "/ground_truth/labels"
GT_VOXELS_TOPIC = "/ground_truth/voxels"
#: Optical frame of the recorded camera and the map frame of the poses.
CAMERA_FRAME = "camera_color_optical_frame"
MAP_FRAME = "map"
#: Stamp of the first view (2026-01-01T00:00:00Z), nanoseconds.
START_NS = 1_767_225_600 * 1_000_000_000

MSG_TYPES = {
    COLOR_TOPIC: "sensor_msgs/msg/Image", DEPTH_TOPIC: "sensor_msgs/msg/Image",
    INFO_TOPIC: "sensor_msgs/msg/CameraInfo", POSE_TOPIC: "geometry_msgs/msg/PoseStamped",
    GT_LABELS_TOPIC: "sensor_msgs/msg/Image", GT_VOXELS_TOPIC: "sensor_msgs/msg/PointCloud2",
}


def make_recording(seq_dir: str | Path, out: str | Path, period_s: float = 0.5, max_views: int | None = None) -> dict:
    """Write the demo recording from a generator sequence directory (see the module docstring).

    Returns a summary dict (views, topics, bytes on disk).
    """
    from instseg_ros.data.io import load_sequence
    from instseg_ros.ros.conversions import array_to_image, intrinsics_to_camera_info, labeled_cloud_to_msg
    from instseg_ros.ros.tools.launcher import make_header, pose_msg

    seq = load_sequence(seq_dir)
    views = seq["views"][:max_views] if max_views else seq["views"]
    gt = seq["gt_voxels"]
    if gt is None:
        raise ValueError(f"{seq_dir} has no gt_voxels_*.npz: the demo needs voxel ground truth")
    step = int(round(period_s * 1e9))
    with BagWriter(out) as bag:
        for k, v in enumerate(views):
            t = START_NS + k * step
            h = make_header(t, CAMERA_FRAME)
            hgt, wgt = v["depth"].shape
            bag.write(COLOR_TOPIC, array_to_image(v["rgb"], "rgb8", h), t)
            depth_mm = np.rint(np.nan_to_num(v["depth"]) * 1000.0).astype(np.uint16)
            bag.write(DEPTH_TOPIC, array_to_image(depth_mm, "16UC1", h), t)
            bag.write(INFO_TOPIC, intrinsics_to_camera_info(v["K"], wgt, hgt, h), t)
            bag.write(POSE_TOPIC, pose_msg(v["T_world_camera"], make_header(t, MAP_FRAME)), t)
            bag.write(GT_LABELS_TOPIC, array_to_image(v["labels"].astype(np.uint16), "16UC1", h), t)
        grey = np.clip(gt["semantic"], 0, 255).astype(np.uint8)
        bag.write(GT_VOXELS_TOPIC, labeled_cloud_to_msg(gt["coords"], np.stack([grey] * 3, 1),
                                                        gt["instance"].astype(np.uint32),
                                                        make_header(START_NS, MAP_FRAME)), START_NS)
        counts = dict(bag.counts)
    size = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
    meta = {"source": str(seq_dir), "views": len(views), "period_s": period_s,
            "voxel_size": gt["voxel_size"], "width": int(views[0]["rgb"].shape[1]),
            "height": int(views[0]["rgb"].shape[0]), "topics": counts, "bytes": size,
            "sequence_meta": seq.get("meta", {})}
    (Path(out) / "recording.json").write_text(json.dumps(meta, indent=1))
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m instseg_ros.ros.tools.recording",
                                 description="write the demo rosbag2 (MCAP) from a generator sequence")
    ap.add_argument("--sequence", required=True, help="<root>/sequences/<split>/<sid> of `instseg generate`")
    ap.add_argument("--out", default=str(DEMO_BAG), help=f"bag directory (default {DEMO_BAG})")
    ap.add_argument("--period", type=float, default=0.5, help="seconds between views")
    ap.add_argument("--max-views", type=int, default=None)
    a = ap.parse_args(argv)
    meta = make_recording(a.sequence, a.out, a.period, a.max_views)
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
