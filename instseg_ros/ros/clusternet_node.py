"""``clusternet_node``: ClusterNet instance segmentation of every synchronized RGB-D camera frame.

Lifecycle node (``autostart`` parameter: configure + activate at start-up, default true).

* configure: reads the parameters (:class:`~instseg_ros.ros.node_params.ClusterNetNodeConfig`,
  ``config/clusternet_node.yaml``) and creates the publishers.
* activate: loads the model on ``device`` (``auto`` = GPU when torch sees one, logged either way),
  subscribes and starts publishing.
* deactivate: unsubscribes and frees the model (and GPU memory). cleanup: drops the publishers.

Inputs (relative names, remapped in launch; realsense2_camera 4.x defaults), synchronized by
:class:`~instseg_ros.ros.sync.ApproximateTimeSynchronizer` (``queue_size``, ``slop``):
``color/image_raw`` (rgb8/bgr8/rgba8/bgra8/mono8), ``aligned_depth_to_color/image_raw`` (16UC1 mm or
32FC1 m, detected from the encoding), ``color/camera_info``, and with ``pose_source:=topic`` the camera
pose ``pose`` (geometry_msgs/PoseStamped, T_map_camera).

Tracking (``tracking``, default on): a :class:`~instseg_ros.core.tracking.Tracker` associates each
frame's instances with tracks, in ``map_frame`` when ``pose_source`` gives a camera pose (topic, tf,
static; shared with the mapping node, :mod:`~instseg_ros.ros.pose_source`) and in the camera frame
with ``none``. ``ObjectInstance.id`` is the track id (stable across frames, never reused), with
``hits`` / ``age`` / ``confirmed``; only confirmed tracks are published unless
``publish_unconfirmed``. Instances not published are background (0) in ``~/labels`` and in the
cloud labels.

Outputs, each with the colour image's header (stamp and camera optical frame):
``~/instances`` (instseg_ros/ObjectInstanceArray), ``~/labels`` (16UC1 instance ids aligned to
colour, 0 = background; ids above 65535 wrap to 1..65535 there, with a warning), ``~/cloud``
(PointCloud2 x y z rgb label of the valid-depth pixels, every ``cloud_stride``-th pixel), ``~/markers``
(MarkerArray, DELETEALL first, one ellipsoid + id text per instance). ``/diagnostics`` carries input /
output rate, latency, drops and synchronizer counters.

Frames never queue up: the model runs in one worker thread and at most one synchronized frame
waits; a newer frame replaces it (counted in ``dropped_busy``). A bad frame (unknown encoding,
size mismatch, no valid depth, invalid camera_info, stamp not newer than the last frame, stamp
ahead of the node clock, empty ``header.frame_id`` without ``default_frame_id``) is logged,
counted in ``bad_frames`` and skipped; the node carries on with the next frame. Stamp jumps are
handled by :class:`~instseg_ros.ros.node_common.StampGuard` (a frame from the future never blocks
later ones; a jump back by more than ``stamp_jump_reset_s`` restarts the ordering). /diagnostics is
ERROR while an input has been silent for ``input_timeout_s`` and WARN while frames are dropped,
rejected or (from stamp gaps) estimated lost.
"""
from __future__ import annotations

import dataclasses
import gc
import sys
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from visualization_msgs.msg import MarkerArray

from instseg_ros.core.geometry import backproject
from instseg_ros.core.instances import Instances
from instseg_ros.core.tracking import Tracker, tracked_instances
from instseg_ros.msg import ObjectInstanceArray
from instseg_ros.ros.conversions import array_to_image, instances_to_markers, instances_to_msg, labeled_cloud_to_msg
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
from instseg_ros.ros.node_params import ClusterNetNodeConfig, declare_config, read_config
from instseg_ros.ros.pose_source import CameraPoseSource
from instseg_ros.ros.sync import ApproximateTimeSynchronizer, stamp_of
from instseg_ros.ros.topics import COLOR_TOPIC, DEPTH_TOPIC, INFO_TOPIC, OUTPUT_HISTORY, POSE_TOPIC

#: Weights loaded when ``model_path`` is "".
DEFAULT_MODEL = "clusternet_lite.pt"
#: Largest instance id a 16UC1 ~/labels pixel holds.
MAX_LABEL_ID = 65535


def label_image_ids(labels: np.ndarray) -> np.ndarray:
    """int (H, W) instance ids -> uint16 (H, W) for ~/labels: 0 stays 0, ids above
    :data:`MAX_LABEL_ID` wrap to 1..65535 (((id - 1) mod 65535) + 1), so a long-running tracker's
    ids never overflow the 16-bit image (the ObjectInstance ids and cloud labels stay exact)."""
    lab = np.asarray(labels).astype(np.int64)
    return np.where(lab > 0, (lab - 1) % MAX_LABEL_ID + 1, 0).astype(np.uint16)


class ClusterNetNode(LifecycleTeardown, LifecycleNode):
    """See the module docstring."""

    def __init__(self, node_name: str = "clusternet_node", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        declare_config(self, ClusterNetNodeConfig)
        self.declare_parameter("autostart", True)
        self.cfg: ClusterNetNodeConfig | None = None
        self._predictor = None
        self._tracker: Tracker | None = None
        self._poses: CameraPoseSource | None = None
        self._worker: LatestFrameWorker | None = None
        self._sync: ApproximateTimeSynchronizer | None = None
        self._subs: list = []
        self._pubs: dict = {}
        self._diag_pub = None
        self._diag_timer = None
        self._lock = threading.Lock()
        self._stamps = StampGuard(2.0, 2.0)
        self._frame_id_warned = False
        self._deltas = CounterDelta()
        self._in_rate, self._out_rate = RateMeter(), RateMeter()
        self._latency, self._proc = LatencyStats(), LatencyStats()
        self.bad_frames = 0
        self.empty_frame_id = 0
        self.unconfirmed_held_back = 0
        self._live_tracks = 0
        self._wrap_warned = False
        self._last_error = ""

    # ------------------------------------------------------------------ lifecycle transitions
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.cfg = read_config(self, ClusterNetNodeConfig)
        except ValueError as e:
            self.get_logger().error(f"configure failed: {e}")
            return TransitionCallbackReturn.FAILURE
        cfg = self.cfg
        self._poses = CameraPoseSource(self, cfg.pose_source, cfg.map_frame, cfg.camera_frame, cfg.static_pose,
                                       cfg.tf_timeout_s)
        try:
            self._poses.start()
        except RuntimeError as e:
            self.get_logger().error(f"configure failed: {e}")
            return TransitionCallbackReturn.FAILURE
        out_qos = QoSProfile(depth=OUTPUT_HISTORY, reliability=ReliabilityPolicy.RELIABLE)
        self._pubs = {
            "instances": self.create_lifecycle_publisher(ObjectInstanceArray, "~/instances", out_qos),
            "labels": self.create_lifecycle_publisher(Image, "~/labels", out_qos),
            "cloud": self.create_lifecycle_publisher(PointCloud2, "~/cloud", out_qos),
            "markers": self.create_lifecycle_publisher(MarkerArray, "~/markers", out_qos),
        }
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(self.cfg.diagnostics_period_s, self._publish_diagnostics)
        self.get_logger().info(f"configured: {self.cfg}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        from instseg_ros.clusternet import ClusterNetPredictor

        cfg = self.cfg
        try:
            path = resolve_model_path(cfg.model_path, DEFAULT_MODEL)
            self._predictor = ClusterNetPredictor.from_checkpoint(path, device=cfg.device,
                                                                  min_valid_points=cfg.min_valid_points,
                                                                  precision=cfg.precision,
                                                                  channels_last=cfg.channels_last,
                                                                  resolution=cfg.network_resolution,
                                                                  backend=cfg.backend, log=self.get_logger().info)
            self._predictor.refine = dataclasses.replace(self._predictor.refine, enabled=bool(cfg.refine),
                                                         min_extent_m=float(cfg.min_object_size_m),
                                                         min_score=float(cfg.min_instance_score))
        except (FileNotFoundError, RuntimeError, ValueError) as e:
            self.get_logger().error(f"activate failed: cannot load the model: {e}")
            return TransitionCallbackReturn.FAILURE
        dev = self._predictor.device
        if dev.type == "cuda":
            import torch

            self.get_logger().info(f"model {path} on GPU {dev} ({torch.cuda.get_device_name(dev)}), "
                                   f"network: {self._predictor.backend}")
        else:
            self.get_logger().info(f"model {path} on CPU (device={cfg.device!r}; no GPU in use), "
                                   f"network: {self._predictor.backend}")
        self._stamps = StampGuard(cfg.future_stamp_tolerance_s, cfg.stamp_jump_reset_s)
        self._frame_id_warned = False
        self._tracker = Tracker(cfg.tracker_config()) if cfg.tracking else None
        if cfg.tracking:
            where = ("the camera frame" if cfg.pose_source == "none"
                     else f"{cfg.map_frame} (pose_source={cfg.pose_source})")
            self.get_logger().info(f"tracking in {where}: min_hits={cfg.min_hits}, max_age_s={cfg.max_age_s}, "
                                   f"publish_unconfirmed={cfg.publish_unconfirmed}")
        else:
            self.get_logger().info("tracking off: ids are numbered per frame")
        self._worker = LatestFrameWorker(self._process, self._on_frame_error, name="clusternet-worker")
        n_inputs = 4 if self._poses.needs_topic else 3
        self._sync = ApproximateTimeSynchronizer(n_inputs, self._on_synced, queue_size=cfg.queue_size, slop=cfg.slop)
        self._sync_watch = SyncWatch([COLOR_TOPIC, DEPTH_TOPIC, INFO_TOPIC, POSE_TOPIC][:n_inputs])
        qos = image_qos(cfg.input_reliability, cfg.input_history)
        self._subs = [
            self.create_subscription(Image, COLOR_TOPIC, self._sync.input_callback(0), qos),
            self.create_subscription(Image, DEPTH_TOPIC, self._sync.input_callback(1), qos),
            self.create_subscription(CameraInfo, INFO_TOPIC, self._sync.input_callback(2), qos),
        ]
        if n_inputs == 4:
            # poses are small: reliable with a deep history, so none is lost while images queue
            self._subs.append(self.create_subscription(PoseStamped, POSE_TOPIC, self._sync.input_callback(3),
                                                       QoSProfile(depth=max(50, cfg.queue_size),
                                                                  reliability=ReliabilityPolicy.RELIABLE)))
        return super().on_activate(state)

    def _stop_processing(self) -> None:
        for s in self._subs:
            self.destroy_subscription(s)
        self._subs = []
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        if self._predictor is not None:
            on_gpu = self._predictor.device.type == "cuda"
            self._predictor = None
            gc.collect()
            if on_gpu:
                import torch

                torch.cuda.empty_cache()
            self.get_logger().info("model freed")

    def _destroy_outputs(self) -> None:
        for p in self._pubs.values():
            self.destroy_lifecycle_publisher(p)
        self._pubs = {}
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self._diag_pub is not None:
            self.destroy_publisher(self._diag_pub)
            self._diag_pub = None
        if self._poses is not None:
            self._poses.stop()

    # ------------------------------------------------------------------ frames
    def _on_synced(self, color: Image, depth: Image, info: CameraInfo, pose: PoseStamped | None = None) -> None:
        """Synchronizer callback (executor thread): stamp and frame checks, then hand over to the worker."""
        self._in_rate.tick()
        t = stamp_of(color)
        ok, msg = self._stamps.check(t, self.get_clock().now().nanoseconds)
        if msg:
            self.get_logger().warning(msg)
        if not ok:
            with self._lock:
                self.bad_frames += 1
            return
        if not color.header.frame_id:
            fallback = self.cfg.default_frame_id
            if not self._frame_id_warned:
                self._frame_id_warned = True
                self.get_logger().warning(
                    f"colour image stamped {t * 1e-9:.3f} s has an empty header.frame_id: "
                    + (f"outputs use default_frame_id {fallback!r} (logged once)" if fallback else
                       "frames without a frame are skipped (set default_frame_id to use a fixed frame; logged once)"))
            if not fallback:
                with self._lock:
                    self.bad_frames += 1
                    self.empty_frame_id += 1
                return
            color.header.frame_id = fallback
        worker = self._worker
        if worker is not None:
            worker.submit((color, depth, info, time.monotonic(), pose))

    def _on_frame_error(self, item, exc: BaseException) -> None:
        with self._lock:
            self.bad_frames += 1
        self._last_error = str(exc)
        stamp = stamp_of(item[0]) * 1e-9
        if isinstance(exc, ValueError):
            self.get_logger().warning(f"skipping frame stamped {stamp:.3f} s: {exc}")
        else:
            self.get_logger().error(f"frame stamped {stamp:.3f} s failed: {type(exc).__name__}: {exc}")

    def _process(self, item) -> None:
        color, depth_msg, info, t_in, pose = item
        predictor = self._predictor
        if predictor is None:
            return
        rgb, depth, K = frame_to_arrays(color, depth_msg, info)
        T = self._poses.pose(color, pose) if self._tracker is not None else None
        inst = predictor.predict(rgb, depth, K)
        inst = self._track(inst, stamp_of(color), T)
        self._publish(inst, rgb, depth, K, color.header)
        now = time.time_ns()
        self._latency.add((now - stamp_of(color)) * 1e-6)
        self._proc.add((time.monotonic() - t_in) * 1e3)
        self._out_rate.tick()

    def _track(self, inst: Instances, stamp_ns: int, T: np.ndarray | None) -> Instances:
        """Renumber the frame's instances with track ids (worker thread only); drop unconfirmed
        tracks unless ``publish_unconfirmed``. Unchanged when tracking is off."""
        tracker = self._tracker
        if tracker is None:
            return inst
        if tracker.last_stamp_ns is not None and stamp_ns <= tracker.last_stamp_ns:
            # the stamp guard accepted a jump back (clock reset / looped recording): tracks restart
            tracker.restart()
            self.get_logger().info("tracks restarted: the frame stamps went back; new ids continue the count")
        update = tracker.update(inst, stamp_ns, T)
        out = tracked_instances(inst, update, keep_unconfirmed=self.cfg.publish_unconfirmed)
        self.unconfirmed_held_back += len(inst) - len(out)
        self._live_tracks = len(update.tracks)
        return out

    def _publish(self, inst: Instances, rgb: np.ndarray, depth: np.ndarray, K: np.ndarray, header) -> None:
        pubs = self._pubs
        if not pubs:
            return
        pts = backproject(depth, K)
        pubs["instances"].publish(instances_to_msg(inst, header, points=pts, labels=inst.labels))
        if len(inst) and int(inst.ids.max()) > MAX_LABEL_ID and not self._wrap_warned:
            self._wrap_warned = True
            self.get_logger().warning(f"track ids passed {MAX_LABEL_ID}: ~/labels wraps them to 1..{MAX_LABEL_ID} "
                                      "(ObjectInstance.id and the cloud labels stay exact)")
        pubs["labels"].publish(array_to_image(label_image_ids(inst.labels), "16UC1", header))
        s = self.cfg.cloud_stride
        p, lab, col, d = pts[::s, ::s], inst.labels[::s, ::s], rgb[::s, ::s], depth[::s, ::s]
        valid = d > 0
        pubs["cloud"].publish(labeled_cloud_to_msg(p[valid], col[valid], lab[valid].astype(np.uint32), header))
        pubs["markers"].publish(instances_to_markers(inst, header))

    # ------------------------------------------------------------------ diagnostics
    def stats(self) -> dict:
        sync = self._sync.stats() if self._sync is not None else None
        worker = self._worker
        lat, proc = self._latency.summary(), self._proc.summary()
        return {
            "input_rate_hz": self._in_rate.rate(), "output_rate_hz": self._out_rate.rate(),
            "frames_in": self._in_rate.total, "frames_out": self._out_rate.total,
            "latency_mean_ms": lat["mean_ms"], "latency_max_ms": lat["max_ms"],
            "processing_mean_ms": proc["mean_ms"],
            "dropped_busy": worker.dropped if worker else 0, "bad_frames": self.bad_frames,
            "out_of_order": self._stamps.out_of_order, "future_stamps": self._stamps.future,
            "stamp_resets": self._stamps.resets, "stamp_forward_jumps": self._stamps.forward_jumps,
            "empty_frame_id": self.empty_frame_id,
            "live_tracks": self._live_tracks, "unconfirmed_held_back": self.unconfirmed_held_back,
            "sync_matched": sync.matched if sync else 0,
            "sync_dropped": sum(sync.dropped) if sync else 0,
            "lost_estimate": sum(sync.lost_estimate) if sync else 0,
            "input_gaps": sum(sync.gaps) if sync else 0,
            "sync_received": ",".join(map(str, sync.received)) if sync else "",
            "sync_queued": ",".join(map(str, sync.queued)) if sync else "",
            "sync_lost_estimate": ",".join(map(str, sync.lost_estimate)) if sync else "",
            "input_silent_s": ",".join(f"{x:.1f}" for x in sync.silent_s) if sync else "",
        }

    def _publish_diagnostics(self) -> None:
        if self._diag_pub is None:
            return
        st = self.stats()
        sync = self._sync
        active = self._predictor is not None and sync is not None
        increments = self._deltas.update({k: st[k] for k in ("bad_frames", "dropped_busy", "sync_dropped",
                                                             "lost_estimate")})
        if active:
            warning = self._sync_watch.check(sync.stats())
            if warning:
                self.get_logger().warning(warning)
                self._last_error = warning
        names = [COLOR_TOPIC, DEPTH_TOPIC, INFO_TOPIC, POSE_TOPIC][:sync.num_inputs] if active else []
        level, msg = input_health(active, names, sync.stats().silent_s if active else [], self.cfg.input_timeout_s,
                                  increments)
        if active and level == DiagnosticStatus.OK and st["frames_in"] == 0 and sum(sync.stats().received):
            level, msg = DiagnosticStatus.WARN, "inputs arrive but never synchronize (check camera_info / slop)"
        if self._last_error and level != DiagnosticStatus.OK:
            msg += f"; last skipped frame: {self._last_error}"
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [diagnostic_status(f"{self.get_name()}: clusternet", self.get_fully_qualified_name(),
                                        st, level, msg)]
        self._diag_pub.publish(arr)
        release_free_heap()  # once per period: freed worker-thread arenas back to the OS (flat RSS)


def main(args=None) -> int:
    return run(ClusterNetNode, args)


if __name__ == "__main__":
    sys.exit(main())
