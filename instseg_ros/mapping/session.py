"""`MapSession`: one map being built and segmented, the core of ``occuseg_mapping_node`` without ROS.

It owns the :class:`~instseg_ros.mapping.tsdf.TsdfMap`, the segmenter (attached and detached by the
caller, e.g. on a node's activate / deactivate), the stable instance ids
(:class:`~instseg_ros.mapping.stable_ids.InstanceIdTracker`), the map version, the newest
segmentation and the export (:mod:`~instseg_ros.mapping.export`).

Threads: :meth:`MapSession.integrate` may run in one thread while :meth:`MapSession.segment` runs in
another. Integration never waits for the network: segmentation holds the map lock only while it
copies the iso-surface points out of the TSDF (:meth:`~instseg_ros.mapping.tsdf.TsdfMap.extract_points`);
voxelizing, the network, clustering and id matching run outside it. One segmentation runs at a time;
:meth:`reset` and :meth:`detach_segmenter` wait for a running one.

The segmenter is anything with ``predict(SurfaceVoxels) -> Instances`` (labels aligned with the
voxels), ``last_timings`` (stage -> ms), ``config.voxel_size`` (m) and ``device`` (torch
device): :class:`~instseg_ros.occuseg.MapSegmenter`. It is passed in, not imported, so that mapping
does not depend on occuseg (which depends on mapping).
"""
from __future__ import annotations

import collections
import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from instseg_ros.core.instances import Instances
from instseg_ros.mapping.export import save_map
from instseg_ros.mapping.stable_ids import InstanceIdTracker
from instseg_ros.mapping.tsdf import TsdfConfig, TsdfMap

#: Largest difference (m) between the map's and the segmenter's voxel size that counts as equal.
VOXEL_SIZE_TOLERANCE = 1e-9
#: Latest integrations / segmentations whose mean duration :meth:`MapSession.stats` reports.
TIMING_WINDOW = 100


class NotSegmentable(RuntimeError):
    """:meth:`MapSession.segment` (or :meth:`MapSession.save`) had nothing to work on: no segmenter is
    attached, the session is closed, or the map has fewer than ``min_segment_voxels`` surface voxels.
    The message says which."""


@dataclass
class MapSessionConfig:
    """Settings of a :class:`MapSession`.

    tsdf: the map (voxel size, truncation, depth range, block budget, workspace box).
    min_segment_voxels: a segmentation needs at least this many surface voxels.
    id_match_iou: voxel IoU at which a new instance keeps the id of a previous one.
    frame_id: the map (world) frame, written into the exported JSON.
    """

    tsdf: TsdfConfig = field(default_factory=TsdfConfig)
    min_segment_voxels: int = 200
    id_match_iou: float = 0.3
    frame_id: str = "map"

    def __post_init__(self) -> None:
        if int(self.min_segment_voxels) < 1:
            raise ValueError(f"min_segment_voxels must be >= 1, got {self.min_segment_voxels}")
        if not 0.0 < self.id_match_iou <= 1.0:
            raise ValueError(f"id_match_iou must be in (0, 1], got {self.id_match_iou}")


@dataclass
class MapSegmentation:
    """One segmentation of the map.

    instances: over the M surface voxels (labels int32 (M,), points float32 (M, 3) m and colors
        uint8 (M, 3), map frame) with stable ids, ``hits``, ``age_s`` and ``confirmed``.
    stamp_ns: stamp of the newest frame integrated before the surface was extracted (ns; 0 = none).
    version: the map version that was segmented.
    timings_ms: extract (under the map lock), voxelize, the segmenter's own stages, ids, total (ms).
    """

    instances: Instances
    stamp_ns: int
    version: int
    timings_ms: dict[str, float]


class MapSession:
    """A TSDF map, its segmentations with stable ids, and their export. See the module docstring.

    Args:
        config: :class:`MapSessionConfig`.
        logger: where the map's messages go (``info`` / ``warning`` taking one string, e.g. a ROS
            node's logger); default the ``instseg_ros.mapping`` Python logger.
        on_update: called with every new :class:`MapSegmentation` (in the segmenting thread, before
            :meth:`segment` returns) and with an empty one on :meth:`reset`, e.g. to publish it.
    """

    #: Keys of :meth:`stats`.
    STATS_KEYS = ("integrate_mean_ms", "segment_mean_ms", "segment_last_n", "segmentations", "instances",
                  "map_voxels", "map_blocks", "map_blocks_dropped", "frames_no_depth")

    def __init__(self, config: MapSessionConfig, logger=None, on_update=None) -> None:
        self.config = config
        self._log = logger if logger is not None else logging.getLogger("instseg_ros.mapping")
        self._map: TsdfMap | None = TsdfMap(config.tsdf, logger=self._log)
        self._tracker = InstanceIdTracker(config.id_match_iou)
        self._on_update = on_update
        self._segmenter = None
        self._map_lock = threading.Lock()     # the TSDF map, its version and newest stamp
        self._seg_lock = threading.Lock()     # one segmentation at a time; the segmenter and the ids
        self._state_lock = threading.Lock()   # the newest segmentation and the counters
        self._version = 0                     # bumps on every integrate call and on reset
        self._newest_stamp_ns = 0
        self._segmented_version = -1
        self._result: MapSegmentation | None = None
        self._no_depth_warned = False
        self._integrate_ms: collections.deque[float] = collections.deque(maxlen=TIMING_WINDOW)
        self._segment_ms: collections.deque[float] = collections.deque(maxlen=TIMING_WINDOW)
        self.segmentations = 0
        self.frames_no_depth = 0

    # ------------------------------------------------------------------ segmenter
    @property
    def voxel_size(self) -> float:
        """Voxel edge of the map (m)."""
        return float(self.config.tsdf.voxel_size)

    @property
    def segmenter(self):
        """The attached segmenter, or None."""
        return self._segmenter

    def attach_segmenter(self, segmenter) -> None:
        """Use ``segmenter`` from now on. ValueError when it works at another voxel size than the map."""
        seg_voxel = float(segmenter.config.voxel_size)
        if abs(seg_voxel - self.voxel_size) > VOXEL_SIZE_TOLERANCE:
            raise ValueError(f"the segmenter works at voxel_size {seg_voxel} m but the map uses {self.voxel_size} m; "
                             f"build the map at the model's voxel size")
        with self._seg_lock:
            self._segmenter = segmenter

    def detach_segmenter(self) -> None:
        """Drop the segmenter (after a running segmentation ends) and free its GPU memory."""
        with self._seg_lock:
            segmenter, self._segmenter = self._segmenter, None
        if segmenter is None:
            return
        on_gpu = getattr(segmenter.device, "type", "cpu") == "cuda"
        del segmenter
        gc.collect()
        if on_gpu:
            import torch

            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ integration
    def integrate(self, depth_m: np.ndarray, rgb: np.ndarray, K: np.ndarray, T_world_camera: np.ndarray,
                  stamp_ns: int = 0) -> int:
        """Fuse one frame (:meth:`TsdfMap.integrate`: depth float32 (H, W) m, rgb uint8 (H, W, 3), K (3, 3),
        T_world_camera (4, 4)); ``stamp_ns`` is the frame's stamp (ns). Returns the number of depth
        pixels integrated (0 once the session is closed). ValueError for a bad frame (nothing changes)."""
        t0 = time.perf_counter()
        with self._map_lock:
            tsdf = self._map
            if tsdf is None:
                return 0
            n = tsdf.integrate(depth_m, rgb, K, T_world_camera)
            self._version += 1
            if n:
                self._newest_stamp_ns = max(self._newest_stamp_ns, int(stamp_ns))
            budget_limited = tsdf.last_budget_limited
        with self._state_lock:
            self._integrate_ms.append((time.perf_counter() - t0) * 1e3)
        if n == 0:
            with self._state_lock:
                self.frames_no_depth += 1
            # budget-limited frames are reported by the map itself (once) and in blocks_dropped
            if not budget_limited and not self._no_depth_warned:
                self._no_depth_warned = True
                self._log.warning("frame integrated no depth: all of it beyond depth_max or outside the workspace "
                                  "(logged once; counted in 'frames_no_depth')")
        return n

    @property
    def version(self) -> int:
        """Map version: bumps on every :meth:`integrate` that did not raise and on :meth:`reset`."""
        return self._version

    @property
    def needs_segmentation(self) -> bool:
        """True when the map changed since it was last segmented (or found too small to segment)."""
        return self._version != self._segmented_version

    # ------------------------------------------------------------------ segmentation
    def segment(self) -> MapSegmentation:
        """Segment the map now: extract the surface (the only part under the map lock), voxelize,
        run the segmenter, give the instances stable ids. Stores and returns the result and passes it
        to ``on_update``. NotSegmentable (message says why) when there is nothing to segment."""
        with self._seg_lock:
            segmenter = self._segmenter
            if segmenter is None:
                raise NotSegmentable("no segmenter attached (the model is not loaded)")
            t0 = time.perf_counter()
            with self._map_lock:
                tsdf = self._map
                if tsdf is None:
                    raise NotSegmentable("the map session is closed")
                version, stamp = self._version, self._newest_stamp_ns
                points = tsdf.extract_points()
            t1 = time.perf_counter()
            sv = tsdf.voxelize(*points)
            del points
            if len(sv) < self.config.min_segment_voxels:
                self._segmented_version = version  # nothing new to try until the map changes
                raise NotSegmentable(f"the map has {len(sv)} surface voxels, fewer than "
                                     f"min_segment_voxels={self.config.min_segment_voxels}")
            t2 = time.perf_counter()
            inst, stage_ms = _run_segmenter(segmenter, sv)
            t3 = time.perf_counter()
            inst = self._tracker.assign(sv.coords, inst, stamp_ns=stamp)
            t4 = time.perf_counter()
            timings = {"extract": (t1 - t0) * 1e3, "voxelize": (t2 - t1) * 1e3, **stage_ms,
                       "segmenter": (t3 - t2) * 1e3, "ids": (t4 - t3) * 1e3, "total": (t4 - t0) * 1e3}
            result = MapSegmentation(inst, stamp, version, timings)
            with self._state_lock:
                self._result = result
                self.segmentations += 1
                self._segment_ms.append(timings["total"])
            self._segmented_version = version
            if self._on_update is not None:
                self._on_update(result)
            return result

    @property
    def result(self) -> MapSegmentation | None:
        """The newest segmentation (None before the first one and after :meth:`reset`)."""
        with self._state_lock:
            return self._result

    # ------------------------------------------------------------------ reset / save / close
    def reset(self, stamp_ns: int = 0) -> None:
        """Empty the map and forget the segmentation; ids restart at 1. ``on_update`` gets an empty
        segmentation stamped ``stamp_ns`` (before a segmentation that follows). RuntimeError once closed."""
        with self._seg_lock:
            with self._map_lock:
                if self._map is None:
                    raise RuntimeError("the map session is closed")
                self._map.reset()
                self._version += 1
                self._newest_stamp_ns = 0
                self._segmented_version = version = self._version
            with self._state_lock:
                self._result = None
            self._tracker.reset()
            if self._on_update is not None:
                empty = Instances(labels=np.zeros(0, np.int32), points=np.zeros((0, 3), np.float32),
                                  colors=np.zeros((0, 3), np.uint8))
                self._on_update(MapSegmentation(empty, int(stamp_ns), version, {}))

    def save(self, out_dir: str | Path) -> tuple[MapSegmentation, Path]:
        """Write ``out_dir``/map.ply and instances.json (:func:`~instseg_ros.mapping.export.save_map`) of
        the map's segmentation, segmenting first when the map changed since the newest one.

        Returns (the segmentation written, the resolved directory). NotSegmentable when the map cannot be
        segmented; OSError when the files cannot be written; what the segmenter raises otherwise."""
        result = self.result
        if result is None or self.needs_segmentation:
            result = self.segment()
        return result, save_map(out_dir, result.instances, self.config.frame_id, result.stamp_ns)

    def close(self) -> None:
        """Drop the map (waits for a running segmentation): later calls integrate nothing and refuse to
        segment. The segmenter is detached too."""
        self.detach_segmenter()
        with self._seg_lock, self._map_lock:
            self._map = None
        with self._state_lock:
            self._result = None

    # ------------------------------------------------------------------ figures
    def stats(self) -> dict:
        """Figures for diagnostics (:data:`STATS_KEYS`): mean duration (ms) of the latest
        :data:`TIMING_WINDOW` integrations and segmentations (and how many of the latter), segmentations,
        instances and map_voxels of the newest segmentation, map_blocks (allocated), map_blocks_dropped
        (refused by the budget), frames_no_depth."""
        tsdf, result = self._map, self.result
        with self._state_lock:
            integ, seg = list(self._integrate_ms), list(self._segment_ms)
        return {"integrate_mean_ms": float(np.mean(integ)) if integ else 0.0,
                "segment_mean_ms": float(np.mean(seg)) if seg else 0.0, "segment_last_n": len(seg),
                "segmentations": self.segmentations,
                "instances": len(result.instances) if result is not None else 0,
                "map_voxels": len(result.instances.labels) if result is not None else 0,
                "map_blocks": tsdf.num_blocks if tsdf is not None else 0,
                "map_blocks_dropped": tsdf.blocks_dropped if tsdf is not None else 0,
                "frames_no_depth": self.frames_no_depth}


def _run_segmenter(segmenter, sv) -> tuple[Instances, dict[str, float]]:
    """The one place the segmenter is called and its stage timings (ms) read."""
    inst = segmenter.predict(sv)
    return inst, dict(segmenter.last_timings)
