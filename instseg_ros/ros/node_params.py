"""ROS parameters -> typed node configs (the one mapping per node, see STYLE.md).

Each node declares the fields of its dataclass as ROS parameters once (name = field name, default
= field default, description = :data:`DESCRIPTIONS`), validates every change by building the
dataclass from the current values plus the change (``__post_init__`` raises ValueError naming the
parameter, which the set-parameters callback returns as the rejection reason), and reads the
dataclass on configure. The same dataclasses load from the YAML files in ``config/`` (the
``ros__parameters`` block) with :func:`config_from_yaml`, which is what the demo and tests use to
stay in step with the shipped parameter files.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import yaml

RELIABILITIES = ("reliable", "best_effort")
#: what runs ClusterNet's network (instseg_ros.clusternet.onnx_engine.BACKENDS, without importing torch here)
CLUSTERNET_BACKENDS = ("auto", "torch", "onnxruntime", "onnxruntime-int8")
POSE_SOURCES = ("tf", "topic", "static")
#: clusternet_node may also run without a pose (tracking in the camera frame).
CAMERA_POSE_SOURCES = ("none",) + POSE_SOURCES

#: Documented, enforced range [low, high] of every bounded numeric parameter (both nodes). The
#: upper bounds keep a typo from flooding the graph (diagnostics_period_s), holding frames without
#: limit (queue_size, input_history: memory grows with each kept 640x480 frame, ~1.5 MB per set) or
#: making the map's memory unbounded (max_blocks, ~10 kB per block). Every float parameter, and
#: every element of a list parameter, must also be finite (inf / NaN are refused when set).
RANGES: dict[str, tuple[float, float]] = {
    "queue_size": (1, 100),
    "slop": (0.0, 1.0),
    "input_history": (1, 100),
    "cloud_stride": (1, 64),
    "min_valid_points": (1, 10_000_000),
    "network_height": (32, 4096),       # or 0 (with network_width 0): the model's own resolution
    "network_width": (32, 4096),
    "diagnostics_period_s": (0.1, 60.0),
    "future_stamp_tolerance_s": (0.0, 86400.0),
    "stamp_jump_reset_s": (0.01, 86400.0),
    "input_timeout_s": (0.1, 3600.0),
    "tf_timeout_s": (0.0, 10.0),
    "voxel_size": (0.0005, 0.5),
    "trunc_voxels": (0.5, 64.0),
    "depth_max": (0.01, 50.0),
    "max_blocks": (1, 400_000),
    "weight_threshold": (0.0, 1e6),
    "segment_period_s": (0.0, 3600.0),
    "min_segment_voxels": (1, 10_000_000),
    "id_match_iou": (1e-6, 1.0),
    "world_bound_m": (1.0, 100_000.0),
    "quaternion_tolerance": (1e-6, 0.5),
    "min_object_size_m": (0.0, 1.0),      # nothing a bin holds is bigger
    "min_instance_score": (0.0, 1.0),     # scores are products of probabilities
    "min_hits": (1, 1000),
    "max_age_s": (0.0, 3600.0),
    "gate_bhattacharyya": (1e-6, 100.0),
    "gate_distance_m": (1e-6, 10.0),
}
#: Parameters whose value 0 is allowed outside their range (a documented "off" / "automatic").
ZERO_ALLOWED = ("network_height", "network_width", "voxel_size")
#: Largest difference (m) between a set ``voxel_size`` and the model's that counts as equal.
VOXEL_SIZE_TOLERANCE = 1e-9


def _check_ranges(cfg) -> None:
    """ValueError naming the parameter for a non-finite float (or list element) or a value outside
    :data:`RANGES`."""
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{f.name} must be a finite number, got {v}")
        if isinstance(v, (list, tuple)):
            try:
                bad = [x for x in v if not math.isfinite(float(x))]
            except (TypeError, ValueError):
                raise ValueError(f"{f.name} must be a list of numbers, got {v!r}") from None
            if bad:
                raise ValueError(f"{f.name} must hold finite numbers, got {list(v)}")
        if f.name in RANGES and not isinstance(v, bool):
            lo, hi = RANGES[f.name]
            if f.name in ZERO_ALLOWED and v == 0:
                continue
            if not lo <= v <= hi:
                raise ValueError(f"{f.name} must be in [{lo:g}, {hi:g}], got {v}")


def _check_device(device: str) -> None:
    if device not in ("auto", "cpu") and not str(device).startswith("cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")


def _check_sync(queue_size: int, slop: float, reliability: str, history: int) -> None:
    if int(queue_size) < 1:
        raise ValueError(f"queue_size must be >= 1, got {queue_size}")
    if not (float(slop) >= 0.0):
        raise ValueError(f"slop must be >= 0 seconds, got {slop}")
    if reliability not in RELIABILITIES:
        raise ValueError(f"input_reliability must be one of {RELIABILITIES}, got {reliability!r}")
    if int(history) < 1:
        raise ValueError(f"input_history must be >= 1, got {history}")


def _check_pose(pose_source: str, allowed: tuple[str, ...], map_frame: str, static_pose,
                tf_timeout_s: float) -> list[float]:
    """Validate the pose parameters shared by both nodes; returns static_pose as floats."""
    if pose_source not in allowed:
        raise ValueError(f"pose_source must be one of {allowed}, got {pose_source!r}")
    if not map_frame:
        raise ValueError("map_frame must not be empty")
    pose = [float(v) for v in static_pose]
    if len(pose) != 7 or not np.isfinite(pose).all():
        raise ValueError(f"static_pose must be 7 finite numbers [x, y, z, qx, qy, qz, qw], got {pose}")
    if np.linalg.norm(pose[3:]) < 1e-6:
        raise ValueError("static_pose quaternion must not be zero")
    if not tf_timeout_s >= 0:
        raise ValueError(f"tf_timeout_s must be >= 0, got {tf_timeout_s}")
    return pose


@dataclass
class ClusterNetNodeConfig:
    """Parameters of ``clusternet_node`` (see :data:`DESCRIPTIONS`)."""

    model_path: str = ""
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = False
    backend: str = "auto"
    queue_size: int = 10
    slop: float = 0.02
    input_reliability: str = "reliable"
    input_history: int = 5
    cloud_stride: int = 1
    min_valid_points: int = 10
    network_height: int = 0
    network_width: int = 0
    diagnostics_period_s: float = 1.0
    refine: bool = True
    min_object_size_m: float = 0.0
    min_instance_score: float = 0.35   # RefineParams.min_score (chosen on synthetic val)
    tracking: bool = True
    min_hits: int = 2
    max_age_s: float = 1.0
    gate_bhattacharyya: float = 1.5
    gate_distance_m: float = 0.08
    publish_unconfirmed: bool = False
    pose_source: str = "none"
    map_frame: str = "map"
    camera_frame: str = ""
    static_pose: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.6, 1.0, 0.0, 0.0, 0.0])
    tf_timeout_s: float = 0.1
    future_stamp_tolerance_s: float = 2.0
    stamp_jump_reset_s: float = 2.0
    input_timeout_s: float = 3.0
    default_frame_id: str = ""

    def __post_init__(self) -> None:
        _check_ranges(self)
        _check_sync(self.queue_size, self.slop, self.input_reliability, self.input_history)
        self.tracker_config()  # validates the tracking parameters
        self.static_pose = _check_pose(self.pose_source, CAMERA_POSE_SOURCES, self.map_frame, self.static_pose,
                                       self.tf_timeout_s)
        hw = self.network_resolution
        if hw is not None and min(hw) < 32:
            raise ValueError(f"network_height / network_width must both be 0 (the model's own resolution) or "
                             f">= 32 pixels, got {hw}")
        _check_device(self.device)
        if self.precision not in ("fp32", "fp16", "bf16"):
            raise ValueError(f"precision must be fp32, fp16 or bf16, got {self.precision!r}")
        if self.backend not in CLUSTERNET_BACKENDS:
            raise ValueError(f"backend must be one of {CLUSTERNET_BACKENDS}, got {self.backend!r}")
        if int(self.cloud_stride) < 1:
            raise ValueError(f"cloud_stride must be >= 1, got {self.cloud_stride}")
        if int(self.min_valid_points) < 1:
            raise ValueError(f"min_valid_points must be >= 1, got {self.min_valid_points}")
        if not self.diagnostics_period_s > 0:
            raise ValueError(f"diagnostics_period_s must be > 0, got {self.diagnostics_period_s}")

    @property
    def network_resolution(self) -> tuple[int, int] | None:
        """(H, W) for the predictor, or None for the checkpoint's own resolution."""
        hw = (int(self.network_height), int(self.network_width))
        return None if hw == (0, 0) else hw

    def tracker_config(self):
        """The :class:`~instseg_ros.core.tracking.TrackerConfig` these parameters describe (ids are
        handed out at confirmation unless unconfirmed tracks are published too)."""
        from instseg_ros.core.tracking import TrackerConfig

        return TrackerConfig(min_hits=int(self.min_hits), max_age_s=float(self.max_age_s),
                             gate_bhattacharyya=float(self.gate_bhattacharyya),
                             gate_distance_m=float(self.gate_distance_m),
                             id_on_confirm=not self.publish_unconfirmed)


@dataclass
class MappingNodeConfig:
    """Parameters of ``occuseg_mapping_node`` (see :data:`DESCRIPTIONS`)."""

    model_path: str = ""
    device: str = "auto"
    pose_source: str = "topic"
    map_frame: str = "map"
    camera_frame: str = ""
    static_pose: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.6, 1.0, 0.0, 0.0, 0.0])
    tf_timeout_s: float = 0.1
    queue_size: int = 10
    slop: float = 0.02
    input_reliability: str = "reliable"
    input_history: int = 5
    voxel_size: float = 0.0
    trunc_voxels: float = 4.0
    depth_max: float = 1.5
    max_blocks: int = 40000
    workspace_min: list[float] = field(default_factory=list)
    workspace_max: list[float] = field(default_factory=list)
    weight_threshold: float = 0.5
    segment_period_s: float = 2.0
    min_segment_voxels: int = 200
    id_match_iou: float = 0.3
    save_dir: str = "instseg_map"
    diagnostics_period_s: float = 1.0
    future_stamp_tolerance_s: float = 2.0
    stamp_jump_reset_s: float = 2.0
    input_timeout_s: float = 3.0
    world_bound_m: float = 1000.0
    quaternion_tolerance: float = 0.01

    def __post_init__(self) -> None:
        _check_ranges(self)
        _check_sync(self.queue_size, self.slop, self.input_reliability, self.input_history)
        _check_device(self.device)
        self.static_pose = _check_pose(self.pose_source, POSE_SOURCES, self.map_frame, self.static_pose,
                                       self.tf_timeout_s)
        if abs(np.linalg.norm(self.static_pose[3:]) - 1.0) > self.quaternion_tolerance:
            raise ValueError(f"static_pose quaternion {self.static_pose[3:]} must have norm 1 (within "
                             f"quaternion_tolerance={self.quaternion_tolerance}); a zero or unnormalised "
                             f"quaternion is not a rotation")
        if max(abs(v) for v in self.static_pose[:3]) > self.world_bound_m:
            raise ValueError(f"static_pose position {self.static_pose[:3]} lies outside "
                             f"world_bound_m={self.world_bound_m}")
        self.workspace_min = [float(v) for v in self.workspace_min]
        self.workspace_max = [float(v) for v in self.workspace_max]
        if len(self.workspace_min) not in (0, 3) or len(self.workspace_max) != len(self.workspace_min):
            raise ValueError("workspace_min and workspace_max must both be empty or both 3 numbers (m)")
        if self.segment_period_s < 0:
            raise ValueError(f"segment_period_s must be >= 0 (0 = only on ~/segment), got {self.segment_period_s}")
        if int(self.min_segment_voxels) < 1:
            raise ValueError(f"min_segment_voxels must be >= 1, got {self.min_segment_voxels}")
        if not 0.0 < self.id_match_iou <= 1.0:
            raise ValueError(f"id_match_iou must be in (0, 1], got {self.id_match_iou}")
        if not self.save_dir:
            raise ValueError("save_dir must not be empty")
        if not self.diagnostics_period_s > 0:
            raise ValueError(f"diagnostics_period_s must be > 0, got {self.diagnostics_period_s}")
        # the TSDF settings are validated by TsdfConfig itself; with voxel_size 0 (the model's, known at
        # configure) at the coarsest voxel allowed here, and again at configure with the model's
        self.tsdf_config(self.voxel_size or RANGES["voxel_size"][1])

    def map_voxel_size(self, model_voxel_size: float) -> float:
        """The map's voxel edge (m): ``voxel_size``, or the model's ``model_voxel_size`` (m) when it is 0.
        ValueError naming both when they differ: the network was trained at its voxel size."""
        if not self.voxel_size:
            return float(model_voxel_size)
        if abs(self.voxel_size - model_voxel_size) > VOXEL_SIZE_TOLERANCE:
            raise ValueError(f"voxel_size {self.voxel_size} m differs from the model's voxel size "
                             f"{model_voxel_size} m: set voxel_size to 0 (= the model's) or use a model "
                             f"trained at {self.voxel_size} m")
        return float(self.voxel_size)

    def tsdf_config(self, voxel_size: float | None = None):
        """The :class:`~instseg_ros.mapping.tsdf.TsdfConfig` these parameters describe, with the map's
        ``voxel_size`` (m; default the parameter, which must then be set)."""
        from instseg_ros.mapping.tsdf import TsdfConfig

        voxel_size = self.voxel_size if voxel_size is None else voxel_size
        return TsdfConfig(voxel_size=float(voxel_size), trunc_voxels=float(self.trunc_voxels),
                          depth_max=float(self.depth_max), max_blocks=int(self.max_blocks),
                          workspace_min=tuple(self.workspace_min) if self.workspace_min else None,
                          workspace_max=tuple(self.workspace_max) if self.workspace_max else None,
                          weight_threshold=float(self.weight_threshold), device=self.device,
                          world_bound=float(self.world_bound_m))

    def session_config(self, model_voxel_size: float):
        """The :class:`~instseg_ros.mapping.session.MapSessionConfig` for a model trained at
        ``model_voxel_size`` (m): ValueError when ``voxel_size`` is set to another value
        (:meth:`map_voxel_size`) or the world bound does not fit the voxel index range at that size."""
        from instseg_ros.mapping.session import MapSessionConfig

        return MapSessionConfig(self.tsdf_config(self.map_voxel_size(model_voxel_size)),
                                int(self.min_segment_voxels), float(self.id_match_iou), self.map_frame)

    def static_transform(self) -> np.ndarray:
        """T_map_camera (4, 4) from ``static_pose``."""
        from instseg_ros.ros.pose_source import static_pose_matrix

        return static_pose_matrix(self.static_pose)


DESCRIPTIONS: dict[str, str] = {
    "model_path": "weights file; '' = the shipped models/ file; relative paths also resolve against the package",
    "device": "auto (GPU when torch sees one, else CPU) | cpu | cuda[:N]",
    "precision": "network arithmetic: fp32 | fp16 (autocast, CUDA) | bf16 (autocast)",
    "channels_last": "NHWC layout for the convolutions (faster on GPUs)",
    "backend": "network runtime: auto (ONNX Runtime when installed, else torch) | torch | onnxruntime | "
               "onnxruntime-int8",
    "queue_size": "messages kept per input by the approximate-time synchronizer",
    "slop": "largest stamp spread (s) of one synchronized colour/depth/camera_info(/pose) set",
    "input_reliability": "QoS reliability of the input subscriptions: reliable | best_effort",
    "input_history": "QoS history depth of the input subscriptions",
    "cloud_stride": "publish every n-th pixel (both axes) in ~/cloud",
    "min_valid_points": "instances with fewer valid-depth pixels are dropped",
    "refine": "snap label boundaries to depth steps, join fragments, drop flying-pixel slivers (clusternet.refine)",
    "min_object_size_m": "m, instances smaller along their longest axis (4 sigma) are dropped; 0 = keep all",
    "min_instance_score": "instances scoring below this after fragment joining are dropped (0..1; 0 = keep all)",
    "network_height": "network input rows (the frame is resized to it); 0 with network_width 0 = the model's own",
    "network_width": "network input columns; lower = faster, fewer small objects found",
    "diagnostics_period_s": "period (s) of the /diagnostics status",
    "future_stamp_tolerance_s": "frames stamped further ahead of the node clock than this (s) are rejected as bad "
                                "(camera clock jump); 0 = no check (unsynchronised camera clocks)",
    "stamp_jump_reset_s": "a stamp this much (s) older than the last frame is a clock reset / bag loop: the "
                          "ordering restarts with a WARN; smaller steps back are rejected as out-of-order",
    "input_timeout_s": "/diagnostics reports ERROR when an input has been silent this long (s) while active",
    "default_frame_id": "frame given to a colour image with an empty header.frame_id (WARN once); '' = refuse "
                        "such frames",
    "world_bound_m": "camera poses with a coordinate beyond +-this (m, map frame) are rejected as bad frames; "
                     "(world_bound_m + depth_max) / voxel_size must stay inside the +-2^20 voxel index range",
    "quaternion_tolerance": "a pose quaternion whose norm differs from 1 by more than this is a bad pose",
    "pose_source": "camera pose: tf (tf2_ros, ROS installs) | topic (geometry_msgs/PoseStamped on 'pose') | static"
                   " | none (clusternet_node only: track in the camera frame)",
    "tracking": "clusternet_node: ids follow objects across frames (tracker); false = ids numbered per frame",
    "min_hits": "consecutive frames that confirm a track (1 = no confirmation)",
    "max_age_s": "a confirmed track unseen for longer than this (s) is deleted; its id is never reused",
    "gate_bhattacharyya": "largest Bhattacharyya distance between a track's and an instance's point Gaussians "
                          "of a match (1.5 = a 3.5 sigma shift for equal shapes)",
    "gate_distance_m": "largest centroid distance (m) of a match between a track and an instance",
    "publish_unconfirmed": "also publish instances whose track is not confirmed yet (confirmed=false)",
    "map_frame": "frame of the map and of every mapping output (clusternet_node: frame of its tracks)",
    "camera_frame": "camera frame for pose_source=tf; '' = the depth image's header.frame_id",
    "static_pose": "pose_source=static: camera optical frame in map_frame [x, y, z, qx, qy, qz, qw] (m)",
    "tf_timeout_s": "pose_source=tf: how long to wait for the transform at the frame stamp (s)",
    "voxel_size": "TSDF voxel edge (m); 0 = the model's own (a different value is refused at configure)",
    "trunc_voxels": "TSDF truncation distance in voxels",
    "depth_max": "depth beyond this (m) is not integrated",
    "max_blocks": "TSDF block budget (8^3 voxels each): bounds the map's memory",
    "workspace_min": "[x, y, z] (m, map frame) lower corner of the integrated box; [] = no crop",
    "workspace_max": "[x, y, z] (m, map frame) upper corner of the integrated box; [] = no crop",
    "weight_threshold": "surface points need more accumulated TSDF weight than this",
    "segment_period_s": "seconds between background segmentations (0 = only on ~/segment)",
    "min_segment_voxels": "segmentation waits until the map has this many surface voxels",
    "id_match_iou": "voxel IoU above which a new instance keeps the id of a previous one",
    "save_dir": "directory ~/save writes map.ply and instances.json to",
}

C = TypeVar("C")


def range_text(name: str) -> str:
    """" (range [lo, hi])" for a parameter of :data:`RANGES`, else "" (appended to its description)."""
    if name not in RANGES:
        return ""
    lo, hi = RANGES[name]
    return f" (range [{lo:g}, {hi:g}]{' or 0' if name in ZERO_ALLOWED else ''})"


def config_fields(cls: type) -> list[dataclasses.Field]:
    return list(fields(cls))


def default_values(cls: type) -> dict[str, Any]:
    """Field name -> default value of a config dataclass."""
    inst = cls()
    return {f.name: getattr(inst, f.name) for f in fields(cls)}


def config_from_values(cls: type[C], values: dict[str, Any]) -> C:
    """Build ``cls`` from a name -> value dict (unknown names raise ValueError; types coerced to the
    defaults' types so a YAML ``1`` for a float parameter works)."""
    defaults = default_values(cls)
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for {cls.__name__}; known: {sorted(defaults)}")
    kw = {}
    for name, value in values.items():
        d = defaults[name]
        try:
            if isinstance(d, bool):
                kw[name] = bool(value)
            elif isinstance(d, int):
                kw[name] = int(value)
            elif isinstance(d, float):
                kw[name] = float(value)
            elif isinstance(d, list):
                kw[name] = [float(v) for v in value]
            else:
                kw[name] = str(value)
        except (TypeError, ValueError):
            raise ValueError(f"parameter {name}: cannot use {value!r} as {type(d).__name__}") from None
    return cls(**kw)


def config_from_yaml(cls: type[C], path: str | Path, node_name: str, overrides: dict[str, Any] | None = None) -> C:
    """``cls`` from ``<node_name>: ros__parameters:`` in a ROS parameter file (+ ``overrides``).

    Keys the dataclass does not know (``autostart``, ``use_sim_time``) are ignored here."""
    with open(path) as f:
        doc = yaml.safe_load(f) or {}
    block = doc.get(node_name, doc.get(f"/{node_name}", doc.get("/**", {})))
    params = dict((block or {}).get("ros__parameters", {}))
    known = set(default_values(cls))
    values = {k: v for k, v in params.items() if k in known}
    values.update(overrides or {})
    return config_from_values(cls, values)


# ------------------------------------------------------------------------------------------ rclpy side

def declare_config(node, cls: type) -> None:
    """Declare every field of ``cls`` as a parameter of ``node`` (once, in the constructor) and
    register a set-parameters callback that rejects values the dataclass refuses."""
    from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
    from rclpy.parameter import Parameter

    for name, default in default_values(cls).items():
        desc = ParameterDescriptor(description=DESCRIPTIONS.get(name, "") + range_text(name))
        if isinstance(default, list) and not default:
            # an empty list would be typed BYTE_ARRAY: declare the type, leave it unset (= [])
            node.declare_parameter(name, Parameter.Type.DOUBLE_ARRAY, desc)
        elif isinstance(default, list):
            node.declare_parameter(name, [float(v) for v in default], desc)
        else:
            node.declare_parameter(name, default, desc)

    def _validate(params):
        values = read_values(node, cls)
        for p in params:
            if p.name in values:
                values[p.name] = list(p.value) if isinstance(values[p.name], list) else p.value
        try:
            config_from_values(cls, values)
        except ValueError as e:
            return SetParametersResult(successful=False, reason=str(e))
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(_validate)


def read_values(node, cls: type) -> dict[str, Any]:
    """Current parameter values of ``node`` for the fields of ``cls`` (unset arrays -> [])."""
    from rclpy.exceptions import ParameterUninitializedException

    out = {}
    for name, default in default_values(cls).items():
        try:
            v = node.get_parameter(name).value
        except ParameterUninitializedException:
            v = None
        if isinstance(default, list):
            v = [] if v is None else [float(x) for x in v]
        out[name] = v
    return out


def read_config(node, cls: type[C]) -> C:
    """The node's current parameters as ``cls`` (ValueError naming the bad parameter)."""
    return config_from_values(cls, read_values(node, cls))
