"""``instseg bench soak``: a node under a fixed input rate for minutes, watched for leaks and latency drift.

The node (``clusternet_node`` or ``occuseg_mapping_node``, parameters from ``config/``) runs in its own
process; this process publishes the views of the demo recording (colour rgb8, depth 16UC1, camera_info
and, for the mapping node, the camera pose), stamped with the wall clock at publish (never closer
than one period apart), at ``--rate`` Hz
for ``--minutes``. It samples the node's resident memory (``/proc/<pid>/status`` VmRSS) every second
and reads the node's /diagnostics counters.

Reported (final JSON line):

* ``rss_slope_mb_per_min``: least-squares slope of RSS over time after the warm-up (``--warmup-s``:
  model load, first inferences, allocator pools); ``rss_mb_start`` / ``rss_mb_end``.
* per minute: latency p50 / p99 (camera node: arrival of ``~/instances`` - input stamp; mapping node:
  the node's mean integration time, the only latency it reports) and outputs per second.
* ``drops``: by cause, from the node's counters: ``dropped_busy`` (a newer frame replaced a waiting
  one), ``bad_frames``, ``sync_dropped``, ``lost_estimate`` (stamp gaps), ``out_of_order``,
  ``future_stamps``; and ``unanswered`` = frames sent - outputs (camera node).
* ``load_avg``: the machine's 1-minute load average at start and end (other processes share the CPUs).

Bar (issue #17): RSS slope < 1 MB/min after warm-up, latency per minute bounded (p99 not growing).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from instseg_ros.ros.bag import DEMO_BAG
from instseg_ros.ros.graph import apply_ros_environment, ros_environment
from instseg_ros.ros.node_common import package_root

#: Seconds between RSS samples.
RSS_PERIOD_S = 1.0
#: Topic prefix the node's inputs are remapped to.
PREFIX = "/soak"
#: Counters summed into ``drops``.
DROP_COUNTERS = ("dropped_busy", "bad_frames", "sync_dropped", "lost_estimate", "out_of_order", "future_stamps")


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for process {pid}")


def slope_per_min(t_s: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of y over t, per minute (0 with fewer than 2 samples)."""
    if len(t_s) < 2:
        return 0.0
    a = np.polyfit(np.asarray(t_s, np.float64) / 60.0, np.asarray(y, np.float64), 1)
    return float(a[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="instseg bench soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=3.0, help="publishing time (min)")
    ap.add_argument("--rate", type=float, default=30.0, help="input frame rate (Hz)")
    ap.add_argument("--node", choices=("camera", "mapping"), default="camera")
    ap.add_argument("--warmup-s", type=float, default=30.0, help="seconds excluded from the RSS slope")
    ap.add_argument("--model", default="", help="weights ('' = the shipped model)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--bag", default=str(DEMO_BAG), help="recording whose views are sent")
    ap.add_argument("--log", default=os.path.join(tempfile.gettempdir(), "instseg_bench_soak.log"),
                    help="node output (default: the system's temporary folder, not the working directory)")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="extra node parameter (repeatable), e.g. network_height=240")
    a = ap.parse_args(argv)

    from instseg_ros.ros.tools.demo import load_views

    views, _, _ = load_views(Path(a.bag))
    env = ros_environment()
    apply_ros_environment(env)
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor

    from instseg_ros.msg import ObjectInstanceArray
    from instseg_ros.ros.conversions import ns_to_stamp, stamp_to_ns
    from instseg_ros.ros.tools.launcher import Collector, FramePublisher, NodeProcess, node_command, spin_until

    name = "clusternet_node" if a.node == "camera" else "occuseg_mapping_node"
    params = {"device": a.device, "diagnostics_period_s": 1.0}
    if a.model:
        params["model_path"] = str(Path(a.model).resolve())
    if a.node == "mapping":
        params["segment_period_s"] = 5.0
    for item in a.param:
        key, _, value = item.partition("=")
        params[key] = value
    remaps = {t: f"{PREFIX}/{t}" for t in ("color/image_raw", "aligned_depth_to_color/image_raw",
                                           "color/camera_info", "pose")}
    cmd = node_command(name, params_file=package_root() / "config" / f"{name}.yaml", params=params, remaps=remaps)
    out_topic = f"/{name}/instances"
    rclpy.init()
    node = rclpy.create_node("instseg_bench_soak")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    proc = NodeProcess(cmd, env, a.log)
    load0 = os.getloadavg()[0]
    diag: dict = {}
    try:
        pub = FramePublisher(node, PREFIX)
        col = Collector(node, {out_topic: ObjectInstanceArray})

        def on_diag(arr) -> None:
            for st in arr.status:
                if st.hardware_id == f"/{name}":
                    diag.clear()
                    diag.update({kv.key: kv.value for kv in st.values})

        node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
        wanted = pub.publishers + ([pub.pose] if a.node == "mapping" else [])
        if not spin_until(ex, lambda: all(p.get_subscription_count() >= 1 for p in wanted) or not proc.alive(),
                          180.0) or not proc.alive():
            print(proc.output()[-3000:], file=sys.stderr)
            raise RuntimeError(f"{name} did not start")
        pid = proc.proc.pid
        period = 1.0 / a.rate
        sent: list[int] = []
        rss: list[tuple[float, float]] = []
        minutes: list[dict] = []
        t0 = time.monotonic()
        next_t, next_rss, k = t0, t0, 0
        minute_start, minute_sent0, minute_out0 = t0, 0, 0
        integ: list[float] = []
        period_ns = int(round(period * 1e9))
        while time.monotonic() - t0 < a.minutes * 60.0:
            # wall-clock stamps, but never closer than one period: when this loop runs late, stamps
            # within ``slop`` of each other would let the synchronizer pair a view with the next
            # view's pose, which a camera at this rate never does
            s = max(time.time_ns(), sent[-1] + period_ns) if sent else time.time_ns()
            v = views[k % len(views)]
            for key in ("color", "depth", "info", "pose"):
                v[key].header.stamp = ns_to_stamp(s)
            pub.publish_msgs(v["color"], v["depth"], v["info"], v["pose"] if a.node == "mapping" else None)
            sent.append(s)
            k += 1
            next_t += period
            now = time.monotonic()
            if now >= next_rss:
                rss.append((now - t0, rss_mb(pid)))
                next_rss += RSS_PERIOD_S
                if "integrate_mean_ms" in diag:
                    integ.append(float(diag["integrate_mean_ms"]))
            if now - minute_start >= 60.0:
                minutes.append(_minute(col, out_topic, sent, minute_start, now, minute_sent0, minute_out0, integ))
                if "map_blocks" in diag:   # map growth is expected until the views are covered
                    minutes[-1]["map_blocks"] = int(float(diag["map_blocks"]))
                minutes[-1]["rss_mb"] = rss[-1][1]
                print(f"minute {len(minutes)}: {minutes[-1]}  RSS {rss[-1][1]:.1f} MB", flush=True)
                minute_start, minute_sent0, minute_out0, integ = now, len(sent), col.count(out_topic), []
            while True:
                left = next_t - time.monotonic()
                if left <= 0:
                    break
                ex.spin_once(timeout_sec=min(left, 0.005))
            if time.monotonic() - next_t > 1.0:   # the publisher itself fell behind: do not burst
                next_t = time.monotonic()
        end = time.monotonic()
        if end - minute_start > 10.0:
            minutes.append(_minute(col, out_topic, sent, minute_start, end, minute_sent0, minute_out0, integ))
        spin_until(ex, lambda: False, 3.0)   # last frame and diagnostics
        alive = proc.alive()
    finally:
        code = proc.stop()
        ex.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    t = np.array([x for x, _ in rss])
    y = np.array([m for _, m in rss])
    after = t >= a.warmup_s
    drops = {c: int(float(diag.get(c, 0))) for c in DROP_COUNTERS}
    answered = len({stamp_to_ns(m.header.stamp) for _, m in col.get(out_topic)})
    if a.node == "camera":
        drops["unanswered"] = len(sent) - answered
    result = {
        "bench": "soak", "node": name, "rate_hz": a.rate, "minutes": a.minutes, "device": a.device,
        "frames_sent": len(sent), "send_rate_hz": len(sent) / max(end - t0, 1e-9),
        "outputs": answered if a.node == "camera" else int(float(diag.get("frames_integrated", 0))),
        "rss_mb_start": float(y[after][0]) if after.any() else None, "rss_mb_end": float(y[-1]) if len(y) else None,
        "rss_slope_mb_per_min": slope_per_min(t[after], y[after]), "warmup_s": a.warmup_s,
        "params": params,
        "per_minute": minutes, "drops": drops, "node_alive_at_end": alive, "node_exit_code": code,
        "load_avg": [load0, os.getloadavg()[0]], "cpus": os.cpu_count(),
        "bar_rss_slope_below_1": bool(after.any() and slope_per_min(t[after], y[after]) < 1.0),
    }
    print(json.dumps(result))
    return 0 if alive and code == 0 else 1


def _minute(col, topic: str, sent: list[int], start: float, end: float, sent0: int, out0: int,
            integ: list[float]) -> dict:
    """Latency percentiles and rates of one minute window (camera: per answered frame sent in it)."""
    from instseg_ros.ros.conversions import stamp_to_ns

    window = set(sent[sent0:])
    lat = [(recv - stamp_to_ns(m.header.stamp)) * 1e-6
           for recv, m in col.get(topic) if stamp_to_ns(m.header.stamp) in window]
    span = max(end - start, 1e-9)
    out = {"sent_per_s": (len(sent) - sent0) / span, "outputs_per_s": (col.count(topic) - out0) / span}
    if lat:
        out.update(latency_ms_p50=float(np.percentile(lat, 50)), latency_ms_p99=float(np.percentile(lat, 99)))
    if integ:
        out["integrate_mean_ms"] = float(np.mean(integ))
    return out


if __name__ == "__main__":
    sys.exit(main())
