"""`instseg train occuseg --config config/train/occuseg_<variant>.yaml`: train OccuSeg on fused synthetic maps.

Each step takes one randomly chosen, augmented training scene (a whole fused sequence), runs the sparse
U-Net (single-threaded on the CPU: spconv caveat, see sparse.py) and minimises eq. (1). The loop (Adam, the
cosine schedule, gradient clipping, resume, init-from, checkpoints, SIGTERM / Ctrl-C, history, loss plot,
DDP) is :mod:`instseg_ros.train.engine`'s; this module builds the model, the scenes and the loss.
``<out_dir>/last.pt`` is a regular OccuSeg checkpoint (``MapSegmenter.from_checkpoint`` loads it) with the
optimizer state added; ``export`` writes the shippable copy.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any

import numpy as np
import torch

from instseg_ros.mapping.tsdf import TsdfConfig
from instseg_ros.train.config import require_data
from instseg_ros.train.engine import (
    Context,
    TrainResult,
    TrainTask,
    add_common_args,
    apply_overrides,
    run,
    setup,
)

from .checkpoint import export_checkpoint, load_checkpoint, net_config_dict, save_checkpoint
from .config import TrainConfig, check_semantic, load_train_config
from .dataset import Scene, augment, load_scene, prepare_scenes
from .model import OccuSegNet, voxel_features
from .sparse import sparse_threads

_log = logging.getLogger("instseg_ros.occuseg.train")


def scene_tensors(s: Scene, spatial_scale: float):
    """(features, coords, positions normalised, semantic, instance) tensors of one scene."""
    sv = s.sv
    feats = torch.from_numpy(voxel_features(sv.colors, sv.normals, sv.points, spatial_scale))
    coords = torch.from_numpy(np.asarray(sv.coords, np.int32))
    pos = torch.from_numpy(np.asarray(sv.points, np.float32) / np.float32(spatial_scale))
    return feats, coords, pos, torch.from_numpy(s.semantic), torch.from_numpy(s.instance)


def _labelled(paths: list[str]) -> list[Scene]:
    """The cached scenes that hold at least one labelled instance."""
    loaded = [load_scene(p) for p in paths]
    return [s for s in loaded if (s.instance > 0).any()]


class OccuSegTask(TrainTask):
    """OccuSeg's model, fused scenes and loss for the training engine."""

    name = "occuseg"

    def __init__(self, cfg: TrainConfig, ctx: Context) -> None:
        self.cfg, self.ctx = cfg, ctx
        # scene draws and augmentation; rank r of a DDP run draws its own stream
        check_semantic(cfg)
        self.rng = np.random.default_rng(cfg.seed + ctx.rank)
        self.tsdf_cfg = TsdfConfig(voxel_size=cfg.voxel_size, depth_max=cfg.depth_max)
        data = require_data(cfg)
        self.cache = cfg.cache_dir or os.path.join(data, "cache")
        self.paths = self._prepare(cfg.max_frames or None)
        if not self.paths:
            raise ValueError(f"no training sequences under {data}/sequences/{cfg.train_split}")
        self.scenes = _labelled(self.paths)
        _log.info("%d training scenes, %.0f voxels on average", len(self.scenes),
                  np.mean([len(s.sv) for s in self.scenes]))
        self.model = OccuSegNet(cfg.model, cfg.loss).to(ctx.device)

    def _prepare(self, limit: int | None) -> list[str]:
        """Cached scene paths of the split; under DDP rank 0 fuses and caches new sequences while the other
        ranks wait, so no two processes write the same cache file."""
        if self.ctx.ddp and self.ctx.rank != 0:
            torch.distributed.barrier()
        paths = prepare_scenes(self.cfg.data, self.cfg.train_split, self.tsdf_cfg, self.cache, limit,
                               self.cfg.use_gt_depth, self.cfg.semantic)
        if self.ctx.ddp and self.ctx.rank == 0:
            torch.distributed.barrier()
        return paths

    def refresh(self, step: int) -> None:
        if self.cfg.max_frames:
            return
        new = self._prepare(None)
        if len(new) > len(self.paths):
            self.scenes += _labelled(sorted(set(new) - set(self.paths)))
            self.paths = new
            _log.info("now %d training scenes", len(self.scenes))

    def compute(self):
        return sparse_threads(self.ctx.device)

    def step_loss(self, net: torch.nn.Module, step: int) -> dict[str, torch.Tensor]:
        cfg, rng = self.cfg, self.rng
        s = augment(self.scenes[int(rng.integers(len(self.scenes)))], rng, cfg.bg_recolor_prob)
        if len(s.sv) > cfg.max_voxels:
            keep = np.sort(rng.choice(len(s.sv), cfg.max_voxels, replace=False))
            s = Scene(s.sv.select(keep), s.semantic[keep], s.instance[keep], s.name)
        feats, coords, pos, sem, ins = (t.to(self.ctx.device) for t in scene_tensors(s, cfg.model.spatial_scale))
        return net(feats, coords, {"pos": pos, "semantic": sem, "instance": ins})

    def meta(self, step: int) -> dict[str, Any]:
        from instseg_ros.data.io import FAMILIES, GRASP_CLASSES

        classes = (list(GRASP_CLASSES) if self.cfg.semantic == "grasp"
                   else ["background", *FAMILIES][: self.cfg.model.num_classes])
        return {"data": {"root": str(self.cfg.data), "split": self.cfg.train_split, "scenes": len(self.scenes)},
                "semantic": self.cfg.semantic, "classes": classes}

    def save(self, path: str, meta: dict[str, Any], optimizer: dict[str, Any], train_config: dict[str, Any]) -> None:
        save_checkpoint(path, self.model, self.cfg.voxel_size,
                        {"meta": meta, "optimizer": optimizer, "train_config": train_config})

    def load(self, path: str) -> dict[str, Any]:
        return load_checkpoint(path, map_location=self.ctx.device)

    def check_init(self, ckpt: dict[str, Any], path: str) -> None:
        if ckpt["model_config"] != self.cfg.model:
            raise ValueError(f"init_from {path}: its net config {net_config_dict(ckpt['model_config'])} differs "
                             f"from the training config's model {net_config_dict(self.cfg.model)}; make them equal")

    def export(self, src: str, dst: str) -> None:
        export_checkpoint(src, dst)


def train(cfg: TrainConfig, resume: bool = False, quiet: bool = False) -> TrainResult:
    """Train OccuSeg with the shared engine; returns its :class:`~instseg_ros.train.engine.TrainResult`.

    resume: continue from ``<out_dir>/last.pt`` when it exists. quiet: no progress bar or log records.
    """
    ctx = setup(cfg)
    return run(cfg, ctx, OccuSegTask(cfg, ctx), resume=resume, quiet=quiet)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="instseg train occuseg", description=__doc__.splitlines()[0])
    add_common_args(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = apply_overrides(load_train_config(args.config), args)
    res = train(cfg, resume=args.resume)
    print(json.dumps(res.summary()))
    return 0
