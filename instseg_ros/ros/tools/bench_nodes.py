"""``instseg bench nodes``: end-to-end latency and throughput of ``clusternet_node`` on a real graph.

The node runs in its own process (parameters from ``config/clusternet_node.yaml``); this process
publishes 640x480 frames of the demo recording (rgb8 + 16UC1 + camera_info, stamped with the wall
clock at publish) at each requested input rate for ``--seconds`` and receives ``~/instances``.
Per rate it reports frames sent / answered, output throughput (answers per second over the
publishing window), drop fraction, and latency = arrival of ``~/instances`` - input stamp (p50,
p90, max; the same wall clock on one machine). The node keeps at most one frame waiting, so when
the model is slower than the input the node drops frames rather than letting latency grow.
``--backends torch,onnxruntime`` runs the node once per ClusterNet backend (its ``backend`` parameter), one
after the other with the same frames and rates, and reports each one's answered frames/s.

Prints a final JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from instseg_ros.ros.bag import DEMO_BAG
from instseg_ros.ros.graph import apply_ros_environment, ros_environment
from instseg_ros.ros.node_common import package_root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="instseg bench nodes", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", type=float, nargs="+", default=[10.0, 30.0], help="input frame rates (Hz)")
    ap.add_argument("--seconds", type=float, default=6.0, help="publishing time per rate")
    ap.add_argument("--model", default="", help="ClusterNet weights ('' = models/clusternet_lite.pt)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--bag", default=str(DEMO_BAG), help="recording whose views are sent")
    ap.add_argument("--log", default="bench_nodes.log", help="node output (one file per backend: <stem>.<backend>.log)")
    ap.add_argument("--backends", default="",
                    help="comma-separated node 'backend' values to run one after the other, e.g. torch,onnxruntime "
                         "('' = the parameter file's)")
    a = ap.parse_args(argv)
    from instseg_ros.ros.node_params import CLUSTERNET_BACKENDS

    backends = [b.strip() for b in a.backends.split(",") if b.strip()] or [""]
    bad = [b for b in backends if b and b not in CLUSTERNET_BACKENDS]
    if bad:
        ap.error(f"--backends: unknown {bad}; choose from {CLUSTERNET_BACKENDS}")

    from instseg_ros.ros.tools.demo import load_views

    views, _, _ = load_views(Path(a.bag))
    env = ros_environment()
    apply_ros_environment(env)
    per_backend = {}
    for b in backends:
        log = a.log if not b else str(Path(a.log).with_suffix(f".{b}.log"))
        device_line, results = _run_node(a, views, env, b, log)
        per_backend[b or "default"] = {"model": device_line.split("]: ")[-1], "rates": results}
    h, w = views[0]["depth"].height, views[0]["depth"].width
    first = next(iter(per_backend.values()))
    out = {"bench": "nodes", "node": "clusternet_node", "width": w, "height": h, "device": a.device,
           "model": first["model"], "rates": first["rates"]}
    if backends != [""]:
        out["backends"] = per_backend
        out["throughput_hz"] = {b: {r: v["throughput_hz"] for r, v in d["rates"].items()}
                                for b, d in per_backend.items()}
    print(json.dumps(out))
    return 0


def _run_node(a, views, env, backend: str, log: str) -> tuple[str, dict]:
    """One clusternet_node process (``backend`` parameter unless ""), every rate of ``a.rates``: (its model log
    line, per-rate results)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from instseg_ros.msg import ObjectInstanceArray
    from instseg_ros.ros.conversions import ns_to_stamp, stamp_to_ns
    from instseg_ros.ros.tools.launcher import Collector, FramePublisher, NodeProcess, node_command, spin_until

    params = {"device": a.device, "diagnostics_period_s": 5.0}
    if backend:
        params["backend"] = backend
    if a.model:
        params["model_path"] = str(Path(a.model).resolve())
    cmd = node_command("clusternet_node", params_file=package_root() / "config" / "clusternet_node.yaml",
                       params=params,
                       remaps={"color/image_raw": "/bench/color/image_raw",
                               "aligned_depth_to_color/image_raw": "/bench/aligned_depth_to_color/image_raw",
                               "color/camera_info": "/bench/color/camera_info"})
    rclpy.init()
    node = rclpy.create_node("instseg_bench_nodes")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    proc = NodeProcess(cmd, env, log)
    results: dict = {}
    device_line = ""
    try:
        pub = FramePublisher(node, "/bench")
        col = Collector(node, {"/clusternet_node/instances": ObjectInstanceArray})
        if not spin_until(ex, lambda: all(p.get_subscription_count() >= 1 for p in pub.publishers)
                          and col.subs[0].get_publisher_count() >= 1 or not proc.alive(), 120.0) or not proc.alive():
            print(proc.output()[-3000:], file=sys.stderr)
            raise RuntimeError("clusternet_node did not start")
        device_line = next((ln for ln in proc.output().splitlines() if "model " in ln and " on " in ln), "")
        # warm-up: first inferences allocate; not counted
        for v in views[:2]:
            _publish(pub, v, ns_to_stamp(time.time_ns()))
            n = col.count("/clusternet_node/instances")
            spin_until(ex, lambda n=n: col.count("/clusternet_node/instances") > n, 60.0)
        for rate in a.rates:
            col.messages["/clusternet_node/instances"].clear()
            stamps = []
            period = 1.0 / rate
            t0 = time.monotonic()
            next_t = t0
            k = 0
            while time.monotonic() - t0 < a.seconds:
                s = time.time_ns()
                _publish(pub, views[k % len(views)], ns_to_stamp(s))
                stamps.append(s)
                k += 1
                next_t += period
                while True:
                    left = next_t - time.monotonic()
                    if left <= 0:
                        break
                    ex.spin_once(timeout_sec=min(left, 0.005))
            t_end = time.monotonic()
            spin_until(ex, lambda: False, 3.0)  # the frame in flight
            sent = set(stamps)
            lat = [(recv - stamp_to_ns(m.header.stamp)) * 1e-6
                   for recv, m in col.get("/clusternet_node/instances")
                   if stamp_to_ns(m.header.stamp) in sent]
            results[f"{rate:g}hz"] = {
                "sent": len(stamps), "answered": len(lat), "drop_fraction": 1 - len(lat) / max(len(stamps), 1),
                "throughput_hz": len(lat) / (t_end - t0),
                "latency_ms_p50": float(np.median(lat)) if lat else None,
                "latency_ms_p90": float(np.percentile(lat, 90)) if lat else None,
                "latency_ms_max": float(np.max(lat)) if lat else None,
                "keeps_up": len(lat) >= 0.95 * len(stamps),
            }
            print(f"{backend or 'default'} {rate:g} Hz: {results[f'{rate:g}hz']}", flush=True)
    finally:
        proc.stop()
        ex.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return device_line, results


def _publish(pub, view, stamp) -> None:
    for key in ("color", "depth", "info"):
        view[key].header.stamp = stamp
    pub.publish_msgs(view["color"], view["depth"], view["info"])


if __name__ == "__main__":
    sys.exit(main())
