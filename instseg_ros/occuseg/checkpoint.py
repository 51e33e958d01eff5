"""OccuSeg checkpoint format and its I/O.

A checkpoint is a dict {"format": "occuseg-v1", "model": state_dict, "net_config": plain dict of
:class:`NetConfig`, "voxel_size": metres} with optional "cluster" / "supervoxel" inference settings
(:func:`set_inference_config`) and "meta" (training record); training checkpoints add "optimizer" and
"train_config". Written atomically, loaded with ``torch.load(..., weights_only=True)`` only.
"""
from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

import torch

from .clustering import ClusterConfig
from .config import NetConfig, SegmenterConfig, net_config_from_dict
from .model import OccuSegNet
from .supervoxels import SupervoxelConfig

CHECKPOINT_FORMAT = "occuseg-v1"
REQUIRED_KEYS = ("format", "model", "net_config", "voxel_size")
#: keys :func:`load_checkpoint` adds (parsed configs); never written back to a file
PARSED_KEYS = ("model_config", "segmenter_config")


def _atomic_save(obj: dict[str, Any], path: str) -> str:
    """torch.save to a temporary file, then rename: a killed process never leaves a truncated checkpoint."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = str(path) + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return str(path)


def net_config_dict(cfg: NetConfig) -> dict[str, Any]:
    """Plain (weights_only-loadable) dict of a NetConfig."""
    d = asdict(cfg)
    d["channels"] = list(d["channels"])
    return d


def save_checkpoint(path: str, model: OccuSegNet, voxel_size: float, extra: dict[str, Any] | None = None) -> str:
    """Write a ``weights_only``-loadable checkpoint (state dict + plain-type config) atomically; returns path.

    ``extra``: further plain-type entries ("meta", "optimizer", "cluster", ...).
    """
    obj = {"format": CHECKPOINT_FORMAT, "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
           "net_config": net_config_dict(model.cfg), "voxel_size": float(voxel_size), **(extra or {})}
    return _atomic_save(obj, path)


def set_inference_config(src: str, dst: str, cluster: dict | None = None, supervoxel: dict | None = None) -> None:
    """Copy checkpoint ``src`` to ``dst`` with clustering / supervoxel settings that
    :meth:`MapSegmenter.from_checkpoint` applies (keys of :class:`ClusterConfig` / :class:`SupervoxelConfig`;
    a None argument keeps what ``src`` has). ``dst`` may equal ``src`` (written atomically)."""
    ckpt = load_checkpoint(src)
    for key in PARSED_KEYS:
        ckpt.pop(key)
    for key, value, cls in (("cluster", cluster, ClusterConfig), ("supervoxel", supervoxel, SupervoxelConfig)):
        if value is not None:
            try:
                cls(**value)
            except TypeError as e:
                raise ValueError(f"{key} settings {value}: {e}; use fields of {cls.__name__}") from None
            ckpt[key] = {k: (v if isinstance(v, (bool, int, str)) else float(v)) for k, v in value.items()}
    _atomic_save(ckpt, dst)


def _stored_config(ckpt: dict, key: str, cls, path: str):
    d = ckpt.get(key)
    if d is None:
        return cls()
    try:
        return cls(**d)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: stored {key} settings {d} do not fit {cls.__name__} ({e}); rewrite them with "
                         f"set_inference_config") from None


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint dict; adds "model_config" (:class:`NetConfig`) and "segmenter_config"
    (:class:`SegmenterConfig` with the stored voxel size and inference settings).

    Raises:
        RuntimeError: the file is missing, unreadable or not an OccuSeg checkpoint (message names the path).
        ValueError: a stored config (network, voxel size, clustering, supervoxels) is invalid.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise RuntimeError(f"OccuSeg checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated / foreign files
        raise RuntimeError(f"cannot read OccuSeg checkpoint {path}: {type(e).__name__}: {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or any(k not in ckpt
                                                                                    for k in REQUIRED_KEYS):
        raise RuntimeError(f"{path} is not an OccuSeg checkpoint (format {CHECKPOINT_FORMAT} with keys "
                           f"{REQUIRED_KEYS})")
    try:
        net_cfg = net_config_from_dict(ckpt["net_config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: invalid stored net_config {ckpt['net_config']}: {e}") from None
    voxel_size = ckpt["voxel_size"]
    if isinstance(voxel_size, bool) or not isinstance(voxel_size, (int, float)) or not voxel_size > 0:
        raise ValueError(f"{path}: invalid stored voxel_size {voxel_size!r} (a positive number of metres)")
    ckpt["model_config"] = net_cfg
    ckpt["segmenter_config"] = SegmenterConfig(
        net=net_cfg, voxel_size=float(voxel_size), cluster=_stored_config(ckpt, "cluster", ClusterConfig, path),
        supervoxel=_stored_config(ckpt, "supervoxel", SupervoxelConfig, path))
    return ckpt


def build_model(ckpt: dict[str, Any], path: str = "checkpoint") -> OccuSegNet:
    """OccuSegNet (eval mode, CPU) with the weights of a :func:`load_checkpoint` dict; RuntimeError naming
    ``path`` if the weights do not fit the stored config."""
    model = OccuSegNet(ckpt["model_config"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise RuntimeError(f"{path}: the weights do not match its net_config: {e}") from None
    return model.eval()


def export_checkpoint(src: str, dst: str) -> str:
    """Write a shippable copy of a training checkpoint (weights, configs, inference settings and meta; no
    optimizer state or training config) atomically; returns dst."""
    ckpt = load_checkpoint(src)
    for key in (*PARSED_KEYS, "optimizer", "train_config"):
        ckpt.pop(key, None)
    return _atomic_save(ckpt, dst)


#: old semantic rows (background + the nine generator families of the "family" label space) that start each
#: row of a "grasp" head (:data:`~instseg_ros.data.io.GRASP_CLASSES`): background; box; round = cylinder,
#: sphere, capsule, cone, ellipsoid; thin and hollow = irregular (the tools and cups of the first generator
#: were its kinds); other = torus, convex hull, irregular
FAMILY_TO_GRASP_ROWS: tuple[tuple[int, ...], ...] = ((0,), (1,), (2, 3, 4, 5, 7), (9,), (9,), (6, 8, 9))


def remap_semantic_head(src: str, dst: str, rows: tuple[tuple[int, ...], ...] = FAMILY_TO_GRASP_ROWS) -> str:
    """Write a copy of checkpoint ``src`` whose semantic head has ``len(rows)`` classes, class k starting as
    the mean of the old head's weight rows and biases ``rows[k]`` (the start of a fine-tune into another
    label space, ``init_from``); every other weight unchanged. Returns dst; ValueError for a row index the
    old head does not have."""
    ckpt = load_checkpoint(src)
    w, b = ckpt["model"]["head_sem.weight"], ckpt["model"]["head_sem.bias"]
    if not rows or any(not r or min(r) < 0 or max(r) >= w.shape[0] for r in rows):
        raise ValueError(f"rows {rows} must be non-empty lists of the {w.shape[0]} old class indices")
    ckpt["model"]["head_sem.weight"] = torch.stack([w[list(r)].mean(0) for r in rows])
    ckpt["model"]["head_sem.bias"] = torch.stack([b[list(r)].mean(0) for r in rows])
    ckpt["net_config"] = dict(ckpt["net_config"], num_classes=len(rows))
    for key in (*PARSED_KEYS, "optimizer", "train_config"):
        ckpt.pop(key, None)
    return _atomic_save(ckpt, dst)
