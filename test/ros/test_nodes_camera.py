"""clusternet_node on a real graph: the node in its own process, this process publishes frames.

The model is a real ClusterNet whose heads are set by hand (foreground everywhere, centroid
probability high, ξ = the pixel's own 3-D point, radius 0.1 m), so the node's clustering cuts the
scene into deterministic spatial clusters without training; what is tested is the node: every
output per frame with the input header, centroids / covariances equal to the moments of the
published label masks over the sent depth (computed here pixel by pixel from K), cloud labels
equal to ~/labels at each point's pixel, one marker set per instance, bad frames logged and
skipped with the next good frame published, and the lifecycle transitions. Tracking: ids that stay
with the same clusters over static and moving-camera frames (pose from a topic), objects seen in one
frame only never published, and the static pose source with unconfirmed tracks published.
"""
from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest

pytestmark = pytest.mark.graph

W, H = 320, 240
TIMEOUT = 30.0


def geometric_clusternet(path: str) -> str:
    """A tiny ClusterNet with hand-set heads (see the module docstring), saved as a checkpoint."""
    import torch

    from instseg_ros.clusternet.checkpoint import save_checkpoint
    from instseg_ros.clusternet.config import ModelConfig
    from instseg_ros.clusternet.model import ClusterNet

    cfg = ModelConfig(base_width=8, input_height=48, input_width=64, c1_channels=16, aspp_channels=16,
                      decoder_channels=16, depth_widths=(8, 8, 8, 8))
    model = ClusterNet(cfg)
    net = model.net
    with torch.no_grad():
        for head in (net.mask_head, net.centroid_head):
            head.weight.zero_()
            head.bias.copy_(torch.tensor([-6.0, 6.0]))
        net.xi_head.weight.zero_()
        net.xi_head.bias.zero_()
        last = net.radius_head[-1]
        last.weight.zero_()
        last.bias.fill_(math.log(math.expm1(0.1 / cfg.radius_scale)))
    save_checkpoint(path, cfg, model.state_dict(), {"note": "hand-set heads for node tests"})
    return path


def scene_frame(shift: float = 0.0):
    """Three boxes on a 0.36 m plate seen from 0.5 m above: rgb uint8, depth float32 m, K, gt ids."""
    from instseg_ros.data.mesh_render import box_mesh, intrinsics, look_at, render

    meshes = [box_mesh((0, 0, -0.01), (0.36, 0.36, 0.02), (120, 120, 120)),
              box_mesh((0.08 + shift, 0.02, 0.03), (0.06, 0.08, 0.06), (200, 50, 50)),
              box_mesh((-0.08, -0.05, 0.025), (0.05, 0.05, 0.05), (50, 200, 50)),
              box_mesh((0.0, 0.1, 0.02), (0.04, 0.04, 0.04), (50, 50, 200))]
    K = intrinsics(W, H)
    T = look_at((0.02, 0.01, 0.5), (0, 0, 0))
    depth, rgb, ids = render(meshes, K, T, W, H)
    depth = np.round(depth * 1000.0) / 1000.0  # what survives 16UC1 millimetres
    return rgb, depth.astype(np.float32), K


@pytest.fixture(scope="module")
def graph(ros_env, tmp_path_factory):
    """This process's rclpy node + executor on the run's domain (own context)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node(f"test_camera_{os.getpid()}", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    yield node, ex, tmp_path_factory.mktemp("camera")
    ex.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=ctx)


def spin_until(ex, pred, timeout=TIMEOUT) -> bool:
    from instseg_ros.ros.tools.launcher import spin_until as _spin_until

    return _spin_until(ex, pred, timeout)


def lifecycle_call(graph, node_fqn: str, transition: int | None):
    from instseg_ros.ros.tools.launcher import lifecycle_call as _call

    return _call(graph[0], graph[1], node_fqn, transition)


class CameraRig:
    """A clusternet_node process in namespace ``ns`` plus publishers / collectors in the test node."""

    def __init__(self, graph, ros_env, ns: str, model: str, **params) -> None:
        from sensor_msgs.msg import Image, PointCloud2
        from visualization_msgs.msg import MarkerArray

        from instseg_ros.msg import ObjectInstanceArray
        from instseg_ros.ros.tools.launcher import Collector, FramePublisher, NodeProcess, node_command

        node, self.ex, tmp = graph
        self.ns = ns
        p = {"model_path": model, "device": "cpu", "diagnostics_period_s": 0.5, **params}
        self.proc = NodeProcess(node_command("clusternet_node", namespace=ns, params=p), ros_env,
                                tmp / f"{ns.strip('/')}.log")
        self.pub = FramePublisher(node, ns)
        out = f"{ns}/clusternet_node"
        self.topics = {"instances": f"{out}/instances", "labels": f"{out}/labels", "cloud": f"{out}/cloud",
                       "markers": f"{out}/markers"}
        self.col = Collector(node, {self.topics["instances"]: ObjectInstanceArray, self.topics["labels"]: Image,
                                    self.topics["cloud"]: PointCloud2, self.topics["markers"]: MarkerArray})

    def wait_connected(self, timeout=60.0) -> bool:
        return spin_until(self.ex, lambda: all(p.get_subscription_count() >= 1 for p in self.pub.publishers)
                          and all(s.get_publisher_count() >= 1 for s in self.col.subs) or not self.proc.alive(),
                          timeout) and self.proc.alive()

    def outputs_for(self, stamp_ns: int) -> dict:
        from instseg_ros.ros.conversions import stamp_to_ns

        out = {}
        for key, topic in self.topics.items():
            for _, m in self.col.get(topic):
                if key == "markers":
                    h = m.markers[0].header if m.markers else None
                else:
                    h = m.header
                if h is not None and stamp_to_ns(h.stamp) == stamp_ns:
                    out[key] = m
        return out

    def send(self, rgb, depth, K, stamp_ns=None, wait=True, depth_encoding="16UC1", T=None) -> tuple[int, dict]:
        s = stamp_ns if stamp_ns is not None else time.time_ns()
        self.last_stamp = s
        self.pub.publish_frame(rgb, depth, K, s, depth_encoding=depth_encoding, T_map_camera=T)
        got = {}
        if wait:
            spin_until(self.ex, lambda: len(self.outputs_for(s)) == 4)
            got = self.outputs_for(s)
        return s, got


@pytest.fixture(scope="module")
def rig(graph, ros_env):
    model = geometric_clusternet(str(graph[2] / "geometric.pt"))
    r = CameraRig(graph, ros_env, f"/cam{os.getpid()}", model)
    assert r.wait_connected(), r.proc.output()
    yield r
    code = r.proc.stop()
    assert code == 0, r.proc.output()


def reference_moments(labels: np.ndarray, depth: np.ndarray, K: np.ndarray, iid: int):
    """Centroid, covariance and count of the valid-depth pixels labelled ``iid``, pixel by pixel."""
    v, u = np.nonzero((labels == iid) & (depth > 0))
    z = depth[v, u].astype(np.float64)
    pts = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], 1)
    c = pts.mean(0)
    return c, (pts - c).T @ (pts - c) / len(pts), len(pts)


def test_every_output_per_frame_consistent_with_labels(rig):
    from visualization_msgs.msg import Marker

    from instseg_ros.ros.conversions import image_to_array, msg_to_labeled_cloud

    previous = None
    # tracking is on by default (min_hits 2): the first frame only starts tracks, nothing is published
    rgb, depth, K = scene_frame()
    _, out = rig.send(rgb, depth, K)
    assert len(out["instances"].instances) == 0, "unconfirmed tracks were published"
    for k, encoding in enumerate(["16UC1", "32FC1", "16UC1"]):  # depth in mm, then in metres
        rgb, depth, K = scene_frame(shift=0.02 * (k // 2))
        stamp, out = rig.send(rgb, depth, K, depth_encoding=encoding)
        assert set(out) == {"instances", "labels", "cloud", "markers"}, rig.proc.output()[-2000:]
        for key in ("instances", "labels", "cloud"):
            assert out[key].header.frame_id == "camera_color_optical_frame"
        inst = out["instances"]
        ids = sorted(o.id for o in inst.instances)
        assert len(ids) >= 2, "the hand-set model must cut the scene into several clusters"
        labels = image_to_array(out["labels"], metres=False).astype(np.int64)
        assert labels.shape == (H, W) and out["labels"].encoding == "16UC1"
        assert sorted(np.unique(labels[labels > 0]).tolist()) == ids
        # centroids / covariances / counts = moments of the label masks over the depth we sent
        for o in inst.instances:
            c, cov, n = reference_moments(labels, depth, K, o.id)
            assert o.num_points == n
            np.testing.assert_allclose([o.centroid.x, o.centroid.y, o.centroid.z], c, atol=1e-5)
            np.testing.assert_allclose(np.asarray(o.covariance).reshape(3, 3), cov, atol=1e-7)
            assert (o.pose.position.x, o.pose.position.y, o.pose.position.z) == (o.centroid.x, o.centroid.y,
                                                                                  o.centroid.z)
        # cloud: one point per valid pixel, label and colour of the pixel it projects to
        cloud = msg_to_labeled_cloud(out["cloud"])
        assert len(cloud.points) == int((depth > 0).sum())
        p = cloud.points.astype(np.float64)
        u = np.rint(K[0, 0] * p[:, 0] / p[:, 2] + K[0, 2]).astype(int)
        v = np.rint(K[1, 1] * p[:, 1] / p[:, 2] + K[1, 2]).astype(int)
        np.testing.assert_array_equal(cloud.labels, labels[v, u])
        np.testing.assert_array_equal(cloud.colors, rgb[v, u])
        # the same scene in metres (32FC1) gives the same result as in millimetres (16UC1)
        if k == 1:
            np.testing.assert_array_equal(labels, previous)
        previous = labels
        # markers: DELETEALL first, then one ellipsoid and one id text per instance
        ms = out["markers"].markers
        assert ms[0].action == Marker.DELETEALL
        spheres = sorted(m.id for m in ms if m.type == Marker.SPHERE and m.action == Marker.ADD)
        texts = sorted(int(m.text) for m in ms if m.type == Marker.TEXT_VIEW_FACING)
        assert spheres == ids and texts == ids


def _bad_then_good(rig, publish_bad, expect_in_log: str, settle: float = 0.4):
    n_before = rig.col.count(rig.topics["instances"])
    publish_bad()
    spin_until(rig.ex, lambda: expect_in_log in rig.proc.output(), 10.0)
    spin_until(rig.ex, lambda: False, settle)
    assert rig.col.count(rig.topics["instances"]) == n_before, "a bad frame produced output"
    assert expect_in_log in rig.proc.output(), rig.proc.output()[-3000:]
    rgb, depth, K = scene_frame()
    stamp, out = rig.send(rgb, depth, K)
    assert len(out) == 4, f"the good frame after '{expect_in_log}' was not published:\n{rig.proc.output()[-3000:]}"
    assert rig.proc.alive()


def test_bad_inputs_are_logged_skipped_and_the_next_frame_is_published(rig):
    from instseg_ros.ros.conversions import array_to_image, intrinsics_to_camera_info
    from instseg_ros.ros.tools.launcher import make_header

    rgb, depth, K = scene_frame()
    frame = "camera_color_optical_frame"

    def send(color, dep, info):
        rig.pub.publish_msgs(color, dep, info)

    def wrong_encoding():
        h = make_header(time.time_ns(), frame)
        bad = array_to_image(rgb[..., 0].copy(), "mono8", h)
        bad.encoding = "yuv422"
        send(array_to_image(rgb, "rgb8", h), bad, intrinsics_to_camera_info(K, W, H, h))

    _bad_then_good(rig, wrong_encoding, "depth image rejected")

    def size_mismatch():
        h = make_header(time.time_ns(), frame)
        send(array_to_image(rgb, "rgb8", h), array_to_image(depth[::2, ::2].copy(), "16UC1", h),
             intrinsics_to_camera_info(K, W, H, h))

    _bad_then_good(rig, size_mismatch, "size mismatch")

    def zero_depth():
        h = make_header(time.time_ns(), frame)
        send(array_to_image(rgb, "rgb8", h), array_to_image(np.zeros_like(depth), "16UC1", h),
             intrinsics_to_camera_info(K, W, H, h))

    _bad_then_good(rig, zero_depth, "no valid pixel")

    def nan_depth():
        h = make_header(time.time_ns(), frame)
        send(array_to_image(rgb, "rgb8", h), array_to_image(np.full_like(depth, np.nan), "32FC1", h),
             intrinsics_to_camera_info(K, W, H, h))

    n_warn = rig.proc.output().count("no valid pixel")
    _bad_then_good(rig, nan_depth, "no valid pixel")
    assert rig.proc.output().count("no valid pixel") > n_warn

    def invalid_info():
        h = make_header(time.time_ns(), frame)
        info = intrinsics_to_camera_info(K, W, H, h)
        info.k = [0.0] * 9
        send(array_to_image(rgb, "rgb8", h), array_to_image(depth, "16UC1", h), info)

    _bad_then_good(rig, invalid_info, "camera_info rejected")

    def missing_info():
        # 1.4 s of colour + depth without camera_info: at least two whole diagnostics periods (0.5 s),
        # so one period holds only unmatched inputs even when the previous good frame's match falls
        # into the first
        for _ in range(7):
            h = make_header(time.time_ns(), frame)
            rig.pub.color.publish(array_to_image(rgb, "rgb8", h))
            rig.pub.depth.publish(array_to_image(depth, "16UC1", h))
            time.sleep(0.2)

    _bad_then_good(rig, missing_info, "nothing arrived on color/camera_info", settle=1.2)

    def out_of_order():
        # a step back smaller than stamp_jump_reset_s (2 s): out of order, not a clock reset
        old = rig.last_stamp - 500_000_000
        h = make_header(old, frame)
        send(array_to_image(rgb, "rgb8", h), array_to_image(depth, "16UC1", h), intrinsics_to_camera_info(K, W, H, h))

    _bad_then_good(rig, out_of_order, "out-of-order stamps")


def test_lifecycle_transitions(graph, ros_env):
    from lifecycle_msgs.msg import State, Transition
    from rcl_interfaces.msg import Parameter as ParamMsg
    from rcl_interfaces.msg import ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    node, ex, tmp = graph
    model = geometric_clusternet(str(tmp / "geometric_lc.pt"))
    r = CameraRig(graph, ros_env, f"/lc{os.getpid()}", str(tmp / "missing.pt"), autostart=False)
    fqn = f"{r.ns}/clusternet_node"
    try:
        assert lifecycle_call(graph, fqn, None).current_state.id == State.PRIMARY_STATE_UNCONFIGURED

        # parameters are validated on every change: a negative slop is refused with the reason
        cli = node.create_client(SetParameters, f"{fqn}/set_parameters")
        assert spin_until(ex, cli.service_is_ready)
        req = SetParameters.Request()
        req.parameters = [ParamMsg(name="slop", value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE,
                                                                     double_value=-1.0))]
        fut = cli.call_async(req)
        assert spin_until(ex, fut.done)
        res = fut.result().results[0]
        assert not res.successful and "slop" in res.reason

        assert lifecycle_call(graph, fqn, Transition.TRANSITION_CONFIGURE).success
        assert lifecycle_call(graph, fqn, None).current_state.id == State.PRIMARY_STATE_INACTIVE
        # a missing model: activate fails with the reason logged, the node stays inactive
        assert not lifecycle_call(graph, fqn, Transition.TRANSITION_ACTIVATE).success
        assert "cannot load the model" in r.proc.output()
        assert lifecycle_call(graph, fqn, None).current_state.id == State.PRIMARY_STATE_INACTIVE
        req.parameters = [ParamMsg(name="model_path", value=ParameterValue(type=ParameterType.PARAMETER_STRING,
                                                                           string_value=model))]
        fut = cli.call_async(req)
        assert spin_until(ex, fut.done) and fut.result().results[0].successful
        # parameters are read on configure: cleanup and configure again to use the new model_path
        assert lifecycle_call(graph, fqn, Transition.TRANSITION_CLEANUP).success
        assert lifecycle_call(graph, fqn, Transition.TRANSITION_CONFIGURE).success
        assert lifecycle_call(graph, fqn, Transition.TRANSITION_ACTIVATE).success
        assert lifecycle_call(graph, fqn, None).current_state.id == State.PRIMARY_STATE_ACTIVE
        assert "on CPU" in r.proc.output()
        assert r.wait_connected()
        rgb, depth, K = scene_frame()
        _, out = r.send(rgb, depth, K)
        assert len(out) == 4, r.proc.output()[-2000:]

        assert lifecycle_call(graph, fqn, Transition.TRANSITION_DEACTIVATE).success
        assert "model freed" in r.proc.output()
        n = r.col.count(r.topics["instances"])
        r.send(rgb, depth, K, wait=False)
        spin_until(ex, lambda: False, 1.5)
        assert r.col.count(r.topics["instances"]) == n, "an inactive node published"
        assert lifecycle_call(graph, fqn, Transition.TRANSITION_CLEANUP).success
        assert lifecycle_call(graph, fqn, None).current_state.id == State.PRIMARY_STATE_UNCONFIGURED
        assert lifecycle_call(graph, fqn, Transition.TRANSITION_UNCONFIGURED_SHUTDOWN).success
        assert lifecycle_call(graph, fqn, None).current_state.id == State.PRIMARY_STATE_FINALIZED
    finally:
        code = r.proc.stop()
    assert code == 0, r.proc.output()


# ------------------------------------------------------------------------------ reliability (#17)

def test_stamp_jumps_do_not_block_the_pipeline(rig):
    """A frame stamped 1 h ahead used to make every later frame "out of order" until reactivation."""
    rgb, depth, K = scene_frame()
    now = time.time_ns()
    _, out = rig.send(rgb, depth, K, stamp_ns=now)
    assert len(out) == 4, rig.proc.output()[-2000:]
    _, out = rig.send(rgb, depth, K, stamp_ns=now + 3600 * 1_000_000_000, wait=False)
    assert spin_until(rig.ex, lambda: "ahead of the node clock" in rig.proc.output(), 10.0), rig.proc.output()[-2000:]
    spin_until(rig.ex, lambda: False, 0.5)
    assert rig.outputs_for(now + 3600 * 1_000_000_000) == {}, "a frame from the future was published"
    # the next frame with a sane stamp is published
    _, out = rig.send(rgb, depth, K)
    assert len(out) == 4, rig.proc.output()[-2000:]
    # a recording played in a loop: the stamps step back 60 s, the ordering restarts with a WARN
    looped = time.time_ns() - 60 * 1_000_000_000
    _, out = rig.send(rgb, depth, K, stamp_ns=looped)
    assert len(out) == 4, rig.proc.output()[-2000:]
    assert "frame order restarts" in rig.proc.output()
    _, out = rig.send(rgb, depth, K, stamp_ns=looped + 33_000_000)
    assert len(out) == 4
    assert rig.proc.output().count("ahead of the node clock") == 1


def test_empty_frame_id_is_refused_with_one_warning(rig):
    from instseg_ros.ros.conversions import array_to_image, intrinsics_to_camera_info
    from instseg_ros.ros.tools.launcher import make_header

    rgb, depth, K = scene_frame()
    n_before = rig.col.count(rig.topics["instances"])
    for _ in range(3):
        h = make_header(time.time_ns(), "")
        rig.pub.publish_msgs(array_to_image(rgb, "rgb8", h), array_to_image(depth, "16UC1", h),
                             intrinsics_to_camera_info(K, W, H, h))
        time.sleep(0.2)
    assert spin_until(rig.ex, lambda: "empty header.frame_id" in rig.proc.output(), 10.0), rig.proc.output()[-2000:]
    spin_until(rig.ex, lambda: False, 0.6)
    assert rig.col.count(rig.topics["instances"]) == n_before, "a frame without a frame_id was published"
    assert rig.proc.output().count("empty header.frame_id") == 1
    _, out = rig.send(rgb, depth, K)
    assert len(out) == 4


def test_empty_frame_id_replaced_by_default_frame_id(graph, ros_env):
    from instseg_ros.ros.conversions import array_to_image, intrinsics_to_camera_info
    from instseg_ros.ros.tools.launcher import make_header

    model = geometric_clusternet(str(graph[2] / "geometric_fid.pt"))
    r = CameraRig(graph, ros_env, f"/fid{os.getpid()}", model, default_frame_id="cam_fallback")
    try:
        assert r.wait_connected(), r.proc.output()
        rgb, depth, K = scene_frame()
        s = time.time_ns()
        h = make_header(s, "")
        r.pub.publish_msgs(array_to_image(rgb, "rgb8", h), array_to_image(depth, "16UC1", h),
                           intrinsics_to_camera_info(K, W, H, h))
        assert spin_until(r.ex, lambda: len(r.outputs_for(s)) == 4), r.proc.output()[-2000:]
        out = r.outputs_for(s)
        assert {out[k].header.frame_id for k in ("instances", "labels", "cloud")} == {"cam_fallback"}
        assert "outputs use default_frame_id 'cam_fallback'" in r.proc.output()
    finally:
        code = r.proc.stop()
    assert code == 0, r.proc.output()


def _set_param(graph, fqn: str, name: str, value):
    from rcl_interfaces.msg import Parameter as ParamMsg
    from rcl_interfaces.msg import ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    node, ex, _ = graph
    cli = node.create_client(SetParameters, f"{fqn}/set_parameters")
    try:
        assert spin_until(ex, cli.service_is_ready)
        if isinstance(value, bool):
            pv = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
        elif isinstance(value, int):
            pv = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
        elif isinstance(value, float):
            pv = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
        else:
            pv = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        req = SetParameters.Request()
        req.parameters = [ParamMsg(name=name, value=pv)]
        fut = cli.call_async(req)
        assert spin_until(ex, fut.done)
        return fut.result().results[0]
    finally:
        node.destroy_client(cli)


def _process_figures(pid: int) -> tuple[int, float]:
    """(threads, RSS MB) of a process, from /proc."""
    threads = len(os.listdir(f"/proc/{pid}/task"))
    with open(f"/proc/{pid}/status") as f:
        rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return threads, rss_kb / 1024.0


def bogus_clusternet(path: str) -> str:
    """The hand-set model, saved with a clustering-parameter field the predictor does not know."""
    import torch

    geometric_clusternet(path)
    ck = torch.load(path, weights_only=True)
    ck["meta"]["cluster_params"] = {"bogus_key": 1}
    torch.save(ck, path)
    return path


CHURN_CYCLES = 8


def test_lifecycle_churn_with_failing_transitions_leaks_nothing(graph, ros_env):
    """Items 4 / 5 of #17 and the churn test: parameters that would break activation are refused when
    set; an activation that raises (a checkpoint with an unknown meta field) is logged with its
    reason; after many cycles of failing and succeeding transitions the node has one publisher per
    output, one diagnostics timer, and as many threads and about as much memory as after the first."""
    from diagnostic_msgs.msg import DiagnosticArray
    from lifecycle_msgs.msg import State, Transition

    from instseg_ros.ros.tools.launcher import Collector

    node, ex, tmp = graph
    good = geometric_clusternet(str(tmp / "geometric_churn.pt"))
    bogus = bogus_clusternet(str(tmp / "bogus_churn.pt"))
    r = CameraRig(graph, ros_env, f"/churn{os.getpid()}", bogus, autostart=False)
    fqn = f"{r.ns}/clusternet_node"
    diag = Collector(node, {"/diagnostics": DiagnosticArray})

    def diag_rate(window: float = 3.0) -> float:
        t0 = time.time_ns()
        spin_until(ex, lambda: False, window)
        n = sum(1 for t, a in diag.get("/diagnostics") if t >= t0 and any(s.hardware_id == fqn for s in a.status))
        return n / window

    def publishers(topic: str) -> int:
        return sum(1 for i in node.get_publishers_info_by_topic(topic)
                   if i.node_name == "clusternet_node" and i.node_namespace == r.ns)

    def change(transition) -> bool:
        return lifecycle_call(graph, fqn, transition).success

    def state() -> int:
        return lifecycle_call(graph, fqn, None).current_state.id

    try:
        assert state() == State.PRIMARY_STATE_UNCONFIGURED, r.proc.output()
        # parameters that used to pass and break later are refused when set, with the reason
        for name, value, word in [("slop", float("inf"), "finite"), ("diagnostics_period_s", 1e-6, "[0.1, 60]"),
                                  ("queue_size", 1_000_000_000, "[1, 100]"), ("slop", float("nan"), "finite")]:
            res = _set_param(graph, fqn, name, value)
            assert not res.successful and name in res.reason and word in res.reason, (name, res.reason)

        figures = []
        for cycle in range(CHURN_CYCLES):
            assert _set_param(graph, fqn, "model_path", bogus).successful
            assert change(Transition.TRANSITION_CONFIGURE)
            n_logged = r.proc.output().count("bogus_key")
            assert not change(Transition.TRANSITION_ACTIVATE)
            assert spin_until(ex, lambda n_logged=n_logged: r.proc.output().count("bogus_key") > n_logged, 10.0), \
                f"the failed activation was not logged with its reason:\n{r.proc.output()[-3000:]}"
            assert state() == State.PRIMARY_STATE_INACTIVE
            assert change(Transition.TRANSITION_CLEANUP)
            assert _set_param(graph, fqn, "model_path", good).successful
            assert change(Transition.TRANSITION_CONFIGURE)
            assert change(Transition.TRANSITION_ACTIVATE), r.proc.output()[-3000:]
            # graph information follows discovery: wait for it to settle, then it must show exactly one
            assert spin_until(ex, lambda: publishers(f"{fqn}/instances") == 1 and publishers("/diagnostics") == 1,
                              10.0), (publishers(f"{fqn}/instances"), publishers("/diagnostics"))
            if cycle == 0:
                assert r.wait_connected(), r.proc.output()[-3000:]
            rgb, depth, K = scene_frame()
            _, out = r.send(rgb, depth, K)
            assert len(out) == 4, r.proc.output()[-3000:]
            spin_until(ex, lambda: False, 0.5)
            figures.append(_process_figures(r.proc.proc.pid))
            if cycle in (0, CHURN_CYCLES - 1):
                figures[-1] = figures[-1] + (diag_rate(),)
            assert change(Transition.TRANSITION_DEACTIVATE)
            assert change(Transition.TRANSITION_CLEANUP)
            assert spin_until(ex, lambda: publishers(f"{fqn}/instances") == 0 and publishers("/diagnostics") == 0,
                              10.0), (publishers(f"{fqn}/instances"), publishers("/diagnostics"))
        (threads0, rss0, rate0), (threads1, rss1, rate1) = figures[0], figures[-1]
        print(f"churn: threads {threads0} -> {threads1}, RSS {rss0:.1f} -> {rss1:.1f} MB, "
              f"diagnostics {rate0:.2f} -> {rate1:.2f} Hz over {CHURN_CYCLES} cycles")
        assert threads1 <= threads0, figures
        assert rss1 - rss0 < 40.0, figures
        # one diagnostics timer (period 0.5 s): ~2 Hz, never twice that
        assert 1.0 <= rate1 <= 3.0 and 1.0 <= rate0 <= 3.0, (rate0, rate1)
    finally:
        code = r.proc.stop()
    assert code == 0, r.proc.output()


# ------------------------------------------------------------------------------ tracking

#: Flat boxes (7 x 7 x 1 cm, 5 x 5 x 1 cm) 24 cm apart: the hand-set model cuts each into a few
#: clusters that do not change when another box is added elsewhere.
FLAT_A = ((-0.12, 0.0, 0.0), (0.07, 0.07, 0.01), (200, 50, 50))
FLAT_B = ((0.12, 0.05, 0.0), (0.07, 0.07, 0.01), (50, 200, 50))
FLAT_C = ((0.0, -0.12, 0.0), (0.05, 0.05, 0.01), (50, 50, 200))


def flat_scene(boxes, dx: float = 0.0):
    """Boxes seen from 0.5 m above, camera shifted by ``dx`` (m) along x: rgb, depth (mm-rounded),
    K, mesh index + 1 per pixel (0 = nothing), T_world_camera."""
    from instseg_ros.data.mesh_render import box_mesh, intrinsics, look_at, render

    K = intrinsics(W, H)
    T = look_at((0.02 + dx, 0.01, 0.5), (dx, 0.0, 0.0))
    depth, rgb, ids = render([box_mesh(*b) for b in boxes], K, T, W, H)
    return rgb, (np.round(depth * 1000.0) / 1000.0).astype(np.float32), K, ids, T


def cloud_pixel_labels(cloud_msg, K) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column, label) of every point of a published cloud (projected with K)."""
    from instseg_ros.ros.conversions import msg_to_labeled_cloud

    cloud = msg_to_labeled_cloud(cloud_msg)
    p = cloud.points.astype(np.float64)
    u = np.rint(K[0, 0] * p[:, 0] / p[:, 2] + K[0, 2]).astype(int)
    v = np.rint(K[1, 1] * p[:, 1] / p[:, 2] + K[1, 2]).astype(int)
    return v, u, cloud.labels


def largest_label_on(labels: np.ndarray, mask: np.ndarray) -> int:
    vals, counts = np.unique(labels[mask & (labels > 0)], return_counts=True)
    return int(vals[np.argmax(counts)]) if len(vals) else 0


def test_track_ids_follow_objects_and_one_frame_objects_are_never_published(graph, ros_env):
    from instseg_ros.ros.conversions import image_to_array

    node, ex, tmp = graph
    model = geometric_clusternet(str(tmp / "geometric_trk.pt"))
    # refine off: the label refinement moves boundary pixels between touching instances, tentative ones
    # included, so A / B's labels would depend on whether C is there; this test is about the ids alone
    r = CameraRig(graph, ros_env, f"/trk{os.getpid()}", model, pose_source="topic", refine=False)
    try:
        assert r.wait_connected(), r.proc.output()
        assert spin_until(ex, lambda: r.pub.pose.get_subscription_count() >= 1), "no pose subscription"
        assert "tracking in map (pose_source=topic)" in r.proc.output()

        def step(boxes, dx=0.0):
            rgb, depth, K, mesh, T = flat_scene(boxes, dx)
            stamp, out = r.send(rgb, depth, K, T=T)
            assert len(out) == 4, r.proc.output()[-3000:]
            lab = image_to_array(out["labels"], metres=False).astype(np.int64)
            objs = {o.id: o for o in out["instances"].instances}
            assert sorted(np.unique(lab[lab > 0]).tolist()) == sorted(objs)
            return stamp, lab, objs, mesh, out, K

        s0, lab0, objs0, _, _, _ = step([FLAT_A, FLAT_B])
        assert not objs0 and not lab0.any(), "a first observation was published"
        s1, lab1, objs1, mesh1, _, _ = step([FLAT_A, FLAT_B])
        n = len(objs1)
        assert n >= 2 and sorted(objs1) == list(range(1, n + 1)), "ids are handed out 1.. at confirmation"
        for o in objs1.values():
            assert (o.hits, o.confirmed) == (2, True)
            assert o.age == pytest.approx((s1 - s0) * 1e-9, abs=1e-6)
        on_ab = mesh1 > 0

        # C appears for one frame: its pixels are background, it is neither in the instances nor in
        # the cloud labels, and A / B keep every label
        _, lab2, objs2, mesh2, out2, K = step([FLAT_A, FLAT_B, FLAT_C])
        c_px = mesh2 == 3
        assert c_px.sum() > 500 and not lab2[c_px].any(), "a one-frame object was published"
        np.testing.assert_array_equal(lab2[on_ab], lab1[on_ab])
        assert sorted(objs2) == sorted(objs1)
        v, u, cl = cloud_pixel_labels(out2["cloud"], K)
        assert not cl[c_px[v, u]].any() and (cl[on_ab[v, u]] > 0).any()
        np.testing.assert_array_equal(cl, lab2[v, u])

        _, lab3, objs3, _, _, _ = step([FLAT_A, FLAT_B])
        np.testing.assert_array_equal(lab3, lab1)
        assert {o.hits for o in objs3.values()} == {4}
        # C again: its track from two frames ago was dropped (a tentative track that misses a frame),
        # so it starts over; confirmed on the next frame with fresh ids n+1.. (the fragment used none)
        _, lab4, _, _, _, _ = step([FLAT_A, FLAT_B, FLAT_C])
        assert not lab4[c_px].any()
        _, lab5, objs5, _, _, _ = step([FLAT_A, FLAT_B, FLAT_C])
        new = sorted(set(np.unique(lab5[c_px]).tolist()) - {0})
        assert new == list(range(n + 1, n + 1 + len(new))) and new, new
        # (a C cluster may take an edge pixel of A / B: the model's 48 x 64 output is upsampled)
        keep = on_ab & ~np.isin(lab5, new)
        np.testing.assert_array_equal(lab5[keep], lab1[keep])

        # the camera moves 10 cm per frame over the static boxes (poses on the topic): the largest
        # cluster on each box keeps the id it had when the camera stood still
        want = {b: largest_label_on(lab1, mesh1 == b) for b in (1, 2)}
        assert 0 not in want.values()
        for dx in (0.1, 0.2, 0.1):
            _, lab, objs, mesh, _, _ = step([FLAT_A, FLAT_B], dx)
            got = {b: largest_label_on(lab, mesh == b) for b in (1, 2)}
            assert got == want, f"camera at dx={dx}: {got} != {want}"
    finally:
        code = r.proc.stop()
    assert code == 0, r.proc.output()


def test_static_pose_and_unconfirmed_tracks_on_request(graph, ros_env):
    from instseg_ros.ros.conversions import image_to_array

    node, ex, tmp = graph
    model = geometric_clusternet(str(tmp / "geometric_static.pt"))
    rgb, depth, K, mesh, T = flat_scene([FLAT_A, FLAT_B])
    from instseg_ros.core.geometry import rotation_to_quaternion

    q = rotation_to_quaternion(T[:3, :3])
    r = CameraRig(graph, ros_env, f"/st{os.getpid()}", model, pose_source="static", publish_unconfirmed=True,
                  static_pose=[float(v) for v in T[:3, 3]] + [float(v) for v in q])
    try:
        assert r.wait_connected(), r.proc.output()
        assert "tracking in map (pose_source=static)" in r.proc.output()
        _, out0 = r.send(rgb, depth, K)
        _, out1 = r.send(rgb, depth, K)
        assert len(out0) == 4 and len(out1) == 4, r.proc.output()[-3000:]
        first = {o.id: (o.hits, o.confirmed) for o in out0["instances"].instances}
        second = {o.id: (o.hits, o.confirmed) for o in out1["instances"].instances}
        n = len(first)
        # ids at creation (publish_unconfirmed), published unconfirmed first, confirmed on the second frame
        assert n >= 2 and first == {i: (1, False) for i in range(1, n + 1)}
        assert second == {i: (2, True) for i in range(1, n + 1)}
        np.testing.assert_array_equal(image_to_array(out0["labels"], metres=False),
                                      image_to_array(out1["labels"], metres=False))
    finally:
        code = r.proc.stop()
    assert code == 0, r.proc.output()


def test_diagnostics_turn_error_while_an_input_is_missing(rig, graph):
    """/diagnostics used to stay OK while camera_info had been missing for 10 s."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    from instseg_ros.ros.conversions import array_to_image
    from instseg_ros.ros.tools.launcher import Collector, make_header

    node, ex, _ = graph
    fqn = f"{rig.ns}/clusternet_node"
    diag = Collector(node, {"/diagnostics": DiagnosticArray})

    def latest():
        for _, arr in reversed(diag.get("/diagnostics")):
            for st in arr.status:
                if st.hardware_id == fqn:
                    return ord(st.level) if isinstance(st.level, bytes) else st.level, st.message
        return None

    rgb, depth, K = scene_frame()
    _, out = rig.send(rgb, depth, K)
    assert len(out) == 4
    # colour and depth keep coming for longer than input_timeout_s (3 s), camera_info does not
    t_end = time.monotonic() + 4.5
    while time.monotonic() < t_end:
        h = make_header(time.time_ns(), "camera_color_optical_frame")
        rig.pub.color.publish(array_to_image(rgb, "rgb8", h))
        rig.pub.depth.publish(array_to_image(depth, "16UC1", h))
        spin_until(ex, lambda: False, 0.2)
    assert spin_until(ex, lambda: (latest() or (0,))[0] == ord(DiagnosticStatus.ERROR), 5.0), latest()
    level, message = latest()
    missing = message.split(";")[0]
    assert missing.startswith("input missing") and "color/camera_info" in missing and "image_raw" not in missing
    # the camera_info comes back: the status leaves ERROR
    _, out = rig.send(rgb, depth, K)
    assert len(out) == 4
    assert spin_until(ex, lambda: (latest() or (2,))[0] != ord(DiagnosticStatus.ERROR), 5.0), latest()
    node.destroy_subscription(diag.subs[0])
