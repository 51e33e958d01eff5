"""Settings every training run shares (:class:`TrainLoopConfig`), and the YAML reading both models use.

Paths in a training config (``data``, ``out_dir``, ``export``, ``init_from``, ...) are used as written:
relative ones are relative to the working directory of the ``instseg train`` process.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, is_dataclass
from typing import Any

LR_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainLoopConfig:
    """The training loop's settings: the same field names in every model's ``TrainConfig`` (which subclass
    this and set their own defaults).

    data: dataset root (required; the model's data layout below it). train_split: its training split.
    out_dir: run folder (``last.pt``, ``history.json``, ``loss.png``). export: when set, a shippable copy of
    the checkpoint (no optimizer state) is written there at every save.
    steps: optimizer steps of the whole run (a resumed run continues to this count).
    lr, weight_decay: Adam. lr_schedule: "constant", or "cosine" from ``lr`` at the run's first step down to
    ``lr_min`` at ``steps``. grad_clip: max global gradient norm (0 = no clipping).
    seed: torch and data seeds (rank r of a DDP run adds r). threads: torch CPU threads. device: auto|cpu|cuda.
    checkpoint_every / log_every: steps between checkpoints / history records (records average the steps
    since the previous one). max_frames: use only the first N training samples (frames or sequences;
    0 = all). refresh_frames_every: re-list the training split every N steps (0 = never), for training
    while the generator still writes it.
    init_from: fine-tune from this checkpoint's weights with a fresh optimizer (ignored when ``--resume``
    finds ``<out_dir>/last.pt``).
    """

    data: str = ""
    train_split: str = "train"
    out_dir: str = "runs/train"
    export: str = ""
    steps: int = 1000
    lr: float = 1e-3
    lr_schedule: str = "constant"
    lr_min: float = 0.0
    weight_decay: float = 0.0
    grad_clip: float = 10.0
    seed: int = 0
    threads: int = 1
    device: str = "auto"
    checkpoint_every: int = 100
    log_every: int = 10
    max_frames: int = 0
    refresh_frames_every: int = 0
    init_from: str = ""


def check_loop_config(cfg: TrainLoopConfig) -> None:
    """ValueError for loop settings that cannot run."""
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule {cfg.lr_schedule!r}: expected one of {LR_SCHEDULES}")
    if not 0.0 <= cfg.lr_min <= cfg.lr:
        raise ValueError(f"lr_min {cfg.lr_min} must lie in [0, lr = {cfg.lr}]")
    for name in ("checkpoint_every", "log_every"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    for name in ("steps", "max_frames", "refresh_frames_every", "threads"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.grad_clip < 0:
        raise ValueError(f"grad_clip must be >= 0 (0 = off), got {cfg.grad_clip}")


def require_data(cfg: TrainLoopConfig) -> str:
    """``cfg.data``, or ValueError saying how to set it."""
    if not cfg.data:
        raise ValueError("data is not set: give the dataset root as `data:` in the training YAML or --data "
                         "(a relative path is relative to the working directory)")
    return cfg.data


def reject_renamed_keys(data: dict[str, Any], renamed: dict[str, str], where: str) -> None:
    """ValueError naming the new key for each old one present (no silent acceptance of old configs)."""
    old = sorted(k for k in data if k in renamed)
    if old:
        raise ValueError(f"{where}: renamed keys " + ", ".join(f"{k!r} -> {renamed[k]!r}" for k in old)
                         + " (same meaning; shared by every model's training config)")


def read_yaml_mapping(path: str) -> dict[str, Any]:
    """The top-level mapping of a YAML file; ValueError naming the file on a read / parse error."""
    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"cannot read training config {path}: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a mapping")
    return data


def load_yaml_config(path: str, from_dict):
    """``from_dict(mapping)`` of a YAML file's top level; any ValueError / TypeError is re-raised as a
    ValueError that names the file first."""
    data = read_yaml_mapping(path)
    try:
        return from_dict(data)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from e


def plain_dict(cfg) -> dict[str, Any]:
    """Plain (YAML / checkpoint-safe) dict of a config dataclass; tuples become lists."""
    def conv(x):
        if isinstance(x, (tuple, list)):
            return [conv(v) for v in x]
        if isinstance(x, dict):
            return {k: conv(v) for k, v in x.items()}
        return x
    if not is_dataclass(cfg):
        raise TypeError(f"expected a config dataclass, got {type(cfg).__name__}")
    return conv(asdict(cfg))
