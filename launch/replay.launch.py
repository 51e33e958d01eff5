"""A rosbag2 recording instead of the camera: bag player + both nodes + RViz.

    ros2 launch instseg_ros replay.launch.py [bag:=<rosbag2 dir>] [params_file:=...] [use_rviz:=false]
        [camera_namespace:=camera] [camera_name:=camera]

The default bag is the shipped demo recording (instseg_ros/data/demo/bin_sequence: colour, aligned
depth, camera_info under /camera/camera/ and PoseStamped camera poses on /camera/pose), so the
mapping node takes its pose from that topic. ``ros2 bag play`` publishes with the recorded stamps.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node

PKG = get_package_share_directory("instseg_ros")
DEMO_BAG = os.path.join(PKG, "data", "demo", "bin_sequence")


def generate_launch_description():
    params_file = LaunchConfiguration("params_file")
    ns = LaunchConfiguration("camera_namespace")
    name = LaunchConfiguration("camera_name")
    cam = PathJoinSubstitution(["/", ns, name])
    inputs = [
        ("color/image_raw", PathJoinSubstitution([cam, "color/image_raw"])),
        ("aligned_depth_to_color/image_raw", PathJoinSubstitution([cam, "aligned_depth_to_color/image_raw"])),
        ("color/camera_info", PathJoinSubstitution([cam, "color/camera_info"])),
    ]
    return LaunchDescription([
        DeclareLaunchArgument("bag", default_value=DEMO_BAG, description="rosbag2 directory to play"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(PKG, "config", "site_overrides.yaml"),
                              description="parameter overrides for both nodes (loaded after config/<node>.yaml)"),
        DeclareLaunchArgument("use_rviz", default_value="true", description="start rviz2 with config/instseg.rviz"),
        DeclareLaunchArgument("camera_namespace", default_value="camera"),
        DeclareLaunchArgument("camera_name", default_value="camera"),
        ExecuteProcess(cmd=["ros2", "bag", "play", LaunchConfiguration("bag")], output="screen"),
        Node(
            package="instseg_ros", executable="clusternet_node", name="clusternet_node",
            parameters=[os.path.join(PKG, "config", "clusternet_node.yaml"), params_file],
            remappings=inputs, output="screen",
        ),
        Node(
            package="instseg_ros", executable="occuseg_mapping_node", name="occuseg_mapping_node",
            parameters=[os.path.join(PKG, "config", "occuseg_mapping_node.yaml"), {"pose_source": "topic"},
                        params_file],
            remappings=inputs + [("pose", "/camera/pose")], output="screen",
        ),
        Node(
            package="rviz2", executable="rviz2", name="rviz2",
            arguments=["-d", os.path.join(PKG, "config", "instseg.rviz")],
            condition=IfCondition(LaunchConfiguration("use_rviz")), output="screen",
        ),
    ])
