"""``instseg export clusternet``: a checkpoint's network as ONNX (fp32, optionally int8 QDQ) for ONNX Runtime.

The graph holds the input preparation too (normalisation, depth hole filling, backprojection) and the
probability heads; its metadata (resolution, tuned clustering parameters, source checkpoint sha256, model
config) makes the .onnx usable on its own (see :mod:`instseg_ros.clusternet.onnx_engine`). Every export is
checked against torch on generated frames: the largest absolute difference per output is printed. Prints one
JSON line at the end.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from .onnx_engine import CALIB_FRAMES, CHECK_FRAMES, onnx_name

DEFAULT_CHECKPOINT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "models",
                                                  "clusternet_lite.pt"))


def int8_difference(fp32_path: str, int8_path: str, frames: list[dict]) -> dict[str, float]:
    """Largest |int8 - fp32| per output over ``frames`` (ONNX Runtime CPU), at the export's resolution."""
    from .onnx_engine import OnnxEngine, max_abs_difference, resize_frame

    a, b = OnnxEngine(fp32_path), OnnxEngine(int8_path)
    inputs = [resize_frame(f["rgb"], f["depth"], f["K"], a.resolution) for f in frames]
    return max_abs_difference([list(b.run(*x).values()) for x in inputs], [list(a.run(*x).values()) for x in inputs])


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="instseg export clusternet", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="ClusterNet .pt")
    p.add_argument("--out", help="fp32 .onnx to write (default: next to the checkpoint, <stem>.onnx)")
    p.add_argument("--resolution", type=int, nargs=2, metavar=("H", "W"),
                   help="network resolution (default: the checkpoint's meta 'resolution')")
    p.add_argument("--check-frames", type=int, default=CHECK_FRAMES, help="generated frames for the torch check")
    p.add_argument("--int8", action="store_true", help="also write <out stem>.int8.onnx (static QDQ int8)")
    p.add_argument("--calib-frames", type=int, default=CALIB_FRAMES, help="generated frames for int8 calibration")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    p.add_argument("--if-missing", action="store_true",
                   help="do nothing when the outputs exist and name this checkpoint (set-up scripts)")
    a = p.parse_args(argv)
    if a.check_frames < 1 or a.calib_frames < 1:
        p.error("--check-frames and --calib-frames must be >= 1")
    import torch

    from .onnx_engine import (
        OnnxModelError,
        check_meta,
        export_onnx,
        file_sha256,
        generated_frames,
        quantize_int8,
        read_meta,
    )

    if a.threads:
        torch.set_num_threads(a.threads)
    if not os.path.isfile(a.checkpoint):
        p.error(f"checkpoint {a.checkpoint} does not exist")
    out = a.out or str(Path(a.checkpoint).with_name(onnx_name(a.checkpoint)))
    out8 = str(Path(out).with_name(Path(out).stem + ".int8.onnx"))
    if a.if_missing:
        sha = file_sha256(a.checkpoint)
        try:
            for path, prec in [(out, "fp32")] + ([(out8, "int8")] if a.int8 else []):
                if not os.path.isfile(path):
                    raise OnnxModelError(f"{path} missing")
                check_meta(read_meta(path), path, sha, tuple(a.resolution) if a.resolution else None, prec)
            print(json.dumps({"export": "up to date", "out": out, "int8": out8 if a.int8 else None}))
            return 0
        except OnnxModelError as e:
            print(f"exporting: {e}", flush=True)
    n = max(a.check_frames, a.calib_frames if a.int8 else 0)
    print(f"generating {n} frames (synthetic train-split scenes) ...", flush=True)
    frames = generated_frames(n)
    res = export_onnx(a.checkpoint, out, tuple(a.resolution) if a.resolution else None,
                      check_frames=frames[:a.check_frames], log=print)
    result = {"checkpoint": os.path.abspath(a.checkpoint), "out": out, "bytes": res["bytes"],
              "resolution": list(res["resolution"]), "export_s": round(res["seconds"], 1),
              "max_abs_diff_vs_torch": res["max_abs_diff"]}
    if a.int8:
        q = quantize_int8(out, out8, frames[:a.calib_frames], log=print)
        diff = int8_difference(out, out8, frames[:a.check_frames])
        print("max |int8 - fp32| over", a.check_frames, "frames:", ", ".join(f"{k} {v:.3g}" for k, v in diff.items()))
        result.update({"int8_out": out8, "int8_bytes": q["bytes"], "calib_frames": q["calib_frames"],
                       "quantize_s": round(q["seconds"], 1), "int8_max_abs_diff_vs_fp32": diff})
    print(json.dumps(result))
    return 0
