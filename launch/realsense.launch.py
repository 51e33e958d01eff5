"""One RealSense camera + clusternet_node + occuseg_mapping_node (+ RViz).

    ros2 launch instseg_ros realsense.launch.py [camera_namespace:=camera] [camera_name:=camera]
        [serial_no:=<serial>] [params_file:=my_site.yaml] [camera_pose:="x y z roll pitch yaw"]
        [fixed_frame:=map] [use_rviz:=false] [pose_source:=tf|topic|static] [device:=auto|cpu|cuda]

Everything of one camera lives under /<camera_namespace>/<camera_name>/: the camera's topics
(realsense2_camera 4.x) and the two nodes, whose relative inputs therefore resolve to this camera;
any number of cameras can run side by side (multi_camera.launch.py). Parameters, later winning:
config/<node>.yaml < config/launch_realsense.yaml (pose_source: tf) < params_file < the
pose_source:= / device:= arguments. The Fast DDS profile config/fastdds_profile.xml is set here
unless FASTRTPS_DEFAULT_PROFILES_FILE is already set. camera_pose:= publishes a static
map -> <camera_name>_link (a camera on a stand); on a robot leave it empty, the robot's tf provides
it. Missing optional packages (realsense2_camera, rviz2, tf2_ros) are skipped with a log line.
"""
import os
import tempfile

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from instseg_ros.ros import launch_support as ls
from launch import LaunchDescription

PKG = get_package_share_directory("instseg_ros")

ARGUMENTS = [
    ("camera_namespace", "camera", "first part of the camera's namespace (realsense2_camera's camera_namespace)"),
    ("camera_name", "camera", "camera name: the driver's node name, second part of the namespace, prefix of its "
                              "tf frames (<camera_name>_link, <camera_name>_color_optical_frame)"),
    ("serial_no", "", "serial number of the RealSense to open ('' = the first one found)"),
    ("params_file", os.path.join(PKG, "config", "site_overrides.yaml"),
     "site parameters for both nodes, loaded after config/<node>.yaml and config/launch_realsense.yaml"),
    ("camera_pose", "", "'x y z roll pitch yaw' (m, rad) of <camera_name>_link in map, published as a static "
                        "transform; '' = the robot's tf provides map -> camera"),
    ("fixed_frame", "", "RViz fixed frame; '' = map when camera_pose is given, else <camera_name>_link"),
    ("use_rviz", "true", "start rviz2 with config/instseg.rviz pointed at this camera"),
    ("pose_source", "", "the mapping node's pose_source (tf | topic | static) over the YAML files; '' = theirs"),
    ("device", "", "both nodes' device (auto | cpu | cuda[:N]) over the YAML files; '' = theirs"),
]


def setup(context) -> list:
    arg = lambda k: LaunchConfiguration(k).perform(context)  # noqa: E731
    name = arg("camera_name").strip("/")
    prefix = ls.camera_prefix(arg("camera_namespace"), name)
    tmp = tempfile.mkdtemp(prefix="instseg_launch_")
    given = {k: arg(k) for k in ls.COMMAND_LINE_PARAMETERS}
    actions = ls.camera_actions(prefix, name, "realsense", arg("params_file"), given, tmp,
                                serial_no=arg("serial_no"), camera_pose=arg("camera_pose"))
    if ls.is_true(arg("use_rviz")):
        fixed = arg("fixed_frame") or ("map" if arg("camera_pose").strip() else f"{name}_link")
        actions += ls.rviz_actions([prefix], fixed, tmp)
    return actions


def generate_launch_description():
    return LaunchDescription([DeclareLaunchArgument(n, default_value=d, description=h) for n, d, h in ARGUMENTS]
                             + ls.profile_actions() + [OpaqueFunction(function=setup)])
