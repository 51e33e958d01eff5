"""Start the nodes as separate processes and feed them frames: what the demo, ``instseg bench nodes``
and the graph tests share (``ros2 launch`` is not installable outside a ROS distribution).

* :class:`NodeProcess`: ``python -m instseg_ros.ros.<node> --ros-args ...`` in its own process with
  the run's ROS environment, stdout+stderr to a log file; stopped with SIGINT (then SIGKILL).
* :class:`FramePublisher`: publishes colour (rgb8), aligned depth (16UC1 mm), camera_info and
  optionally a PoseStamped per frame under one topic prefix, with one shared header stamp.
* :class:`Collector`: subscribes to output topics and keeps every message with its arrival time.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from instseg_ros.ros.graph import reliable_qos

#: node executable name -> module run with ``python -m``.
NODE_MODULES = {
    "clusternet_node": "instseg_ros.ros.clusternet_node",
    "occuseg_mapping_node": "instseg_ros.ros.mapping_node",
    "grasp_consumer": "instseg_ros.ros.grasp_consumer",
}


def node_command(node: str, name: str | None = None, namespace: str | None = None,
                 params_file: str | None = None, params: dict[str, Any] | None = None,
                 remaps: dict[str, str] | None = None, log_level: str | None = None) -> list[str]:
    """argv that runs ``node`` (a key of :data:`NODE_MODULES`) with ROS arguments."""
    cmd = [sys.executable, "-u", "-m", NODE_MODULES[node], "--ros-args"]
    if name:
        cmd += ["-r", f"__node:={name}"]
    if namespace:
        cmd += ["-r", f"__ns:={namespace}"]
    if params_file:
        cmd += ["--params-file", str(params_file)]
    for k, v in (params or {}).items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, (list, tuple)):
            v = "[" + ",".join(repr(float(x)) for x in v) + "]"
        elif isinstance(v, str) and v == "":
            v = "''"
        cmd += ["-p", f"{k}:={v}"]
    for src, dst in (remaps or {}).items():
        cmd += ["-r", f"{src}:={dst}"]
    if log_level:
        cmd += ["--log-level", log_level]
    return cmd


class NodeProcess:
    """A node in its own process (context manager). ``log`` is the path of its combined output."""

    def __init__(self, cmd: list[str], env: dict[str, str], log_path: str | os.PathLike) -> None:
        self.cmd = cmd
        self.log = Path(log_path)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.log, "wb")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._fh, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def output(self) -> str:
        if not self._fh.closed:
            self._fh.flush()
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGINT (clean rclpy shutdown), SIGKILL after ``timeout`` s; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._fh.close()
        return int(self.proc.returncode)

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def make_header(stamp_ns: int, frame_id: str):
    from std_msgs.msg import Header

    from instseg_ros.ros.conversions import ns_to_stamp

    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


def pose_msg(T: np.ndarray, header):
    """4x4 T_map_camera -> geometry_msgs/PoseStamped with ``header``."""
    from geometry_msgs.msg import PoseStamped

    from instseg_ros.core.geometry import rotation_to_quaternion

    q = rotation_to_quaternion(np.asarray(T)[:3, :3])
    m = PoseStamped()
    m.header = header
    m.pose.position.x, m.pose.position.y, m.pose.position.z = (float(v) for v in np.asarray(T)[:3, 3])
    m.pose.orientation.x, m.pose.orientation.y, m.pose.orientation.z, m.pose.orientation.w = (float(v) for v in q)
    return m


class FramePublisher:
    """Publishers for ``<prefix>/color/image_raw``, ``<prefix>/aligned_depth_to_color/image_raw``,
    ``<prefix>/color/camera_info`` and ``<prefix>/pose`` (PoseStamped), reliable QoS."""

    def __init__(self, node, prefix: str, history: int = 10) -> None:
        from geometry_msgs.msg import PoseStamped
        from sensor_msgs.msg import CameraInfo, Image

        qos = reliable_qos(history)
        p = prefix.rstrip("/")
        self.color = node.create_publisher(Image, f"{p}/color/image_raw", qos)
        self.depth = node.create_publisher(Image, f"{p}/aligned_depth_to_color/image_raw", qos)
        self.info = node.create_publisher(CameraInfo, f"{p}/color/camera_info", qos)
        self.pose = node.create_publisher(PoseStamped, f"{p}/pose", qos)

    @property
    def publishers(self) -> list:
        return [self.color, self.depth, self.info]

    def publish_frame(self, rgb: np.ndarray, depth_m: np.ndarray, K: np.ndarray, stamp_ns: int,
                      frame_id: str = "camera_color_optical_frame", T_map_camera: np.ndarray | None = None,
                      map_frame: str = "map", depth_encoding: str = "16UC1") -> None:
        """One frame: rgb uint8 (H, W, 3), depth float32 metres (sent as 16UC1 mm or 32FC1 m), K (3, 3)."""
        from instseg_ros.ros.conversions import array_to_image, intrinsics_to_camera_info

        h = make_header(stamp_ns, frame_id)
        h_, w_ = depth_m.shape
        self.publish_msgs(array_to_image(rgb, "rgb8", h), array_to_image(depth_m, depth_encoding, h),
                          intrinsics_to_camera_info(K, w_, h_, h),
                          pose_msg(T_map_camera, make_header(stamp_ns, map_frame)) if T_map_camera is not None
                          else None)

    def publish_msgs(self, color, depth, info, pose=None) -> None:
        if pose is not None:
            self.pose.publish(pose)
        self.info.publish(info)
        self.depth.publish(depth)
        self.color.publish(color)


class Collector:
    """Keeps every message of the subscribed topics: ``messages[topic]`` = [(recv_ns wall clock, msg)]."""

    def __init__(self, node, topics: dict[str, type], qos=None, raw: bool = False) -> None:
        self.messages: dict[str, list[tuple[int, Any]]] = {t: [] for t in topics}
        self._lock = threading.Lock()
        self.subs = [node.create_subscription(typ, t, self._cb(t), qos or reliable_qos(50), raw=raw)
                     for t, typ in topics.items()]

    def _cb(self, topic: str):
        def cb(msg) -> None:
            with self._lock:
                self.messages[topic].append((time.time_ns(), msg))
        return cb

    def count(self, topic: str) -> int:
        with self._lock:
            return len(self.messages[topic])

    def get(self, topic: str) -> list[tuple[int, Any]]:
        with self._lock:
            return list(self.messages[topic])


def spin_until(executor, predicate, timeout: float = 30.0) -> bool:
    """Spin ``executor`` until ``predicate()`` holds or ``timeout`` s pass; returns its last value."""
    from instseg_ros.ros.graph import wait_until

    return wait_until(predicate, timeout, lambda t: executor.spin_once(timeout_sec=t))


def lifecycle_call(node, executor, node_fqn: str, transition: int | None, timeout: float = 60.0):
    """Call ``<node_fqn>/change_state`` with a transition id, or ``get_state`` when ``transition`` is
    None, from ``node`` (spun by ``executor``); returns the response. RuntimeError on timeout."""
    from lifecycle_msgs.srv import ChangeState, GetState

    if transition is None:
        cli, req = node.create_client(GetState, f"{node_fqn}/get_state"), GetState.Request()
    else:
        cli, req = node.create_client(ChangeState, f"{node_fqn}/change_state"), ChangeState.Request()
        req.transition.id = int(transition)
    try:
        if not spin_until(executor, cli.service_is_ready, 30.0):
            raise RuntimeError(f"{cli.srv_name} is not available")
        # the request reader can match before the response writer does (a fresh client may lose
        # its first response): give discovery a moment, and re-ask get_state, which is idempotent
        spin_until(executor, lambda: False, 0.3)
        attempts = 1 if transition is not None else 4
        for _ in range(attempts):
            fut = cli.call_async(req)
            if spin_until(executor, fut.done, timeout if attempts == 1 else min(timeout, 10.0)):
                return fut.result()
            cli.remove_pending_request(fut)
        raise RuntimeError(f"{cli.srv_name} did not answer within {timeout} s")
    finally:
        node.destroy_client(cli)
