"""``instseg train clusternet --config FILE``: train ClusterNet on the synthetic layout.

Adam (paper: lr 1e-4, β = (0.9, 0.999), batch 4), the λ_var / λ_vio schedule of §IV-D, a fixed seed,
tqdm progress, periodic atomic checkpoints (``<out_dir>/last.pt``), ``--resume``, loss curves as a PNG,
and multi-GPU data parallelism when started by ``torchrun`` (WORLD_SIZE > 1 -> DDP, each rank draws
different samples). SIGTERM / Ctrl-C save a checkpoint before exiting.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import time
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from instseg_ros.core.device import resolve_device

from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig, load_train_config, to_dict
from .dataset import ClusterNetDataset
from .model import ClusterNet

_log = logging.getLogger("instseg_ros.clusternet.train")
LOSS_KEYS = ("loss", "L_s", "L_cen", "L_xi", "L_B", "L_var", "L_vio")


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


def save_loss_plot(history: list[dict[str, float]], path: str) -> None:
    """Loss terms (log scale) over steps as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(8, 5))
    for k in LOSS_KEYS:
        vals = [max(h[k], 1e-8) for h in history]
        ax.plot(steps, vals, label=k, lw=1.2 if k == "loss" else 0.8)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss term (unweighted, except 'loss')")
    ax.legend(ncol=4, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def lr_at(cfg: TrainConfig, step: int, start_step: int) -> float:
    """Learning rate for the update that follows ``step`` completed steps of a run that began at
    ``start_step``: ``cfg.lr`` throughout ("constant"), or half a cosine from ``cfg.lr`` at ``start_step`` to
    ``cfg.lr_min`` at ``cfg.steps`` ("cosine"; held at ``lr_min`` past the end)."""
    if cfg.lr_schedule == "constant" or cfg.steps <= start_step:
        return cfg.lr
    t = min(max((step - start_step) / (cfg.steps - start_step), 0.0), 1.0)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1.0 + math.cos(math.pi * t))


def _collate(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def train(cfg: TrainConfig, resume: bool = False, frames: list | None = None, quiet: bool = False,
          ) -> dict[str, Any]:
    """Run training; returns {"checkpoint": path, "steps": int, "history": [...]}.

    Args:
        cfg: the run. frames: optional explicit frame list (dicts or prefixes) instead of cfg.data/train_split.
        resume: continue from ``<out_dir>/last.pt`` when it exists.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    ddp = world > 1
    if ddp:
        import torch.distributed as dist

        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
            device = torch.device("cuda", local)
        else:
            device = torch.device("cpu")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    else:
        device = resolve_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed + rank)
    mcfg = cfg.model
    if frames is None:
        ds = ClusterNetDataset.from_split(cfg.data, cfg.train_split, max_frames=cfg.max_frames,
                                          size=(mcfg.input_height, mcfg.input_width), feature=mcfg.feature,
                                          loss_cfg=cfg.loss, augment=cfg.augment, seed=cfg.seed + 1000 * rank,
                                          min_fg_valid_depth=cfg.min_fg_valid_depth)
    else:
        ds = ClusterNetDataset(frames, (mcfg.input_height, mcfg.input_width), mcfg.feature, cfg.loss,
                               cfg.augment, seed=cfg.seed + 1000 * rank, min_fg_valid_depth=cfg.min_fg_valid_depth)
    model = ClusterNet(mcfg, cfg.loss).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    step, start_step, init_from, history = 0, 0, "", []
    ckpt_path = os.path.join(cfg.out_dir, "last.pt")
    if resume and os.path.exists(ckpt_path):
        ck = load_checkpoint(ckpt_path, map_location=device)
        model.load_state_dict(ck["model"])
        if "optimizer" in ck:
            opt.load_state_dict(ck["optimizer"])
        step = int(ck["meta"].get("steps", 0))
        start_step = int(ck["meta"].get("run_start_step", 0))
        init_from = ck["meta"].get("init_from", "")
        history = list(ck["meta"].get("history", []))
        _log.info("resumed from %s at step %d", ckpt_path, step)
    elif cfg.init_from:
        ck = load_checkpoint(cfg.init_from, map_location=device)
        # the input resolution changes no weight shape: fine-tuning at another resolution is allowed
        ours, theirs = to_dict(mcfg), to_dict(ck["model_config"])
        for d in (ours, theirs):
            d.pop("input_height"), d.pop("input_width")
        if ours != theirs:
            raise ValueError(f"init_from {cfg.init_from}: its model config {theirs} differs from this run's {ours} "
                             "(beyond the input resolution)")
        model.load_state_dict(ck["model"])
        step = start_step = int(ck["meta"].get("steps", 0))  # keeps the λ_var / λ_vio phase of the loaded model
        history = list(ck["meta"].get("history", []))
        init_from = cfg.init_from
        if cfg.steps <= step:
            raise ValueError(f"init_from {cfg.init_from} is already at step {step}: set steps > {step}")
        _log.info("initialised from %s (step %d), fresh optimizer", cfg.init_from, step)
    net = model
    if ddp:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    ds.epoch = step  # different augmentation draws after a resume

    def _loader() -> DataLoader:
        return DataLoader(ds, batch_size=cfg.batch_size, collate_fn=_collate, num_workers=cfg.num_workers,
                          sampler=EpochShuffle(len(ds), cfg.seed, rank, world,
                                               start_epoch=step // max(1, len(ds))),
                          pin_memory=device.type == "cuda", drop_last=True, persistent_workers=cfg.num_workers > 0)

    loader = _loader()
    stop = {"flag": False}

    def _on_signal(signum, frame):  # noqa: ARG001
        stop["flag"] = True

    old = signal.signal(signal.SIGTERM, _on_signal) if rank == 0 else None

    def _save() -> None:
        if rank != 0:
            return
        meta = {"steps": step, "data": {"root": str(cfg.data), "split": cfg.train_split, "frames": len(ds),
                                        "samples_seen": step * cfg.batch_size * world},
                "history": history, "metrics": {}, "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                "device": str(device), "world_size": world, "run_start_step": start_step,
                "init_from": init_from}
        save_checkpoint(ckpt_path, mcfg, model.state_dict(), meta, optimizer=opt.state_dict(),
                        train_config=to_dict(cfg))
        save_loss_plot(history, os.path.join(cfg.out_dir, "loss.png"))

    from tqdm import tqdm

    model.train()
    bar = tqdm(total=cfg.steps, initial=step, disable=quiet or rank != 0, desc="clusternet", mininterval=5)
    acc = {k: 0.0 for k in LOSS_KEYS}
    n_acc = 0
    t0 = time.time()
    try:
        it = iter(loader)
        while step < cfg.steps and not stop["flag"]:
            if cfg.refresh_frames_every and frames is None and step % cfg.refresh_frames_every == 0 and step:
                # the generator may still be writing the split: pick up frames that appeared since
                from instseg_ros.data.io import list_frames

                fresh = list_frames(cfg.data, cfg.train_split)
                fresh = fresh[:cfg.max_frames] if cfg.max_frames else fresh
                if len(fresh) > len(ds.frames):
                    _log.info("training set grew from %d to %d frames", len(ds.frames), len(fresh))
                    ds.frames = fresh
                    loader = _loader()
                    it = iter(loader)
            batch = {k: v.to(device, non_blocking=True) for k, v in next(it).items()}
            model.set_step(step)
            lr = lr_at(cfg, step, start_step)
            for g in opt.param_groups:
                g["lr"] = lr
            inputs = model.net.prepare(batch["rgb"], batch["depth"], batch["K"])
            losses = net(inputs, batch)
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            for k in LOSS_KEYS:
                acc[k] += float(losses[k].detach())
            n_acc += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                rec = {"step": step, **{k: acc[k] / n_acc for k in LOSS_KEYS}, "wall_s": time.time() - t0,
                       "lr": lr}
                history.append(rec)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", xi=f"{rec['L_xi']:.2e}", var=f"{rec['L_var']:.3f}")
                if not quiet and rank == 0:
                    _log.info(json.dumps(rec))
                acc = {k: 0.0 for k in LOSS_KEYS}
                n_acc = 0
            if step % cfg.checkpoint_every == 0:
                _save()
    except KeyboardInterrupt:
        _log.warning("interrupted: saving a checkpoint at step %d", step)
    finally:
        bar.close()
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    _save()
    if ddp:
        import torch.distributed as dist

        dist.destroy_process_group()
    return {"checkpoint": ckpt_path, "steps": step, "history": history, "model": model}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="instseg train clusternet", description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="YAML TrainConfig (see config/train/clusternet_*.yaml)")
    p.add_argument("--resume", action="store_true", help="continue from <out_dir>/last.pt if present")
    p.add_argument("--steps", type=int, help="override steps")
    p.add_argument("--out-dir", help="override out_dir")
    p.add_argument("--data", help="override data root")
    p.add_argument("--device", help="override device (auto|cpu|cuda)")
    p.add_argument("--init-from", metavar="CKPT", help="override init_from (fine-tune from these weights)")
    p.add_argument("--lr", type=float, help="override lr")
    p.add_argument("--export", metavar="PATH", help="afterwards, write a shippable copy of last.pt (no "
                   "optimizer state) to PATH; with --resume and --steps <= the saved step this only exports")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = load_train_config(a.config)
    if a.steps is not None:
        cfg.steps = a.steps
    if a.out_dir:
        cfg.out_dir = a.out_dir
    if a.data:
        cfg.data = a.data
    if a.device:
        cfg.device = a.device
    if a.init_from:
        cfg.init_from = a.init_from
    if a.lr is not None:
        cfg.lr = a.lr
        cfg.lr_min = min(cfg.lr_min, cfg.lr)
    res = train(cfg, resume=a.resume)
    if a.export:
        from .checkpoint import export_checkpoint

        export_checkpoint(res["checkpoint"], a.export)
        _log.info("exported %s", a.export)
    print(json.dumps({"checkpoint": res["checkpoint"], "steps": res["steps"],
                      "final": res["history"][-1] if res["history"] else None}))
    return 0
