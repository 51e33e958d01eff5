"""``occuseg_mapping_node``: TSDF fusion of posed RGB-D frames, segmented periodically by OccuSeg.

A lifecycle node around a :class:`~instseg_ros.mapping.session.MapSession` (the map, its segmentations,
stable ids, versions, export): it converts messages, calls the session and publishes. configure reads the
parameters and the model's voxel size (``voxel_size`` 0 = the model's; another value is refused) and makes
the map; activate loads the model and subscribes; deactivate frees it (the map is kept until cleanup). One
worker thread integrates the newest synchronized frame, another segments every ``segment_period_s``; the
session's short map lock means integration never waits for the network. Topics, services: README.
"""
from __future__ import annotations

import sys

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from instseg_ros.core.instances import Instances
from instseg_ros.mapping.session import MapSession, NotSegmentable
from instseg_ros.msg import ObjectInstanceArray
from instseg_ros.ros import node_common as nc
from instseg_ros.ros.conversions import instances_to_markers, instances_to_msg, labeled_cloud_to_msg, ns_to_stamp
from instseg_ros.ros.node_params import MappingNodeConfig, declare_config, read_config
from instseg_ros.ros.pose_source import CameraPoseSource
from instseg_ros.ros.sync import stamp_of
from instseg_ros.ros.topics import COLOR_TOPIC, DEPTH_TOPIC, INFO_TOPIC, OUTPUT_HISTORY, POSE_TOPIC

#: Weights loaded when ``model_path`` is "".
DEFAULT_MODEL = "occuseg_bin5mm.pt"
#: How long stopping waits for a running integration / segmentation (s).
SERVICE_TIMEOUT_S = 120.0
#: What finding / reading a model file may raise (missing, unreadable, not an OccuSeg checkpoint, bad stored
#: config) and what a bad parameter raises.
MODEL_ERRORS = (OSError, RuntimeError, ValueError)


class MappingNode(nc.LifecycleTeardown, LifecycleNode):
    """See the module docstring."""

    def __init__(self, node_name: str = "occuseg_mapping_node", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        declare_config(self, MappingNodeConfig)
        self.declare_parameter("autostart", True)
        self.cfg: MappingNodeConfig | None = None
        self._session: MapSession | None = None
        self._poses: CameraPoseSource | None = None
        self._worker = self._seg_worker = self._diag_pub = self._sync = self._sync_watch = None
        self._subs, self._srvs, self._tmrs, self._pubs, self._model_path = [], [], [], {}, ""
        self._stamps, self._deltas = nc.StampGuard(2.0, 2.0), nc.CounterDelta()
        self._in_rate, self._out_rate = nc.RateMeter(), nc.RateMeter()
        # bad frames are counted by two threads, each in its own counter: stamp rejects / worker failures
        self._rejected, self._failed, self._last_error = 0, 0, ""

    # ------------------------------------------------------------------ lifecycle transitions
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from instseg_ros.occuseg.checkpoint import load_checkpoint

        try:
            self.cfg = cfg = read_config(self, MappingNodeConfig)
            self._poses = CameraPoseSource(self, cfg.pose_source, cfg.map_frame, cfg.camera_frame, cfg.static_pose,
                                           cfg.tf_timeout_s, cfg.quaternion_tolerance, cfg.world_bound_m)
            self._poses.start()
            self._model_path = nc.resolve_model_path(cfg.model_path, DEFAULT_MODEL)
            model_voxel_size = float(load_checkpoint(self._model_path)["voxel_size"])
            self._session = MapSession(cfg.session_config(model_voxel_size), self.get_logger(),
                                       on_update=lambda r: self._publish_map(r.instances, r.stamp_ns))
        except MODEL_ERRORS as e:  # bad parameters, no tf2_ros for pose_source=tf, no readable model
            self.get_logger().error(f"configure failed: {e}")
            return TransitionCallbackReturn.FAILURE
        qos = QoSProfile(depth=OUTPUT_HISTORY, reliability=ReliabilityPolicy.RELIABLE)
        self._pubs = {name: self.create_lifecycle_publisher(t, f"~/{name}", qos) for name, t in
                      (("map_cloud", PointCloud2), ("instances", ObjectInstanceArray), ("markers", MarkerArray))}
        group = ReentrantCallbackGroup()
        self._srvs = [self.create_service(Trigger, f"~/{name}", nc.trigger_callback(fn, failed), callback_group=group)
                      for name, fn, failed in (("segment", self._segment, "segmentation failed: "),
                                               ("reset", self._reset, "reset failed: "),
                                               ("save", self._save, "nothing to save: segmentation failed: "))]
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._tmrs = [self.create_timer(cfg.diagnostics_period_s, self._publish_diagnostics)]
        if cfg.segment_period_s > 0:  # does nothing while inactive
            self._tmrs.append(self.create_timer(cfg.segment_period_s, self._periodic_segment))
        self.get_logger().info(f"configured: {cfg}; map voxel_size {self._session.voxel_size} m")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        cfg = self.cfg
        try:
            from instseg_ros.occuseg import MapSegmenter

            segmenter = MapSegmenter.from_checkpoint(self._model_path, device=cfg.device)
            self._session.attach_segmenter(segmenter)
        except MODEL_ERRORS as e:
            self.get_logger().error(f"activate failed: cannot load the model: {e}")
            return TransitionCallbackReturn.FAILURE
        dev = segmenter.device
        where = f"GPU {dev}" if dev.type == "cuda" else f"CPU (device={cfg.device!r}; no GPU in use)"
        self.get_logger().info(f"model {self._model_path} on {where}; pose_source={cfg.pose_source}")
        self._stamps = nc.StampGuard(cfg.future_stamp_tolerance_s, cfg.stamp_jump_reset_s)
        self._worker = nc.LatestFrameWorker(self._integrate, self._on_frame_error, name="mapping-integrate")
        self._seg_worker = nc.LatestFrameWorker(lambda _: self._segment(), self._on_segment_error, name="map-segment")
        inputs = [(Image, DEPTH_TOPIC), (Image, COLOR_TOPIC), (CameraInfo, INFO_TOPIC)]
        inputs += [(PoseStamped, POSE_TOPIC)] if self._poses.needs_topic else []
        self._sync, self._sync_watch, self._subs = nc.subscribe_synced(self, inputs, self._on_synced, cfg)
        return super().on_activate(state)

    def _stop_processing(self) -> None:
        for s in self._subs:
            self.destroy_subscription(s)
        for worker in filter(None, (self._worker, self._seg_worker)):
            worker.stop(timeout=SERVICE_TIMEOUT_S)
        self._subs, self._worker, self._seg_worker = [], None, None
        if self._session is not None and self._session.segmenter is not None:
            self._session.detach_segmenter()
            self.get_logger().info("model freed")

    def _destroy_outputs(self) -> None:
        for destroy, items in ((self.destroy_lifecycle_publisher, self._pubs.values()),
                               (self.destroy_service, self._srvs), (self.destroy_timer, self._tmrs)):
            for item in items:
                destroy(item)
        if self._diag_pub is not None:
            self.destroy_publisher(self._diag_pub)
        if self._poses is not None:
            self._poses.stop()
        if self._session is not None:
            self._session.close()  # kept, closed: a service call still in flight gets a clear answer
        self._pubs, self._srvs, self._tmrs, self._diag_pub = {}, [], [], None

    # ------------------------------------------------------------------ frames
    def _on_synced(self, depth: Image, color: Image, info: CameraInfo, pose: PoseStamped | None = None) -> None:
        self._in_rate.tick()
        ok, msg = self._stamps.check(stamp_of(depth), self.get_clock().now().nanoseconds)
        if msg:
            self.get_logger().warning(msg)
        if not ok:
            self._rejected += 1
        elif (worker := self._worker) is not None:
            worker.submit((depth, color, info, pose))

    def _integrate(self, item) -> None:
        depth_msg, color_msg, info, pose = item
        rgb, depth, K = nc.frame_to_arrays(color_msg, depth_msg, info)
        T = self._poses.pose(depth_msg, pose)
        if self._session.integrate(depth, rgb, K, T, stamp_of(depth_msg)):
            self._out_rate.tick()

    def _on_frame_error(self, item, exc: BaseException) -> None:
        self._failed += 1
        self._last_error = str(exc)
        nc.log_skipped_frame(self.get_logger(), stamp_of(item[0]), exc)

    # ------------------------------------------------------------------ segmentation and services
    def _periodic_segment(self) -> None:
        if self._seg_worker is not None and self._session.needs_segmentation:
            self._seg_worker.submit(None)

    def _on_segment_error(self, _item, exc: BaseException) -> None:
        self._last_error = f"segmentation: {exc}"
        self.get_logger().error(f"segmentation failed: {type(exc).__name__}: {exc}")

    def _segment(self) -> tuple[bool, str]:
        """Segment now (the session's on_update publishes the result)."""
        if self._session.segmenter is None:
            return False, "the node is not active (no model loaded)"
        try:
            inst = self._session.segment().instances
        except NotSegmentable as e:
            return False, str(e)
        finally:
            nc.release_free_heap()
        return True, f"{len(inst)} instances over {len(inst.labels)} surface voxels"

    def _reset(self) -> tuple[bool, str]:
        self._session.reset(self.get_clock().now().nanoseconds)  # publishes the empty map
        self._stamps.reset()
        self.get_logger().info("map reset")
        return True, "map reset"

    def _save(self) -> tuple[bool, str]:
        try:
            result, out = self._session.save(self.cfg.save_dir)
        except NotSegmentable as e:
            return False, f"nothing to save: {e}"
        except OSError as e:
            return False, f"cannot write to {self.cfg.save_dir}: {e}"
        finally:
            nc.release_free_heap()
        return True, f"saved {len(result.instances.labels)} points and {len(result.instances)} instances to {out}"

    def _publish_map(self, inst: Instances, stamp_ns: int) -> None:
        if not (pubs := self._pubs):
            return
        header = Header(stamp=ns_to_stamp(stamp_ns), frame_id=self.cfg.map_frame)
        pubs["map_cloud"].publish(labeled_cloud_to_msg(inst.points, inst.colors, inst.labels.astype(np.uint32), header))
        pubs["instances"].publish(instances_to_msg(inst, header))
        pubs["markers"].publish(instances_to_markers(inst, header))

    # ------------------------------------------------------------------ diagnostics
    def stats(self) -> dict:
        session, stamps = self._session, self._stamps
        return {
            "input_rate_hz": self._in_rate.rate(), "integration_rate_hz": self._out_rate.rate(),
            "frames_in": self._in_rate.total, "frames_integrated": self._out_rate.total,
            **(session.stats() if session is not None else dict.fromkeys(MapSession.STATS_KEYS, 0)),
            "dropped_busy": self._worker.dropped if self._worker else 0, "bad_frames": self._rejected + self._failed,
            "out_of_order": stamps.out_of_order, "future_stamps": stamps.future, "stamp_resets": stamps.resets,
            "stamp_forward_jumps": stamps.forward_jumps,
            **nc.sync_values(self._sync.stats() if self._sync is not None else None),
        }

    def _publish_diagnostics(self) -> None:
        if self._diag_pub is None:
            return
        st, sync = self.stats(), self._sync
        active = self._session.segmenter is not None and sync is not None
        increments = self._deltas.update({k: st[k] for k in ("bad_frames", "dropped_busy", "sync_dropped",
                                                             "lost_estimate", "map_blocks_dropped")})
        if active and (warning := self._sync_watch.check(sync.stats())):
            self.get_logger().warning(warning)
            self._last_error = warning
        level, msg = nc.input_health(active, self._sync_watch.names if active else [],
                                     sync.stats().silent_s if active else [], self.cfg.input_timeout_s, increments)
        if st["map_blocks_dropped"] and level != DiagnosticStatus.ERROR:
            level = DiagnosticStatus.WARN
            msg += "; TSDF block budget reached: raise max_blocks or crop the workspace"
        if self._last_error and level != DiagnosticStatus.OK:
            msg += f"; last problem: {self._last_error}"
        nc.publish_status(self, self._diag_pub, f"{self.get_name()}: occuseg mapping", st, level, msg)
        nc.release_free_heap()  # once per period: freed worker-thread arenas back to the OS (flat RSS)


def main(args=None) -> int:
    return nc.run(MappingNode, args)


if __name__ == "__main__":
    sys.exit(main())
