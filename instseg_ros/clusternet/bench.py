"""``instseg bench clusternet``: per-frame milliseconds of ClusterNet split into preprocessing, network,
clustering and postprocessing, at 640x480 and 320x240 network resolution, plus the clustering alone on a
synthetic 20-object prediction (wall ms, and the process CPU ms, which on a shared machine is the
fairer number). The clustering is timed with the implementation the device uses (numba on CPU, torch
on CUDA) and, in the same process, with the other one as the reference (the torch path on the CPU, the
path every device used before the numba kernels), with their ratio and whether both gave the same
labels. Each resolution is also timed, interleaved, without the label refinement (the pipeline before it):
``unrefined_total_ms`` and ``ratio_vs_unrefined`` (refined / unrefined total). With
``--backend torch,onnxruntime[,onnxruntime-int8]`` every backend is timed end to end on the
same 640x480 frame at the checkpoint's network resolution in one run (repeats interleaved, so a load change on
a shared machine hits all of them alike) and the final JSON line holds ``"speedup_vs_torch"`` per backend
(median end-to-end ms of torch / of that backend). Prints one JSON line at the end (no pass/fail: targets are
reported).
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
#: input frame size of the backend comparison (the camera's), (H, W)
BACKEND_INPUT = (480, 640)
#: interleaved runs per backend: on the 2-core machine five gave speed-up ratios spread over 1.71-1.93 in four
#: back-to-back runs of the same build (torch's time varies most), fifteen 1.82-1.84
BACKEND_REPEATS = 15
#: seconds between two timed backend runs (see :func:`backend_figures`)
SETTLE_S = 0.5
#: bars of issue #14 for the end-to-end speed-up over torch at 640x480 on two CPU cores
SPEEDUP_TARGETS = {"onnxruntime": 1.8, "onnxruntime-int8": 2.5}
#: clustering targets of the issue, ms with 20 objects
CLUSTERING_TARGET_MS = {"cpu": 30.0, "cuda": 5.0}
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


def time_clustering(inputs, params: ClusterParams, backend: str, repeats: int):
    """Median wall ms and process CPU ms of ``cluster_pixels`` over ``repeats`` calls after one warm-up
    (numba JIT / CUDA init), CUDA-synchronised; and the last result."""
    dev = inputs[0].device
    times, cpu_times = [], []
    for i in range(repeats + 1):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0, c0 = time.perf_counter(), time.process_time()
        out = cluster_pixels(*inputs, params, backend=backend)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i:
            times.append((time.perf_counter() - t0) * 1e3)
            cpu_times.append((time.process_time() - c0) * 1e3)
    return _median(times), _median(cpu_times), out


def clustering_figures(h: int, w: int, objects: int, dev: torch.device, repeats: int) -> dict:
    """Clustering alone on an ideal ``objects``-object prediction at (h, w): the device's implementation
    vs the reference (torch on the CPU; the numba kernels on the CPU when dev is CUDA)."""
    _, d, Kc, lab = synthetic_frame(h, w, objects, seed=1)
    cpu_inputs = ideal_predictions(lab, d, Kc, noise=0.003)
    params = ClusterParams()
    ms, cpu_ms, (labels, scores) = time_clustering([t.to(dev) for t in cpu_inputs], params, "auto", repeats)
    ref_backend = "numba" if dev.type == "cuda" else "torch"
    ref_ms, ref_cpu_ms, (ref_labels, ref_scores) = time_clustering(cpu_inputs, params, ref_backend,
                                                                    max(1, repeats // 2))
    name = "torch" if dev.type == "cuda" else "numba"
    return {f"clustering_{objects}obj_ms": round(ms, 2), f"clustering_{objects}obj_process_cpu_ms": round(cpu_ms, 2),
            f"clustering_{objects}obj_found": len(scores), "clustering_backend": name,
            "clustering_target_ms": CLUSTERING_TARGET_MS[dev.type],
            f"clustering_reference_{ref_backend}_cpu_ms": round(ref_ms, 2),
            f"clustering_reference_{ref_backend}_cpu_process_cpu_ms": round(ref_cpu_ms, 2),
            "clustering_speedup_vs_reference": round(ref_ms / ms, 2),
            "clustering_speedup_vs_reference_process_cpu": round(ref_cpu_ms / max(cpu_ms, 1e-3), 2),
            "clustering_same_as_reference": bool(torch.equal(labels.cpu(), ref_labels)
                                                 and torch.equal(scores.cpu(), ref_scores))}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="instseg bench clusternet", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="weights (random lite model if missing)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"), help="network autocast dtype")
    p.add_argument("--channels-last", action="store_true", help="NHWC convolutions")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--backend-repeats", type=int, default=BACKEND_REPEATS,
                   help="interleaved end-to-end runs per backend of --backend (their median is compared)")
    p.add_argument("--objects", type=int, default=20)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--clustering-only", action="store_true", help="skip the network / end-to-end stages")
    p.add_argument("--backend", default="",
                   help="comma-separated backends to compare end to end at 640x480 input, e.g. "
                        "torch,onnxruntime,onnxruntime-int8 (ONNX files found or exported once into the cache)")
    a = p.parse_args(argv)
    if a.repeats < 1 or a.objects < 1 or a.backend_repeats < 1:
        p.error("--repeats, --backend-repeats and --objects must be >= 1")
    from .onnx_engine import BACKENDS

    backends = [b.strip() for b in a.backend.split(",") if b.strip()]
    bad = [b for b in backends if b not in BACKENDS or b == "auto"]
    if bad:
        p.error(f"--backend: unknown {bad}; choose from {[b for b in BACKENDS if b != 'auto']}")
    if backends and not os.path.isfile(a.checkpoint):
        p.error(f"--backend needs a checkpoint file; {a.checkpoint} does not exist")
    if a.threads:
        torch.set_num_threads(a.threads)
    from instseg_ros.core.device import resolve_device

    from .config import ModelConfig
    from .model import ClusterNet
    from .predictor import ClusterNetPredictor
    from .refine import RefineParams

    dev = resolve_device(a.device)
    result = {"device": str(dev), "device_name": (torch.cuda.get_device_name(dev) if dev.type == "cuda" else
                                                  f"cpu x{torch.get_num_threads()} threads"),
              "objects": a.objects, "repeats": a.repeats, "load_avg_1min": round(os.getloadavg()[0], 2)}
    model = None
    if not a.clustering_only:
        if os.path.isfile(a.checkpoint):
            base = ClusterNetPredictor.from_checkpoint(a.checkpoint, device=str(dev), backend="torch")
            model, source = base.model, os.path.abspath(a.checkpoint)
        else:
            model, source = ClusterNet(ModelConfig(base_width=32)), "random-init lite (no checkpoint found)"
        cfg = model.cfg
        result.update({"model": f"{cfg.backbone} w{cfg.base_width} {cfg.inputs} {cfg.feature}", "weights": source,
                       "precision": a.precision, "channels_last": a.channels_last})
    for h, w in RESOLUTIONS:
        row = {}
        if model is not None:
            pred = ClusterNetPredictor(model, dev, params=ClusterParams(), resolution=(h, w),
                                       precision=a.precision, channels_last=a.channels_last)
            # the pipeline before the label refinement (#13), same model, timed interleaved with it
            plain = ClusterNetPredictor(model, dev, params=ClusterParams(), resolution=(h, w),
                                        precision=a.precision, channels_last=a.channels_last,
                                        refine=RefineParams(enabled=False))
            rgb, depth, K, _ = synthetic_frame(h, w, a.objects)
            pred.predict(rgb, depth, K)                     # warm-up
            plain.predict(rgb, depth, K)
            runs, plain_runs = [], []
            for _ in range(a.repeats):
                pred.predict(rgb, depth, K)
                runs.append(dict(pred.last_timings))
                plain.predict(rgb, depth, K)
                plain_runs.append(dict(plain.last_timings))
            stages = {k: _median([r[k] for r in runs]) for k in runs[0]}
            total = sum(stages.values())
            plain_total = _median([sum(r.values()) for r in plain_runs])
            row.update({**{f"{k}_ms": round(v, 2) for k, v in stages.items()},
                        "total_ms": round(total, 2), "fps": round(1000.0 / total, 2),
                        "unrefined_total_ms": round(plain_total, 2),
                        "unrefined_postprocess_ms": round(_median([r["postprocess"] for r in plain_runs]), 2),
                        "ratio_vs_unrefined": round(total / plain_total, 3)})
        row.update(clustering_figures(h, w, a.objects, dev, a.repeats))
        result[f"{w}x{h}"] = row
        print(f"{w}x{h}: " + json.dumps(row), flush=True)
    if backends:
        result.update(backend_figures(a.checkpoint, backends, str(dev), a.objects, a.backend_repeats))
        result["backend_repeats"] = a.backend_repeats
    result["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))
    return 0


def backend_figures(checkpoint: str, backends: list[str], device: str, objects: int, repeats: int) -> dict:
    """End-to-end ``predict`` ms per backend on one 640x480 frame at the checkpoint's network resolution, repeats
    interleaved across backends; per-stage medians, the backend line (provider) and the speed-up over torch."""
    from .predictor import ClusterNetPredictor

    h, w = BACKEND_INPUT
    rgb, depth, K, _ = synthetic_frame(h, w, objects)
    preds = {}
    for b in backends:
        preds[b] = ClusterNetPredictor.from_checkpoint(checkpoint, device=device, backend=b,
                                                       log=lambda m, b=b: print(f"[{b}] {m}", flush=True))
        preds[b].predict(rgb, depth, K)             # warm-up (allocations, JIT)
    runs: dict[str, list] = {b: [] for b in backends}
    totals: dict[str, list] = {b: [] for b in backends}
    cpu: dict[str, list] = {b: [] for b in backends}
    for _ in range(repeats):
        for b in backends:
            # let the previous backend's worker threads go idle first: torch's OpenMP threads keep spinning
            # for a while after a parallel region and would take the cores from the next backend's threads
            time.sleep(SETTLE_S)
            t0, c0 = time.perf_counter(), time.process_time()
            preds[b].predict(rgb, depth, K)
            totals[b].append((time.perf_counter() - t0) * 1e3)
            cpu[b].append((time.process_time() - c0) * 1e3)
            runs[b].append(dict(preds[b].last_timings))
    out = {"backends": {}}
    for b in backends:
        stages = {k: round(_median([r[k] for r in runs[b]]), 2) for k in runs[b][0]}
        e2e = _median(totals[b])
        out["backends"][b] = {"what": preds[b].backend, "resolution": list(preds[b].resolution),
                              **{f"{k}_ms": v for k, v in stages.items()}, "end_to_end_ms": round(e2e, 2),
                              "fps": round(1000.0 / e2e, 2),
                              # CPU time of this process (all its threads): less sensitive to other jobs' load
                              "end_to_end_process_cpu_ms": round(_median(cpu[b]), 2)}
        print(f"{b} (input {w}x{h}): " + json.dumps(out["backends"][b]), flush=True)
    if "torch" in backends:
        ref = out["backends"]["torch"]["end_to_end_ms"]
        out["speedup_vs_torch"] = {b: round(ref / out["backends"][b]["end_to_end_ms"], 2)
                                   for b in backends if b != "torch"}
        ref_cpu = out["backends"]["torch"]["end_to_end_process_cpu_ms"]
        out["speedup_vs_torch_process_cpu"] = {b: round(ref_cpu / out["backends"][b]["end_to_end_process_cpu_ms"], 2)
                                               for b in backends if b != "torch"}
        out["speedup_targets"] = {b: SPEEDUP_TARGETS[b] for b in out["speedup_vs_torch"] if b in SPEEDUP_TARGETS}
    return out
