"""README command 1's ``instseg demo``, end to end with the shipped models and recording: both nodes
as processes, every output recorded, PNGs and a summary whose accuracy is recomputed here from the
output bag with pycocotools (an independent IoU implementation)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.graph

ROOT = Path(__file__).resolve().parents[3]
OUTPUT_TOPICS = ["/clusternet_node/instances", "/clusternet_node/labels", "/clusternet_node/cloud",
                 "/clusternet_node/markers", "/occuseg_mapping_node/instances", "/occuseg_mapping_node/map_cloud",
                 "/occuseg_mapping_node/markers", "/diagnostics"]


def _rle(labels: np.ndarray, ids: np.ndarray):
    """pycocotools RLE masks of ``ids`` in an int (H, W) label image."""
    from pycocotools import mask as mask_utils

    return mask_utils.encode(np.asfortranarray(np.stack([labels == i for i in ids], -1).astype(np.uint8)))


@pytest.fixture(scope="module")
def demo(ros_env, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo_out"
    proc = subprocess.run([sys.executable, "-m", "instseg_ros.cli", "demo", "--out", str(out), "--device", "cpu"],
                          env=ros_env, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    head = json.loads(proc.stdout.strip().splitlines()[-1])
    return out, head, json.loads((out / "summary.json").read_text())


def test_demo_runs_both_nodes_and_writes_every_output(demo):
    from instseg_ros.ros.bag import read_bag

    out, head, summary = demo
    assert summary["node_exit_codes"] == [0, 0]
    assert head["views"] == summary["views"] == 6
    cam = summary["camera"]
    assert cam["frames_published"] >= 1
    for f in cam["frames"]:
        if f["published"]:
            assert f["latency_ms"] > 0 and f["instances"] >= 0
            png = out / "overlays" / f"view_{f['view']:02d}.png"
            with Image.open(png) as im:
                assert im.size == (3 * 640, 480)
    assert summary["map"]["segmentations_received"] >= 1
    assert "instances over" in summary["services"]["segment"]
    with Image.open(out / "map.png") as im:
        assert im.size[0] > 500
    assert (out / "map" / "map.ply").stat().st_size > 0
    counts = {}
    for topic, _, _, _ in read_bag(out / "outputs"):
        counts[topic] = counts.get(topic, 0) + 1
    assert set(counts) == set(OUTPUT_TOPICS)
    assert counts == summary["output_bag"]["messages"]
    assert counts["/clusternet_node/instances"] == cam["frames_published"]


def test_matched_camera_instances_sit_at_their_ground_truth_centroids(demo):
    """ClusterNet instances matched to a ground-truth object (mask IoU >= 0.5) sit at the centroid of
    that object's visible pixels (same input depth): median error under 2 cm, none over 6 cm (a
    half-overlapping mask of a 20 cm object can move its centroid a few cm)."""
    _, _, summary = demo
    errors = [e for f in summary["camera"]["frames"] for e in f.get("centroid_errors_m", [])]
    assert len(errors) >= 1, "no camera instance matched any ground-truth object"
    assert np.median(errors) < 0.02 and max(errors) < 0.06, errors


def test_summary_accuracy_matches_an_independent_recomputation(demo):
    from pycocotools import mask as mask_utils

    from instseg_ros.ros.bag import DEMO_BAG, deserialize, read_bag
    from instseg_ros.ros.conversions import image_to_array, stamp_to_ns
    from instseg_ros.ros.tools.demo import load_views

    out, _, summary = demo
    views, _, _ = load_views(DEMO_BAG)
    frames = {f["stamp_ns"]: f for f in summary["camera"]["frames"] if "accuracy_2d" in f}
    checked = 0
    for _topic, typ, _, raw in read_bag(out / "outputs", ["/clusternet_node/labels"]):
        m = deserialize(raw, typ)
        s = stamp_to_ns(m.header.stamp)
        f = frames[s]
        pred = image_to_array(m, metres=False).astype(np.int64)
        gt = image_to_array(views[f["view"]]["gt_labels"], metres=False).astype(np.int64)
        pid, gid = np.unique(pred[pred > 0]), np.unique(gt[gt > 0])
        if len(pid) == 0:  # e.g. the first view: no track is confirmed yet
            assert f["accuracy_2d"]["matched"] == 0
            checked += 1
            continue
        iou = mask_utils.iou(_rle(pred, pid), _rle(gt, gid), [0] * len(gid))
        # greedy one-to-one matching at 0.5: with IoU > 0.5 a pair is unique anyway
        matched = int(((iou >= 0.5).sum(axis=1) > 0).sum())
        assert f["accuracy_2d"]["matched"] == matched
        assert f["accuracy_2d"]["n_gt"] == len(gid) and f["accuracy_2d"]["n_pred"] == len(pid)
        np.testing.assert_allclose(f["accuracy_2d"]["mean_best_iou"], iou.max(axis=0).mean(), atol=1e-9)
        checked += 1
    assert checked == len(frames) >= 1


def test_camera_tracks_keep_their_ids_over_the_moving_camera(demo):
    """The issue's bar on the shipped recording (camera moving over a static table, poses on a
    topic): at most one id switch and at most 1.3 track ids per ground-truth object, recomputed
    here from the output bag with pycocotools IoU; every view is processed (the demo waits for the
    camera node), the first publishes nothing (tracks are confirmed on their second frame), and
    every published instance is a confirmed track."""
    from pycocotools import mask as mask_utils

    from instseg_ros.ros.bag import DEMO_BAG, deserialize, read_bag
    from instseg_ros.ros.conversions import image_to_array, stamp_to_ns
    from instseg_ros.ros.tools.demo import load_views

    out, head, summary = demo
    views, _, _ = load_views(DEMO_BAG)
    cam = summary["camera"]
    assert cam["frames_published"] == len(views)
    assert cam["frames"][0]["instances"] == 0 and cam["frames"][0]["warmup"]
    assert summary["camera_id_switches"] <= 1 and summary["camera_tracks_per_object"] <= 1.3, cam["tracking"]
    assert head["camera_id_switches"] == summary["camera_id_switches"]
    assert summary["camera_confirmed_share"] == 1.0
    view_of = {f["stamp_ns"]: f["view"] for f in cam["frames"]}
    ids_per_object: dict[int, list[int]] = {}
    n_inst = 0
    for topic, typ, _, raw in read_bag(out / "outputs", ["/clusternet_node/labels", "/clusternet_node/instances"]):
        m = deserialize(raw, typ)
        if topic == "/clusternet_node/instances":
            assert all(o.confirmed and o.hits >= 2 for o in m.instances)
            n_inst += len(m.instances)
            continue
        pred = image_to_array(m, metres=False).astype(np.int64)
        gt = image_to_array(views[view_of[stamp_to_ns(m.header.stamp)]]["gt_labels"],
                            metres=False).astype(np.int64)
        pid, gid = np.unique(pred[pred > 0]), np.unique(gt[gt > 0])
        if not len(pid):
            continue
        iou = mask_utils.iou(_rle(pred, pid), _rle(gt, gid), [0] * len(gid))
        for a, b in zip(*np.nonzero(iou >= 0.5)):   # IoU > 0.5 pairs are one-to-one
            ids_per_object.setdefault(int(gid[b]), []).append(int(pid[a]))
    assert n_inst > 0
    switches = sum(sum(x != y for x, y in zip(s, s[1:])) for s in ids_per_object.values())
    assert switches == summary["camera_id_switches"]
    assert np.mean([len(set(s)) for s in ids_per_object.values()]) == pytest.approx(summary["camera_tracks_per_object"])
