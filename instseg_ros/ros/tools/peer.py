"""A publisher process for real-graph tests and ``instseg bench ros``.

``python -m instseg_ros.ros.tools.peer --prefix /t123 --images 10 --clouds 5 --instances 10`` publishes
deterministic payloads on

* ``<prefix>/color``     sensor_msgs/Image rgb8 640x480,
* ``<prefix>/depth``     sensor_msgs/Image 16UC1 640x480 (mm),
* ``<prefix>/cloud``     sensor_msgs/PointCloud2 x y z rgb label (``--points`` points),
* ``<prefix>/instances`` instseg_ros/ObjectInstanceArray,

with reliable QoS whose history holds every message, after waiting until each topic has a
matched subscription. Message k carries ``header.frame_id = "peer/<k>"`` so the receiver can
rebuild the expected payload with the ``expected_*`` functions below, and ``header.stamp`` = the
wall clock (CLOCK_REALTIME, shared by processes on one machine) at ``publish``, so the receiver
measures one-way latency. Colour and depth of pair k get stamps ``depth_offset`` apart
(default 3 ms, like a real aligned stream) to exercise approximate synchronisation.

After publishing it stays alive (reliable delivery may need retransmissions) until every
subscription has gone away or ``--linger`` seconds pass, then prints one JSON line and exits 0
(exit 3 if subscribers never matched within ``--match-timeout``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from instseg_ros.core.instances import Instances

WIDTH, HEIGHT = 640, 480
FRAME_PREFIX = "peer/"


def frame_id(k: int) -> str:
    return f"{FRAME_PREFIX}{k}"


def index_of(frame: str) -> int:
    """Message index from a ``peer/<k>`` frame id (ValueError otherwise)."""
    if not frame.startswith(FRAME_PREFIX):
        raise ValueError(f"frame_id {frame!r} does not come from the peer")
    return int(frame[len(FRAME_PREFIX):])


def expected_color(k: int) -> np.ndarray:
    """uint8 (480, 640, 3) RGB payload of message k."""
    return np.random.default_rng(1000 + k).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def expected_depth(k: int) -> np.ndarray:
    """uint16 (480, 640) depth payload of message k, millimetres (0 = invalid on ~5 %)."""
    d = np.random.default_rng(2000 + k).integers(200, 4000, (HEIGHT, WIDTH), dtype=np.uint16)
    d[::20, ::1] = 0
    return d


def expected_cloud(k: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points float32 (n, 3) m, colors uint8 (n, 3), labels uint32 (n,)) of cloud k."""
    rng = np.random.default_rng(3000 + k)
    pts = rng.normal(0.0, 0.5, (n, 3)).astype(np.float32)
    cols = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    labs = rng.integers(0, 64, n).astype(np.uint32)
    return pts, cols, labs


def expected_instances(k: int, n: int = 6) -> Instances:
    """n objects with random SPD covariances (no label image) for message k."""
    rng = np.random.default_rng(4000 + k)
    A = rng.normal(0.0, 0.05, (n, 3, 3))
    return Instances(
        labels=np.zeros(0, np.int32),
        ids=np.arange(1, n + 1) * 3 + k,
        centroids=rng.uniform(-1, 1, (n, 3)),
        covariances=A @ A.transpose(0, 2, 1) + 1e-6 * np.eye(3),
        scores=rng.uniform(0, 1, n).astype(np.float32),
        num_points=rng.integers(10, 5000, n),
        class_ids=rng.integers(0, 5, n),
        occupancy=rng.uniform(0, 900, n).astype(np.float32),
    )


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m instseg_ros.ros.tools.peer", description=__doc__.split("\n")[0])
    ap.add_argument("--prefix", required=True, help="topic namespace, e.g. /instseg_test_1234")
    ap.add_argument("--images", type=int, default=10, help="colour + depth pairs to publish")
    ap.add_argument("--clouds", type=int, default=5, help="point clouds to publish")
    ap.add_argument("--instances", type=int, default=10, help="ObjectInstanceArray messages to publish")
    ap.add_argument("--points", type=int, default=300_000, help="points per cloud")
    ap.add_argument("--period", type=float, default=0.05, help="seconds between publishing rounds")
    ap.add_argument("--depth-offset", type=float, default=0.003, help="depth stamp - colour stamp, s")
    ap.add_argument("--match-timeout", type=float, default=20.0, help="s to wait for subscribers")
    ap.add_argument("--linger", type=float, default=30.0, help="s to stay alive after publishing")
    ap.add_argument("--reliability", default="reliable", choices=["reliable", "best_effort"],
                    help="QoS reliability of every topic")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image, PointCloud2
    from std_msgs.msg import Header

    from instseg_ros.msg import ObjectInstanceArray
    from instseg_ros.ros.conversions import array_to_image, instances_to_msg, labeled_cloud_to_msg, ns_to_stamp
    from instseg_ros.ros.graph import image_qos, wait_for_subscribers, wait_until

    counts = {"color": args.images, "depth": args.images, "cloud": args.clouds, "instances": args.instances}
    # Build everything first: publishing then costs only the middleware, so stamps measure transport.
    msgs: dict[str, list] = {k: [] for k in counts}
    for k in range(args.images):
        h = Header(frame_id=frame_id(k))
        msgs["color"].append(array_to_image(expected_color(k), "rgb8", h))
        msgs["depth"].append(array_to_image(expected_depth(k), "16UC1", h))
    for k in range(args.clouds):
        pts, cols, labs = expected_cloud(k, args.points)
        msgs["cloud"].append(labeled_cloud_to_msg(pts, cols, labs, Header(frame_id=frame_id(k))))
    for k in range(args.instances):
        msgs["instances"].append(instances_to_msg(expected_instances(k), Header(frame_id=frame_id(k))))

    types = {"color": Image, "depth": Image, "cloud": PointCloud2, "instances": ObjectInstanceArray}
    context = rclpy.Context()
    rclpy.init(args=[], context=context)
    try:
        node = rclpy.create_node("instseg_peer", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        pubs = {name: node.create_publisher(types[name], f"{args.prefix}/{name}",
                                            image_qos(args.reliability, depth=max(1, counts[name])))
                for name in counts if counts[name] > 0}
        t0 = time.monotonic()
        if not wait_for_subscribers(pubs.values(), timeout=args.match_timeout, spin_once=executor.spin_once):
            print(json.dumps({"error": "no subscriber matched", "topics": sorted(pubs)}), flush=True)
            return 3
        match_s = time.monotonic() - t0
        rounds = max(counts.values())
        offset_ns = int(round(args.depth_offset * 1e9))
        for k in range(rounds):
            color_ns = None
            for name, pub in pubs.items():  # dict order: color before depth
                if k >= counts[name]:
                    continue
                m = msgs[name][k]
                if name == "depth" and color_ns is not None:
                    stamp_ns = color_ns + offset_ns
                else:
                    stamp_ns = time.time_ns()
                if name == "color":
                    color_ns = stamp_ns
                m.header.stamp = ns_to_stamp(stamp_ns)
                pub.publish(m)
            executor.spin_once(timeout_sec=args.period)
        wait_until(lambda: all(p.get_subscription_count() == 0 for p in pubs.values()), args.linger,
                   executor.spin_once)
        print(json.dumps({"published": {n: counts[n] for n in pubs}, "match_s": round(match_s, 3)}), flush=True)
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    return 0


if __name__ == "__main__":
    sys.exit(main())


# ----------------------------------------------------------------------------------------------
# The receiving side (this process), used by test/ros and instseg bench ros
# ----------------------------------------------------------------------------------------------

@dataclass
class ExchangeResult:
    """What :func:`run_exchange` received.

    Attributes:
        received: topic name ("color", "depth", "cloud", "instances") -> list of
            (receive wall-clock ns, message) in arrival order.
        pairs: (color, depth) sets delivered by an :class:`ApproximateTimeSynchronizer` fed live
            from the two image subscriptions.
        sync_stats: that synchronizer's counters.
        peer_returncode: exit status of the publisher process (negative if it had to be killed).
        peer_output: its stdout + stderr (for failure messages).
        elapsed_s: wall time from spawning the peer to the last message.
    """

    received: dict[str, list[tuple[int, Any]]]
    pairs: list[tuple[Any, Any]]
    sync_stats: Any
    peer_returncode: int | None
    peer_output: str
    elapsed_s: float


def run_exchange(env: dict[str, str], prefix: str | None = None, images: int = 10, clouds: int = 5,
                 instances: int = 10, points: int = 300_000, period: float = 0.05, timeout: float = 60.0,
                 slop: float = 0.01, reliability: str = "reliable") -> ExchangeResult:
    """Spawn a peer publisher (``sys.executable -m instseg_ros.ros.tools.peer``) and receive everything.

    ``env`` (from :func:`~instseg_ros.ros.graph.ros_environment`) is the peer's environment; this
    process must already run with the same ROS_DOMAIN_ID and profile (apply it before the first
    ``rclpy.init``: Fast DDS reads its XML profile once per process). Subscriptions are reliable with a
    history as deep as the message count, and exist before the peer starts, so the peer's
    match-then-publish guarantees delivery (with ``reliability="reliable"``; "best_effort" is what
    camera drivers use and measures what the transport loses). Returns after every expected message arrived, the
    peer failed, or ``timeout`` seconds.
    """
    import os
    import subprocess
    import uuid

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image, PointCloud2

    from instseg_ros.msg import ObjectInstanceArray
    from instseg_ros.ros.graph import image_qos
    from instseg_ros.ros.sync import ApproximateTimeSynchronizer

    for key in ("ROS_DOMAIN_ID", "FASTRTPS_DEFAULT_PROFILES_FILE", "ROS_AUTOMATIC_DISCOVERY_RANGE"):
        if os.environ.get(key) != env.get(key):
            raise RuntimeError(f"this process has {key}={os.environ.get(key)!r} but the peer gets "
                               f"{env.get(key)!r}: apply_ros_environment(env) before rclpy.init")
    prefix = prefix or f"/instseg_peer_{uuid.uuid4().hex[:8]}"
    counts = {"color": images, "depth": images, "cloud": clouds, "instances": instances}
    types = {"color": Image, "depth": Image, "cloud": PointCloud2, "instances": ObjectInstanceArray}
    received: dict[str, list[tuple[int, Any]]] = {k: [] for k in counts}
    pairs: list[tuple[Any, Any]] = []
    sync = ApproximateTimeSynchronizer(2, lambda c, d: pairs.append((c, d)), queue_size=max(images, 1) + 2,
                                       slop=slop)

    def on_msg(name: str):
        def cb(msg) -> None:
            received[name].append((time.time_ns(), msg))
            if name == "color":
                sync.add(0, msg)
            elif name == "depth":
                sync.add(1, msg)
        return cb

    context = rclpy.Context()
    rclpy.init(args=[], context=context)
    proc = None
    try:
        node = rclpy.create_node(f"instseg_receiver_{uuid.uuid4().hex[:6]}", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        subs = [node.create_subscription(types[n], f"{prefix}/{n}", on_msg(n), image_qos(reliability, max(1, c)))
                for n, c in counts.items() if c > 0]
        cmd = [sys.executable, "-m", "instseg_ros.ros.tools.peer", "--prefix", prefix, "--images", str(images),
               "--clouds", str(clouds), "--instances", str(instances), "--points", str(points),
               "--period", str(period), "--linger", str(timeout), "--reliability", reliability]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = t0 + timeout
        done = lambda: all(len(received[n]) >= c for n, c in counts.items())  # noqa: E731
        while not done() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
            if proc.poll() is not None and proc.returncode != 0:
                break
        # Let any set still in flight settle, without waiting for messages that will not come.
        elapsed = time.monotonic() - t0
        for s in subs:
            node.destroy_subscription(s)
        executor.spin_once(timeout_sec=0.01)
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
        if proc is not None:
            try:
                out, _ = proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
    return ExchangeResult(received=received, pairs=pairs, sync_stats=sync.stats(),
                          peer_returncode=proc.returncode, peer_output=out or "", elapsed_s=elapsed)
