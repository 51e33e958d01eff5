"""Typed configuration of the ClusterNet model, loss, augmentation and training (loaded from YAML)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

from instseg_ros.train.config import TrainLoopConfig, check_loop_config, load_yaml_config

INPUT_MODES = ("rgb", "rgb+d", "rgb+xyz", "rgb+xyz+d")
FEATURE_MODES = ("c", "c+cov")
BACKBONES = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet34": ("basic", (3, 4, 6, 3)),
             "resnet50": ("bottleneck", (3, 4, 6, 3))}


@dataclass
class ModelConfig:
    """ClusterNet architecture (§III-C) and the input normalisation it was trained with.

    Attributes:
        backbone: "resnet18" (the CPU "lite" model), "resnet34" or "resnet50" (the paper's).
        base_width: channels of the first ResNet stage (64 in the standard ResNets).
        inputs: "rgb" | "rgb+d" | "rgb+xyz" | "rgb+xyz+d" (the paper's ablations; full model = rgb+xyz+d).
        feature: "c" (3-D centroid) or "c+cov" (9-D, eq. 1).
        input_height, input_width: network resolution in pixels; predictors resize to it (K adjusted).
        c1_channels: channels of the fused C1 (1/8) features; aspp_channels: of C4_f and D_f.
        decoder_channels: channels of the 1/4-resolution decoder.
        aspp_rates: dilations of the C4 ASPP (at 1/32); depth_aspp_rates: of the depth ASPP (at 1/8).
        depth_widths: channels of the VGG-style depth branch stages (full, 1/2, 1/4, 1/8 resolution).
        xi_residual: predict ξ as the pixel's measured 3D point (hole-filled depth) plus an offset
            when XYZ is an input; the network then only regresses the offset to the object's moments.
        offset_scale: metres per unit of the raw ξ offset output. radius_scale: metres per unit of B̂.
        depth_mean, depth_std: metres, normalisation of depth / z inputs.
    """

    backbone: str = "resnet18"
    base_width: int = 64
    inputs: str = "rgb+xyz+d"
    feature: str = "c"
    input_height: int = 240
    input_width: int = 320
    c1_channels: int = 128
    aspp_channels: int = 128
    decoder_channels: int = 64
    aspp_rates: tuple[int, ...] = (1, 2, 3)
    depth_aspp_rates: tuple[int, ...] = (3, 6, 9)
    depth_widths: tuple[int, ...] = (16, 32, 64, 96)
    xi_residual: bool = True
    offset_scale: float = 0.1
    radius_scale: float = 0.05
    depth_mean: float = 1.0
    depth_std: float = 0.5

    def __post_init__(self) -> None:
        self.aspp_rates = tuple(int(r) for r in self.aspp_rates)
        self.depth_aspp_rates = tuple(int(r) for r in self.depth_aspp_rates)
        self.depth_widths = tuple(int(r) for r in self.depth_widths)
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {self.backbone!r}")
        if self.inputs not in INPUT_MODES:
            raise ValueError(f"inputs must be one of {INPUT_MODES}, got {self.inputs!r}")
        if self.feature not in FEATURE_MODES:
            raise ValueError(f"feature must be one of {FEATURE_MODES}, got {self.feature!r}")
        if self.input_height < 32 or self.input_width < 32:
            raise ValueError("input_height and input_width must be >= 32 pixels")
        if len(self.depth_widths) != 4:
            raise ValueError("depth_widths needs 4 stages (1, 1/2, 1/4, 1/8 resolution)")
        if self.base_width < 8 or min(self.c1_channels, self.aspp_channels, self.decoder_channels) < 8:
            raise ValueError("channel counts must be >= 8")

    @property
    def feature_dim(self) -> int:
        return 3 if self.feature == "c" else 9

    @property
    def use_xyz(self) -> bool:
        return "xyz" in self.inputs

    @property
    def use_depth(self) -> bool:
        return self.inputs.endswith("+d")


@dataclass
class LossConfig:
    """Weights of eq. (3) and the schedule of §IV-D (paper values as defaults).

    ``var_vio_late`` replaces ``lam_var`` and ``lam_vio`` from step ``late_step`` on (the paper raises both
    from 1 to 100 after epoch 5, once the features have settled). ``lam_v`` is λ_v of the violation term.
    """

    lam_s: float = 1.0
    lam_cen: float = 1.0
    lam_p: float = 100.0
    lam_xi: float = 1.0
    lam_b: float = 10.0
    lam_var: float = 1.0
    lam_vio: float = 1.0
    var_vio_late: float = 100.0
    late_step: int = 2000
    lam_v: float = 0.2
    max_radius: float = 0.1
    centroid_fraction: float = 0.2

    def weights_at(self, step: int) -> tuple[float, float]:
        """(λ_var, λ_vio) at a training step."""
        if step >= self.late_step:
            return self.var_vio_late, self.var_vio_late
        return self.lam_var, self.lam_vio


@dataclass
class AugmentConfig:
    """Augmentations for synthetic-to-real transfer (applied per training frame).

    crop_scale: (min, max) side fraction of a random crop (then resized to the training resolution,
    K adjusted); flip: horizontal flip probability; brightness/contrast/saturation: max relative
    jitter; channel_gain: max per-channel gain change; rgb_noise: std of additive noise (0..255 scale);
    blur: probability of a 3x3 box blur; depth_noise: std of multiplicative depth noise per metre (the
    noise std at depth z is depth_noise * z^2); depth_scale: max relative global depth scale error;
    dropout_pixels: share of depth pixels zeroed; dropout_blobs: max number of rectangular holes;
    edge_dropout: probability of zeroing depth at depth discontinuities.
    """

    enabled: bool = True
    crop_scale: tuple[float, float] = (0.6, 1.0)
    flip: float = 0.5
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    channel_gain: float = 0.1
    rgb_noise: float = 4.0
    blur: float = 0.2
    depth_noise: float = 0.003
    depth_scale: float = 0.01
    dropout_pixels: float = 0.02
    dropout_blobs: int = 4
    edge_dropout: float = 0.5

    def __post_init__(self) -> None:
        self.crop_scale = tuple(float(x) for x in self.crop_scale)
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")


@dataclass
class TrainConfig(TrainLoopConfig):
    """One training run (``instseg train clusternet --config``).

    The loop's fields (``data``, ``out_dir``, ``steps``, ``lr``, ``checkpoint_every``, ``max_frames`` (frames),
    ``refresh_frames_every``, ``init_from``, ...) are :class:`~instseg_ros.train.config.TrainLoopConfig`'s;
    here only the defaults differ. ``data`` (the dataset root, relative to the working directory or
    absolute) is required unless frames are given to ``train()``; ``init_from`` also takes over the loaded
    model's step count (the λ_var / λ_vio schedule's phase).
    val_split: the split evaluation uses. batch_size: frames per step (per process under DDP).
    num_workers: DataLoader worker processes. min_fg_valid_depth: see
    :class:`instseg_ros.clusternet.dataset.ClusterNetDataset`.
    """

    out_dir: str = "runs/clusternet"
    steps: int = 20000
    lr: float = 1e-4
    threads: int = 2
    checkpoint_every: int = 250
    val_split: str = "val"
    batch_size: int = 4
    num_workers: int = 0
    min_fg_valid_depth: float = 0.0
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def _build(cls, data: dict[str, Any] | None):
    data = dict(data or {})
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {unknown}")
    kwargs = {}
    for name, value in data.items():
        sub = {"model": ModelConfig, "loss": LossConfig, "augment": AugmentConfig}.get(name)
        if cls is TrainConfig and sub is not None:
            kwargs[name] = _build(sub, value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """ModelConfig from a plain dict (checkpoint "config"); ValueError on unknown keys."""
    return _build(ModelConfig, data)


def train_config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """TrainConfig from a plain dict (a YAML's top level); ValueError on unknown keys or unusable values."""
    cfg = _build(TrainConfig, data)
    check_loop_config(cfg)
    return cfg


def load_train_config(path: str) -> TrainConfig:
    """TrainConfig from a YAML file; ValueError names the file on a parse error or unknown key."""
    return load_yaml_config(path, train_config_from_dict)


def to_dict(cfg) -> dict[str, Any]:
    """Plain (YAML / checkpoint-safe) dict of a config dataclass; tuples become lists."""
    def conv(x):
        if isinstance(x, tuple):
            return [conv(v) for v in x]
        if isinstance(x, dict):
            return {k: conv(v) for k, v in x.items()}
        return x
    assert is_dataclass(cfg)
    return conv(asdict(cfg))
