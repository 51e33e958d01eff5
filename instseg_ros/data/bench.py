"""`instseg bench generate`: synthetic data generation speed, single process (= per core).

Measures scenes end to end (physics + rendering + amodal masks + shading + noise + PNG/JSON writing) at
640x480 and one multi-view sequence, with a per-stage breakdown. Prints a final JSON line:
``{"frames_per_s_per_core_wall": ..., "frames_per_s_per_core_cpu": ..., "s_per_sequence": ...,
"stages_cpu_ms_single_view": {...}, ...}``. ``*_wall`` figures divide by elapsed time, which on a machine
shared with other jobs includes waiting for a core; ``*_cpu`` figures divide by this process's CPU time
(``time.process_time``), the honest per-core figure there. The target is >= 10 frames/s per core; the line
reports what was measured and its ratio to the target, it asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace


def _stage_profile(cfg, seed: int, n: int) -> dict:
    """Mean CPU milliseconds per stage over ``n`` scenes of one view each (physics is not amortised here)."""
    import tempfile

    from instseg_ros.data import io, noise, render
    from instseg_ros.data.generate import _coco_anns
    from instseg_ros.data.scene import (
        build_scene,
        frame_instances,
        rng_for,
        sample_camera,
        sample_intrinsics,
        sample_lighting,
    )

    acc: dict[str, float] = {}

    def add(k, t0):
        acc[k] = acc.get(k, 0.0) + (time.process_time() - t0) * 1000

    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            rng = rng_for("train", seed, 10_000 + i)
            t = time.process_time()
            st = build_scene(rng, "train", cfg)
            add("shapes+physics", t)
            t = time.process_time()
            scene = render.Scene(st.meshes)
            add("bvh", t)
            K, T = sample_intrinsics(rng, cfg.width, cfg.height), sample_camera(rng, st, cfg)
            t = time.process_time()
            buf = render.cast(scene, K, T, cfg.width, cfg.height, cfg.primary)
            add("cast", t)
            t = time.process_time()
            inst = frame_instances(scene, st, buf["instance"], K, T, cfg.width, cfg.height)
            add("amodal", t)
            t = time.process_time()
            lin = render.shade(scene, buf, sample_lighting(rng), T[:3, 3], rng, render.texture_bank())
            add("shade", t)
            t = time.process_time()
            rgb = render.camera_effects(lin, rng)
            add("camera", t)
            t = time.process_time()
            depth = noise.apply_depth_noise(buf["depth"], K, rng, noise.sample_noise_config(rng), buf["instance"],
                                            buf["cos"])
            add("depth_noise", t)
            t = time.process_time()
            io.write_frame(tmp, f"{i:03d}", rgb=rgb, depth=depth, depth_gt=buf["depth"], labels=buf["instance"], K=K,
                           T_world_camera=T, instances=inst)
            _coco_anns(buf["instance"], inst)
            add("png+json+coco", t)
    return {k: round(v / n, 1) for k, v in acc.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="instseg bench generate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenes", type=int, default=6, help="scenes for the end-to-end frame rate")
    ap.add_argument("--views-per-scene", type=int, default=4)
    ap.add_argument("--sequence-views", type=int, default=12)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--seed", type=int, default=123)
    args = ap.parse_args(argv)
    if args.scenes < 1 or args.views_per_scene < 1 or args.sequence_views < 1:
        raise ValueError("--scenes, --views-per-scene and --sequence-views must be >= 1")
    from instseg_ros.data import generate, render
    from instseg_ros.data.scene import SceneConfig

    cfg = replace(SceneConfig(), width=args.width, height=args.height, views_per_scene=args.views_per_scene)
    render.texture_bank()
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up (numba kernels loaded or compiled, texture bank, BLAS limit): two scenes, one view each
        generate._run_shard((tmp, "train", args.seed + 99, 0, [0, 1], replace(cfg, views_per_scene=1)))
        t0, c0 = time.perf_counter(), time.process_time()
        _, n = generate._run_shard((tmp, "train", args.seed, 1, list(range(args.scenes)), cfg))
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        t1, c1 = time.perf_counter(), time.process_time()
        generate._run_sequence((tmp, "train", args.seed, 0, cfg, args.sequence_views, (0.01,)))
        dts, dcs = time.perf_counter() - t1, time.process_time() - c1
    stages = _stage_profile(cfg, args.seed, 3)
    fps_cpu = n / dc
    res = {"bench": "generate", "width": args.width, "height": args.height, "frames": n,
           "views_per_scene": args.views_per_scene,
           "frames_per_s_per_core_wall": round(n / dt, 3), "frames_per_s_per_core_cpu": round(fps_cpu, 3),
           "frames_per_s_per_core": round(n / dt, 3),  # = *_wall (name kept for older readers)
           "cpu_s_per_frame": round(dc / n, 4), "wall_s_per_frame": round(dt / n, 4),
           "s_per_sequence": round(dts, 2), "cpu_s_per_sequence": round(dcs, 2),
           "sequence_views": args.sequence_views, "stages_cpu_ms_single_view": stages,
           "target_frames_per_s": 10, "cpu_ratio_to_target": round(fps_cpu / 10.0, 3),
           "hours_for_50k_frames_on_2_cores_cpu": round(50_000 / fps_cpu / 2 / 3600, 2),
           "threads": 1, "note": "one process, one BLAS thread; wall-clock numbers include waiting for a shared CPU, "
           "*_cpu numbers do not"}
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
