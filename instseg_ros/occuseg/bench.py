"""`instseg bench occuseg`: OccuSeg stage timings at 50k / 100k / 200k surface voxels and TSDF fusion rate.

Maps of a given size are built by tiling fused held-out scenes (``--scene-cache``, the ``.npz`` files the
evaluation writes) side by side on the grid, so the voxels carry real colours, normals and objects; without
a cache, shells of coloured boxes on a floor are used. Network = sparse U-Net forward (single-threaded on
the CPU, the spconv requirement); supervoxels = adjacency graph + Felzenszwalb-Huttenlocher; clustering =
eq. (12)-(14) merging. TSDF: 640x480 ray-cast views of a box pile integrated at 5 mm.

The last stdout line is one JSON object.
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import time

import numpy as np

from instseg_ros.mapping.tsdf import SurfaceVoxels


def _box_shells(n_target: int, rng: np.random.Generator) -> SurfaceVoxels:
    """Surface voxels of random boxes (8-24 voxels a side) on a grid: >= n_target voxels."""
    coords, colors, normals = [], [], []
    total, k = 0, 0
    while total < n_target:
        s = rng.integers(8, 25, size=3)
        c = np.stack(np.meshgrid(*[np.arange(v) for v in s], indexing="ij"), -1).reshape(-1, 3)
        on = (c == 0) | (c == s - 1)
        keep = on.any(1)
        c, on = c[keep], on[keep]
        axis = on.argmax(1)
        nrm = np.zeros((len(c), 3), np.float32)
        nrm[np.arange(len(c)), axis] = np.where(c[np.arange(len(c)), axis] == 0, -1.0, 1.0)
        off = np.array([(k % 20) * 30, (k // 20) * 30, 0])
        coords.append(c + off)
        normals.append(nrm)
        colors.append(np.tile(rng.integers(0, 256, 3, dtype=np.uint8), (len(c), 1)))
        total += len(c)
        k += 1
    c = np.concatenate(coords)[:n_target].astype(np.int32)
    return SurfaceVoxels(c, ((c + 0.5) * 0.005).astype(np.float32), np.concatenate(colors)[:n_target],
                         np.concatenate(normals)[:n_target], 0.005)


def _tiled(scenes: list[SurfaceVoxels], n_target: int) -> SurfaceVoxels:
    """Copies of the scenes shifted along x until n_target voxels (the last one cut)."""
    parts, total, shift, k = [], 0, 0, 0
    while total < n_target:
        s = scenes[k % len(scenes)]
        c = s.coords - s.coords.min(0) + [shift, 0, 0]
        parts.append((c, s.colors, s.normals))
        shift += int(np.ptp(s.coords[:, 0])) + 4
        total += len(c)
        k += 1
    c = np.concatenate([p[0] for p in parts])[:n_target].astype(np.int32)
    vs = scenes[0].voxel_size
    return SurfaceVoxels(c, ((c + 0.5) * vs).astype(np.float32), np.concatenate([p[1] for p in parts])[:n_target],
                         np.concatenate([p[2] for p in parts])[:n_target], vs)


def bench_segmenter(checkpoint: str | None, sizes: list[int], scene_cache: str | None, repeats: int,
                    device: str) -> dict:
    from instseg_ros.occuseg.config import NetConfig, SegmenterConfig
    from instseg_ros.occuseg.model import OccuSegNet
    from instseg_ros.occuseg.segmenter import MS_PER_S, MapSegmenter

    if checkpoint:
        seg = MapSegmenter.from_checkpoint(checkpoint, device=device)
    else:
        seg = MapSegmenter(OccuSegNet(NetConfig()), SegmenterConfig(), device=device)
    scenes = []
    if scene_cache:
        from instseg_ros.occuseg.dataset import load_scene

        scenes = [load_scene(p).sv for p in sorted(glob.glob(f"{scene_cache}/*.npz"))[:20]]
        scenes = [s for s in scenes if len(s)]
    rng = np.random.default_rng(0)
    out = {}
    for n in sizes:
        sv = _tiled(scenes, n) if scenes else _box_shells(n, rng)
        seg.predict(sv)   # warm-up (numba JIT, allocator)
        runs = []
        for _ in range(repeats):
            t = time.perf_counter()
            inst = seg.predict(sv)
            wall = time.perf_counter() - t
            stages_s = {k: v / MS_PER_S for k, v in seg.last_timings.items()}   # last_timings: ms; printed: s
            runs.append(dict(stages_s, total=wall, instances=len(inst)))
        best = min(runs, key=lambda r: r["total"])
        out[str(n)] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in best.items()}
    return out


def bench_tsdf(frames: int, voxel: float) -> dict:
    from instseg_ros.data.mesh_render import box_mesh, intrinsics, look_at, render
    from instseg_ros.mapping.tsdf import TsdfConfig, TsdfMap

    rng = np.random.default_rng(1)
    meshes = [box_mesh((0, 0, -0.01), (0.6, 0.4, 0.02), (150, 150, 150))]
    for _ in range(20):
        s = rng.uniform(0.03, 0.1, 3)
        meshes.append(box_mesh((*rng.uniform(-0.2, 0.2, 2), s[2] / 2), s, rng.integers(0, 256, 3)))
    K = intrinsics(640, 480)
    views = []
    for a in np.linspace(0, 2 * np.pi, frames, endpoint=False):
        T = look_at((0.5 * np.cos(a), 0.5 * np.sin(a), 0.5), (0, 0, 0))
        d, rgb, _ = render(meshes, K, T, 640, 480)
        views.append((d, rgb, T))
    m = TsdfMap(TsdfConfig(voxel_size=voxel))
    m.integrate(views[0][0], views[0][1], K, views[0][2])   # warm-up
    t = time.perf_counter()
    for d, rgb, T in views:
        m.integrate(d, rgb, K, T)
    dt = time.perf_counter() - t
    t = time.perf_counter()
    sv = m.surface_voxels()
    t_ext = time.perf_counter() - t
    return {"frames": frames, "fps": round(frames / dt, 1), "ms_per_frame": round(1000 * dt / frames, 2),
            "extract_s": round(t_ext, 3), "surface_voxels": len(sv), "voxel_size": voxel,
            "device": str(m.device)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="instseg bench occuseg", description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="OccuSeg weights (default: random init, same architecture)")
    ap.add_argument("--scene-cache", default=None, help="folder of fused-scene .npz (e.g. <data>/cache/val)")
    ap.add_argument("--sizes", type=int, nargs="*", default=[50000, 100000, 200000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tsdf-frames", type=int, default=30)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(1)
    res = {"segmenter": bench_segmenter(args.checkpoint, args.sizes, args.scene_cache, args.repeats, args.device),
           "tsdf_640x480_5mm": bench_tsdf(args.tsdf_frames, 0.005),
           "checkpoint": args.checkpoint, "map_source": "tiled fused scenes" if args.scene_cache else "box shells",
           "torch_threads": 1}
    for n, r in res["segmenter"].items():
        print(f"{n:>7} voxels: network {r['network']:.3f} s, supervoxels {r['supervoxels']:.3f} s, "
              f"clustering {r['clustering']:.3f} s, total {r['total']:.3f} s, {r['instances']} instances")
    print(f"TSDF 640x480 @ 5 mm: {res['tsdf_640x480_5mm']['fps']} frames/s")
    print(json.dumps(res))
    return 0
