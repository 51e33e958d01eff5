"""OccuSeg checkpoint format and its I/O (``torch.load(..., weights_only=True)`` only)."""
from __future__ import annotations

from dataclasses import asdict

import torch

from .clustering import ClusterConfig
from .model import OccuSegNet
from .supervoxels import SupervoxelConfig

CHECKPOINT_FORMAT = "occuseg-v1"


def save_checkpoint(path: str, model: OccuSegNet, voxel_size: float, extra: dict | None = None) -> None:
    """Write a ``weights_only``-loadable checkpoint (state dict + plain-type config)."""
    cfg = asdict(model.cfg)
    cfg["channels"] = list(cfg["channels"])
    torch.save({"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "net_config": cfg,
                "voxel_size": float(voxel_size), **(extra or {})}, path)


def set_inference_config(src: str, dst: str, cluster: dict | None = None, supervoxel: dict | None = None) -> None:
    """Copy checkpoint ``src`` to ``dst`` with clustering / supervoxel settings that
    :meth:`MapSegmenter.from_checkpoint` applies (keys of :class:`ClusterConfig` / :class:`SupervoxelConfig`;
    a None argument keeps what ``src`` has)."""
    ckpt = load_checkpoint(src)
    for key, value, cls in (("cluster", cluster, ClusterConfig), ("supervoxel", supervoxel, SupervoxelConfig)):
        if value is not None:
            try:
                cls(**value)
            except TypeError as e:
                raise ValueError(f"{key} settings {value}: {e}; use fields of {cls.__name__}") from None
            ckpt[key] = {k: (v if isinstance(v, (bool, int, str)) else float(v)) for k, v in value.items()}
    torch.save(ckpt, dst)


def _stored_config(ckpt: dict, key: str, cls, path: str):
    d = ckpt.get(key)
    if d is None:
        return cls()
    try:
        return cls(**d)
    except TypeError as e:
        raise ValueError(f"{path}: stored {key} settings {d} do not fit {cls.__name__} ({e}); rewrite them with "
                         f"set_inference_config") from None


def load_checkpoint(path: str) -> dict:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an OccuSeg checkpoint (format {CHECKPOINT_FORMAT})")
    return ckpt
