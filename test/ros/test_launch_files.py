"""The launch files without the launch stack (launch / launch_ros are not installable here).

* The parameter files they pass parse with rclpy's own parser and hold only parameters the nodes
  declare, under keys that match the namespaced nodes.
* Parameter precedence (node YAML < launch_<mode>.yaml < site params_file < command line) through
  rclpy's own ``--params-file`` handling, with the argument list launch_ros builds for a Node.
* The launch files' own computations (launch_support: names, RViz layouts, profile, camera pose),
  and that every launch file declares the arguments its docstring and the README name.
* replay_player's schedule (stamps hand-derived).
* On a real graph: replay_player waits for both nodes to be active and subscribed before playing
  (the recording is shorter than the nodes' start-up) and both nodes answer; then SIGINT while frames
  stream in: both nodes exit with code 0 within 10 s, without an ERROR line.
"""
from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from instseg_ros.ros import launch_support as ls

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
LAUNCH_FILES = ["realsense.launch.py", "replay.launch.py", "multi_camera.launch.py"]
SHIPPED_PARAM_FILES = ["clusternet_node.yaml", "occuseg_mapping_node.yaml", "site_overrides.yaml",
                       "launch_realsense.yaml", "launch_replay.yaml"]
PREFIX = "/camera/camera"
#: launch's SIGINT -> SIGTERM escalation is 5 s; the issue's bar is 10 s.
EXIT_BUDGET_S = 10.0


def node_classes():
    from instseg_ros.ros.clusternet_node import ClusterNetNode
    from instseg_ros.ros.mapping_node import MappingNode

    return {"clusternet_node": ClusterNetNode, "occuseg_mapping_node": MappingNode}


def launch_ros_args(node: str, namespace: str, files: list[str]) -> list[str]:
    """The ROS arguments launch_ros 0.26 (Jazzy) gives a Node(name=node, namespace=..., parameters=files)."""
    args = ["--ros-args", "-r", f"__node:={node}", "-r", f"__ns:={namespace}"]
    for f in files:
        args += ["--params-file", str(f)]
    return args


def make_node(node: str, namespace: str, files: list[str], extra: list[str] = ()):
    """The real node class constructed (not activated) with those arguments, in its own context."""
    import rclpy

    ctx = rclpy.Context()
    rclpy.init(args=launch_ros_args(node, namespace, files) + list(extra), context=ctx)
    return node_classes()[node](context=ctx), ctx


def parameters_of(node: str, namespace: str, files: list[str], names: list[str], extra: list[str] = ()) -> dict:
    import rclpy

    n, ctx = make_node(node, namespace, files, extra)
    try:
        return {k: n.get_parameter(k).value for k in names}
    finally:
        n.destroy_node()
        rclpy.shutdown(context=ctx)


# ------------------------------------------------------------------------------ parameter files

@pytest.mark.parametrize("name", SHIPPED_PARAM_FILES)
def test_shipped_parameter_files_hold_only_declared_parameters_under_namespace_matching_keys(name):
    import rclpy

    doc = yaml.safe_load((CONFIG / name).read_text())
    assert doc, name
    for key, block in doc.items():
        node = key.rsplit("/", 1)[-1]
        # the one form that matches the node in every namespace (a plain "node:" key matches none)
        assert key == f"/**/{node}" and node in ls.NODES, f"{name}: key {key!r}"
        n, ctx = make_node(node, PREFIX, [])
        try:
            declared = set(n._parameters)
        finally:
            n.destroy_node()
            rclpy.shutdown(context=ctx)
        unknown = set(block["ros__parameters"]) - declared
        assert not unknown, f"{name}: {node} does not declare {sorted(unknown)}"


@pytest.mark.parametrize("node", ls.NODES)
def test_every_value_of_the_shipped_files_reaches_the_namespaced_node_and_validates(node):
    """rclpy's own parser reads the files the launch passes; the node's config dataclass accepts them."""
    import rclpy

    from instseg_ros.ros.node_params import ClusterNetNodeConfig, MappingNodeConfig, read_config

    files = ls.parameter_files(ROOT, node, "replay", str(CONFIG / "site_overrides.yaml"))
    n, ctx = make_node(node, PREFIX, files)
    try:
        own = yaml.safe_load((CONFIG / f"{node}.yaml").read_text())[f"/**/{node}"]["ros__parameters"]
        mode = yaml.safe_load((CONFIG / "launch_replay.yaml").read_text())
        own = {**own, **mode.get(f"/**/{node}", {}).get("ros__parameters", {})}   # the mode file wins
        for k, v in own.items():
            got = n.get_parameter(k).value
            assert (list(got) if isinstance(v, list) else got) == v, k
        read_config(n, ClusterNetNodeConfig if node == "clusternet_node" else MappingNodeConfig)
    finally:
        n.destroy_node()
        rclpy.shutdown(context=ctx)


def write_yaml(path: Path, doc: dict) -> str:
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_parameter_precedence_node_yaml_then_launch_mode_then_site_file_then_command_line(tmp_path):
    node, names = "occuseg_mapping_node", ["pose_source", "voxel_size", "depth_max"]
    fqn = ls.node_fqn(PREFIX, node)

    def resolved(site: str = "", given: dict | None = None) -> dict:
        overrides = ls.write_command_line_overrides(PREFIX, given or {}, tmp_path / "cl")
        return parameters_of(node, PREFIX, ls.parameter_files(ROOT, node, "realsense", site, overrides), names)

    # node YAML: topic, 0.0 (the model's voxel size), 1.5; launch_realsense.yaml: pose_source tf
    assert resolved() == {"pose_source": "tf", "voxel_size": 0.0, "depth_max": 1.5}
    # the site file wins over both, whatever key form it uses -- including "/**", which a dict
    # given by the launch file used to beat (the bug): files come in order, later keys win
    for i, key in enumerate([f"/**/{node}", "/**", fqn, "/camera/*/occuseg_mapping_node"]):
        site = write_yaml(tmp_path / f"site{i}.yaml", {key: {"ros__parameters": {"pose_source": "static",
                                                                                 "depth_max": 0.9}}})
        assert resolved(site) == {"pose_source": "static", "voxel_size": 0.0, "depth_max": 0.9}, key
        # a launch argument given on the command line wins over the site file, only for what it sets
        assert resolved(site, {"pose_source": "topic"}) == {"pose_source": "topic", "voxel_size": 0.0,
                                                            "depth_max": 0.9}, key
    # both a "/**" block and a node block in one site file: the file's own order decides, and the
    # command line still wins
    site = tmp_path / "mixed.yaml"
    site.write_text(f"/**/{node}:\n  ros__parameters:\n    pose_source: static\n"
                    "/**:\n  ros__parameters:\n    voxel_size: 0.01\n")
    assert resolved(str(site)) == {"pose_source": "static", "voxel_size": 0.01, "depth_max": 1.5}
    assert resolved(str(site), {"pose_source": "topic"})["pose_source"] == "topic"
    # a plain "node:" key does not match a namespaced node (the old shipped keys): no effect
    plain = write_yaml(tmp_path / "plain.yaml", {node: {"ros__parameters": {"pose_source": "static"}}})
    assert resolved(plain)["pose_source"] == "tf"
    # unset command-line arguments pass nothing
    assert ls.write_command_line_overrides(PREFIX, {"pose_source": "", "device": ""}, tmp_path) is None


def test_site_file_block_for_one_camera_leaves_the_other_camera_alone(tmp_path):
    site = write_yaml(tmp_path / "site.yaml", {"/camera/cam2/clusternet_node": {"ros__parameters": {"slop": 0.05}}})
    files = ls.parameter_files(ROOT, "clusternet_node", "realsense", site)
    assert parameters_of("clusternet_node", "/camera/cam1", files, ["slop"]) == {"slop": 0.02}
    assert parameters_of("clusternet_node", "/camera/cam2", files, ["slop"]) == {"slop": 0.05}


def test_command_line_overrides_are_typed_and_go_to_the_right_nodes():
    got = ls.command_line_overrides("/c/a", {"device": "cpu", "pose_source": "static"})
    assert got == {"/c/a/clusternet_node": {"ros__parameters": {"device": "cpu"}},
                   "/c/a/occuseg_mapping_node": {"ros__parameters": {"device": "cpu", "pose_source": "static"}}}
    with pytest.raises(KeyError):
        ls.command_line_overrides("/c/a", {"slop": "0.1"})


def test_parameter_files_refuse_a_missing_site_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="params_file"):
        ls.parameter_files(ROOT, "clusternet_node", "realsense", str(tmp_path / "nope.yaml"))
    # no launch_<mode>.yaml for this mode: only the node's own file
    assert ls.parameter_files(ROOT, "clusternet_node", "nosuchmode", "") == [str(CONFIG / "clusternet_node.yaml")]


# ------------------------------------------------------------------------------ launch_support

def test_camera_prefix_normalizes_and_rejects_bad_names():
    assert ls.camera_prefix("camera", "camera") == "/camera/camera"
    assert ls.camera_prefix("/robot/", "/wrist_cam") == "/robot/wrist_cam"
    assert ls.camera_prefix("", "cam1") == "/cam1"
    for ns, name in [("camera", ""), ("camera", "2cam"), ("cam-era", "c")]:
        with pytest.raises(ValueError):
            ls.camera_prefix(ns, name)


def test_camera_pose_becomes_static_transform_publisher_arguments():
    assert ls.parse_camera_pose("") is None
    assert ls.parse_camera_pose("0 0 0.6 0 1.5708 0") == ["--x", "0.0", "--y", "0.0", "--z", "0.6", "--roll", "0.0",
                                                          "--pitch", "1.5708", "--yaw", "0.0"]
    for bad in ("0 0 0.6", "a b c d e f"):
        with pytest.raises(ValueError, match="six numbers"):
            ls.parse_camera_pose(bad)


def test_fastdds_profile_is_the_packaged_one_unless_the_user_set_one(tmp_path):
    assert ls.fastdds_profile_value({}, ROOT) == str(CONFIG / "fastdds_profile.xml")
    assert (CONFIG / "fastdds_profile.xml").is_file()
    assert ls.fastdds_profile_value({"FASTRTPS_DEFAULT_PROFILES_FILE": "/x.xml"}, ROOT) == "/x.xml"
    assert ls.fastdds_profile_value({"FASTDDS_DEFAULT_PROFILES_FILE": "/y.xml"}, ROOT) == "/y.xml"


def test_missing_packages_names_only_the_absent_ones(monkeypatch):
    monkeypatch.setenv("AMENT_PREFIX_PATH", sys.prefix)  # the venv's ament index (ros-jazzy-* wheels)
    assert ls.missing_packages(["rclpy", "no_such_package_xyz"]) == ["no_such_package_xyz"]
    monkeypatch.delenv("AMENT_PREFIX_PATH")
    assert ls.missing_packages(["rclpy"]) == ["rclpy"]


def rviz_topics(doc: dict) -> list[str]:
    return [d["Topic"]["Value"] for d in doc["Visualization Manager"]["Displays"] if "Topic" in d]


def test_rviz_layout_follows_the_camera_namespace_and_fixed_frame():
    template = CONFIG / "instseg.rviz"
    shipped = rviz_topics(yaml.safe_load(template.read_text()))
    assert sorted(set(shipped)) == sorted({f"{PREFIX}/clusternet_node/{t}" for t in ("cloud", "markers", "labels")}
                                          | {f"{PREFIX}/occuseg_mapping_node/{t}" for t in ("map_cloud", "markers")})
    one = ls.render_rviz(template, ["/lab/wrist"], "wrist_link")
    assert one["Visualization Manager"]["Global Options"]["Fixed Frame"] == "wrist_link"
    assert rviz_topics(one) == [t.replace(PREFIX, "/lab/wrist") for t in shipped]
    two = ls.render_rviz(template, ["/camera/cam1", "/camera/cam2"], "map")
    topics = rviz_topics(two)
    assert len(topics) == 2 * len(shipped)
    for prefix in ("/camera/cam1", "/camera/cam2"):
        assert sorted(t for t in topics if t.startswith(prefix + "/")) == sorted(t.replace(PREFIX, prefix)
                                                                                for t in shipped)
    names = [d["Name"] for d in two["Visualization Manager"]["Displays"]]
    assert len(names) == len(set(names))  # RViz shows each camera's displays under its own name


def test_shipped_multi_camera_rviz_is_the_rendered_layout_of_the_default_cameras():
    shipped = yaml.safe_load((CONFIG / "multi_camera.rviz").read_text())
    assert shipped == ls.render_rviz(CONFIG / "instseg.rviz", ["/camera/cam1", "/camera/cam2"], "map")


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_launch_files_declare_described_arguments_and_use_launch_support(name):
    """Parsed, not run: the argument table (name, default, description) of every launch file."""
    tree = ast.parse((ROOT / "launch" / name).read_text())
    table = next(n.value for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)
                 and n.targets[0].id == "ARGUMENTS")
    args = {e.elts[0].value: e for e in table.elts}
    text = (ROOT / "launch" / name).read_text()
    if name == "multi_camera.launch.py":
        # per-camera arguments come from a loop over CAMERAS
        assert "CAMERAS = (1, 2)" in text
        for arg in ("serial_no", "camera_name", "camera_pose"):
            assert f'(f"{arg}{{k}}"' in text, arg
        expected = {"camera_namespace", "params_file", "fixed_frame", "use_rviz", "pose_source", "device"}
    else:
        expected = {"camera_namespace", "camera_name", "params_file", "fixed_frame", "use_rviz", "pose_source",
                    "device"}
    assert expected <= set(args), name
    for arg, e in args.items():
        desc = e.elts[2]
        assert isinstance(desc, (ast.Constant, ast.JoinedStr, ast.BinOp)), arg  # every argument described
    assert "ls.profile_actions()" in text and "OpaqueFunction(function=setup)" in text
    assert "parameters=[{" not in text  # node parameters only from files (a dict lands under /**)


# ------------------------------------------------------------------------------ replay player

def test_playback_schedule_keeps_spacing_and_increases_across_passes():
    from instseg_ros.ros.replay import playback_schedule

    t = [10_000, 10_000, 510_000, 510_000, 1_010_000]  # ns: three stamps 0.5 ms apart
    got = playback_schedule(t, 1.0, 7, passes=2)
    # pass 2 starts one span (1 ms) plus the median gap (0.5 ms) after pass 1
    assert got == [(0, 7), (1, 7), (2, 500_007), (3, 500_007), (4, 1_000_007),
                   (0, 1_500_007), (1, 1_500_007), (2, 2_000_007), (3, 2_000_007), (4, 2_500_007)]
    assert [s for _, s in playback_schedule(t, 2.0, 0)] == [0, 0, 250_000, 250_000, 500_000]
    with pytest.raises(ValueError):
        playback_schedule(t, 0.0, 0)


def test_recorded_pose_becomes_the_map_to_camera_transform():
    """What the player sends on /tf (where tf2_msgs exists): the recorded T_map_camera unchanged."""
    from instseg_ros.ros.bag import DEMO_BAG
    from instseg_ros.ros.replay import pose_to_transform
    from instseg_ros.ros.tools.demo import load_views
    from instseg_ros.ros.tools.recording import CAMERA_FRAME, MAP_FRAME

    pose = load_views(DEMO_BAG)[0][2]["pose"]
    t = pose_to_transform(pose, CAMERA_FRAME)
    assert (t.header.frame_id, t.child_frame_id, t.header.stamp) == (MAP_FRAME, CAMERA_FRAME, pose.header.stamp)
    p, q = pose.pose.position, pose.pose.orientation
    assert (t.transform.translation.x, t.transform.translation.y, t.transform.translation.z) == (p.x, p.y, p.z)
    assert (t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z, t.transform.rotation.w) == \
        (q.x, q.y, q.z, q.w)


def test_player_refuses_loop_without_restamp():
    from instseg_ros.ros.replay import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--loop", "--no-restamp"])
    cfg = parse_args(["--remap", "/a/b", "/c/b", "--wait-for", "/x/n/"])
    assert cfg.remaps == {"/a/b": "/c/b"} and cfg.wait_for == ["/x/n"] and cfg.restamp and not cfg.loop


# ------------------------------------------------------------------------------ real graph

def node_cmd(node: str, mode: str) -> list[str]:
    from instseg_ros.ros.tools.launcher import NODE_MODULES

    files = ls.parameter_files(ROOT, node, mode, str(CONFIG / "site_overrides.yaml"))
    return [sys.executable, "-u", "-m", NODE_MODULES[node]] + launch_ros_args(node, GRAPH_PREFIX, files)


GRAPH_PREFIX = f"/t{os.getpid()}/cam"
BAD_LINES = ("ERROR", "Traceback", "Failed to publish", "context is invalid")


@pytest.mark.graph
def test_replay_waits_for_the_nodes_then_sigint_stops_everything_cleanly(ros_env, tmp_path):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from instseg_ros.msg import ObjectInstanceArray
    from instseg_ros.ros.bag import DEMO_BAG
    from instseg_ros.ros.tools.demo import load_views
    from instseg_ros.ros.tools.launcher import Collector, FramePublisher, NodeProcess, spin_until
    from instseg_ros.ros.tools.recording import CAMERA_NS, COLOR_TOPIC, POSE_TOPIC

    env = dict(ros_env, OMP_NUM_THREADS="1")
    player_cmd = [sys.executable, "-u", "-m", "instseg_ros.ros.replay", "--bag", str(DEMO_BAG), "--timeout", "240"]
    for t in ("color/image_raw", "aligned_depth_to_color/image_raw", "color/camera_info"):
        player_cmd += ["--remap", f"{CAMERA_NS}/{t}", f"{GRAPH_PREFIX}/{t}"]
    player_cmd += ["--remap", POSE_TOPIC, f"{GRAPH_PREFIX}/pose", "--topics", POSE_TOPIC, COLOR_TOPIC,
                   f"{CAMERA_NS}/aligned_depth_to_color/image_raw", f"{CAMERA_NS}/color/camera_info"]
    for node in ls.NODES:
        player_cmd += ["--wait-for", ls.node_fqn(GRAPH_PREFIX, node)]
    player_cmd += ["--ros-args", "-r", "__node:=replay_player", "-r", f"__ns:={GRAPH_PREFIX}"]

    out = {n: f"{ls.node_fqn(GRAPH_PREFIX, n)}/instances" for n in ls.NODES}
    rclpy.init()
    node = rclpy.create_node("launch_test")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    col = Collector(node, {t: ObjectInstanceArray for t in out.values()})
    # the player starts first: it must wait, not play into the void
    player = NodeProcess(player_cmd, env, tmp_path / "player.log")
    procs = {n: NodeProcess(node_cmd(n, "replay"), env, tmp_path / f"{n}.log") for n in ls.NODES}
    try:
        assert spin_until(ex, lambda: not player.alive(), 300.0), "replay_player did not finish:\n" + player.output()
        assert player.proc.returncode == 0, player.output()
        log = player.output()
        assert "nodes active and subscribed after" in log and "published 24 messages" in log, log
        # the whole recording reached both nodes: the camera node answers, the map segments
        assert spin_until(ex, lambda: all(col.count(t) >= 1 for t in out.values()), 120.0), \
            {t: col.count(t) for t in out.values()}

        # frames keep streaming from here (the camera node is busy with one when the signal comes)
        views, _, _ = load_views(DEMO_BAG)
        pub = FramePublisher(node, GRAPH_PREFIX)
        stop = threading.Event()

        def stream():
            from instseg_ros.ros.conversions import ns_to_stamp

            k = 0
            while not stop.is_set():
                v = views[k % len(views)]
                st = ns_to_stamp(time.time_ns())
                for key in ("color", "depth", "info", "pose"):
                    v[key].header.stamp = st
                pub.pose.publish(v["pose"])
                pub.publish_msgs(v["color"], v["depth"], v["info"])
                k += 1
                stop.wait(0.2)

        streamer = threading.Thread(target=stream, daemon=True)
        streamer.start()
        spin_until(ex, lambda: False, 3.0)
        t0 = time.monotonic()
        for p in procs.values():
            p.proc.send_signal(signal.SIGINT)
        exit_s = {}
        for n, p in procs.items():
            try:
                p.proc.wait(EXIT_BUDGET_S - (time.monotonic() - t0))
            except subprocess.TimeoutExpired:
                pass
            exit_s[n] = time.monotonic() - t0
        stop.set()
        streamer.join(5.0)
        for n, p in procs.items():
            text = p.output()
            assert p.proc.returncode == 0, f"{n} exit code {p.proc.returncode} after {exit_s[n]:.1f} s:\n{text[-3000:]}"
            assert exit_s[n] < EXIT_BUDGET_S
            bad = [line for line in text.splitlines() if any(b in line for b in BAD_LINES)]
            assert not bad, f"{n}: {bad}"
            # the frame in flight finished and the model was freed, or (a map segmentation on a
            # busy CPU) the node said it would not wait for it
            assert "signal received: stopping" in text
            assert "model freed" in text or "exiting without waiting for it" in text
        print(f"exit after SIGINT: {', '.join(f'{n} {s:.2f} s' for n, s in exit_s.items())}")
    finally:
        for p in [player, *procs.values()]:
            p.stop()
        node.destroy_node()
        rclpy.try_shutdown()


# ------------------------------------------------------------------------------ shutdown budget

def test_shutdown_budget_reports_work_that_overruns_and_passes_errors_on():
    from instseg_ros.ros.node_common import _within

    done = threading.Event()
    assert _within(done.set, 5.0) and done.is_set()
    release = threading.Event()
    t0 = time.monotonic()
    assert not _within(lambda: release.wait(10.0), 0.2)
    assert time.monotonic() - t0 < 5.0  # did not wait for the work
    release.set()

    def fail():
        raise RuntimeError("stop failed")

    with pytest.raises(RuntimeError, match="stop failed"):
        _within(fail, 5.0)


@pytest.mark.graph
def test_sigint_while_the_model_loads_ends_the_node_at_once(ros_env, tmp_path):
    """Ctrl-C right after start-up (nothing in flight yet) does not wait for the model to load."""
    from instseg_ros.ros.graph import wait_until
    from instseg_ros.ros.tools.launcher import NodeProcess

    p = NodeProcess(node_cmd("clusternet_node", "realsense"), dict(ros_env, OMP_NUM_THREADS="1"),
                    tmp_path / "clusternet_node.log")
    try:
        # configure logs "configured: ..." and activate then loads the model (seconds on a CPU)
        assert wait_until(lambda: "configured:" in p.output() or not p.alive(), 120.0), p.output()
        loading = "model " not in p.output()
        t0 = time.monotonic()
        p.proc.send_signal(signal.SIGINT)
        p.proc.wait(EXIT_BUDGET_S)
        took = time.monotonic() - t0
    finally:
        p.stop()
    text = p.output()
    assert p.proc.returncode == 0, text[-3000:]
    assert not [line for line in text.splitlines() if any(b in line for b in BAD_LINES)], text[-3000:]
    print(f"SIGINT {'while the model loaded' if loading else 'after activation'}: exit after {took:.2f} s")
    if loading:
        assert "model freed" not in text  # it never finished loading: interrupted, not waited for
