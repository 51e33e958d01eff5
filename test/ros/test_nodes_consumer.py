"""The example grasp consumer in its own process: it receives an ObjectInstanceArray from this process
and prints the most graspable object's pose as one JSON line."""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

pytestmark = pytest.mark.graph


def test_consumer_prints_the_pose_of_the_closest_object_that_fits(ros_env, tmp_path):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from instseg_ros.core.instances import Instances
    from instseg_ros.msg import ObjectInstanceArray
    from instseg_ros.ros.conversions import instances_to_msg
    from instseg_ros.ros.graph import reliable_qos
    from instseg_ros.ros.tools.launcher import NodeProcess, make_header, node_command, spin_until

    ns = f"/grasp{os.getpid()}"
    proc = NodeProcess(node_command("grasp_consumer", namespace=ns, params={"once": True}), ros_env,
                       tmp_path / "consumer.log")
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("test_consumer", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    try:
        pub = node.create_publisher(ObjectInstanceArray, f"{ns}/instances", reliable_qos())
        assert spin_until(ex, lambda: pub.get_subscription_count() >= 1, 30.0), proc.output()
        def sd(*s):  # axis-aligned covariance with these standard deviations
            return np.diag(np.square(s))

        # id 1: 0.5 m away, 4 cm wide; id 2: closer (0.4 m) but 12 cm wide; id 3: 0.45 m, 3 cm wide
        inst = Instances(labels=np.zeros(0, np.int32), ids=[1, 2, 3],
                         centroids=[[0, 0, 0.5], [0, 0, 0.4], [0.05, 0, 0.45]],
                         covariances=[sd(0.03, 0.01, 0.005), sd(0.05, 0.03, 0.02), sd(0.02, 0.0075, 0.005)],
                         scores=[0.9, 0.9, 0.8], num_points=[500, 500, 500])
        msg = instances_to_msg(inst, make_header(time.time_ns(), "camera_color_optical_frame"))
        pub.publish(msg)
        assert spin_until(ex, lambda: proc.proc.poll() is not None, 30.0), proc.output()
    finally:
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
        code = proc.stop()
    assert code == 0, proc.output()
    line = [ln for ln in proc.output().splitlines() if ln.startswith("{")][-1]
    out = json.loads(line)
    # extents without points are the +-2 sigma ellipsoid: widths 0.04, 0.12, 0.03 m across the long axis
    assert out["objects"] == 3 and out["grasp"]["id"] == 3
    assert out["grasp"]["frame"] == "camera_color_optical_frame"
    np.testing.assert_allclose(out["grasp"]["position_m"], [0.05, 0, 0.45])
    np.testing.assert_allclose(out["grasp"]["extent_m"], [0.08, 0.03, 0.02], atol=1e-9)
