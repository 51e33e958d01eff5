"""``instseg train clusternet --config FILE``: train ClusterNet on the synthetic layout.

Adam (paper: lr 1e-4, β = (0.9, 0.999), batch 4), the λ_var / λ_vio schedule of §IV-D, a fixed seed. The
loop (resume, init-from, checkpoints, SIGTERM / Ctrl-C, history, loss plot, DDP under ``torchrun`` with
each rank drawing different samples) is :mod:`instseg_ros.train.engine`'s; this module builds the model,
the data and the loss.
"""
from __future__ import annotations

import argparse
import json
import logging
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

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

from .checkpoint import export_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig, load_train_config, to_dict
from .dataset import ClusterNetDataset
from .model import ClusterNet

_log = logging.getLogger("instseg_ros.clusternet.train")


class EpochShuffle(Sampler):
    """Endless index stream: a fresh permutation per epoch (seeded by (seed, epoch)), this rank's share."""

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1, start_epoch: int = 0) -> None:
        self.n, self.seed, self.rank, self.world, self.epoch = n, seed, rank, world, start_epoch

    def __iter__(self):
        while True:
            perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            yield from perm[self.rank::self.world].tolist()
            self.epoch += 1

    def __len__(self) -> int:  # pragma: no cover - endless
        return 2 ** 62


def _collate(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


class ClusterNetTask(TrainTask):
    """ClusterNet's model, frames and loss for the training engine."""

    name = "clusternet"
    init_keeps_step = True   # the λ_var / λ_vio schedule continues from the loaded model's step

    def __init__(self, cfg: TrainConfig, ctx: Context, frames: list | None = None) -> None:
        self.cfg, self.ctx, self.fixed_frames = cfg, ctx, frames is not None
        mcfg = cfg.model
        common = dict(loss_cfg=cfg.loss, augment=cfg.augment, seed=cfg.seed + 1000 * ctx.rank,
                      min_fg_valid_depth=cfg.min_fg_valid_depth)
        if frames is None:
            self.ds = ClusterNetDataset.from_split(require_data(cfg), cfg.train_split, max_frames=cfg.max_frames,
                                                   size=(mcfg.input_height, mcfg.input_width),
                                                   feature=mcfg.feature, **common)
        else:
            self.ds = ClusterNetDataset(frames, (mcfg.input_height, mcfg.input_width), mcfg.feature, **common)
        self.model = ClusterNet(mcfg, cfg.loss).to(ctx.device)

    def _restart_loader(self, step: int) -> None:
        cfg, ctx = self.cfg, self.ctx
        loader = DataLoader(self.ds, batch_size=cfg.batch_size, collate_fn=_collate, num_workers=cfg.num_workers,
                            sampler=EpochShuffle(len(self.ds), cfg.seed, ctx.rank, ctx.world,
                                                 start_epoch=step // max(1, len(self.ds))),
                            pin_memory=ctx.device.type == "cuda", drop_last=True,
                            persistent_workers=cfg.num_workers > 0)
        self.batches = iter(loader)

    def start(self, step: int) -> None:
        self.ds.epoch = step  # different augmentation draws after a resume
        self._restart_loader(step)

    def refresh(self, step: int) -> None:
        if self.fixed_frames:
            return
        # the generator may still be writing the split: pick up frames that appeared since
        from instseg_ros.data.io import list_frames

        fresh = list_frames(self.cfg.data, self.cfg.train_split)
        fresh = fresh[:self.cfg.max_frames] if self.cfg.max_frames else fresh
        if len(fresh) > len(self.ds.frames):
            _log.info("training set grew from %d to %d frames", len(self.ds.frames), len(fresh))
            self.ds.frames = fresh
            self._restart_loader(step)

    def step_loss(self, net: torch.nn.Module, step: int) -> dict[str, torch.Tensor]:
        batch = {k: v.to(self.ctx.device, non_blocking=True) for k, v in next(self.batches).items()}
        self.model.set_step(step)
        inputs = self.model.net.prepare(batch["rgb"], batch["depth"], batch["K"])
        return net(inputs, batch)

    def meta(self, step: int) -> dict[str, Any]:
        return {"data": {"root": str(self.cfg.data), "split": self.cfg.train_split, "frames": len(self.ds),
                         "samples_seen": step * self.cfg.batch_size * self.ctx.world}}

    def save(self, path: str, meta: dict[str, Any], optimizer: dict[str, Any], train_config: dict[str, Any]) -> None:
        save_checkpoint(path, self.cfg.model, self.model.state_dict(), meta, optimizer=optimizer,
                        train_config=train_config)

    def load(self, path: str) -> dict[str, Any]:
        return load_checkpoint(path, map_location=self.ctx.device)

    def check_init(self, ckpt: dict[str, Any], path: str) -> None:
        # the input resolution changes no weight shape: fine-tuning at another resolution is allowed
        ours, theirs = to_dict(self.cfg.model), to_dict(ckpt["model_config"])
        for d in (ours, theirs):
            d.pop("input_height"), d.pop("input_width")
        if ours != theirs:
            raise ValueError(f"init_from {path}: its model config {theirs} differs from this run's {ours} "
                             "(beyond the input resolution)")

    def export(self, src: str, dst: str) -> None:
        export_checkpoint(src, dst)


def train(cfg: TrainConfig, resume: bool = False, frames: list | None = None, quiet: bool = False) -> TrainResult:
    """Train ClusterNet with the shared engine; returns its :class:`~instseg_ros.train.engine.TrainResult`.

    Args:
        cfg: the run. frames: optional explicit frame list (dicts or prefixes) instead of cfg.data/train_split.
        resume: continue from ``<out_dir>/last.pt`` when it exists. quiet: no progress bar or log records.
    """
    ctx = setup(cfg)
    return run(cfg, ctx, ClusterNetTask(cfg, ctx, frames), resume=resume, quiet=quiet)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="instseg train clusternet", description=__doc__.split("\n")[0])
    add_common_args(p)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = apply_overrides(load_train_config(a.config), a)
    res = train(cfg, resume=a.resume)
    print(json.dumps(res.summary()))
    return 0


