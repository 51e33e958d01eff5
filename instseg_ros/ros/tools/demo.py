"""``instseg demo``: both nodes on the shipped recording, through a real rclpy graph.

1. Starts ``clusternet_node`` and ``occuseg_mapping_node`` as separate processes (parameters from
   ``config/*.yaml``, inputs remapped to the recording's realsense2_camera topics, camera pose from
   ``/camera/pose`` for both: the camera node tracks its instances in the map frame) on a private ROS
   domain limited to this machine.
2. Plays the recording (``instseg_ros/data/demo/bin_sequence``, rosbag2 MCAP read with ``rosbags``)
   with rclpy publishers at ``--rate`` views per second at most; each view waits for the camera
   node's output of the previous one (unless ``--free-run``), so every view is segmented and
   tracked. Headers are restamped with the wall clock at publish time, as a live camera would stamp
   them, so latency = arrival of the output - stamp.
3. Asks the mapping node for a final segmentation (``~/segment``) and a save (``~/save``).
4. Writes to ``--out``: ``outputs/`` (rosbag2 MCAP of every output message and /diagnostics),
   ``overlays/view_XX.png`` (colour | ClusterNet labels | ground truth), ``map.png`` (rendered
   labelled map next to the ground-truth voxels), ``map/map.ply`` + ``map/instances.json`` (from
   ``~/save``), ``logs/`` (node output) and ``summary.json`` (per-frame latency and instance counts,
   per-frame 2D accuracy and map accuracy against the recording's ground truth, and the camera
   tracks' identity consistency: ``camera_id_switches``, ``camera_tracks_per_object``,
   ``camera_confirmed_share``, see :func:`~instseg_ros.eval.demo_metrics.track_metrics`).

Prints the summary's headline numbers as a final JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

from instseg_ros.core.palette import colorize, overlay
from instseg_ros.eval.demo_metrics import (
    MATCH_IOU,
    centroid_errors,
    match_instances,
    track_metrics,
    transfer_gt_to_points,
)
from instseg_ros.ros.bag import DEMO_BAG, BagWriter, deserialize, read_bag
from instseg_ros.ros.graph import apply_ros_environment, ros_environment
from instseg_ros.ros.node_common import package_root
from instseg_ros.ros.tools import recording as rec

#: Seconds to wait for both nodes to load their models and subscribe.
STARTUP_TIMEOUT_S = 120.0
#: Seconds to wait for the last camera outputs after the last frame.
DRAIN_TIMEOUT_S = 30.0
#: Seconds a view waits for the camera node's output before the next view is played (without --free-run).
VIEW_TIMEOUT_S = 30.0
#: Points drawn in map.png (random subset beyond this).
MAX_PLOT_POINTS = 60000


# ----------------------------------------------------------------------------------------- metrics

def centroid_errors_from_messages(inst_msg, pairs, gt_labels: np.ndarray, depth_msg, info_msg) -> list[float]:
    """:func:`~instseg_ros.eval.demo_metrics.centroid_errors` of one view: the published centroids of
    ``inst_msg`` (ObjectInstanceArray) against the ground-truth objects' pixels back-projected with the
    view's own depth (``depth_msg``) and intrinsics (``info_msg``), camera frame, metres."""
    from instseg_ros.core.geometry import backproject
    from instseg_ros.ros.conversions import camera_info_to_intrinsics, image_to_depth

    depth = image_to_depth(depth_msg)
    pts = backproject(depth, camera_info_to_intrinsics(info_msg).K)
    valid = np.isfinite(depth) & (depth > 0)
    cents = {o.id: np.array([o.centroid.x, o.centroid.y, o.centroid.z]) for o in inst_msg.instances}
    return centroid_errors(cents, pairs, gt_labels, pts, valid)


# ----------------------------------------------------------------------------------------- images

def save_overlay(path: Path, rgb: np.ndarray, pred: np.ndarray, gt: np.ndarray, title: str) -> None:
    from PIL import Image, ImageDraw

    panels = [rgb, overlay(rgb, pred), overlay(rgb, gt)]
    img = Image.fromarray(np.concatenate(panels, axis=1))
    d = ImageDraw.Draw(img)
    w = rgb.shape[1]
    for k, text in enumerate(["input", f"clusternet_node: {len(np.unique(pred[pred > 0]))} instances",
                              f"ground truth: {len(np.unique(gt[gt > 0]))} objects"]):
        d.rectangle([k * w, 0, k * w + 8 * len(text) + 8, 16], fill=(0, 0, 0))
        d.text((k * w + 4, 2), text, fill=(255, 255, 255))
    d.text((4, rgb.shape[0] - 14), title, fill=(255, 255, 255))
    img.save(path)


def render_map(path: Path, points: np.ndarray, labels: np.ndarray, gt_points: np.ndarray,
               gt_labels: np.ndarray, title: str) -> None:
    """Orthographic views (top, and oblique 3D) of the labelled map and of the ground-truth voxels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)

    def sub(p, lab):
        if len(p) > MAX_PLOT_POINTS:
            i = rng.choice(len(p), MAX_PLOT_POINTS, replace=False)
            return p[i], lab[i]
        return p, lab

    fig = plt.figure(figsize=(14, 10), dpi=90)
    # the ground-truth voxels are coarser (10 mm) than the map (5 mm): bigger dots
    for row, (p, lab, name, size) in enumerate([(points, labels, "OccuSeg map (occuseg_mapping_node)", 1.0),
                                                (gt_points, gt_labels, "ground truth voxels", 4.0)]):
        p, lab = sub(np.asarray(p), np.asarray(lab))
        c = colorize(lab).astype(np.float32) / 255.0
        c[lab == 0] = (0.75, 0.75, 0.75)
        ax = fig.add_subplot(2, 2, 2 * row + 1)
        order = np.argsort(p[:, 2]) if len(p) else np.zeros(0, int)
        ax.scatter(p[order, 0], p[order, 1], c=c[order], s=size, linewidths=0)
        ax.set_aspect("equal")
        ax.set_title(f"{name}: top view ({len(np.unique(lab[lab > 0]))} instances)")
        ax.set_xlabel("x [m]")
        ax.set_ylabel("y [m]")
        ax3 = fig.add_subplot(2, 2, 2 * row + 2, projection="3d", proj_type="ortho")
        ax3.scatter(p[:, 0], p[:, 1], p[:, 2], c=c, s=0.6 * size, linewidths=0)
        ax3.view_init(elev=35, azim=-60)
        ax3.set_title(f"{name}: oblique")
        if len(p):
            span = (p.max(0) - p.min(0)).max() / 2
            mid = (p.max(0) + p.min(0)) / 2
            ax3.set_xlim(mid[0] - span, mid[0] + span)
            ax3.set_ylim(mid[1] - span, mid[1] + span)
            ax3.set_zlim(mid[2] - span, mid[2] + span)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ----------------------------------------------------------------------------------------- the graph

def load_views(bag: Path) -> tuple[list[dict], object, dict]:
    """Recording -> (views: list of {"color", "depth", "info", "pose", "gt_labels"} rclpy messages in
    stamp order, ground-truth voxel PointCloud2, recording.json dict)."""
    from instseg_ros.ros.conversions import stamp_to_ns

    by_stamp: dict[int, dict] = {}
    gt_voxels = None
    names = {rec.COLOR_TOPIC: "color", rec.DEPTH_TOPIC: "depth", rec.INFO_TOPIC: "info",
             rec.POSE_TOPIC: "pose", rec.GT_LABELS_TOPIC: "gt_labels"}
    for topic, typ, _t, raw in read_bag(bag):
        msg = deserialize(raw, typ)
        if topic == rec.GT_VOXELS_TOPIC:
            gt_voxels = msg
        elif topic in names:
            s = stamp_to_ns(msg.header.stamp)
            by_stamp.setdefault(s, {})[names[topic]] = msg
    views = [by_stamp[s] for s in sorted(by_stamp)]
    missing = [i for i, v in enumerate(views) if set(v) != set(names.values())]
    if missing or gt_voxels is None or not views:
        raise ValueError(f"{bag} is not a complete demo recording (views missing topics: {missing}, "
                         f"ground-truth voxels: {gt_voxels is not None})")
    meta_path = bag / "recording.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return views, gt_voxels, meta


def _restamp(msg, stamp) -> None:
    msg.header.stamp = stamp


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="instseg demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="demo_out", help="output directory (created; existing files replaced)")
    ap.add_argument("--bag", default=str(DEMO_BAG), help="recording to play (rosbag2 directory)")
    ap.add_argument("--rate", type=float, default=2.0, help="views published per second (at most)")
    ap.add_argument("--free-run", action="store_true",
                    help="publish at --rate without waiting for the camera node's output of each view (a slow "
                         "CPU then drops views, as with a live camera)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda for both models")
    ap.add_argument("--clusternet-model", default="", help="ClusterNet weights ('' = models/clusternet_lite.pt)")
    ap.add_argument("--occuseg-model", default="", help="OccuSeg weights ('' = the mapping node's default)")
    a = ap.parse_args(argv)
    if not a.rate > 0:
        ap.error("--rate must be > 0")
    t_start = time.monotonic()
    out = Path(a.out)
    for sub in ("overlays", "logs", "map"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    views, gt_voxels_msg, rec_meta = load_views(Path(a.bag))
    print(f"demo: {len(views)} views from {a.bag}; outputs -> {out.resolve()}", flush=True)

    env = ros_environment()
    apply_ros_environment(env)
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import MultiThreadedExecutor
    from sensor_msgs.msg import Image, PointCloud2
    from std_srvs.srv import Trigger
    from visualization_msgs.msg import MarkerArray

    from instseg_ros.msg import ObjectInstanceArray
    from instseg_ros.ros.conversions import image_to_array, image_to_rgb, msg_to_labeled_cloud, ns_to_stamp, stamp_to_ns
    from instseg_ros.ros.graph import wait_until
    from instseg_ros.ros.tools.launcher import Collector, FramePublisher, NodeProcess, node_command

    cfg_dir = package_root() / "config"
    remaps = {"color/image_raw": rec.COLOR_TOPIC, "aligned_depth_to_color/image_raw": rec.DEPTH_TOPIC,
              "color/camera_info": rec.INFO_TOPIC}
    # the recording's poses let the camera node track in the map frame while the camera moves
    cn_params = {"device": a.device, "pose_source": "topic"}
    if a.clusternet_model:
        cn_params["model_path"] = str(Path(a.clusternet_model).resolve())
    map_params = {"device": a.device, "pose_source": "topic", "save_dir": str((out / "map").resolve())}
    if a.occuseg_model:
        map_params["model_path"] = str(Path(a.occuseg_model).resolve())
    bounds = rec_meta.get("sequence_meta", {}).get("bounds")
    if bounds:  # crop the map to the recorded bin / table, as a deployment sets its workspace box
        map_params["workspace_min"], map_params["workspace_max"] = list(bounds[0]), list(bounds[1])
    cn_cmd = node_command("clusternet_node", params_file=cfg_dir / "clusternet_node.yaml", params=cn_params,
                          remaps={**remaps, "pose": rec.POSE_TOPIC})
    map_cmd = node_command("occuseg_mapping_node", params_file=cfg_dir / "occuseg_mapping_node.yaml",
                           params=map_params, remaps={**remaps, "pose": rec.POSE_TOPIC})
    cn_out = {t: f"/clusternet_node/{t}" for t in ("instances", "labels", "cloud", "markers")}
    map_out = {t: f"/occuseg_mapping_node/{t}" for t in ("instances", "map_cloud", "markers")}
    types = {cn_out["instances"]: ObjectInstanceArray, cn_out["labels"]: Image, cn_out["cloud"]: PointCloud2,
             cn_out["markers"]: MarkerArray, map_out["instances"]: ObjectInstanceArray,
             map_out["map_cloud"]: PointCloud2, map_out["markers"]: MarkerArray, "/diagnostics": DiagnosticArray}

    rclpy.init()
    node = rclpy.create_node("instseg_demo")
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    procs = [NodeProcess(cn_cmd, env, out / "logs" / "clusternet_node.log"),
             NodeProcess(map_cmd, env, out / "logs" / "occuseg_mapping_node.log")]
    summary: dict = {}
    try:
        pub = FramePublisher(node, rec.CAMERA_NS)
        pose_pub = node.create_publisher(type(views[0]["pose"]), rec.POSE_TOPIC, 10)
        col = Collector(node, types)

        def failed() -> bool:
            return not all(p.alive() for p in procs) or any("autostart:" in p.output() for p in procs)

        ok = wait_until(lambda: all(p.get_subscription_count() >= 2 for p in pub.publishers)
                        and pose_pub.get_subscription_count() >= 2 or failed(), STARTUP_TIMEOUT_S)
        if not ok or failed():
            for p in procs:
                print(f"--- {p.log}:\n{p.output()[-3000:]}", file=sys.stderr)
            raise RuntimeError("the nodes did not start (see the logs above)")
        t_ready = time.monotonic()
        print(f"demo: nodes up after {t_ready - t_start:.1f} s; playing at {a.rate} views/s at most"
              f"{'' if a.free_run else ', each view after the camera node answered the previous one'}", flush=True)

        stamps: list[int] = []
        period = 1.0 / a.rate
        next_t = time.monotonic()
        for v in views:
            now = time.time_ns()
            st = ns_to_stamp(now)
            for key in ("color", "depth", "info", "pose"):
                _restamp(v[key], st)
            stamps.append(now)
            pose_pub.publish(v["pose"])
            pub.publish_msgs(v["color"], v["depth"], v["info"])
            if not a.free_run:
                # the next view waits for the camera node's output of this one: every view is
                # segmented and tracked even where the network needs seconds per frame
                wait_until(lambda: _stamps_seen(col.get(cn_out["instances"]), stamps[-1:]) >= 1, VIEW_TIMEOUT_S)
            next_t = max(next_t + period, time.monotonic())
            time.sleep(max(0.0, next_t - time.monotonic()))
        wait_until(lambda: _stamps_seen(col.get(cn_out["instances"]), stamps) >= len(stamps), DRAIN_TIMEOUT_S)
        t_played = time.monotonic()

        seg_cli = node.create_client(Trigger, "/occuseg_mapping_node/segment")
        save_cli = node.create_client(Trigger, "/occuseg_mapping_node/save")
        n_map_before = col.count(map_out["map_cloud"])
        seg = _call(seg_cli, 180.0)
        wait_until(lambda: col.count(map_out["map_cloud"]) > n_map_before, 20.0)
        save = _call(save_cli, 60.0)
        print(f"demo: ~/segment: {seg.message}; ~/save: {save.message}", flush=True)
    except RuntimeError as e:
        print(f"instseg demo: {e}", file=sys.stderr)
        return 1
    finally:
        codes = [p.stop() for p in procs]
        executor.shutdown(timeout_sec=2.0)
        spinner.join(timeout=5.0)
        node.destroy_node()
        rclpy.try_shutdown()

    # ---------------------------------------------------------------------------- outputs
    bag_out = out / "outputs"
    with BagWriter(bag_out) as bw:
        for topic in types:
            for recv, msg in col.get(topic):
                bw.write(topic, msg, recv)
        counts = dict(bw.counts)

    by_stamp = {}
    for recv, m in col.get(cn_out["instances"]):
        by_stamp[stamp_to_ns(m.header.stamp)] = (recv, m)
    labels_by_stamp = {stamp_to_ns(m.header.stamp): m
                       for _, m in col.get(cn_out["labels"])}
    from instseg_ros.ros.node_params import ClusterNetNodeConfig, config_from_yaml

    cn_cfg = config_from_yaml(ClusterNetNodeConfig, cfg_dir / "clusternet_node.yaml", "clusternet_node", cn_params)
    # the first min_hits - 1 frames the node processes cannot have confirmed tracks yet (nothing is
    # published there by design): they are "warm-up" frames, reported but kept out of the *_after_warmup means
    warmup_frames = cn_cfg.min_hits - 1 if cn_cfg.tracking else 0
    frames = []
    n_processed = 0
    for k, (v, s) in enumerate(zip(views, stamps)):
        gt = image_to_array(v["gt_labels"], metres=False).astype(np.int64)
        entry = {"view": k, "stamp_ns": s, "published": s in by_stamp}
        if s in by_stamp:
            recv, m = by_stamp[s]
            entry.update(latency_ms=(recv - s) * 1e-6, instances=len(m.instances),
                         confirmed=sum(bool(o.confirmed) for o in m.instances), warmup=n_processed < warmup_frames)
            n_processed += 1
            if s in labels_by_stamp:
                pred = image_to_array(labels_by_stamp[s], metres=False).astype(np.int64)
                acc = match_instances(pred, gt)
                entry["accuracy_2d"] = acc
                entry["centroid_errors_m"] = centroid_errors_from_messages(m, acc["pairs"], gt, v["depth"], v["info"])
                save_overlay(out / "overlays" / f"view_{k:02d}.png", image_to_rgb(v["color"]), pred, gt,
                             f"view {k}: latency {entry['latency_ms']:.0f} ms")
        frames.append(entry)

    map_msgs = col.get(map_out["map_cloud"])
    map_summary: dict = {"segmentations_received": len(map_msgs)}
    if map_msgs:
        cloud = msg_to_labeled_cloud(map_msgs[-1][1])
        gtc = msg_to_labeled_cloud(gt_voxels_msg)
        vox = float(rec_meta.get("voxel_size", 0.005))
        gt_lab, has = transfer_gt_to_points(cloud.points, gtc.points, gtc.labels.astype(np.int64), 1.5 * vox)
        acc = match_instances(cloud.labels.astype(np.int64), gt_lab, ignore=~has)
        ids_runs = [sorted(o.id for o in m.instances) for _, m in col.get(map_out["instances"])]
        map_summary.update(points=len(cloud.points), points_with_gt=int(has.sum()), accuracy=acc,
                           instance_ids_per_run=ids_runs)
        render_map(out / "map.png", cloud.points, cloud.labels.astype(np.int64), gtc.points,
                   gtc.labels.astype(np.int64),
                   f"labelled map after {len(views)} views: {acc['n_pred']} instances, "
                   f"{acc['matched']}/{acc['n_gt']} objects matched at IoU {MATCH_IOU}")

    lat = [f["latency_ms"] for f in frames if "latency_ms" in f]
    acc2d = [f["accuracy_2d"] for f in frames if "accuracy_2d" in f]
    acc2d_warm = [f["accuracy_2d"] for f in frames if "accuracy_2d" in f and not f["warmup"]]
    tracks = track_metrics([f["accuracy_2d"]["pairs"] for f in frames if "accuracy_2d" in f])
    n_inst = sum(f.get("instances", 0) for f in frames)
    confirmed_share = sum(f.get("confirmed", 0) for f in frames) / n_inst if n_inst else None
    summary = {
        "recording": str(a.bag), "views": len(views), "rate_hz": a.rate, "device": a.device,
        "wall_s": {"total": time.monotonic() - t_start, "startup": t_ready - t_start, "play": t_played - t_ready},
        "node_exit_codes": codes,
        "camera": {
            "frames_published": sum(f["published"] for f in frames),
            "latency_ms": {"mean": float(np.mean(lat)) if lat else None,
                           "p50": float(np.median(lat)) if lat else None,
                           "max": float(np.max(lat)) if lat else None},
            "mean_precision_2d": float(np.mean([x["precision"] for x in acc2d])) if acc2d else None,
            "mean_recall_2d": float(np.mean([x["recall"] for x in acc2d])) if acc2d else None,
            "mean_precision_2d_after_warmup": (float(np.mean([x["precision"] for x in acc2d_warm]))
                                               if acc2d_warm else None),
            "mean_recall_2d_after_warmup": float(np.mean([x["recall"] for x in acc2d_warm])) if acc2d_warm else None,
            "warmup_frames": warmup_frames,
            "tracking": {"enabled": cn_cfg.tracking, "pose_source": cn_cfg.pose_source, "min_hits": cn_cfg.min_hits,
                         "max_age_s": cn_cfg.max_age_s, **tracks},
            "centroid_error_m_median": (float(np.median(errs)) if (errs := [e for f in frames
                                        for e in f.get("centroid_errors_m", [])]) else None),
            "frames": frames,
        },
        "camera_id_switches": tracks["id_switches"],
        "camera_tracks_per_object": tracks["tracks_per_object"],
        "camera_confirmed_share": confirmed_share,
        "map": map_summary,
        "services": {"segment": seg.message, "save": save.message},
        "output_bag": {"path": str(bag_out), "messages": counts},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    head = {"views": len(views), "camera_frames": summary["camera"]["frames_published"],
            "camera_latency_ms_p50": summary["camera"]["latency_ms"]["p50"],
            "camera_recall_2d": summary["camera"]["mean_recall_2d"],
            "camera_recall_2d_after_warmup": summary["camera"]["mean_recall_2d_after_warmup"],
            "camera_precision_2d_after_warmup": summary["camera"]["mean_precision_2d_after_warmup"],
            "camera_id_switches": tracks["id_switches"], "camera_tracks_per_object": tracks["tracks_per_object"],
            "camera_confirmed_share": confirmed_share,
            "camera_centroid_error_m_median": summary["camera"]["centroid_error_m_median"],
            "map_instances": map_summary.get("accuracy", {}).get("n_pred"),
            "map_recall": map_summary.get("accuracy", {}).get("recall"),
            "map_precision": map_summary.get("accuracy", {}).get("precision"),
            "wall_s": round(summary["wall_s"]["total"], 1), "out": str(out.resolve())}
    print(json.dumps(head), flush=True)
    return 0


def _stamps_seen(msgs, stamps) -> int:
    from instseg_ros.ros.conversions import stamp_to_ns

    seen = {stamp_to_ns(m.header.stamp) for _, m in msgs}
    return sum(s in seen for s in stamps)


def _call(client, timeout: float):
    """Call a std_srvs/Trigger service (the executor spins in another thread); RuntimeError on timeout."""
    from std_srvs.srv import Trigger

    if not client.wait_for_service(timeout_sec=20.0):
        raise RuntimeError(f"service {client.srv_name} is not available")
    fut = client.call_async(Trigger.Request())
    deadline = time.monotonic() + timeout
    while not fut.done() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not fut.done():
        raise RuntimeError(f"service {client.srv_name} did not answer within {timeout} s")
    return fut.result()


if __name__ == "__main__":
    sys.exit(main())
