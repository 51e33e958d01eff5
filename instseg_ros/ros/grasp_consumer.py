"""``grasp_consumer``: an example client, as a grasp planner would write one.

Subscribes to ``instances`` (instseg_ros/ObjectInstanceArray; remap it to
``/clusternet_node/instances`` or ``/occuseg_mapping_node/instances``) and prints, for every message,
the pose of the most graspable object::

    ros2 run instseg_ros grasp_consumer --ros-args -r instances:=/clusternet_node/instances
    python -m instseg_ros.ros.grasp_consumer --ros-args -r instances:=/occuseg_mapping_node/instances -p prefer:=highest

Rule (:func:`most_graspable`): an object is a candidate when it has at least ``min_points``
points and a parallel gripper of opening ``max_opening_m`` fits across it (its second-largest
oriented extent, the width across the principal axis, is at most the opening). Among candidates it
takes the top of the pile: ``prefer=closest`` (camera frame: smallest distance to the camera, the
least occluded object) or ``prefer=highest`` (map frame, z up: largest centroid z); ties go to the
higher score. The printed pose is the message's: position = centroid, orientation = principal
axes (x along the object's longest axis; a top-down grasp closes across x).
"""
from __future__ import annotations

import json
import sys

import numpy as np

PREFERENCES = ("closest", "highest")


def most_graspable(instances, max_opening_m: float = 0.08, min_points: int = 50, prefer: str = "closest"):
    """Index of the most graspable ObjectInstance in ``instances`` (a list), or None if no candidate.

    See the module docstring for the rule. ValueError for an unknown ``prefer``.
    """
    if prefer not in PREFERENCES:
        raise ValueError(f"prefer must be one of {PREFERENCES}, got {prefer!r}")
    best, best_key = None, None
    for i, o in enumerate(instances):
        ext = sorted([o.extent.x, o.extent.y, o.extent.z], reverse=True)
        if o.num_points < min_points or ext[1] > max_opening_m:
            continue
        c = np.array([o.centroid.x, o.centroid.y, o.centroid.z])
        height = -np.linalg.norm(c) if prefer == "closest" else c[2]
        key = (round(float(height), 3), float(o.score))
        if best_key is None or key > best_key:
            best, best_key = i, key
    return best


def describe(o, frame: str) -> dict:
    p, q = o.pose.position, o.pose.orientation
    return {"id": int(o.id), "frame": frame, "position_m": [p.x, p.y, p.z], "orientation_xyzw": [q.x, q.y, q.z, q.w],
            "extent_m": [o.extent.x, o.extent.y, o.extent.z], "score": float(o.score), "num_points": int(o.num_points)}


def main(args=None) -> int:
    import rclpy
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.executors import ExternalShutdownException

    from instseg_ros.msg import ObjectInstanceArray
    from instseg_ros.ros.conversions import stamp_to_ns

    rclpy.init(args=args)
    node = None
    try:
        node = rclpy.create_node("grasp_consumer")
        max_open = node.declare_parameter("max_opening_m", 0.08, ParameterDescriptor(
            description="gripper opening (m): objects wider across their long axis are skipped")).value
        min_pts = node.declare_parameter("min_points", 50, ParameterDescriptor(
            description="objects with fewer points are skipped")).value
        prefer = node.declare_parameter("prefer", "closest", ParameterDescriptor(
            description="closest (camera frame) | highest (map frame, z up)")).value
        once = node.declare_parameter("once", False, ParameterDescriptor(
            description="exit after the first message")).value
        if prefer not in PREFERENCES:
            node.get_logger().error(f"prefer must be one of {PREFERENCES}, got {prefer!r}")
            return 2
        done = []

        def on_instances(msg: ObjectInstanceArray) -> None:
            k = most_graspable(msg.instances, max_open, min_pts, prefer)
            stamp = stamp_to_ns(msg.header.stamp) / 1e9  # seconds, for the JSON line
            if k is None:
                print(json.dumps({"stamp": stamp, "objects": len(msg.instances), "grasp": None}), flush=True)
            else:
                print(json.dumps({"stamp": stamp, "objects": len(msg.instances),
                                  "grasp": describe(msg.instances[k], msg.header.frame_id)}), flush=True)
            done.append(True)

        node.create_subscription(ObjectInstanceArray, "instances", on_instances, 10)
        while rclpy.ok() and not (once and done):
            rclpy.spin_once(node, timeout_sec=0.2)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
