"""`instseg generate`: synthetic RGB-D bins / tabletops with instance labels, in the layout of :mod:`.io`.

Work is cut into shards of scenes; a shard is finished when its marker ``<split>/shards/<n>.json`` exists
(written after all of its frames), so an interrupted run resumes where it stopped. Multi-view sequences are
finished when their ``sequence.json`` exists. The COCO file is merged from the shard markers at the end.

Example::

    instseg generate --split train --scenes 2000 --out /data/synth --seed 0 --preview
    instseg generate --split val --scenes 0 --sequences 10 --views 12 --voxel-size 0.01 --out /data/synth
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from instseg_ros.core.palette import colorize
from instseg_ros.data import io
from instseg_ros.data.scene import PROFILES, SceneConfig, generate_scene_frames, generate_sequence, profile_config

OCC_COLORS = {"heavy": (230, 40, 40), "medium": (240, 200, 40), "little": (60, 200, 80)}


def _coco_anns(labels: np.ndarray, instances: list[dict]) -> list[dict]:
    from pycocotools import mask as mask_utils

    anns = []
    H, W = labels.shape
    for inst in instances:
        # compare only inside the visible bbox ([x, y, w, h] of the instance's pixels, see frame_instances)
        x, y, w, h = inst.get("bbox", (0, 0, W, H))
        m = np.zeros((H, W), np.uint8, order="F")
        m[y:y + h, x:x + w] = labels[y:y + h, x:x + w] == inst["id"]
        area = int(m[y:y + h, x:x + w].sum())
        if area == 0:
            continue
        rle = mask_utils.encode(m)
        rle["counts"] = rle["counts"].decode("ascii")
        anns.append({"category_id": 1, "segmentation": rle, "area": area,
                     "bbox": [float(v) for v in mask_utils.toBbox(rle)], "iscrowd": 0,
                     "instance_id": int(inst["id"]), "occlusion": float(inst["occlusion"])})
    return anns


_BLAS_LIMITED = False


def single_thread_blas() -> None:
    """Limit BLAS (OpenBLAS / MKL) to one thread in this process, once.

    The generator runs one process per core; a multi-threaded BLAS in each of them (the small matrix products of
    the noise fields) spins threads against the other workers and cost 5-10x CPU time on a loaded machine.
    """
    global _BLAS_LIMITED
    if not _BLAS_LIMITED:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, user_api="blas")
        _BLAS_LIMITED = True


def _run_shard(job: tuple) -> tuple[int, int]:
    single_thread_blas()
    out, split, seed, shard, scenes, cfg = job[:6]
    level = job[6] if len(job) > 6 else 1
    frames_dir = io.frames_dir(out, split)
    records = []
    for s in scenes:
        for fr in generate_scene_frames(split, seed, s, cfg):
            fid = f"{s:07d}_{fr['extra']['view']:02d}"
            io.write_frame(frames_dir, fid, rgb=fr["rgb"], depth=fr["depth"], depth_gt=fr["depth_gt"],
                           labels=fr["labels"], K=fr["K"], T_world_camera=fr["T_world_camera"],
                           instances=fr["instances"], extra=fr["extra"], compress_level=level)
            records.append({"file_name": f"frames/{fid}.rgb.png", "width": cfg.width, "height": cfg.height,
                            "anns": _coco_anns(fr["labels"], fr["instances"])})
    marker = Path(out) / split / "shards" / f"{shard:06d}.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(marker) + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps({"scenes": list(scenes), "frames": records}))
    os.replace(tmp, marker)
    return shard, len(records)


def _run_sequence(job: tuple) -> tuple[int, int]:
    single_thread_blas()
    out, split, seed, index, cfg, n_views, voxel_sizes = job[:7]
    level = job[7] if len(job) > 7 else 1
    d = io.sequences_dir(out, split) / f"{index:05d}"
    seq = generate_sequence(split, seed, index, cfg, n_views, voxel_sizes)
    for fr in seq["views"]:
        io.write_frame(d / "views", f"{fr['extra']['view']:03d}", rgb=fr["rgb"], depth=fr["depth"],
                       depth_gt=fr["depth_gt"], labels=fr["labels"], K=fr["K"],
                       T_world_camera=fr["T_world_camera"], instances=fr["instances"], extra=fr["extra"],
                       compress_level=level)
    for vs, (coords, inst, sem) in seq["gt_voxels"].items():
        io.write_gt_voxels(d, coords, inst, sem, vs)
    meta = dict(seq["meta"], n_views=n_views, voxel_sizes=list(voxel_sizes))
    with open(str(d / "sequence.json") + ".tmp", "w") as f:
        f.write(json.dumps(meta))  # dumps: the C encoder (dump streams through the Python one)
    os.replace(str(d / "sequence.json") + ".tmp", d / "sequence.json")
    return index, n_views


def merge_coco(out: str | os.PathLike, split: str) -> str:
    """Merge the shard markers of a split into ``<out>/<split>/annotations.json`` (ids from 1)."""
    shard_dir = Path(out) / split / "shards"
    images, anns = [], []
    for marker in sorted(shard_dir.glob("*.json")):
        with open(marker) as f:
            recs = json.load(f)["frames"]
        for r in recs:
            img_id = len(images) + 1
            images.append({"id": img_id, "file_name": r["file_name"], "width": r["width"], "height": r["height"]})
            for a in r["anns"]:
                anns.append(dict(a, id=len(anns) + 1, image_id=img_id))
    coco = {"info": {"description": f"instseg_ros synthetic {split}"}, "images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "object", "supercategory": "object"}]}
    path = Path(out) / split / "annotations.json"
    with open(str(path) + ".tmp", "w") as f:
        f.write(json.dumps(coco))  # dumps: the C encoder (dump streams through the Python one)
    os.replace(str(path) + ".tmp", path)
    return str(path)


def _colorize_depth(z: np.ndarray, lo: float = 0.2, hi: float = 1.6) -> np.ndarray:
    import matplotlib

    cmap = matplotlib.colormaps["turbo"]
    col = (cmap(np.clip((z - lo) / (hi - lo), 0, 1))[..., :3] * 255).astype(np.uint8)
    col[z <= 0] = 0
    return col


def preview_tile(fr: dict) -> np.ndarray:
    """One preview row: rgb | depth (turbo, 0.2-1.6 m, black = invalid) | labels | occlusion level.

    Occlusion colours: green little [0.75, 1], yellow medium [0.3, 0.75), red heavy [0, 0.3).
    """
    labels = fr["labels"]
    occ = np.zeros(labels.shape + (3,), np.uint8)
    for inst in fr["instances"]:
        o = inst["occlusion"]
        key = "heavy" if o < 0.3 else ("medium" if o < 0.75 else "little")
        occ[labels == inst["id"]] = OCC_COLORS[key]
    # draw instance borders on the label image so touching objects are distinguishable
    lab = colorize(labels)
    edge = np.zeros(labels.shape, bool)
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    lab[edge] = 255
    return np.concatenate([fr["rgb"], _colorize_depth(fr["depth"]), lab, occ], axis=1)


def write_preview(prefixes: list[str], path: str | os.PathLike, scale: float = 0.5) -> str:
    """PNG grid, one row per frame (see :func:`preview_tile`)."""
    from PIL import Image

    if not prefixes:
        raise ValueError("no frames to preview")
    rows = [preview_tile(io.load_frame(p)) for p in prefixes]
    grid = np.concatenate(rows, axis=0)
    im = Image.fromarray(grid)
    if scale != 1.0:
        im = im.resize((int(grid.shape[1] * scale), int(grid.shape[0] * scale)), Image.BILINEAR)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return str(path)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="instseg generate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", required=True, choices=["train", "val", "test"])
    ap.add_argument("--scenes", type=int, default=100,
                    help="number of physics scenes (each gives --views-per-scene frames)")
    ap.add_argument("--views-per-scene", type=int, default=4, help="single frames rendered per settled pile")
    ap.add_argument("--out", required=True, help="dataset root")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    ap.add_argument("--shard-size", type=int, default=8, help="scenes per resumable shard")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--max-objects", type=int, default=30)
    ap.add_argument("--dense-prob", type=float, default=SceneConfig.dense_prob,
                    help="share of table scenes that are dense tabletops (8-20 packed objects, camera 0.35-0.75 m)")
    ap.add_argument("--multipart-prob", type=float, default=SceneConfig.multipart_prob,
                    help="probability that an object with natural parts is rendered from 2-3 differently coloured "
                         "parts (one instance); the default gives ~35 %% multi-part objects")
    ap.add_argument("--preview", nargs="?", const="", default=None,
                    help="write a PNG grid rgb|depth|labels|occlusion (default path <out>/<split>/preview.png)")
    ap.add_argument("--preview-frames", type=int, default=6)
    ap.add_argument("--sequences", type=int, default=0, help="multi-view sequences to generate")
    ap.add_argument("--views", type=int, default=12, help="views per sequence")
    ap.add_argument("--voxel-size", type=float, action="append", default=None,
                    help="voxel GT size in metres (repeatable; default 0.01)")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="stop starting new shards after this long; finished shards are kept and merged")
    ap.add_argument("--png-compress", type=int, default=1, choices=range(10), metavar="0-9",
                    help="PNG zlib level (1 fast; 9 for small shipped samples)")
    ap.add_argument("--profile", default="default", choices=PROFILES,
                    help="scene profile: 'default' (the generator of the shipped models) or 'real_shapes' (thin and "
                         "hollow objects, rimmed bins in saturated colours, robot-like camera arcs)")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.scenes < 0 or args.sequences < 0 or args.views < 1 or args.views_per_scene < 1:
        raise ValueError("--scenes/--sequences must be >= 0, --views/--views-per-scene >= 1")
    if args.workers < 1 or args.shard_size < 1:
        raise ValueError("--workers and --shard-size must be >= 1")
    if not (0.0 <= args.dense_prob <= 1.0 and 0.0 <= args.multipart_prob <= 1.0):
        raise ValueError("--dense-prob and --multipart-prob must be in [0, 1]")
    voxel_sizes = tuple(args.voxel_size or [0.01])
    if any(v <= 0 for v in voxel_sizes):
        raise ValueError("--voxel-size must be > 0")
    from tqdm import tqdm

    cfg = replace(profile_config(args.profile), width=args.width, height=args.height,
                  views_per_scene=args.views_per_scene, max_objects=args.max_objects,
                  dense_prob=args.dense_prob, multipart_prob=args.multipart_prob)
    out = Path(args.out)
    (out / args.split / "frames").mkdir(parents=True, exist_ok=True)
    shard_dir = out / args.split / "shards"
    n_shards = (args.scenes + args.shard_size - 1) // args.shard_size
    jobs = []
    for sh in range(n_shards):
        if (shard_dir / f"{sh:06d}.json").exists():
            continue
        scenes = list(range(sh * args.shard_size, min((sh + 1) * args.shard_size, args.scenes)))
        jobs.append((str(out), args.split, args.seed, sh, scenes, cfg, args.png_compress))
    seq_jobs = [(str(out), args.split, args.seed, i, cfg, args.views, voxel_sizes, args.png_compress)
                for i in range(args.sequences)
                if not (io.sequences_dir(out, args.split) / f"{i:05d}" / "sequence.json").exists()]
    t0 = time.perf_counter()
    n_frames = 0
    total = sum(len(j[4]) for j in jobs) * args.views_per_scene + len(seq_jobs) * args.views
    bar = tqdm(total=total, unit="frame", disable=args.no_progress, desc=f"generate {args.split}")
    work = [(_run_shard, j) for j in jobs] + [(_run_sequence, j) for j in seq_jobs]
    deadline = None if args.max_minutes is None else t0 + 60.0 * args.max_minutes
    if args.workers == 1 or len(work) <= 1:
        for fn, j in work:
            if deadline is not None and time.perf_counter() > deadline:
                break
            _, k = fn(j)
            n_frames += k
            bar.update(k)
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.workers) as pool:
            for _, k in pool.imap_unordered(_call, work):
                n_frames += k
                bar.update(k)
                if deadline is not None and time.perf_counter() > deadline:
                    pool.terminate()  # unfinished shards have no marker and are redone on resume
                    break
    bar.close()
    if n_shards:
        merge_coco(out, args.split)
    dt = time.perf_counter() - t0
    print(f"generated {n_frames} frames in {dt:.1f} s ({len(jobs)} shards + {len(seq_jobs)} sequences new, "
          f"{n_shards - len(jobs)} shards already done) -> {out}", file=sys.stderr)
    if args.preview is not None:
        path = args.preview or str(out / args.split / "preview.png")
        prefixes = io.list_frames(out, args.split)
        if not prefixes and args.sequences:
            prefixes = io._prefixes_in(Path(io.list_sequences(out, args.split)[0]) / "views")
        if prefixes:
            step = max(1, len(prefixes) // args.preview_frames)
            print("preview:", write_preview(prefixes[::step][: args.preview_frames], path), file=sys.stderr)
    return 0


def _call(item):
    fn, job = item
    return fn(job)


if __name__ == "__main__":
    sys.exit(main())
