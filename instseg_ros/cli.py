"""The `instseg` command: one entry point, sub-commands implemented in their own modules.

Each sub-command is a ``main(argv: list[str]) -> int`` in the module that owns the feature, imported
only when that sub-command runs (so `instseg bench ros` never imports torch, for instance).
"""
from __future__ import annotations

import importlib
import sys

#: (command words) -> (module, help). Two-word commands take their second word as a target.
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("generate",): ("instseg_ros.data.generate", "generate synthetic RGB-D scenes with instance labels"),
    ("train", "clusternet"): ("instseg_ros.clusternet.train", "train ClusterNet"),
    ("train", "occuseg"): ("instseg_ros.occuseg.train", "train OccuSeg"),
    ("evaluate", "clusternet"): ("instseg_ros.eval.clusternet_eval", "COCO / occlusion / F-measure eval of ClusterNet"),
    ("evaluate", "occuseg"): ("instseg_ros.eval.occuseg_eval", "3D AP and occupancy eval of OccuSeg"),
    ("export", "clusternet"): ("instseg_ros.clusternet.export", "ClusterNet as ONNX (fp32 / int8) for ONNX Runtime"),
    ("segment",): ("instseg_ros.clusternet.segment_cli", "segment one RGB-D frame with ClusterNet"),
    ("demo",): ("instseg_ros.ros.tools.demo", "both nodes on the bundled recording, outputs to a folder"),
    ("bench", "ros"): ("instseg_ros.ros.tools.bench", "message conversion and DDS latency benchmark"),
    ("bench", "generate"): ("instseg_ros.data.bench", "synthetic data generation benchmark"),
    ("bench", "clusternet"): ("instseg_ros.clusternet.bench", "ClusterNet per-stage timing"),
    ("bench", "occuseg"): ("instseg_ros.occuseg.bench", "OccuSeg + TSDF timing"),
    ("bench", "nodes"): ("instseg_ros.ros.tools.bench_nodes", "end-to-end node latency and throughput"),
    ("bench", "soak"): ("instseg_ros.ros.tools.bench_soak",
                        "a node at a fixed input rate for minutes: RSS slope, latency, drops"),
}


def _usage() -> str:
    lines = ["usage: instseg <command> [args...]", "", "commands:"]
    for words, (_, text) in COMMANDS.items():
        lines.append(f"  {' '.join(words):<22} {text}")
    lines.append("\n'instseg <command> --help' describes each command's arguments.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    for n in (2, 1):
        key = tuple(argv[:n])
        if key in COMMANDS:
            module = importlib.import_module(COMMANDS[key][0])
            return int(module.main(argv[n:]) or 0)
    print(f"instseg: unknown command {' '.join(argv[:2])!r}\n\n{_usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
