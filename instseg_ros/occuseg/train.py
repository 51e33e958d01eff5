"""`instseg train occuseg --config config/train/occuseg_<variant>.yaml`: train OccuSeg on fused synthetic maps.

Each step takes one randomly chosen, augmented training scene (a whole fused sequence), runs the sparse
U-Net single-threaded on the CPU (spconv caveat, see sparse.py) and minimises eq. (1). Checkpoints
(model + optimiser) go to ``<out_dir>/last.pt`` every ``ckpt_every`` steps with a loss-curve PNG and a
JSON-lines log; ``--resume`` continues from ``last.pt``; ``export`` writes the shippable weights.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from instseg_ros.mapping.tsdf import TsdfConfig

from .checkpoint import save_checkpoint
from .config import TrainConfig, net_config_from_dict
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


def _plot(history: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([h["step"] for h in history])
    fig, ax = plt.subplots(figsize=(8, 5))
    for key in ("loss", "semantic", "spatial", "feature_var", "feature_dist", "covariance", "occupancy"):
        v = np.array([h[key] for h in history])
        k = max(1, len(v) // 50)
        sm = np.convolve(v, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], sm, label=key)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (moving average)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train(cfg: TrainConfig, resume: bool = False) -> str:
    torch.set_num_threads(1)   # spconv CPU kernels are only correct single-threaded
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tsdf_cfg = TsdfConfig(voxel_size=cfg.voxel_size, depth_max=cfg.depth_max)
    cache = cfg.cache_dir or os.path.join(cfg.data_root, "cache")
    paths = prepare_scenes(cfg.data_root, cfg.train_split, tsdf_cfg, cache, cfg.limit_scenes or None,
                           cfg.use_gt_depth)
    if not paths:
        raise ValueError(f"no training sequences under {cfg.data_root}/sequences/{cfg.train_split}")
    def load_all(paths):
        loaded = [load_scene(p) for p in paths]
        return [s for s in loaded if (s.instance > 0).any()]

    scenes = load_all(paths)
    _log.info("%d training scenes, %.0f voxels on average", len(scenes), np.mean([len(s.sv) for s in scenes]))
    model = OccuSegNet(cfg.net, cfg.loss)
    if cfg.init_from and not (resume and (out / "last.pt").exists()):
        from .checkpoint import load_checkpoint

        ck = load_checkpoint(cfg.init_from)
        if net_config_from_dict(ck["net_config"]) != cfg.net:
            raise ValueError(f"init_from {cfg.init_from}: its net config {ck['net_config']} differs from the "
                             f"training config's net {asdict(cfg.net)}; make them equal")
        model.load_state_dict(ck["model"])
        _log.info("initialised from %s", cfg.init_from)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step0, history = 0, []
    last = out / "last.pt"
    if resume and last.exists():
        ck = torch.load(last, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step0 = int(ck["step"])
        hist_path = out / "history.jsonl"
        if hist_path.exists():
            history = [json.loads(l) for l in open(hist_path) if l.strip()]
            history = [h for h in history if h["step"] <= step0]
        _log.info("resumed from %s at step %d", last, step0)
    for g in opt.param_groups:
        g.setdefault("initial_lr", cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.steps, 1), eta_min=cfg.lr * 0.05,
                                                       last_epoch=step0 - 1 if step0 else -1)
    model.train()
    t_start = time.time()

    def save(step: int) -> None:
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step}, str(last) + ".tmp")
        os.replace(str(last) + ".tmp", last)
        with open(out / "history.jsonl", "w") as f:
            for h in history:
                f.write(json.dumps(h) + "\n")
        if history:
            _plot(history, str(out / "loss_curve.png"))
        meta = {"steps": step, "train_scenes": len(scenes), "wall_s": time.time() - t_start,
                "config": json.loads(json.dumps(asdict(cfg), default=list)),
                "hardware": "CPU, torch single-threaded"}
        save_checkpoint(str(out / "model.pt"), model, cfg.voxel_size, {"train": json.dumps(meta)})
        if cfg.export:
            Path(cfg.export).parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(cfg.export, model, cfg.voxel_size, {"train": json.dumps(meta)})

    bar = tqdm(range(step0, cfg.steps), initial=step0, total=cfg.steps, desc="train occuseg", unit="step")
    for step in bar:
        s = augment(scenes[int(rng.integers(len(scenes)))], rng)
        if len(s.sv) > cfg.max_voxels:
            keep = np.sort(rng.choice(len(s.sv), cfg.max_voxels, replace=False))
            from instseg_ros.mapping.tsdf import SurfaceVoxels
            s = Scene(SurfaceVoxels(s.sv.coords[keep], s.sv.points[keep], s.sv.colors[keep], s.sv.normals[keep],
                                    s.sv.voxel_size), s.semantic[keep], s.instance[keep], s.name)
        feats, coords, pos, sem, ins = scene_tensors(s, cfg.net.spatial_scale)
        with sparse_threads("cpu"):
            terms = model(feats, coords, {"pos": pos, "semantic": sem, "instance": ins})
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
        sched.step()
        rec = {k: float(v.detach()) for k, v in terms.items()}
        rec["step"] = step + 1
        rec["voxels"] = len(s.sv)
        history.append(rec)
        bar.set_postfix(loss=f"{rec['loss']:.3f}", occ=f"{rec['occupancy']:.3f}")
        if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps:
            save(step + 1)
        if cfg.rescan_every and (step + 1) % cfg.rescan_every == 0 and not cfg.limit_scenes:
            new = prepare_scenes(cfg.data_root, cfg.train_split, tsdf_cfg, cache, None, cfg.use_gt_depth)
            if len(new) > len(paths):
                scenes += load_all(sorted(set(new) - set(paths)))
                paths = new
                _log.info("now %d training scenes", len(scenes))
    if step0 >= cfg.steps:
        save(step0)
    return str(out / "model.pt")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="instseg train occuseg", description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="YAML with TrainConfig keys")
    ap.add_argument("--resume", action="store_true", help="continue from <out_dir>/last.pt")
    ap.add_argument("--steps", type=int, help="override the number of steps")
    ap.add_argument("--out-dir", help="override out_dir")
    ap.add_argument("--data-root", help="override data_root")
    ap.add_argument("--init-from", help="override init_from (fine-tune from these weights)")
    ap.add_argument("--lr", type=float, help="override lr")
    ap.add_argument("--seed", type=int, help="override seed")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = TrainConfig.from_yaml(args.config)
    if args.steps:
        cfg.steps = args.steps
    if args.out_dir:
        cfg.out_dir = args.out_dir
    if args.data_root:
        cfg.data_root = args.data_root
    if args.init_from:
        cfg.init_from = args.init_from
    if args.lr is not None:
        cfg.lr = args.lr
    if args.seed is not None:
        cfg.seed = args.seed
    path = train(cfg, resume=args.resume)
    print(json.dumps({"checkpoint": path}))
    return 0
