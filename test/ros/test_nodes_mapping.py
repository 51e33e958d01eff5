"""occuseg_mapping_node on a real graph: the node in its own process, this process publishes posed
frames of boxes on a plate (ray-cast exactly) and calls the services.

The OccuSeg weights are random (the segmentation is arbitrary); what is tested is the node: the
fused map lies on the true surfaces in the map frame, instance centroids equal the moments of the
published cloud's label sets, one marker set per instance, ids stable across segmentations of the
same map, ~/save writes a PLY (read back with Open3D) and JSON that match the messages, ~/reset
empties the map, bad poses / missing poses are logged and skipped, pose_source=tf without tf2_ros
and a voxel_size other than the model's refuse to configure with a clear error (voxel_size 0, the
default, maps at the model's voxel size).
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from instseg_ros.ros.tools.launcher import lifecycle_call as _lifecycle_call
from instseg_ros.ros.tools.launcher import spin_until

pytestmark = pytest.mark.graph

W, H = 320, 240
BOXES = [((0.0, 0.0, -0.01), (0.36, 0.36, 0.02)), ((0.08, 0.02, 0.03), (0.06, 0.08, 0.06)),
         ((-0.08, -0.05, 0.025), (0.05, 0.05, 0.05))]
VOXEL = 0.005


def box_distance(p: np.ndarray) -> np.ndarray:
    """Distance (m) from points (N, 3) to the nearest box surface (exact, axis-aligned boxes)."""
    best = np.full(len(p), np.inf)
    for c, s in BOXES:
        q = np.abs(p - np.asarray(c)) - np.asarray(s) / 2
        outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
        inside = np.minimum(q.max(axis=1), 0.0)
        best = np.minimum(best, np.abs(outside + inside))
    return best


def views(n: int = 4):
    """n posed frames around the scene: (rgb, depth m, K, T_map_camera)."""
    from instseg_ros.data.mesh_render import box_mesh, intrinsics, look_at, render

    colors = [(120, 120, 120), (200, 50, 50), (50, 200, 50)]
    meshes = [box_mesh(c, s, col) for (c, s), col in zip(BOXES, colors)]
    K = intrinsics(W, H)
    out = []
    for k in range(n):
        a = 2 * np.pi * k / n
        T = look_at((0.35 * np.cos(a), 0.35 * np.sin(a), 0.4), (0, 0, 0))
        depth, rgb, _ = render(meshes, K, T, W, H)
        out.append((rgb, (np.round(depth * 1000) / 1000).astype(np.float32), K, T))
    return out


@pytest.fixture(scope="module")
def graph(ros_env, tmp_path_factory):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node(f"test_mapping_{os.getpid()}", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    yield node, ex, tmp_path_factory.mktemp("mapping")
    ex.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=ctx)


def random_occuseg(path: str) -> str:
    import torch

    from instseg_ros.occuseg.checkpoint import save_checkpoint
    from instseg_ros.occuseg.config import NetConfig
    from instseg_ros.occuseg.model import OccuSegNet

    torch.manual_seed(0)
    save_checkpoint(path, OccuSegNet(NetConfig(channels=(8, 16), embed_dim=4)), VOXEL)
    return path


class MapRig:
    def __init__(self, graph, ros_env, ns: str, **params) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import PointCloud2
        from visualization_msgs.msg import MarkerArray

        from instseg_ros.msg import ObjectInstanceArray
        from instseg_ros.ros.tools.launcher import Collector, FramePublisher, NodeProcess, node_command

        self.node, self.ex, tmp = graph
        self.ns = ns
        self.fqn = f"{ns}/occuseg_mapping_node"
        p = {"device": "cpu", "segment_period_s": 0.0, "diagnostics_period_s": 0.5,
             "save_dir": str(tmp / f"save{ns.strip('/')}"), **params}
        self.save_dir = p["save_dir"]
        self.proc = NodeProcess(node_command("occuseg_mapping_node", namespace=ns, params=p), ros_env,
                                tmp / f"{ns.strip('/')}.log")
        self.pub = FramePublisher(node=self.node, prefix=ns)
        self.topics = {k: f"{self.fqn}/{k}" for k in ("map_cloud", "instances", "markers")}
        self.col = Collector(self.node, {self.topics["map_cloud"]: PointCloud2,
                                         self.topics["instances"]: ObjectInstanceArray,
                                         self.topics["markers"]: MarkerArray, "/diagnostics": DiagnosticArray})

    def stat(self, key: str) -> int:
        """Latest value of a diagnostics counter of this node (-1 before the first status)."""
        for _, arr in reversed(self.col.get("/diagnostics")):
            for st in arr.status:
                if st.hardware_id == self.fqn:
                    return int(float({kv.key: kv.value for kv in st.values}[key]))
        return -1

    def call(self, name: str, timeout: float = 120.0):
        from std_srvs.srv import Trigger

        cli = self.node.create_client(Trigger, f"{self.fqn}/{name}")
        assert spin_until(self.ex, cli.service_is_ready, 30.0), f"{name} not available:\n{self.proc.output()}"
        fut = cli.call_async(Trigger.Request())
        assert spin_until(self.ex, fut.done, timeout), f"{name} did not answer"
        self.node.destroy_client(cli)
        return fut.result()

    def wait_connected(self) -> bool:
        pubs = self.pub.publishers + [self.pub.pose]
        return spin_until(self.ex, lambda: all(p.get_subscription_count() >= 1 for p in pubs)
                          or not self.proc.alive(), 60.0) and self.proc.alive()


@pytest.fixture(scope="module")
def rig(graph, ros_env):
    model = random_occuseg(str(graph[2] / "occuseg_random.pt"))
    r = MapRig(graph, ros_env, f"/map{os.getpid()}", model_path=model)
    assert r.wait_connected(), r.proc.output()
    yield r
    code = r.proc.stop()
    assert code == 0, r.proc.output()


def test_map_segment_save_reset(rig, graph):
    import open3d as o3d
    from visualization_msgs.msg import Marker

    from instseg_ros.ros.conversions import msg_to_labeled_cloud

    stamps = []
    for rgb, depth, K, T in views(4):
        s = time.time_ns()
        rig.pub.publish_frame(rgb, depth, K, s, T_map_camera=T)
        stamps.append(s)
        assert spin_until(rig.ex, lambda: rig.stat("frames_integrated") >= len(stamps), 30.0), rig.proc.output()

    # voxel_size 0 (the default): the map is at the model's voxel size
    assert f"map voxel_size {VOXEL} m" in rig.proc.output()
    res = rig.call("segment")
    assert res.success, res.message
    assert spin_until(rig.ex, lambda: rig.col.count(rig.topics["instances"]) >= 1
                      and rig.col.count(rig.topics["markers"]) >= 1 and rig.col.count(rig.topics["map_cloud"]) >= 1)
    cloud_msg = rig.col.get(rig.topics["map_cloud"])[-1][1]
    inst_msg = rig.col.get(rig.topics["instances"])[-1][1]
    for m in (cloud_msg, inst_msg):
        assert m.header.frame_id == "map"
        assert m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec == stamps[-1]
    cloud = msg_to_labeled_cloud(cloud_msg)
    assert len(cloud.points) > 2000
    # the fused surface lies on the true geometry, in the map frame
    d = box_distance(cloud.points.astype(np.float64))
    assert np.percentile(d, 99) < 2 * VOXEL and d.max() < 4 * VOXEL, (np.percentile(d, 99), d.max())
    ids = sorted(o.id for o in inst_msg.instances)
    assert f"{len(ids)} instances" in res.message
    assert sorted(np.unique(cloud.labels[cloud.labels > 0]).tolist()) == ids
    for o in inst_msg.instances:
        p = cloud.points[cloud.labels == o.id].astype(np.float64)
        assert o.num_points == len(p)
        np.testing.assert_allclose([o.centroid.x, o.centroid.y, o.centroid.z], p.mean(0), atol=1e-5)
        np.testing.assert_allclose(np.asarray(o.covariance).reshape(3, 3), np.cov(p.T, bias=True), atol=1e-7)
    ms = rig.col.get(rig.topics["markers"])[-1][1].markers
    assert ms[0].action == Marker.DELETEALL
    assert sorted(m.id for m in ms if m.type == Marker.SPHERE) == ids

    # the same map segmented again: the same instances keep the same ids
    res2 = rig.call("segment")
    assert res2.success, res2.message
    assert spin_until(rig.ex, lambda: rig.col.count(rig.topics["map_cloud"]) >= 2)
    cloud2 = msg_to_labeled_cloud(rig.col.get(rig.topics["map_cloud"])[-1][1])
    np.testing.assert_array_equal(cloud2.points, cloud.points)
    np.testing.assert_array_equal(cloud2.labels, cloud.labels)

    # ~/save: PLY (read back by Open3D) and JSON match the published map
    res = rig.call("save")
    assert res.success, res.message
    pc = o3d.io.read_point_cloud(os.path.join(rig.save_dir, "map.ply"))
    np.testing.assert_allclose(np.asarray(pc.points), cloud.points, atol=1e-6)
    with open(os.path.join(rig.save_dir, "map.ply"), "rb") as f:
        head = f.read(400).split(b"end_header\n")[0].decode()
    assert "property uint label" in head and f"element vertex {len(cloud.points)}" in head
    doc = json.loads(open(os.path.join(rig.save_dir, "instances.json")).read())
    assert doc["frame_id"] == "map" and sorted(i["id"] for i in doc["instances"]) == ids

    # ~/reset: an empty map is published and there is nothing left to segment
    n = rig.col.count(rig.topics["map_cloud"])
    assert rig.call("reset").success
    assert spin_until(rig.ex, lambda: rig.col.count(rig.topics["map_cloud"]) > n)
    assert rig.col.get(rig.topics["map_cloud"])[-1][1].width == 0
    res = rig.call("segment")
    assert not res.success and "fewer than min_segment_voxels" in res.message


def test_bad_poses_are_logged_skipped_and_the_next_frame_integrates(rig):
    from instseg_ros.ros.conversions import array_to_image, intrinsics_to_camera_info
    from instseg_ros.ros.tools.launcher import make_header, pose_msg

    (rgb, depth, K, T), = views(1)
    assert spin_until(rig.ex, lambda: rig.stat("frames_integrated") >= 0, 10.0)

    def frame_msgs(stamp):
        h = make_header(stamp, "cam")
        return (array_to_image(rgb, "rgb8", h), array_to_image(depth, "16UC1", h),
                intrinsics_to_camera_info(K, W, H, h))

    def expect(log_text: str, publish) -> None:
        before = rig.stat("frames_integrated")
        publish()
        assert spin_until(rig.ex, lambda: log_text in rig.proc.output(), 10.0), rig.proc.output()[-3000:]
        spin_until(rig.ex, lambda: False, 0.6)
        assert rig.stat("frames_integrated") == before, f"'{log_text}' frame was integrated"
        s = time.time_ns()
        rig.pub.publish_frame(rgb, depth, K, s, T_map_camera=T)
        assert spin_until(rig.ex, lambda: rig.stat("frames_integrated") > before, 20.0), \
            f"good frame after '{log_text}' not integrated:\n{rig.proc.output()[-3000:]}"

    def missing_pose():
        for _ in range(3):
            rig.pub.publish_msgs(*frame_msgs(time.time_ns()))
            time.sleep(0.25)

    expect("nothing arrived on pose", missing_pose)

    def zero_quaternion():
        s = time.time_ns()
        p = pose_msg(T, make_header(s, "map"))
        p.pose.orientation.w = 0.0
        p.pose.orientation.x = p.pose.orientation.y = p.pose.orientation.z = 0.0
        rig.pub.publish_msgs(*frame_msgs(s), pose=p)

    expect("not a valid rigid transform", zero_quaternion)

    def wrong_frame():
        s = time.time_ns()
        rig.pub.publish_msgs(*frame_msgs(s), pose=pose_msg(T, make_header(s, "odom")))

    expect("is not map_frame", wrong_frame)


def test_pose_source_tf_without_tf2_refuses_to_configure(graph, ros_env):
    from lifecycle_msgs.msg import State

    r = MapRig(graph, ros_env, f"/tf{os.getpid()}", pose_source="tf", model_path="unused.pt")
    try:
        assert spin_until(r.ex, lambda: "needs tf2_ros" in r.proc.output(), 60.0), r.proc.output()
        try:
            state = _lifecycle_call(graph[0], graph[1], r.fqn, None).current_state.id
        except RuntimeError as e:
            raise AssertionError(f"{e}\n{r.proc.output()}") from None
        assert state == State.PRIMARY_STATE_UNCONFIGURED
    finally:
        code = r.proc.stop()
    assert code == 0, r.proc.output()


def test_a_voxel_size_other_than_the_models_refuses_to_configure(graph, ros_env):
    from lifecycle_msgs.msg import State

    model = random_occuseg(str(graph[2] / "occuseg_voxel.pt"))
    r = MapRig(graph, ros_env, f"/vox{os.getpid()}", model_path=model, voxel_size=0.01)
    try:
        assert spin_until(r.ex, lambda: "configure failed" in r.proc.output(), 60.0), r.proc.output()
        line = next(ln for ln in r.proc.output().splitlines() if "configure failed" in ln)
        assert "voxel_size 0.01 m" in line and f"voxel size {VOXEL} m" in line, line
        assert _lifecycle_call(graph[0], graph[1], r.fqn, None).current_state.id == State.PRIMARY_STATE_UNCONFIGURED
    finally:
        code = r.proc.stop()
    assert code == 0, r.proc.output()


# ------------------------------------------------------------------------------ reliability (#17)

def _status(rig):
    """(level, message, values) of the newest /diagnostics status of this rig's node, or None."""
    for _, arr in reversed(rig.col.get("/diagnostics")):
        for st in arr.status:
            if st.hardware_id == rig.fqn:
                return st.level[0] if isinstance(st.level, bytes) else st.level, st.message, \
                    {kv.key: kv.value for kv in st.values}
    return None


def test_far_poses_and_unnormalised_quaternions_are_rejected_and_the_map_stays_segmentable(rig):
    """A pose 1e6 m away used to be integrated and break every later ~/segment; a quaternion of norm
    1.4e-5 used to be normalised into a 90 degree yaw."""
    from instseg_ros.ros.tools.launcher import make_header, pose_msg

    assert rig.call("reset").success
    vs = views(4)
    for rgb, depth, K, T in vs:
        n = rig.stat("frames_integrated")
        rig.pub.publish_frame(rgb, depth, K, time.time_ns(), T_map_camera=T)
        assert spin_until(rig.ex, lambda n=n: rig.stat("frames_integrated") > n, 30.0), rig.proc.output()[-3000:]
    rgb, depth, K, T = vs[0]

    def rejected(T_bad, quaternion=None, stamp=None, log_text=""):
        from instseg_ros.ros.conversions import array_to_image, intrinsics_to_camera_info

        before, bad_before = rig.stat("frames_integrated"), rig.stat("bad_frames")
        s = stamp if stamp is not None else time.time_ns()
        h = make_header(s, "cam")
        p = pose_msg(T_bad, make_header(s, "map"))
        if quaternion is not None:
            o = p.pose.orientation
            o.x, o.y, o.z, o.w = quaternion
        rig.pub.publish_msgs(array_to_image(rgb, "rgb8", h), array_to_image(depth, "16UC1", h),
                             intrinsics_to_camera_info(K, W, H, h), pose=p)
        assert spin_until(rig.ex, lambda: log_text in rig.proc.output() and rig.stat("bad_frames") > bad_before,
                          15.0), rig.proc.output()[-3000:]
        assert rig.stat("frames_integrated") == before

    far = T.copy()
    far[:3, 3] = [1e6, 0.0, 0.4]
    rejected(far, log_text="outside the world bound")
    rejected(T, quaternion=(0.0, 0.0, 1e-5, 1e-5), log_text="has norm")
    rejected(T, stamp=time.time_ns() + 3600 * 1_000_000_000, log_text="ahead of the node clock")
    # the next good frame is integrated (the future stamp did not become the last stamp)
    n = rig.stat("frames_integrated")
    rig.pub.publish_frame(rgb, depth, K, time.time_ns(), T_map_camera=T)
    assert spin_until(rig.ex, lambda: rig.stat("frames_integrated") > n, 30.0), rig.proc.output()[-3000:]
    res = rig.call("segment")
    assert res.success, res.message


def test_budget_and_missing_inputs_show_in_the_node_log_and_diagnostics(graph, ros_env):
    """The TSDF budget message goes through the node's logger once, with no misleading "frame
    integrated no depth"; a gap in the stamps is counted as lost messages (WARN); a silent input
    turns /diagnostics to ERROR."""
    from diagnostic_msgs.msg import DiagnosticStatus as D

    class DiagnosticStatus:  # the message constants are bytes; the statuses read back as ints
        WARN, ERROR = ord(D.WARN), ord(D.ERROR)

    model = random_occuseg(str(graph[2] / "occuseg_budget.pt"))
    r = MapRig(graph, ros_env, f"/budget{os.getpid()}", model_path=model, max_blocks=20, input_timeout_s=1.0)
    try:
        assert r.wait_connected(), r.proc.output()
        vs = views(4)
        for rgb, depth, K, T in vs[:2]:
            n = r.stat("bad_frames") + r.stat("frames_integrated")
            r.pub.publish_frame(rgb, depth, K, time.time_ns(), T_map_camera=T)
            assert spin_until(r.ex, lambda n=n: r.stat("bad_frames") + r.stat("frames_integrated") > n
                              and r.stat("map_blocks") >= 0, 30.0), r.proc.output()[-3000:]
        assert spin_until(r.ex, lambda: r.stat("map_blocks_dropped") > 0, 10.0), r.proc.output()[-3000:]
        out = r.proc.output()
        budget = [ln for ln in out.splitlines() if "TSDF block budget 20 reached" in ln]
        assert len(budget) == 1 and "[WARN]" in budget[0] and "occuseg_mapping_node]" in budget[0], out[-3000:]
        assert "integrated no depth" not in out
        # library code's Python logging goes through the node's logger too
        device_lines = [ln for ln in out.splitlines() if "instseg_ros.device: device=" in ln]
        assert device_lines and all("[INFO]" in ln and "occuseg_mapping_node]" in ln for ln in device_lines), out[:3000]

        # 10 Hz frames with one stamp missing: one message lost on each of the four inputs
        rgb, depth, K, T = vs[0]
        lost0 = r.stat("lost_estimate")
        base = time.time_ns()
        for k in [0, 1, 2, 3, 4, 5, 7, 8, 9]:
            target = base + k * 100_000_000
            time.sleep(max(0.0, (target - time.time_ns()) * 1e-9))
            r.pub.publish_frame(rgb, depth, K, target, T_map_camera=T)
            r.ex.spin_once(timeout_sec=0.0)
        assert spin_until(r.ex, lambda: r.stat("lost_estimate") - lost0 == 4, 10.0), \
            (r.stat("lost_estimate"), lost0, _status(r))
        assert any(_status_level_message(a, r.fqn)[0] == DiagnosticStatus.WARN
                   and "lost_estimate+" in _status_level_message(a, r.fqn)[1]
                   for _, a in r.col.get("/diagnostics") if _status_level_message(a, r.fqn)), \
            [_status_level_message(a, r.fqn) for _, a in r.col.get("/diagnostics")][-12:]
        # nothing arrives any more: ERROR naming the inputs within input_timeout_s + a period or two
        assert spin_until(r.ex, lambda: (_status(r) or (0,))[0] == DiagnosticStatus.ERROR, 10.0), _status(r)
        assert "input missing" in _status(r)[1] and "pose" in _status(r)[1]
    finally:
        code = r.proc.stop()
    assert code == 0, r.proc.output()


def _status_level_message(arr, fqn):
    for st in arr.status:
        if st.hardware_id == fqn:
            return (st.level[0] if isinstance(st.level, bytes) else st.level), st.message
    return None
