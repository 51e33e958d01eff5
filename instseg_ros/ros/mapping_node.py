"""``occuseg_mapping_node``: TSDF fusion of posed RGB-D frames, segmented periodically by OccuSeg.

Lifecycle node (``autostart`` parameter, default true): configure reads the parameters
(:class:`~instseg_ros.ros.node_params.MappingNodeConfig`, ``config/occuseg_mapping_node.yaml``),
creates the map, publishers and services; activate loads the OccuSeg model and subscribes;
deactivate unsubscribes and frees the model (the map is kept); cleanup drops the map.

Inputs (relative names): ``aligned_depth_to_color/image_raw`` (16UC1 mm / 32FC1 m),
``color/image_raw``, ``color/camera_info``, synchronized with ``queue_size`` / ``slop``; the camera
pose T_map_camera from ``pose_source``:

* ``topic``: geometry_msgs/PoseStamped on ``pose`` (synchronized with the images; its header frame
  must be ``map_frame`` or empty);
* ``tf``: tf2_ros lookup ``map_frame`` <- camera frame at the image stamp (needs a ROS 2 install;
  elsewhere configure fails with a clear error);
* ``static``: a fixed camera over the bin, ``static_pose`` = [x, y, z, qx, qy, qz, qw].

Every frame is integrated into the :class:`~instseg_ros.mapping.tsdf.TsdfMap` by one worker thread
(at most one frame waits; newer frames replace it, counted in ``dropped_busy``). Every
``segment_period_s`` a second thread extracts the surface voxels (the only moment it holds the map
lock) and runs :class:`~instseg_ros.occuseg.MapSegmenter`, so integration never waits for the
network. Instance ids stay stable across runs (:class:`~instseg_ros.mapping.stable_ids.InstanceIdTracker`).

Outputs in ``map_frame``, stamped with the newest integrated frame: ``~/map_cloud`` (PointCloud2 x y z
rgb label of the surface voxels), ``~/instances`` (ObjectInstanceArray), ``~/markers``. Services
(std_srvs/Trigger): ``~/segment`` (segment now, reply says how many instances), ``~/reset`` (empty
the map), ``~/save`` (``save_dir``/map.ply with a label property + instances.json). Memory is bounded
by ``max_blocks`` (TSDF) and the single waiting frame.

Bad poses are bad frames (logged, counted in ``bad_frames``, skipped): non-finite numbers, a
quaternion whose norm is not 1 within ``quaternion_tolerance``, a camera position beyond
+-``world_bound_m`` (chosen so that everything the map accepts can be segmented). Stamps go through
:class:`~instseg_ros.ros.node_common.StampGuard` as in the camera node; /diagnostics is ERROR while an
input is silent for ``input_timeout_s`` and WARN while frames are dropped, rejected or lost.
"""
from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from pathlib import Path

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

from instseg_ros.core.instance_geometry import oriented_extents
from instseg_ros.core.instances import Instances
from instseg_ros.msg import ObjectInstanceArray
from instseg_ros.ros.conversions import (
    instances_to_markers,
    instances_to_msg,
    labeled_cloud_to_msg,
    ns_to_stamp,
)
from instseg_ros.ros.graph import image_qos
from instseg_ros.ros.node_common import (
    CounterDelta,
    LatencyStats,
    LatestFrameWorker,
    LifecycleTeardown,
    RateMeter,
    StampGuard,
    SyncWatch,
    diagnostic_status,
    frame_to_arrays,
    input_health,
    release_free_heap,
    resolve_model_path,
    run,
)
from instseg_ros.ros.node_params import MappingNodeConfig, declare_config, read_config
from instseg_ros.ros.pose_source import CameraPoseSource, pose_to_matrix  # noqa: F401 (re-export)
from instseg_ros.ros.sync import ApproximateTimeSynchronizer, stamp_of
from instseg_ros.ros.topics import COLOR_TOPIC, DEPTH_TOPIC, INFO_TOPIC, OUTPUT_HISTORY, POSE_TOPIC

#: Weights loaded when ``model_path`` is "".
DEFAULT_MODEL = "occuseg_bin5mm.pt"
#: How long ~/segment and ~/save wait for a running segmentation (s).
SERVICE_TIMEOUT_S = 120.0


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


class MappingNode(LifecycleTeardown, LifecycleNode):
    """See the module docstring."""

    def __init__(self, node_name: str = "occuseg_mapping_node", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        declare_config(self, MappingNodeConfig)
        self.declare_parameter("autostart", True)
        self.cfg: MappingNodeConfig | None = None
        self._map = None
        self._tracker = None
        self._segmenter = None
        self._poses: CameraPoseSource | None = None
        self._worker: LatestFrameWorker | None = None
        self._seg_worker: LatestFrameWorker | None = None
        self._seg_timer = None
        self._sync: ApproximateTimeSynchronizer | None = None
        self._subs: list = []
        self._pubs: dict = {}
        self._srvs: list = []
        self._tmrs: list = []
        self._diag_pub = None
        self._srv_group = ReentrantCallbackGroup()
        self._map_lock = threading.Lock()     # TSDF map
        self._seg_lock = threading.Lock()     # one segmentation at a time
        self._state_lock = threading.Lock()   # counters / last result
        self._stamps = StampGuard(2.0, 2.0)
        self._deltas = CounterDelta()
        self._no_depth_warned = False
        self._newest_stamp_ns = 0
        self._map_version = 0                 # bumps on every integrated frame / reset
        self._segmented_version = -1
        self._result: Instances | None = None
        self._result_stamp_ns = 0
        self._in_rate, self._out_rate = RateMeter(), RateMeter()
        self._integrate_ms, self._segment_ms = LatencyStats(), LatencyStats()
        self.bad_frames = 0
        self.frames_no_depth = 0
        self.segmentations = 0
        self._last_error = ""

    # ------------------------------------------------------------------ lifecycle transitions
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from instseg_ros.mapping.stable_ids import InstanceIdTracker
        from instseg_ros.mapping.tsdf import TsdfMap

        try:
            self.cfg = cfg = read_config(self, MappingNodeConfig)
        except ValueError as e:
            self.get_logger().error(f"configure failed: {e}")
            return TransitionCallbackReturn.FAILURE
        self._poses = CameraPoseSource(self, cfg.pose_source, cfg.map_frame, cfg.camera_frame, cfg.static_pose,
                                       cfg.tf_timeout_s, cfg.quaternion_tolerance, cfg.world_bound_m)
        try:
            self._poses.start()
        except RuntimeError as e:
            self.get_logger().error(f"configure failed: {e}")
            return TransitionCallbackReturn.FAILURE
        self._map = TsdfMap(cfg.tsdf_config(), logger=self.get_logger())
        self._tracker = InstanceIdTracker(cfg.id_match_iou)
        out_qos = QoSProfile(depth=OUTPUT_HISTORY, reliability=ReliabilityPolicy.RELIABLE)
        self._pubs = {
            "map_cloud": self.create_lifecycle_publisher(PointCloud2, "~/map_cloud", out_qos),
            "instances": self.create_lifecycle_publisher(ObjectInstanceArray, "~/instances", out_qos),
            "markers": self.create_lifecycle_publisher(MarkerArray, "~/markers", out_qos),
        }
        self._srvs = [
            self.create_service(Trigger, "~/segment", self._srv_segment, callback_group=self._srv_group),
            self.create_service(Trigger, "~/reset", self._srv_reset, callback_group=self._srv_group),
            self.create_service(Trigger, "~/save", self._srv_save, callback_group=self._srv_group),
        ]
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._tmrs = [self.create_timer(cfg.diagnostics_period_s, self._publish_diagnostics)]
        self.get_logger().info(f"configured: {cfg}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        cfg = self.cfg
        try:
            from instseg_ros.occuseg import MapSegmenter

            path = resolve_model_path(cfg.model_path, DEFAULT_MODEL)
            self._segmenter = MapSegmenter.from_checkpoint(path, device=cfg.device)
        except (RuntimeError, ValueError) as e:
            self.get_logger().error(f"activate failed: cannot load the model: {e}")
            return TransitionCallbackReturn.FAILURE
        dev = self._segmenter.device
        where = f"GPU {dev}" if dev.type == "cuda" else f"CPU (device={cfg.device!r}; no GPU in use)"
        self.get_logger().info(f"model {path} on {where}; pose_source={cfg.pose_source}")
        if abs(self._segmenter.config.voxel_size - cfg.voxel_size) > 1e-9:
            self.get_logger().warning(f"the model was trained at voxel_size {self._segmenter.config.voxel_size} m, "
                                      f"the map uses {cfg.voxel_size} m")
        self._stamps = StampGuard(cfg.future_stamp_tolerance_s, cfg.stamp_jump_reset_s)
        self._worker = LatestFrameWorker(self._integrate, self._on_frame_error, name="mapping-integrate")
        self._seg_worker = LatestFrameWorker(lambda _: self._segment(), self._on_segment_error,
                                             name="mapping-segment")
        n_inputs = 4 if cfg.pose_source == "topic" else 3
        self._sync = ApproximateTimeSynchronizer(n_inputs, self._on_synced, queue_size=cfg.queue_size, slop=cfg.slop)
        self._sync_watch = SyncWatch([DEPTH_TOPIC, COLOR_TOPIC, INFO_TOPIC, POSE_TOPIC][:n_inputs])
        qos = image_qos(cfg.input_reliability, cfg.input_history)
        self._subs = [
            self.create_subscription(Image, DEPTH_TOPIC, self._sync.input_callback(0), qos),
            self.create_subscription(Image, COLOR_TOPIC, self._sync.input_callback(1), qos),
            self.create_subscription(CameraInfo, INFO_TOPIC, self._sync.input_callback(2), qos),
        ]
        if n_inputs == 4:
            self._subs.append(self.create_subscription(PoseStamped, POSE_TOPIC, self._sync.input_callback(3),
                                                       QoSProfile(depth=max(50, cfg.queue_size),
                                                                  reliability=ReliabilityPolicy.RELIABLE)))
        if cfg.segment_period_s > 0:
            self._seg_timer = self.create_timer(cfg.segment_period_s, self._periodic_segment)
            self._tmrs.append(self._seg_timer)
        return super().on_activate(state)

    def _stop_processing(self) -> None:
        for s in self._subs:
            self.destroy_subscription(s)
        self._subs = []
        if getattr(self, "_seg_timer", None) is not None:
            self.destroy_timer(self._seg_timer)
            self._tmrs.remove(self._seg_timer)
            self._seg_timer = None
        for w in (self._worker, self._seg_worker):
            if w is not None:
                w.stop(timeout=SERVICE_TIMEOUT_S)
        self._worker = self._seg_worker = None
        if self._segmenter is not None:
            with self._seg_lock:
                on_gpu = self._segmenter.device.type == "cuda"
                self._segmenter = None
            gc.collect()
            if on_gpu:
                import torch

                torch.cuda.empty_cache()
            self.get_logger().info("model freed")

    def _destroy_outputs(self) -> None:
        for p in self._pubs.values():
            self.destroy_lifecycle_publisher(p)
        for s in self._srvs:
            self.destroy_service(s)
        for t in self._tmrs:
            self.destroy_timer(t)
        self._pubs, self._srvs, self._tmrs = {}, [], []
        if self._diag_pub is not None:
            self.destroy_publisher(self._diag_pub)
            self._diag_pub = None
        if self._poses is not None:
            self._poses.stop()
        with self._map_lock:
            self._map = None
        with self._state_lock:
            self._result = None

    # ------------------------------------------------------------------ integration
    def _on_synced(self, depth: Image, color: Image, info: CameraInfo, pose: PoseStamped | None = None) -> None:
        self._in_rate.tick()
        ok, msg = self._stamps.check(stamp_of(depth), self.get_clock().now().nanoseconds)
        if msg:
            self.get_logger().warning(msg)
        if not ok:
            with self._state_lock:
                self.bad_frames += 1
            return
        worker = self._worker
        if worker is not None:
            worker.submit((depth, color, info, pose))

    def _camera_pose(self, depth: Image, pose: PoseStamped | None) -> np.ndarray:
        return self._poses.pose(depth, pose)

    def _integrate(self, item) -> None:
        depth_msg, color_msg, info, pose = item
        rgb, depth, K = frame_to_arrays(color_msg, depth_msg, info)
        T = self._camera_pose(depth_msg, pose)
        t0 = time.perf_counter()
        with self._map_lock:
            if self._map is None:
                return
            n = self._map.integrate(depth, rgb, K, T)
            self._map_version += 1
        self._integrate_ms.add((time.perf_counter() - t0) * 1e3)
        if n == 0 and not self._map.last_budget_limited and not self._no_depth_warned:
            # budget-limited frames are reported by the map itself (once) and in map_blocks_dropped
            self._no_depth_warned = True
            self.get_logger().warning("frame integrated no depth: all of it beyond depth_max or outside the "
                                      "workspace (logged once; counted in 'frames_no_depth')")
        if n == 0:
            with self._state_lock:
                self.frames_no_depth += 1
            return
        with self._state_lock:
            self._newest_stamp_ns = max(self._newest_stamp_ns, stamp_of(depth_msg))
        self._out_rate.tick()

    def _on_frame_error(self, item, exc: BaseException) -> None:
        with self._state_lock:
            self.bad_frames += 1
        self._last_error = str(exc)
        stamp = stamp_of(item[0]) * 1e-9
        if isinstance(exc, ValueError):
            self.get_logger().warning(f"skipping frame stamped {stamp:.3f} s: {exc}")
        else:
            self.get_logger().error(f"frame stamped {stamp:.3f} s failed: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ segmentation
    def _periodic_segment(self) -> None:
        if self._seg_worker is not None and self._map_version != self._segmented_version:
            self._seg_worker.submit(None)

    def _on_segment_error(self, _item, exc: BaseException) -> None:
        self._last_error = f"segmentation: {exc}"
        self.get_logger().error(f"segmentation failed: {type(exc).__name__}: {exc}")

    def _segment(self) -> tuple[bool, str]:
        """Extract surface voxels (holding the map lock only for that), segment, publish."""
        from instseg_ros.mapping.tsdf import snap_to_voxels

        with self._seg_lock:
            segmenter = self._segmenter
            if segmenter is None:
                return False, "the node is not active (no model loaded)"
            with self._map_lock:
                if self._map is None:
                    return False, "the node is not configured"
                version = self._map_version
                pos, col, nrm = self._map.extract_points()
                voxel_size = self._map.voxel_size
            with self._state_lock:
                stamp = self._newest_stamp_ns
            t0 = time.perf_counter()
            sv = snap_to_voxels(pos, col, nrm, voxel_size)
            cfg = self.cfg
            if cfg.workspace_min and len(sv):
                keep = ((sv.points >= cfg.workspace_min) & (sv.points <= cfg.workspace_max)).all(axis=1)
                sv = type(sv)(sv.coords[keep], sv.points[keep], sv.colors[keep], sv.normals[keep], sv.voxel_size)
            if len(sv) < cfg.min_segment_voxels:
                self._segmented_version = version
                return False, f"the map has {len(sv)} surface voxels, fewer than min_segment_voxels={cfg.min_segment_voxels}"
            inst = segmenter.predict(sv)
            inst = self._tracker.assign(sv.coords, inst, stamp_ns=stamp)
            self._segment_ms.add((time.perf_counter() - t0) * 1e3)
            with self._state_lock:
                self._result, self._result_stamp_ns = inst, stamp
                self.segmentations += 1
            self._segmented_version = version
            self._publish_map(inst, stamp)
            message = f"{len(inst)} instances over {len(sv)} surface voxels"
            del inst, sv, pos, col, nrm
            release_free_heap()
            return True, message

    def _header(self, stamp_ns: int) -> Header:
        return Header(stamp=ns_to_stamp(stamp_ns), frame_id=self.cfg.map_frame)

    def _publish_map(self, inst: Instances, stamp_ns: int) -> None:
        pubs = self._pubs
        if not pubs:
            return
        header = self._header(stamp_ns)
        pts = inst.points if inst.points is not None else np.zeros((0, 3), np.float32)
        col = inst.colors if inst.colors is not None else np.zeros((0, 3), np.uint8)
        pubs["map_cloud"].publish(labeled_cloud_to_msg(pts, col, inst.labels.astype(np.uint32), header))
        pubs["instances"].publish(instances_to_msg(inst, header))
        pubs["markers"].publish(instances_to_markers(inst, header))

    # ------------------------------------------------------------------ services
    def _srv_segment(self, request, response):
        if self._segmenter is None:
            response.success, response.message = False, "the node is not active (no model loaded)"
            return response
        try:
            response.success, response.message = self._segment()
        except Exception as e:  # noqa: BLE001 - the reason goes back to the caller
            response.success, response.message = False, f"segmentation failed: {type(e).__name__}: {e}"
        return response

    def _srv_reset(self, request, response):
        with self._seg_lock:
            with self._map_lock:
                if self._map is None:
                    response.success, response.message = False, "the node is not configured"
                    return response
                self._map.reset()
                self._map_version += 1
            with self._state_lock:
                self._result = None
                self._newest_stamp_ns = 0
            self._stamps.reset()
            self._tracker.reset()
            self._segmented_version = self._map_version
            empty = Instances(labels=np.zeros(0, np.int32), points=np.zeros((0, 3), np.float32),
                              colors=np.zeros((0, 3), np.uint8))
            self._publish_map(empty, self.get_clock().now().nanoseconds)
        self.get_logger().info("map reset")
        response.success, response.message = True, "map reset"
        return response

    def _srv_save(self, request, response):
        with self._state_lock:
            inst, stamp = self._result, self._result_stamp_ns
        if inst is None or self._segmented_version != self._map_version:
            try:
                ok, msg = self._segment() if self._segmenter is not None else (False, "the node is not active")
            except Exception as e:  # noqa: BLE001 - the reason goes back to the caller; the node stays up
                ok, msg = False, f"segmentation failed: {type(e).__name__}: {e}"
            if not ok:
                response.success, response.message = False, f"nothing to save: {msg}"
                return response
            with self._state_lock:
                inst, stamp = self._result, self._result_stamp_ns
        out = Path(self.cfg.save_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
            write_ply(out / "map.ply", inst.points, inst.colors, inst.labels.astype(np.uint32))
            doc = instances_to_json(inst, self.cfg.map_frame, stamp)
            tmp = out / "instances.json.tmp"
            tmp.write_text(json.dumps(doc, indent=1))
            os.replace(tmp, out / "instances.json")
        except OSError as e:
            response.success, response.message = False, f"cannot write to {out}: {e}"
            return response
        response.success = True
        response.message = f"saved {len(inst.labels)} points and {len(inst)} instances to {out.resolve()}"
        return response

    # ------------------------------------------------------------------ diagnostics
    def stats(self) -> dict:
        sync = self._sync.stats() if self._sync is not None else None
        m = self._map
        integ, seg = self._integrate_ms.summary(), self._segment_ms.summary()
        with self._state_lock:
            n_inst = len(self._result) if self._result is not None else 0
            n_vox = len(self._result.labels) if self._result is not None else 0
        return {
            "input_rate_hz": self._in_rate.rate(), "integration_rate_hz": self._out_rate.rate(),
            "frames_in": self._in_rate.total, "frames_integrated": self._out_rate.total,
            "integrate_mean_ms": integ["mean_ms"], "segment_mean_ms": seg["mean_ms"], "segment_last_n": seg["n"],
            "segmentations": self.segmentations, "instances": n_inst, "map_voxels": n_vox,
            "map_blocks": m.num_blocks if m is not None else 0,
            "map_blocks_dropped": m.blocks_dropped if m is not None else 0,
            "dropped_busy": self._worker.dropped if self._worker else 0,
            "bad_frames": self.bad_frames, "frames_no_depth": self.frames_no_depth,
            "out_of_order": self._stamps.out_of_order, "future_stamps": self._stamps.future,
            "stamp_resets": self._stamps.resets, "stamp_forward_jumps": self._stamps.forward_jumps,
            "sync_matched": sync.matched if sync else 0, "sync_dropped": sum(sync.dropped) if sync else 0,
            "lost_estimate": sum(sync.lost_estimate) if sync else 0,
            "input_gaps": sum(sync.gaps) if sync else 0,
            "sync_received": ",".join(map(str, sync.received)) if sync else "",
            "sync_lost_estimate": ",".join(map(str, sync.lost_estimate)) if sync else "",
            "input_silent_s": ",".join(f"{x:.1f}" for x in sync.silent_s) if sync else "",
        }

    def _publish_diagnostics(self) -> None:
        if self._diag_pub is None:
            return
        st = self.stats()
        sync = self._sync
        active = self._segmenter is not None and sync is not None
        increments = self._deltas.update({k: st[k] for k in ("bad_frames", "dropped_busy", "sync_dropped",
                                                             "lost_estimate", "map_blocks_dropped")})
        if active:
            warning = self._sync_watch.check(sync.stats())
            if warning:
                self.get_logger().warning(warning)
                self._last_error = warning
        names = [DEPTH_TOPIC, COLOR_TOPIC, INFO_TOPIC, POSE_TOPIC][:sync.num_inputs] if active else []
        level, msg = input_health(active, names, sync.stats().silent_s if active else [], self.cfg.input_timeout_s,
                                  increments)
        if st["map_blocks_dropped"] and level != DiagnosticStatus.ERROR:
            level = DiagnosticStatus.WARN
            msg += "; TSDF block budget reached: raise max_blocks or crop the workspace"
        if self._last_error and level != DiagnosticStatus.OK:
            msg += f"; last problem: {self._last_error}"
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [diagnostic_status(f"{self.get_name()}: occuseg mapping", self.get_fully_qualified_name(),
                                        st, level, msg)]
        self._diag_pub.publish(arr)
        release_free_heap()  # once per period: freed worker-thread arenas back to the OS (flat RSS)


def main(args=None) -> int:
    return run(MappingNode, args)


if __name__ == "__main__":
    sys.exit(main())
