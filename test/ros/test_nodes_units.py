"""Node pieces that need no graph: parameter configs, the grasp rule,
the one-slot worker, launch files and the RViz config."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from instseg_ros.ros.grasp_consumer import most_graspable
from instseg_ros.ros.node_common import LatestFrameWorker, SyncWatch
from instseg_ros.ros.node_params import (
    ClusterNetNodeConfig,
    MappingNodeConfig,
    config_from_values,
    config_from_yaml,
    default_values,
)
from instseg_ros.ros.sync import SyncStats

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------ parameters

@pytest.mark.parametrize("cls, name", [(ClusterNetNodeConfig, "clusternet_node"),
                                       (MappingNodeConfig, "occuseg_mapping_node")])
def test_shipped_yaml_sets_every_parameter_to_its_documented_default(cls, name):
    path = ROOT / "config" / f"{name}.yaml"
    doc = yaml.safe_load(path.read_text())
    key = f"/**/{name}"  # matches the node in any namespace (test_launch_files checks this with rclpy)
    params = doc[key]["ros__parameters"]
    known = set(default_values(cls)) | {"autostart"}
    assert set(params) - known == set(), f"{path} has keys the node does not declare"
    # the YAML and the dataclass defaults agree (workspace_* is optional in the YAML)
    assert config_from_yaml(cls, path, key) == cls()
    assert set(default_values(cls)) - set(params) <= {"workspace_min", "workspace_max"}


@pytest.mark.parametrize("cls, values, word", [
    (ClusterNetNodeConfig, {"slop": -0.1}, "slop"),
    (ClusterNetNodeConfig, {"queue_size": 0}, "queue_size"),
    (ClusterNetNodeConfig, {"input_reliability": "sometimes"}, "input_reliability"),
    (ClusterNetNodeConfig, {"device": "tpu"}, "device"),
    (ClusterNetNodeConfig, {"cloud_stride": 0}, "cloud_stride"),
    (ClusterNetNodeConfig, {"min_object_size_m": -0.01}, "min_object_size_m"),
    (ClusterNetNodeConfig, {"min_object_size_m": float("nan")}, "min_object_size_m"),
    (ClusterNetNodeConfig, {"min_object_size_m": 1.5}, "min_object_size_m"),
    (ClusterNetNodeConfig, {"min_hits": 10 ** 9}, "min_hits"),
    (ClusterNetNodeConfig, {"max_age_s": 1e9}, "max_age_s"),
    (ClusterNetNodeConfig, {"network_height": 240}, "network_height"),   # width left at 0
    (ClusterNetNodeConfig, {"network_height": 16, "network_width": 16}, "network_height"),
    (ClusterNetNodeConfig, {"min_hits": 0}, "min_hits"),
    (ClusterNetNodeConfig, {"max_age_s": -1.0}, "max_age_s"),
    (ClusterNetNodeConfig, {"gate_bhattacharyya": 0.0}, "gate_bhattacharyya"),
    (ClusterNetNodeConfig, {"gate_distance_m": 0.0}, "gate_distance_m"),
    (ClusterNetNodeConfig, {"pose_source": "gps"}, "pose_source"),
    (ClusterNetNodeConfig, {"static_pose": [0, 0, 1, 0, 0, 0, 0]}, "quaternion"),
    (MappingNodeConfig, {"pose_source": "none"}, "pose_source"),   # the map needs a pose
    (MappingNodeConfig, {"pose_source": "gps"}, "pose_source"),
    (MappingNodeConfig, {"static_pose": [0.0, 0.0, 1.0]}, "static_pose"),
    (MappingNodeConfig, {"static_pose": [0, 0, 1, 0, 0, 0, 0]}, "quaternion"),
    (MappingNodeConfig, {"workspace_min": [0.0, 0.0, 0.0]}, "workspace"),
    (MappingNodeConfig, {"voxel_size": 0.0001}, "voxel_size"),
    (MappingNodeConfig, {"id_match_iou": 1.5}, "id_match_iou"),
    (MappingNodeConfig, {"segment_period_s": -1.0}, "segment_period_s"),
    (MappingNodeConfig, {"not_a_parameter": 1}, "unknown parameter"),
])
def test_bad_parameter_values_raise_naming_the_parameter(cls, values, word):
    with pytest.raises(ValueError, match=word):
        config_from_values(cls, values)


def test_network_resolution_zero_means_the_checkpoints_own():
    assert ClusterNetNodeConfig().network_resolution is None
    assert ClusterNetNodeConfig(network_height=240, network_width=320).network_resolution == (240, 320)


def test_static_pose_becomes_the_camera_transform():
    # camera 0.6 m above the origin looking straight down: rotation of pi about x
    cfg = MappingNodeConfig(pose_source="static", static_pose=[0.1, 0.2, 0.6, 1.0, 0.0, 0.0, 0.0])
    T = cfg.static_transform()
    np.testing.assert_allclose(T, [[1, 0, 0, 0.1], [0, -1, 0, 0.2], [0, 0, -1, 0.6], [0, 0, 0, 1]], atol=1e-12)
    tc = cfg.session_config(0.005).tsdf
    assert tc.voxel_size == 0.005 and tc.workspace_min is None


def test_voxel_size_zero_is_the_models_and_another_value_is_refused_naming_both():
    cfg = MappingNodeConfig()
    assert cfg.voxel_size == 0.0
    assert cfg.map_voxel_size(0.005) == 0.005 and cfg.session_config(0.02).tsdf.voxel_size == 0.02
    assert MappingNodeConfig(voxel_size=0.005).map_voxel_size(0.005) == 0.005
    with pytest.raises(ValueError, match=r"voxel_size 0\.01 m differs from the model's voxel size 0\.005 m"):
        MappingNodeConfig(voxel_size=0.01).session_config(0.005)
    # the world bound is checked at the model's voxel size: 1000 m needs voxels of at least ~1 mm
    with pytest.raises(ValueError, match="world_bound"):
        MappingNodeConfig().session_config(0.0005)
    session = MappingNodeConfig(min_segment_voxels=50, id_match_iou=0.5, map_frame="bin").session_config(0.005)
    assert (session.min_segment_voxels, session.id_match_iou, session.frame_id) == (50, 0.5, "bin")


def test_label_image_ids_wrap_above_16_bits():
    from instseg_ros.ros.clusternet_node import label_image_ids

    lab = np.array([[0, 1, 65535], [65536, 65537, 131071]])
    out = label_image_ids(lab)
    assert out.dtype == np.uint16 and out.tolist() == [[0, 1, 65535], [1, 2, 1]]


def test_pose_sources_none_static_topic():
    from geometry_msgs.msg import PoseStamped

    from instseg_ros.ros.node_common import FrameError
    from instseg_ros.ros.pose_source import CameraPoseSource

    image = SimpleNamespace(header=SimpleNamespace(frame_id="cam"))
    assert CameraPoseSource(None, "none", "map").pose(image) is None
    # static: 0.6 m above (0.1, 0.2), looking down (rotation of pi about x), quaternion not normalised
    st = CameraPoseSource(None, "static", "map", static_pose=[0.1, 0.2, 0.6, 2.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(st.pose(image), [[1, 0, 0, 0.1], [0, -1, 0, 0.2], [0, 0, -1, 0.6], [0, 0, 0, 1]],
                               atol=1e-12)
    top = CameraPoseSource(None, "topic", "map")
    assert top.needs_topic and not st.needs_topic
    msg = PoseStamped()
    msg.header.frame_id = "map"
    msg.pose.position.x, msg.pose.orientation.z, msg.pose.orientation.w = 1.5, np.sin(np.pi / 4), np.cos(np.pi / 4)
    np.testing.assert_allclose(top.pose(image, msg), [[0, -1, 0, 1.5], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
                               atol=1e-12)
    with pytest.raises(FrameError, match="no camera pose"):
        top.pose(image, None)
    msg.header.frame_id = "odom"
    with pytest.raises(FrameError, match="not map_frame"):
        top.pose(image, msg)
    msg.header.frame_id = ""
    msg.pose.orientation.z = msg.pose.orientation.w = 0.0
    with pytest.raises(FrameError, match="not a valid rigid transform"):
        top.pose(image, msg)


def test_pose_source_tf_without_tf2_says_what_to_do():
    from instseg_ros.ros.pose_source import CameraPoseSource

    try:
        import tf2_ros  # noqa: F401
        pytest.skip("tf2_ros is installed here (a ROS 2 install)")
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match="pose_source:=topic"):
        CameraPoseSource(None, "tf", "map").start()


# ------------------------------------------------------------------------------ grasp rule

def _obj(i, c, ext, score=0.9, n=500):
    return SimpleNamespace(id=i, centroid=SimpleNamespace(x=c[0], y=c[1], z=c[2]),
                           extent=SimpleNamespace(x=ext[0], y=ext[1], z=ext[2]), score=score, num_points=n)


def test_most_graspable_takes_the_closest_object_that_fits_the_gripper():
    objs = [_obj(1, (0, 0, 0.50), (0.10, 0.05, 0.03)),     # fits (width 0.05), 0.50 m away
            _obj(2, (0, 0, 0.40), (0.20, 0.12, 0.10)),     # closest but 0.12 m wide: does not fit
            _obj(3, (0, 0.1, 0.45), (0.06, 0.04, 0.04)),   # fits, distance 0.461 m -> chosen
            _obj(4, (0, 0, 0.30), (0.05, 0.05, 0.05), n=10)]  # too few points
    assert most_graspable(objs, 0.08, 50, "closest") == 2
    assert most_graspable(objs, 0.08, 50, "highest") == 0   # map frame: largest z among candidates
    assert most_graspable(objs[1:2], 0.08, 50) is None
    with pytest.raises(ValueError):
        most_graspable(objs, prefer="nearest")


# ------------------------------------------------------------------------------ worker / sync watch

def test_one_slot_worker_keeps_only_the_newest_waiting_item():
    seen, gate = [], threading.Event()

    def process(x):
        if x == 0:
            gate.wait(5)
        seen.append(x)

    w = LatestFrameWorker(process, lambda item, e: None)
    w.submit(0)
    time.sleep(0.2)          # 0 is being processed
    for x in (1, 2, 3):      # 1 and 2 are replaced while 0 runs
        w.submit(x)
    gate.set()
    assert w.wait_idle(5)
    assert seen == [0, 3] and w.dropped == 2
    w.stop()


def test_sync_watch_names_the_silent_input():
    sw = SyncWatch(["color", "depth", "info"])
    assert sw.check(SyncStats([0, 0, 0], 0, [0, 0, 0], [0, 0, 0])) is None
    msg = sw.check(SyncStats([3, 3, 0], 0, [0, 0, 0], [3, 3, 0]))
    assert "nothing arrived on info" in msg
    assert sw.check(SyncStats([4, 4, 1], 1, [0, 0, 0], [3, 3, 0])) is None  # a set matched


# ------------------------------------------------------------------------------ launch / rviz

def test_colcon_launchers_import_the_node_mains():
    for exe, mod in [("clusternet_node", "instseg_ros.ros.clusternet_node"),
                     ("occuseg_mapping_node", "instseg_ros.ros.mapping_node"),
                     ("grasp_consumer", "instseg_ros.ros.grasp_consumer"),
                     ("replay_player", "instseg_ros.ros.replay")]:
        text = (ROOT / "scripts" / exe).read_text()
        assert text.startswith("#!/usr/bin/env python3") and f"from {mod} import main" in text
        assert (ROOT / "scripts" / exe).stat().st_mode & 0o111
