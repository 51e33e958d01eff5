"""ClusterNet checkpoint format: a dict {"config": plain dict of ModelConfig, "model": state_dict,
"meta": {steps, data, metrics, ...}} (training checkpoints add "optimizer" and "train_config").
Loaded with ``torch.load(..., weights_only=True)`` only.
"""
from __future__ import annotations

import os
from typing import Any

import torch

from .config import ModelConfig, model_config_from_dict, to_dict

REQUIRED_KEYS = ("config", "model", "meta")


def save_checkpoint(path: str, cfg: ModelConfig, state_dict: dict[str, torch.Tensor], meta: dict[str, Any],
                    **extra: Any) -> str:
    """Write atomically (temporary file + rename) so a killed run never leaves a truncated file."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    obj = {"config": to_dict(cfg), "model": {k: v.detach().cpu() for k, v in state_dict.items()},
           "meta": meta, **extra}
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint dict.

    Raises:
        RuntimeError: the file is missing, unreadable or not a ClusterNet checkpoint (message names the path).
        ValueError: its "config" is not a valid ModelConfig.
    """
    if not os.path.isfile(path):
        raise RuntimeError(f"ClusterNet checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated / foreign files
        raise RuntimeError(f"cannot read ClusterNet checkpoint {path}: {type(e).__name__}: {e}") from e
    if not isinstance(obj, dict) or any(k not in obj for k in REQUIRED_KEYS):
        raise RuntimeError(f"{path} is not a ClusterNet checkpoint (needs keys {REQUIRED_KEYS})")
    try:
        obj["model_config"] = model_config_from_dict(obj["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: invalid model config: {e}") from e
    return obj


def build_model(ckpt: dict[str, Any], device: str | torch.device = "cpu"):
    """ClusterNet (eval mode) with the checkpoint's weights; RuntimeError if the weights do not fit."""
    from .model import ClusterNet

    model = ClusterNet(ckpt["model_config"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise RuntimeError(f"checkpoint weights do not match its config: {e}") from e
    return model.to(device).eval()


def export_checkpoint(src: str, dst: str, extra_meta: dict[str, Any] | None = None, half: bool = False) -> str:
    """Write a shippable copy of a training checkpoint: config, weights and meta only (no optimizer state),
    optionally with float16 weights (loaded back as float32 by :func:`build_model`)."""
    ck = load_checkpoint(src)
    meta = dict(ck["meta"])
    meta.update(extra_meta or {})
    sd = {k: (v.half() if half and v.is_floating_point() else v) for k, v in ck["model"].items()}
    return save_checkpoint(dst, ck["model_config"], sd, meta)
