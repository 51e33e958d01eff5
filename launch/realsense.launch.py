"""RealSense camera + clusternet_node + occuseg_mapping_node + RViz.

    ros2 launch instseg_ros realsense.launch.py [params_file:=my_site.yaml] [use_rviz:=false]
        [camera_namespace:=camera] [camera_name:=camera]

The camera runs with aligned depth (realsense2_camera 4.x, topics under
/<camera_namespace>/<camera_name>/); both nodes load their own YAML from config/ and then
``params_file`` (site overrides for both, see config/site_overrides.yaml). The mapping node
takes its pose from tf (pose_source:=tf) because a live camera has no pose topic; set
map_frame / camera_frame in params_file to match your robot's tf tree.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node

PKG = get_package_share_directory("instseg_ros")


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
        DeclareLaunchArgument("params_file", default_value=os.path.join(PKG, "config", "site_overrides.yaml"),
                              description="parameter overrides for both nodes (loaded after config/<node>.yaml)"),
        DeclareLaunchArgument("use_rviz", default_value="true", description="start rviz2 with config/instseg.rviz"),
        DeclareLaunchArgument("camera_namespace", default_value="camera"),
        DeclareLaunchArgument("camera_name", default_value="camera"),
        Node(
            package="realsense2_camera", executable="realsense2_camera_node", namespace=ns, name=name,
            parameters=[{"align_depth.enable": True, "enable_sync": True, "pointcloud.enable": False}],
            output="screen",
        ),
        Node(
            package="instseg_ros", executable="clusternet_node", name="clusternet_node",
            parameters=[os.path.join(PKG, "config", "clusternet_node.yaml"), params_file],
            remappings=inputs, output="screen",
        ),
        Node(
            package="instseg_ros", executable="occuseg_mapping_node", name="occuseg_mapping_node",
            parameters=[os.path.join(PKG, "config", "occuseg_mapping_node.yaml"), {"pose_source": "tf"}, params_file],
            remappings=inputs, output="screen",
        ),
        Node(
            package="rviz2", executable="rviz2", name="rviz2",
            arguments=["-d", os.path.join(PKG, "config", "instseg.rviz")],
            condition=IfCondition(LaunchConfiguration("use_rviz")), output="screen",
        ),
    ])
