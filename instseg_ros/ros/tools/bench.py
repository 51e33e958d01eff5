"""``instseg bench ros``: message conversion speed and cross-process DDS latency.

Measures, in this process:

* building a labeled PointCloud2 (x y z rgb label) of ``--points`` points (default 307,200 =
  640x480) with :func:`~instseg_ros.ros.conversions.labeled_cloud_to_msg` (median over ``--reps``),
  and the same message built by a per-point ``struct.pack`` reference (targets: <= 5 ms median,
  >= 50x faster than the reference);
* reading the cloud back; converting 640x480 rgb8 and 16UC1 images both ways;

and, between this process and a peer publisher subprocess on a private ROS domain with the
project's Fast DDS profile (:func:`~instseg_ros.ros.tools.peer.run_exchange`): one-way latency (receive
wall clock - header stamp set at publish) of 640x480 rgb8 images, 16UC1 depth images, clouds and
ObjectInstanceArray messages, and how many arrived.

Prints readable lines, then one JSON line with every number (ms unless named otherwise).
"""
from __future__ import annotations

import argparse
import json
import struct
import sys
import time

import numpy as np

TARGET_CLOUD_MS = 5.0
TARGET_RATIO = 50.0


def _median_ms(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def reference_cloud_msg(points, colors, labels, header, prelisted: bool = False):
    """The slow way, the bench's baseline: one ``struct.pack`` per point into a PointCloud2.

    Takes the same inputs as :func:`labeled_cloud_to_msg` (float32 (N, 3), uint8 (N, 3), int (N,)),
    so converting them to Python values (``tolist``) is part of its cost. With ``prelisted`` the
    inputs are already lists (points, packed 0x00RRGGBB ints, labels): the loop alone, as fast as a
    per-point pack gets (bound ``Struct.pack``, one ``join``).
    """
    from sensor_msgs.msg import PointCloud2, PointField

    if not prelisted:
        c = np.asarray(colors).astype(np.int64)
        rgb = ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).tolist()
        points, colors, labels = np.asarray(points).tolist(), rgb, np.asarray(labels).tolist()
    pack = struct.Struct("<fffII").pack
    data = b"".join([pack(p[0], p[1], p[2], c, lab) for p, c, lab in zip(points, colors, labels)])
    msg = PointCloud2()
    msg.header = header
    msg.height, msg.width = 1, len(points)
    msg.fields = [PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
                  PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
                  PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
                  PointField(name="rgb", offset=12, datatype=PointField.FLOAT32, count=1),
                  PointField(name="label", offset=16, datatype=PointField.UINT32, count=1)]
    msg.point_step, msg.row_step, msg.is_dense = 20, 20 * len(points), True
    msg.data = data
    return msg


def _latency_ms(items) -> list[float]:
    from instseg_ros.ros.conversions import stamp_to_ns

    return [(t - stamp_to_ns(m.header.stamp)) / 1e6 for t, m in items]


def _stats(values: list[float]) -> dict:
    if not values:
        return {"median": None, "p90": None, "max": None}
    v = np.asarray(values)
    return {"median": round(float(np.median(v)), 3), "p90": round(float(np.percentile(v, 90)), 3),
            "max": round(float(v.max()), 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="instseg bench ros", description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=int, default=640 * 480, help="points per cloud (default 307200)")
    ap.add_argument("--reps", type=int, default=30, help="repetitions of each fast conversion")
    ap.add_argument("--ref-reps", type=int, default=3, help="repetitions of the struct.pack reference")
    ap.add_argument("--images", type=int, default=30, help="image pairs sent across processes")
    ap.add_argument("--clouds", type=int, default=10, help="clouds sent across processes")
    ap.add_argument("--period", type=float, default=0.1, help="s between the peer's publishing rounds")
    ap.add_argument("--no-graph", action="store_true", help="skip the cross-process part")
    args = ap.parse_args(argv)

    # The ROS environment has to be in place before the middleware loads (profile read once).
    from instseg_ros.ros.graph import apply_ros_environment, ros_environment

    env = ros_environment()
    apply_ros_environment(env)

    from std_msgs.msg import Header

    from instseg_ros.ros.conversions import (
        array_to_image,
        image_to_array,
        labeled_cloud_to_msg,
        msg_to_labeled_cloud,
        pack_rgb,
    )

    n = int(args.points)
    rng = np.random.default_rng(0)
    pts = rng.normal(0, 1, (n, 3)).astype(np.float32)
    cols = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    labs = rng.integers(0, 40, n).astype(np.int32)
    header = Header(frame_id="camera_color_optical_frame")

    labeled_cloud_to_msg(pts, cols, labs, header)  # warm-up (page faults, imports)
    cloud_ms = _median_ms(lambda: labeled_cloud_to_msg(pts, cols, labs, header), args.reps)
    msg = labeled_cloud_to_msg(pts, cols, labs, header)
    read_ms = _median_ms(lambda: msg_to_labeled_cloud(msg), args.reps)

    ref_msg = reference_cloud_msg(pts, cols, labs, header)
    if bytes(ref_msg.data) != bytes(msg.data):
        print("bench ros: the struct.pack reference and labeled_cloud_to_msg disagree", file=sys.stderr)
        return 1
    ref_ms = _median_ms(lambda: reference_cloud_msg(pts, cols, labs, header), args.ref_reps)
    lists = (pts.tolist(), pack_rgb(cols).tolist(), labs.tolist())
    ref_loop_ms = _median_ms(lambda: reference_cloud_msg(*lists, header, prelisted=True), args.ref_reps)
    print(f"cloud {n} pts: build {cloud_ms:.2f} ms (target <= {TARGET_CLOUD_MS}), struct.pack reference "
          f"{ref_ms:.0f} ms -> {ref_ms / cloud_ms:.0f}x (target >= {TARGET_RATIO:.0f}x; pack loop alone on "
          f"ready lists {ref_loop_ms:.0f} ms -> {ref_loop_ms / cloud_ms:.0f}x), read back {read_ms:.2f} ms")

    rgb = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    depth_m = rng.uniform(0.2, 4.0, (480, 640)).astype(np.float32)
    rgb_msg = array_to_image(rgb, "rgb8", header)
    depth_msg = array_to_image(depth_m, "16UC1", header)
    img = {
        "rgb8_to_msg_ms": _median_ms(lambda: array_to_image(rgb, "rgb8", header), args.reps),
        "rgb8_from_msg_ms": _median_ms(lambda: image_to_array(rgb_msg), args.reps),
        "depth16_from_metres_to_msg_ms": _median_ms(lambda: array_to_image(depth_m, "16UC1", header), args.reps),
        "depth16_from_msg_to_metres_ms": _median_ms(lambda: image_to_array(depth_msg), args.reps),
    }
    print("images 640x480: " + ", ".join(f"{k} {v:.3f}" for k, v in img.items()))

    result = {
        "bench": "ros",
        "points": n,
        "cloud_build_ms": round(cloud_ms, 3),
        "cloud_build_target_ms": TARGET_CLOUD_MS,
        "cloud_struct_pack_ms": round(ref_ms, 1),
        "cloud_speedup_vs_struct_pack": round(ref_ms / cloud_ms, 1),
        "cloud_speedup_target": TARGET_RATIO,
        "cloud_struct_pack_loop_only_ms": round(ref_loop_ms, 1),
        "cloud_speedup_vs_loop_only": round(ref_loop_ms / cloud_ms, 1),
        "cloud_read_ms": round(read_ms, 3),
        **{k: round(v, 3) for k, v in img.items()},
    }
    result["targets_met"] = bool(cloud_ms <= TARGET_CLOUD_MS and ref_ms / cloud_ms >= TARGET_RATIO)

    if not args.no_graph:
        from instseg_ros.ros.tools.peer import run_exchange

        r = run_exchange(env, images=args.images, clouds=args.clouds, instances=args.images, points=n,
                         period=args.period, timeout=120.0)
        lat = {name: _stats(_latency_ms(items)) for name, items in r.received.items()}
        # depth stamps are set 3 ms after the colour stamp of their pair (approximate sync exercise)
        lat["depth"] = _stats([v + 3.0 for v in _latency_ms(r.received["depth"])])
        sent = {"color": args.images, "depth": args.images, "cloud": args.clouds, "instances": args.images}
        got = {k: len(v) for k, v in r.received.items()}
        print("cross-process one-way latency (ms, median/p90/max), received/sent: " + "; ".join(
            f"{k} {lat[k]['median']}/{lat[k]['p90']}/{lat[k]['max']} {got[k]}/{sent[k]}" for k in sent))
        result.update({
            "latency_image_rgb8_ms": lat["color"]["median"],
            "latency_image_16uc1_ms": lat["depth"]["median"],
            "latency_cloud_ms": lat["cloud"]["median"],
            "latency_instances_ms": lat["instances"]["median"],
            "latency_p90_ms": {k: v["p90"] for k, v in lat.items()},
            "received": got,
            "sent": sent,
            "peer_returncode": r.peer_returncode,
            "sync_pairs": len(r.pairs),
        })
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
