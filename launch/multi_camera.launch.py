"""Two RealSense cameras, each with its own clusternet_node and occuseg_mapping_node, and one RViz.

    ros2 launch instseg_ros multi_camera.launch.py serial_no1:=<serial> serial_no2:=<serial>
        [camera_name1:=cam1] [camera_name2:=cam2] [camera_namespace:=camera]
        [camera_pose1:="x y z roll pitch yaw"] [camera_pose2:="..."] [params_file:=my_site.yaml]
        [fixed_frame:=map] [use_rviz:=false] [pose_source:=...] [device:=...]

Camera k runs under /<camera_namespace>/<camera_namek>/ (driver topics and both nodes), so each
node sees only its own camera: /camera/cam1/clusternet_node/instances, /camera/cam2/... The
parameters are those of realsense.launch.py for both cameras; a block keyed
/<camera_namespace>/<camera_namek>/<node> in params_file sets one camera's node only. RViz shows
both cameras (config/instseg.rviz repeated per camera); with camera_poseK (or the robot's tf) both
are placed in map. More cameras: add numbers to CAMERAS (arguments serial_no3, ... follow).
"""
import os
import tempfile

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from instseg_ros.ros import launch_support as ls
from launch import LaunchDescription

PKG = get_package_share_directory("instseg_ros")
CAMERAS = (1, 2)

ARGUMENTS = [
    ("camera_namespace", "camera", "first part of both cameras' namespaces"),
    ("params_file", os.path.join(PKG, "config", "site_overrides.yaml"),
     "site parameters for all nodes, loaded after config/<node>.yaml and config/launch_realsense.yaml"),
    ("fixed_frame", "", "RViz fixed frame; '' = map when a camera_poseK is given, else <camera_name1>_link"),
    ("use_rviz", "true", "start one rviz2 showing both cameras"),
    ("pose_source", "", "every mapping node's pose_source over the YAML files; '' = theirs"),
    ("device", "", "every node's device over the YAML files; '' = theirs"),
]
for k in CAMERAS:
    ARGUMENTS += [
        (f"serial_no{k}", "", f"serial number of camera {k} (two cameras need both; '' = any)"),
        (f"camera_name{k}", f"cam{k}", f"name of camera {k}: namespace /<camera_namespace>/<camera_name{k}>, "
                                      f"tf frames <camera_name{k}>_link ..."),
        (f"camera_pose{k}", "", f"'x y z roll pitch yaw' of <camera_name{k}>_link in map (static transform); "
                               "'' = the robot's tf provides it"),
    ]


def setup(context) -> list:
    arg = lambda k: LaunchConfiguration(k).perform(context)  # noqa: E731
    tmp = tempfile.mkdtemp(prefix="instseg_launch_")
    given = {k: arg(k) for k in ls.COMMAND_LINE_PARAMETERS}
    names = [arg(f"camera_name{k}").strip("/") for k in CAMERAS]
    prefixes = [ls.camera_prefix(arg("camera_namespace"), n) for n in names]
    if len(set(prefixes)) != len(prefixes):
        raise ValueError(f"the cameras need different camera_nameK (got {prefixes})")
    actions = []
    for k, name, prefix in zip(CAMERAS, names, prefixes):
        actions += ls.camera_actions(prefix, name, "realsense", arg("params_file"), given, tmp,
                                     serial_no=arg(f"serial_no{k}"), camera_pose=arg(f"camera_pose{k}"))
    if ls.is_true(arg("use_rviz")):
        posed = any(arg(f"camera_pose{k}").strip() for k in CAMERAS)
        fixed = arg("fixed_frame") or ("map" if posed else f"{names[0]}_link")
        actions += ls.rviz_actions(prefixes, fixed, tmp)
    return actions


def generate_launch_description():
    return LaunchDescription([DeclareLaunchArgument(n, default_value=d, description=h) for n, d, h in ARGUMENTS]
                             + ls.profile_actions() + [OpaqueFunction(function=setup)])
