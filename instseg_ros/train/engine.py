"""The training loop both models use: Adam, the lr schedule, gradient clipping, resume, init-from,
checkpoint cadence, SIGTERM / SIGINT, history (JSON), loss plots and DDP.

A model's train module supplies a :class:`TrainTask` (its model, data and loss, and its checkpoint format)
and calls :func:`run`. Run folder (``cfg.out_dir``): ``last.pt`` (the model's checkpoint format plus
"optimizer", "train_config" and a "meta" record with the step count and history), ``history.json`` (the
same history) and ``loss.png``. Under ``torchrun`` (WORLD_SIZE > 1) the model is wrapped in
DistributedDataParallel (NCCL on GPUs, gloo on the CPU) and only rank 0 writes files.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from instseg_ros.core.device import resolve_device

from .config import TrainLoopConfig, check_loop_config, plain_dict

_log = logging.getLogger("instseg_ros.train")

CHECKPOINT_NAME = "last.pt"
HISTORY_NAME = "history.json"
PLOT_NAME = "loss.png"
#: history keys that are not loss terms
RECORD_KEYS = ("step", "wall_s", "lr")
#: the loss plot averages over about this many windows of the history
PLOT_WINDOWS = 50


@dataclass
class Context:
    """Where this process trains: device, and its rank among ``world`` DDP processes (0 of 1 without DDP)."""

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def ddp(self) -> bool:
        return self.world > 1


@dataclass
class TrainResult:
    """What ``train()`` returns for every model.

    checkpoint: path of ``<out_dir>/last.pt``; steps: steps done in all; history: the records (dicts with
    "step", the loss terms, "wall_s", "lr"); model: the trained module (training mode, on its device);
    export: the shippable copy's path ("" when none was asked for).
    """

    checkpoint: str
    steps: int
    history: list[dict[str, float]]
    model: torch.nn.Module = field(repr=False)
    export: str = ""

    def summary(self) -> dict[str, Any]:
        """The JSON line the ``instseg train`` commands print."""
        return {"checkpoint": self.checkpoint, "steps": self.steps, "export": self.export or None,
                "final": self.history[-1] if self.history else None}


class TrainTask:
    """One model's part of a training run; subclasses set ``model`` (on ``ctx.device``) in ``__init__``.

    name: progress-bar label. init_keeps_step: ``init_from`` also takes over the loaded checkpoint's step
    count and history (ClusterNet: its λ schedule depends on the step), otherwise a fine-tune starts at 0.
    """

    name = "train"
    init_keeps_step = False
    model: torch.nn.Module

    def start(self, step: int) -> None:
        """Position the data stream for a run that continues after ``step`` completed steps."""

    def refresh(self, step: int) -> None:
        """Pick up training samples written since the data was listed (``refresh_frames_every``)."""

    def compute(self):
        """Context for forward, backward and the optimizer step (e.g. the spconv CPU thread rule)."""
        return contextlib.nullcontext()

    def step_loss(self, net: torch.nn.Module, step: int) -> dict[str, torch.Tensor]:
        """Loss terms (scalar tensors, total under "loss") of the next batch, computed through ``net``
        (``self.model``, or its DDP wrapper)."""
        raise NotImplementedError

    def meta(self, step: int) -> dict[str, Any]:
        """Model-specific entries of the checkpoint's "meta" record (e.g. what data it was trained on)."""
        return {}

    def save(self, path: str, meta: dict[str, Any], optimizer: dict[str, Any], train_config: dict[str, Any]) -> None:
        """Write a training checkpoint in the model's format (atomically)."""
        raise NotImplementedError

    def load(self, path: str) -> dict[str, Any]:
        """A checkpoint dict with "model" (state dict), "meta" and, for training checkpoints, "optimizer";
        RuntimeError / ValueError naming the path when it cannot be used."""
        raise NotImplementedError

    def check_init(self, ckpt: dict[str, Any], path: str) -> None:
        """ValueError when the checkpoint's network differs from this run's."""

    def export(self, src: str, dst: str) -> None:
        """Write a shippable copy of training checkpoint ``src`` (no optimizer state) to ``dst``."""
        raise NotImplementedError


def lr_at(cfg: TrainLoopConfig, step: int, start_step: int) -> float:
    """Learning rate for the update that follows ``step`` completed steps of a run that began at
    ``start_step``: ``cfg.lr`` throughout ("constant"), or half a cosine from ``cfg.lr`` at ``start_step`` to
    ``cfg.lr_min`` at ``cfg.steps`` ("cosine"; held at ``lr_min`` past the end)."""
    if cfg.lr_schedule == "constant" or cfg.steps <= start_step:
        return cfg.lr
    t = min(max((step - start_step) / (cfg.steps - start_step), 0.0), 1.0)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1.0 + math.cos(math.pi * t))


def loss_keys(history: list[dict[str, float]]) -> list[str]:
    """The loss-term keys of history records, in record order."""
    return [k for k in history[0] if k not in RECORD_KEYS] if history else []


def save_loss_plot(history: list[dict[str, float]], path: str) -> None:
    """Loss terms (log scale, moving average over ~1/50 of the run) over steps as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if not history:
        return
    steps = np.array([h["step"] for h in history])
    k = max(1, len(history) // PLOT_WINDOWS)
    fig, ax = plt.subplots(figsize=(8, 5))
    for key in loss_keys(history):
        v = np.maximum([h[key] for h in history], 1e-8)
        ax.plot(steps[k - 1:], np.convolve(v, np.ones(k) / k, mode="valid"), label=key,
                lw=1.2 if key == "loss" else 0.8)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"loss term (unweighted, except 'loss'; mean of {k})")
    ax.legend(ncol=4, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _write_json(obj: Any, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def setup(cfg: TrainLoopConfig) -> Context:
    """Device, DDP process group (under torchrun), CPU threads and the torch seed of this process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
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
    return Context(device, rank, world)


class _StopOnSignal:
    """SIGTERM / SIGINT set a flag (the loop saves and returns at the next step boundary); the previous
    handlers come back on exit. Only the main thread can install handlers; elsewhere this does nothing."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.flag = False
        self._old: dict[int, Any] = {}

    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002
        self.flag = True
        _log.warning("%s: stopping after this step, with a checkpoint", signal.Signals(signum).name)

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def run(cfg: TrainLoopConfig, ctx: Context, task: TrainTask, resume: bool = False, quiet: bool = False,
        ) -> TrainResult:
    """Train ``task.model`` for ``cfg.steps`` steps (see the module docstring for what is written).

    Args:
        cfg: the run's settings (a model's TrainConfig). ctx: from :func:`setup`, called before the task
            was built (so the model's initial weights follow ``cfg.seed``).
        resume: continue from ``<out_dir>/last.pt`` (weights, optimizer, step count, history) when it exists.
        quiet: no progress bar and no per-record log lines.
    """
    check_loop_config(cfg)
    model = task.model
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    step, start_step, init_from, history = 0, 0, "", []
    ckpt_path = os.path.join(cfg.out_dir, CHECKPOINT_NAME)
    if resume and os.path.exists(ckpt_path):
        ck = task.load(ckpt_path)
        meta = ck.get("meta") or {}
        model.load_state_dict(ck["model"])
        if "optimizer" in ck:
            opt.load_state_dict(ck["optimizer"])
        step = int(meta.get("steps", 0))
        start_step = int(meta.get("run_start_step", 0))
        init_from = meta.get("init_from", "")
        history = list(meta.get("history", []))
        _log.info("resumed from %s at step %d", ckpt_path, step)
    elif cfg.init_from:
        ck = task.load(cfg.init_from)
        task.check_init(ck, cfg.init_from)
        model.load_state_dict(ck["model"])
        init_from = cfg.init_from
        if task.init_keeps_step:
            meta = ck.get("meta") or {}
            step = start_step = int(meta.get("steps", 0))
            history = list(meta.get("history", []))
            if cfg.steps <= step:
                raise ValueError(f"init_from {cfg.init_from} is already at step {step}: set steps > {step}")
        _log.info("initialised from %s (step %d), fresh optimizer", cfg.init_from, step)
    net = model
    if ctx.ddp:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    task.start(step)
    if ctx.rank == 0:
        os.makedirs(cfg.out_dir, exist_ok=True)
    saved_at = None
    t0 = time.time()

    def _save() -> None:
        nonlocal saved_at
        saved_at = step
        if ctx.rank != 0:
            return
        meta = {"steps": step, "history": history, "run_start_step": start_step, "init_from": init_from,
                "world_size": ctx.world, "device": str(ctx.device), "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                "metrics": {}, **task.meta(step)}
        task.save(ckpt_path, meta, opt.state_dict(), plain_dict(cfg))
        _write_json(history, os.path.join(cfg.out_dir, HISTORY_NAME))
        save_loss_plot(history, os.path.join(cfg.out_dir, PLOT_NAME))
        if cfg.export:
            task.export(ckpt_path, cfg.export)

    from tqdm import tqdm

    model.train()
    bar = tqdm(total=cfg.steps, initial=min(step, cfg.steps), disable=quiet or ctx.rank != 0, desc=task.name,
               mininterval=5)
    acc: dict[str, float] = {}
    n_acc = 0
    with _StopOnSignal() as stop:
        try:
            while step < cfg.steps and not _stop_requested(stop.flag, ctx):
                if cfg.refresh_frames_every and step and step % cfg.refresh_frames_every == 0:
                    task.refresh(step)
                lr = lr_at(cfg, step, start_step)
                for g in opt.param_groups:
                    g["lr"] = lr
                with task.compute():
                    losses = task.step_loss(net, step)
                    opt.zero_grad(set_to_none=True)
                    losses["loss"].backward()
                    if cfg.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    opt.step()
                step += 1
                for k, v in losses.items():
                    acc[k] = acc.get(k, 0.0) + float(v.detach())
                n_acc += 1
                bar.update(1)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    rec = {"step": step, **{k: v / n_acc for k, v in acc.items()}, "wall_s": time.time() - t0,
                           "lr": lr}
                    history.append(rec)
                    bar.set_postfix(loss=f"{rec['loss']:.3f}")
                    if not quiet and ctx.rank == 0:
                        _log.info(json.dumps(rec))
                    acc, n_acc = {}, 0
                if step % cfg.checkpoint_every == 0:
                    _save()
        except KeyboardInterrupt:
            _log.warning("interrupted: saving a checkpoint at step %d", step)
        finally:
            bar.close()
    if saved_at != step:
        _save()
    if ctx.ddp:
        import torch.distributed as dist

        dist.destroy_process_group()
    return TrainResult(ckpt_path, step, history, model, cfg.export)


def _stop_requested(flag: bool, ctx: Context) -> bool:
    """This rank's stop flag, or under DDP whether any rank got a signal (all ranks stop at the same step,
    so none waits forever in a gradient all-reduce)."""
    if not ctx.ddp:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def add_common_args(p: argparse.ArgumentParser) -> None:
    """The command-line options every ``instseg train <model>`` takes (overrides of the YAML's fields)."""
    p.add_argument("--config", required=True, help="YAML TrainConfig (see config/train/)")
    p.add_argument("--resume", action="store_true", help="continue from <out_dir>/last.pt if present")
    p.add_argument("--steps", type=int, help="override steps")
    p.add_argument("--out-dir", help="override out_dir")
    p.add_argument("--data", help="override data (dataset root)")
    p.add_argument("--device", help="override device (auto|cpu|cuda)")
    p.add_argument("--init-from", metavar="CKPT", help="override init_from (fine-tune from these weights)")
    p.add_argument("--lr", type=float, help="override lr (lr_min is lowered to it if above)")
    p.add_argument("--lr-min", type=float, help="override lr_min (end of the cosine schedule)")
    p.add_argument("--seed", type=int, help="override seed")
    p.add_argument("--export", metavar="PATH", help="override export: a shippable copy (no optimizer state) "
                   "written at every checkpoint; with --resume and --steps <= the saved step this only exports")


def apply_overrides(cfg: TrainLoopConfig, a: argparse.Namespace) -> TrainLoopConfig:
    """Command-line values over the YAML's (in place; returns cfg)."""
    for name in ("steps", "out_dir", "data", "device", "init_from", "seed", "export"):
        value = getattr(a, name)
        if value is not None and value != "":
            setattr(cfg, name, value)
    if a.lr is not None:
        cfg.lr = a.lr
        cfg.lr_min = min(cfg.lr_min, cfg.lr)
    if a.lr_min is not None:
        cfg.lr_min = a.lr_min
    return cfg
