"""A rosbag2 recording instead of the camera: replay_player + both nodes (+ RViz).

    ros2 launch instseg_ros replay.launch.py [bag:=<rosbag2 dir>] [camera_namespace:=camera]
        [camera_name:=camera] [rate:=1.0] [loop:=false] [params_file:=...] [fixed_frame:=map]
        [use_rviz:=false] [pose_source:=...] [device:=...]

The default bag is the shipped demo recording (colour, aligned depth, camera_info under
/camera/camera/, PoseStamped camera poses on /camera/pose; 6 views over 2.5 s). The player
(instseg_ros/ros/replay.py) waits until both nodes are active and subscribed to its topics, then
publishes the recording with stamps rewritten to the playback time, the camera topics under
/<camera_namespace>/<camera_name>/ and the poses on /<camera_namespace>/<camera_name>/pose (the
mapping node's relative 'pose' input), and the poses also on /tf (map -> camera optical frame) when
tf2_msgs is installed, so RViz's fixed frame map places the camera results. Played once by
default; loop:=true repeats it with stamps that keep increasing. Parameters, later winning:
config/<node>.yaml < config/launch_replay.yaml (pose_source: topic) < params_file < pose_source:= /
device:=. The Fast DDS profile is set here unless FASTRTPS_DEFAULT_PROFILES_FILE is already set.
"""
import os
import tempfile

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from instseg_ros.ros import launch_support as ls
from launch import LaunchDescription

PKG = get_package_share_directory("instseg_ros")
DEMO_BAG = os.path.join(PKG, "data", "demo", "bin_sequence")
#: Where the demo recording keeps the camera and its poses.
RECORDED_PREFIX, RECORDED_POSE = "/camera/camera", "/camera/pose"
CAMERA_TOPICS = ("color/image_raw", "aligned_depth_to_color/image_raw", "color/camera_info")

ARGUMENTS = [
    ("bag", DEMO_BAG, "rosbag2 directory to play (topics as the demo recording names them)"),
    ("camera_namespace", "camera", "first part of the namespace the recording is played under"),
    ("camera_name", "camera", "second part of that namespace (/<camera_namespace>/<camera_name>/...)"),
    ("rate", "1.0", "playback speed factor"),
    ("loop", "false", "play the recording again and again (stamps rewritten, so they keep increasing)"),
    ("params_file", os.path.join(PKG, "config", "site_overrides.yaml"),
     "site parameters for both nodes, loaded after config/<node>.yaml and config/launch_replay.yaml"),
    ("fixed_frame", "map", "RViz fixed frame (map: placed through the player's /tf from the recorded poses)"),
    ("use_rviz", "true", "start rviz2 with config/instseg.rviz pointed at this camera"),
    ("pose_source", "", "the mapping node's pose_source over the YAML files; '' = theirs (topic)"),
    ("device", "", "both nodes' device (auto | cpu | cuda[:N]) over the YAML files; '' = theirs"),
]


def setup(context) -> list:
    arg = lambda k: LaunchConfiguration(k).perform(context)  # noqa: E731
    prefix = ls.camera_prefix(arg("camera_namespace"), arg("camera_name"))
    tmp = tempfile.mkdtemp(prefix="instseg_launch_")
    given = {k: arg(k) for k in ls.COMMAND_LINE_PARAMETERS}
    actions = ls.camera_actions(prefix, arg("camera_name").strip("/"), "replay", arg("params_file"), given, tmp)
    player = ["--bag", arg("bag"), "--rate", arg("rate")]
    for t in CAMERA_TOPICS:
        player += ["--remap", f"{RECORDED_PREFIX}/{t}", f"{prefix}/{t}"]
    player += ["--remap", RECORDED_POSE, f"{prefix}/pose"]
    player += ["--topics", RECORDED_POSE] + [f"{RECORDED_PREFIX}/{t}" for t in CAMERA_TOPICS]
    for node in ls.NODES:
        player += ["--wait-for", ls.node_fqn(prefix, node)]
    if ls.is_true(arg("loop")):
        player.append("--loop")
    actions.append(Node(package="instseg_ros", executable="replay_player", name="replay_player",
                        namespace=prefix, arguments=player, output="screen"))
    if ls.is_true(arg("use_rviz")):
        actions += ls.rviz_actions([prefix], arg("fixed_frame"), tmp)
    return actions


def generate_launch_description():
    return LaunchDescription([DeclareLaunchArgument(n, default_value=d, description=h) for n, d, h in ARGUMENTS]
                             + ls.profile_actions() + [OpaqueFunction(function=setup)])
