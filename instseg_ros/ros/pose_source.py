"""Camera pose T_map_camera for a frame, from the source a node's ``pose_source`` parameter names.

Shared by ``occuseg_mapping_node`` (which needs a pose for every frame) and ``clusternet_node``
(which tracks in the map frame when it has one):

* ``none``: no pose (clusternet_node only: track in the camera frame);
* ``topic``: geometry_msgs/PoseStamped synchronized with the images (its header frame must be
  ``map_frame`` or empty);
* ``tf``: tf2_ros lookup ``map_frame`` <- camera frame at the image stamp (needs a ROS 2 install:
  tf2_ros is not on PyPI; elsewhere :meth:`CameraPoseSource.start` raises RuntimeError saying so);
* ``static``: a fixed camera, ``static_pose`` = [x, y, z, qx, qy, qz, qw] (m, unit quaternion).
"""
from __future__ import annotations

import numpy as np

from instseg_ros.core.geometry import quaternion_to_rotation, validate_pose
from instseg_ros.ros.node_common import QUATERNION_TOLERANCE, FrameError, pose_from_xyz_quat


def pose_to_matrix(msg, quaternion_tolerance: float = QUATERNION_TOLERANCE,
                   world_bound: float = float("inf")) -> np.ndarray:
    """geometry_msgs/Pose -> T (4, 4); FrameError for a non-finite position / quaternion, a quaternion
    whose norm is not 1 within ``quaternion_tolerance`` (a near-zero one is not "normalised" into some
    rotation), or a position beyond +-``world_bound`` m."""
    p, q = msg.position, msg.orientation
    return pose_from_xyz_quat([p.x, p.y, p.z], [q.x, q.y, q.z, q.w], quaternion_tolerance, world_bound)


def static_pose_matrix(static_pose) -> np.ndarray:
    """[x, y, z, qx, qy, qz, qw] (m, quaternion normalised here) -> T (4, 4)."""
    v = [float(x) for x in static_pose]
    T = np.eye(4)
    T[:3, :3] = quaternion_to_rotation(v[3:])
    T[:3, 3] = v[:3]
    return T


class CameraPoseSource:
    """T_map_camera per frame for one node.

    Args:
        node: the rclpy node (for the tf listener).
        pose_source: none | topic | tf | static.
        map_frame: the frame poses are expressed in.
        camera_frame: child frame for tf; "" = the image header's frame_id.
        static_pose: [x, y, z, qx, qy, qz, qw] for ``static``.
        tf_timeout_s: how long a tf lookup waits for the transform at the frame stamp (s).
        quaternion_tolerance: largest deviation of a topic / tf quaternion's norm from 1.
        world_bound: camera positions beyond +-this (m, map frame) are bad poses.
    """

    def __init__(self, node, pose_source: str, map_frame: str, camera_frame: str = "",
                 static_pose=(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0), tf_timeout_s: float = 0.1,
                 quaternion_tolerance: float = QUATERNION_TOLERANCE, world_bound: float = float("inf")) -> None:
        self.node = node
        self.pose_source = pose_source
        self.map_frame = map_frame
        self.camera_frame = camera_frame
        self.static_T = static_pose_matrix(static_pose)
        self.tf_timeout_s = float(tf_timeout_s)
        self.quaternion_tolerance = float(quaternion_tolerance)
        self.world_bound = float(world_bound)
        self._tf_buffer = self._tf_listener = None

    @property
    def needs_topic(self) -> bool:
        """True when a PoseStamped must be synchronized with the images."""
        return self.pose_source == "topic"

    def start(self) -> None:
        """Create the tf listener for ``tf`` (RuntimeError with what to do where tf2_ros is missing)."""
        if self.pose_source != "tf":
            return
        try:
            import tf2_ros  # noqa: F401  (only on a ROS 2 install)
        except ImportError:
            raise RuntimeError("pose_source=tf needs tf2_ros, which comes with a ROS 2 installation (not installable "
                               "from PyPI); use pose_source:=topic (geometry_msgs/PoseStamped) or static") from None
        self._tf_buffer = tf2_ros.Buffer()
        self._tf_listener = tf2_ros.TransformListener(self._tf_buffer, self.node)

    def stop(self) -> None:
        self._tf_listener = self._tf_buffer = None

    def pose(self, image, pose_msg=None) -> np.ndarray | None:
        """T_map_camera (4, 4) for the frame of ``image`` (a stamped message of the camera frame), or
        None for ``none``. FrameError when the pose is missing, in another frame or not rigid."""
        src = self.pose_source
        if src == "none":
            return None
        if src == "static":
            return self.static_T
        if src == "topic":
            if pose_msg is None:
                raise FrameError("no camera pose for this frame")
            if pose_msg.header.frame_id not in ("", self.map_frame):
                raise FrameError(f"pose frame {pose_msg.header.frame_id!r} is not map_frame {self.map_frame!r}")
            T = pose_to_matrix(pose_msg.pose, self.quaternion_tolerance, self.world_bound)
        else:
            import rclpy.duration
            import rclpy.time

            child = self.camera_frame or image.header.frame_id
            if not child:
                raise FrameError("the image has an empty header.frame_id and camera_frame is '': no frame to "
                                 "look the camera pose up for (set camera_frame)")
            if self._tf_buffer is None:
                raise FrameError("pose_source=tf but the tf listener is not started")
            try:
                tf = self._tf_buffer.lookup_transform(
                    self.map_frame, child, rclpy.time.Time.from_msg(image.header.stamp),
                    timeout=rclpy.duration.Duration(seconds=self.tf_timeout_s))
            except Exception as e:  # tf2 raises LookupException / ExtrapolationException / ...
                raise FrameError(f"no transform {self.map_frame} <- {child} at the frame stamp: {e}") from None
            tr, q = tf.transform.translation, tf.transform.rotation
            T = pose_from_xyz_quat([tr.x, tr.y, tr.z], [q.x, q.y, q.z, q.w], self.quaternion_tolerance,
                                   self.world_bound)
        try:
            return validate_pose(T, "camera pose")
        except ValueError as e:
            raise FrameError(str(e)) from None
