"""Typed configuration of OccuSeg: network, loss weights, inference and training (loaded from YAML)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from instseg_ros.train.config import (
    TrainLoopConfig,
    check_loop_config,
    load_yaml_config,
    reject_renamed_keys,
)

from .clustering import ClusterConfig
from .supervoxels import SupervoxelConfig


@dataclass
class NetConfig:
    """Network hyper-parameters.

    num_classes: semantic classes incl. background 0 (1 + shape families).
    channels: feature width per U-Net level (len = levels; each level below the first halves the grid).
    embed_dim: feature-embedding dimension of s_i.
    spatial_scale: metres per normalised unit for positions, offsets and sigma_d.
    reps: SubMConv3d blocks per level on each side.
    """

    num_classes: int = 10
    channels: tuple[int, ...] = (16, 32, 48, 64)
    embed_dim: int = 8
    spatial_scale: float = 0.05
    reps: int = 1

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if self.num_classes < 2 or len(self.channels) < 1 or self.embed_dim < 1 or self.spatial_scale <= 0:
            raise ValueError(f"invalid NetConfig {self}")


@dataclass
class LossWeights:
    """Multipliers of the terms of eq. (1)/(2); 0 switches a term off (ablation training)."""

    semantic: float = 1.0
    spatial: float = 1.0
    feature: float = 1.0
    covariance: float = 1.0
    occupancy: float = 1.0


@dataclass
class SegmenterConfig:
    """Everything inference needs besides the weights."""

    net: NetConfig = field(default_factory=NetConfig)
    supervoxel: SupervoxelConfig = field(default_factory=SupervoxelConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    voxel_size: float = 0.005


def net_config_from_dict(d: dict) -> NetConfig:
    d = dict(d)
    d["channels"] = tuple(d.get("channels", NetConfig.channels))
    return NetConfig(**d)


@dataclass
class TrainConfig(TrainLoopConfig):
    """One training run (``instseg train occuseg --config``; YAML keys of the same names, ``model`` and
    ``loss`` nested mappings).

    The loop's fields (``data``, ``out_dir``, ``steps``, ``lr``, ``checkpoint_every``, ``max_frames``,
    ``refresh_frames_every``, ``init_from``, ...) are :class:`~instseg_ros.train.config.TrainLoopConfig`'s,
    with OccuSeg's defaults: a cosine schedule to 5 % of lr 1e-3, one record per step, the CPU. ``data`` (the
    dataset root with ``sequences/<split>/``, relative to the working directory or absolute) is required;
    ``max_frames`` counts sequences (fused maps); a fine-tune (``init_from``) starts at step 0.
    cache_dir: fused-map cache (default ``<data>/cache``). voxel_size: m, TSDF voxel = network voxel.
    depth_max: m, TSDF integration range. use_gt_depth: fuse the noise-free depth instead of the sensor-like
    one. max_voxels: a map with more surface voxels is randomly subsampled to this many per step.
    semantic: the semantic head's label space, "family" (background + shape families; ``model.num_classes``
    10) or "grasp" (:data:`~instseg_ros.data.io.GRASP_CLASSES`; ``model.num_classes`` 6).
    bg_recolor_prob: share of training steps whose background voxels are repainted in a random colour
    (:func:`~instseg_ros.occuseg.dataset.recolor_background`), so that walls and tables are background
    whatever their colour. model: the network. loss: the term weights of eq. (1).
    """

    out_dir: str = "runs/occuseg"
    steps: int = 2000
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    lr_min: float = 5e-5
    weight_decay: float = 1e-5
    device: str = "cpu"
    checkpoint_every: int = 100
    log_every: int = 1
    cache_dir: str = ""
    voxel_size: float = 0.005
    depth_max: float = 2.0
    use_gt_depth: bool = False
    max_voxels: int = 200000
    semantic: str = "family"
    bg_recolor_prob: float = 0.0
    model: NetConfig = field(default_factory=NetConfig)
    loss: LossWeights = field(default_factory=LossWeights)


#: keys of the training YAML before the engine shared clusternet's names -> their names now
RENAMED_KEYS = {"data_root": "data", "ckpt_every": "checkpoint_every", "limit_scenes": "max_frames",
                "rescan_every": "refresh_frames_every", "net": "model"}


def train_config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """TrainConfig from a plain dict (a YAML's top level); ValueError on unknown or renamed keys and on
    unusable values."""
    data = dict(data)
    reject_renamed_keys(data, RENAMED_KEYS, "OccuSeg training config")
    unknown = sorted(set(data) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise ValueError(f"unknown TrainConfig keys: {unknown}")
    model = net_config_from_dict(data.pop("model", None) or {})
    loss = LossWeights(**(data.pop("loss", None) or {}))
    cfg = TrainConfig(model=model, loss=loss, **data)
    check_loop_config(cfg)
    check_semantic(cfg)
    return cfg


def check_semantic(cfg: TrainConfig) -> None:
    """ValueError unless ``semantic`` is a known label space, a "grasp" head has one output per grasp class,
    and ``bg_recolor_prob`` is a probability."""
    from instseg_ros.data.io import GRASP_CLASSES

    from .dataset import SEMANTICS

    if cfg.semantic not in SEMANTICS:
        raise ValueError(f"semantic must be one of {SEMANTICS}, got {cfg.semantic!r}")
    if cfg.semantic == "grasp" and cfg.model.num_classes != len(GRASP_CLASSES):
        raise ValueError(f"semantic 'grasp' needs model.num_classes {len(GRASP_CLASSES)}, "
                         f"got {cfg.model.num_classes}")
    if not 0.0 <= cfg.bg_recolor_prob <= 1.0:
        raise ValueError(f"bg_recolor_prob must be in [0, 1], got {cfg.bg_recolor_prob}")


def load_train_config(path: str) -> TrainConfig:
    """TrainConfig from a YAML file; ValueError names the file on a parse error or a bad key / value."""
    return load_yaml_config(path, train_config_from_dict)
