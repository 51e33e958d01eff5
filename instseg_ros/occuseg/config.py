"""Typed configuration of OccuSeg: network, loss weights, inference and training (loaded from YAML)."""
from __future__ import annotations

from dataclasses import dataclass, field

import yaml

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
class TrainConfig:
    """Training run settings (YAML keys of the same names; ``net`` and ``loss`` are nested mappings)."""

    data_root: str = "/work/data_out/occuseg"
    train_split: str = "train"
    cache_dir: str = ""                       # default <data_root>/cache
    voxel_size: float = 0.005
    depth_max: float = 2.0
    use_gt_depth: bool = False
    out_dir: str = "runs/occuseg"
    export: str = ""                          # shippable checkpoint path written at each save
    steps: int = 2000
    lr: float = 1e-3
    weight_decay: float = 1e-5
    ckpt_every: int = 100
    max_voxels: int = 200000
    seed: int = 0
    limit_scenes: int = 0
    rescan_every: int = 0                     # steps; > 0 picks up sequences generated while training
    init_from: str = ""                       # fine-tune: start from this checkpoint's weights (new optimiser)
    net: NetConfig = field(default_factory=NetConfig)
    loss: LossWeights = field(default_factory=LossWeights)

    @classmethod
    def from_yaml(cls, path: str) -> TrainConfig:
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
        net = net_config_from_dict(raw.pop("net", {}) or {})
        loss = LossWeights(**(raw.pop("loss", {}) or {}))
        return cls(net=net, loss=loss, **raw)
