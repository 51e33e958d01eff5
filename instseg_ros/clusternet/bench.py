"""``instseg bench clusternet``: per-frame milliseconds of ClusterNet split into preprocessing, network,
clustering and postprocessing, at 640x480 and 320x240 network resolution, plus the clustering alone on a
synthetic 20-object prediction (wall ms, and the process CPU ms, which on a shared machine is the
fairer number). Prints one JSON line at the end (no pass/fail: targets are reported).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from .clustering import ClusterParams, cluster_pixels

RESOLUTIONS = ((480, 640), (240, 320))
DEFAULT_CHECKPOINT = os.path.join(os.path.dirname(__file__), "..", "..", "models", "clusternet_lite.pt")


def synthetic_frame(h: int, w: int, n: int, seed: int = 0):
    """A fronto-parallel table at 0.9 m with n rectangular objects 2-8 cm above it (rgb, depth, K, labels)."""
    rng = np.random.default_rng(seed)
    f = 0.95 * w
    K = np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1.0]])
    depth = np.full((h, w), 0.9, np.float32)
    labels = np.zeros((h, w), np.int32)
    rgb = np.full((h, w, 3), 150, np.uint8)
    cols = int(np.ceil(np.sqrt(n)))
    ch, cw = h // cols, w // cols
    for k in range(n):
        r0, c0 = (k // cols) * ch, (k % cols) * cw
        y0, x0 = r0 + int(rng.integers(1, ch // 4)), c0 + int(rng.integers(1, cw // 4))
        y1, x1 = y0 + int(ch * rng.uniform(0.5, 0.7)), x0 + int(cw * rng.uniform(0.5, 0.7))
        depth[y0:y1, x0:x1] = 0.9 - rng.uniform(0.02, 0.08)
        labels[y0:y1, x0:x1] = k + 1
        rgb[y0:y1, x0:x1] = rng.integers(30, 255, 3)
    return rgb, depth, K, labels


def ideal_predictions(labels: np.ndarray, depth: np.ndarray, K: np.ndarray, noise: float, seed: int = 0):
    """ξ, η, B, fg maps as a well-trained network would output them (targets + Gaussian noise), torch."""
    from .targets import compute_targets

    t = compute_targets(labels, depth, K, feature="c")
    rng = np.random.default_rng(seed)
    xi = t.xi[..., :3] + rng.normal(0, noise, size=t.xi[..., :3].shape).astype(np.float32)
    eta = t.centroid * 0.8 + rng.uniform(0, 0.2, size=t.centroid.shape).astype(np.float32)
    return (torch.from_numpy(np.ascontiguousarray(xi.transpose(2, 0, 1))), torch.from_numpy(eta),
            torch.from_numpy(np.maximum(t.radius, 0.01)), torch.from_numpy(t.foreground.astype(np.float32)))


def _median(xs):
    return float(np.median(xs)) if xs else float("nan")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="instseg bench clusternet", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="weights (random lite model if missing)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"), help="network autocast dtype")
    p.add_argument("--channels-last", action="store_true", help="NHWC convolutions")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--objects", type=int, default=20)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    from instseg_ros.core.device import resolve_device

    from .config import ModelConfig
    from .model import ClusterNet
    from .predictor import ClusterNetPredictor

    dev = resolve_device(a.device)
    if os.path.isfile(a.checkpoint):
        base = ClusterNetPredictor.from_checkpoint(a.checkpoint, device=str(dev))
        model, source = base.model, os.path.abspath(a.checkpoint)
    else:
        model, source = ClusterNet(ModelConfig(base_width=32)), "random-init lite (no checkpoint found)"
    cfg = model.cfg
    result = {"device": str(dev), "device_name": (torch.cuda.get_device_name(dev) if dev.type == "cuda" else
                                                  f"cpu x{torch.get_num_threads()} threads"),
              "model": f"{cfg.backbone} w{cfg.base_width} {cfg.inputs} {cfg.feature}", "weights": source,
              "objects": a.objects, "repeats": a.repeats, "precision": a.precision,
              "channels_last": a.channels_last}
    for h, w in RESOLUTIONS:
        pred = ClusterNetPredictor(model, dev, params=ClusterParams(), resolution=(h, w),
                                   precision=a.precision, channels_last=a.channels_last)
        rgb, depth, K, _ = synthetic_frame(h, w, a.objects)
        pred.predict(rgb, depth, K)                     # warm-up
        runs = []
        for _ in range(a.repeats):
            pred.predict(rgb, depth, K)
            runs.append(dict(pred.last_timings))
        stages = {k: _median([r[k] for r in runs]) for k in runs[0]}
        total = sum(stages.values())
        # clustering alone on an ideal 20-object prediction at this resolution
        _, d, Kc, lab = synthetic_frame(h, w, a.objects, seed=1)
        xi, eta, rad, fg = (t.to(dev) for t in ideal_predictions(lab, d, Kc, noise=0.003))
        times, cpu_times, n_found = [], [], 0
        for i in range(a.repeats + 1):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0, c0 = time.perf_counter(), time.process_time()
            labels, scores = cluster_pixels(xi, eta, rad, fg, ClusterParams())
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i:
                times.append((time.perf_counter() - t0) * 1e3)
                cpu_times.append((time.process_time() - c0) * 1e3)
            n_found = len(scores)
        result[f"{w}x{h}"] = {**{f"{k}_ms": round(v, 2) for k, v in stages.items()},
                              "total_ms": round(total, 2), "fps": round(1000.0 / total, 2),
                              "clustering_20obj_ms": round(_median(times), 2),
                              "clustering_20obj_process_cpu_ms": round(_median(cpu_times), 2),
                              "clustering_20obj_found": n_found}
        print(f"{w}x{h}: " + json.dumps(result[f"{w}x{h}"]), flush=True)
    print(json.dumps(result))
    return 0
