"""What ``launch/*.launch.py`` compute: plain functions (tested without the launch stack) and, at
the end, the launch actions built from them (importing launch / launch_ros only when called).

* :func:`camera_prefix`: ``/<camera_namespace>/<camera_name>``, the namespace of one camera's topics
  (realsense2_camera 4.x) and of the two nodes that process it.
* :func:`parameter_files`: the ``--params-file`` list of one node, in precedence order: the node's
  own ``config/<node>.yaml`` < the launch file's ``config/launch_<mode>.yaml`` < the site
  ``params_file`` < :func:`write_command_line_overrides` (launch arguments such as ``pose_source:=``).
  Every shipped file keys its block ``/**/<node>`` so it matches the node in any namespace.
* :func:`render_rviz`: the shipped RViz layout (``config/instseg.rviz``, written for the camera
  ``/camera/camera``) re-pointed at one or more cameras, with a chosen fixed frame.
* :func:`fastdds_profile_value`: the Fast DDS profile the launch files set unless the user set one.
* :func:`missing_packages`: optional packages (realsense2_camera, rviz2, tf2_ros) not installed.
* :func:`camera_actions`, :func:`rviz_actions`, :func:`profile_actions`: one camera's driver, nodes
  and static transform; RViz; the Fast DDS profile variables (what the three launch files share).

Why files and not ``parameters=[{...}]`` dicts: launch_ros writes a dict under ``/**``, and rclpy
applies parameter-file blocks in the order their keys first appear, so a ``/**`` block that comes
after a node block wins over it even when it was given earlier on the command line.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

#: Nodes the launch files start (executable = default node name).
NODES = ("clusternet_node", "occuseg_mapping_node")
#: The camera the shipped RViz layout and the demo recording are written for.
DEFAULT_PREFIX = "/camera/camera"
#: Environment variable Fast DDS 2.x (Jazzy) reads its XML profile from, and the 3.x name.
PROFILE_ENV = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")
#: Seconds launch waits after SIGINT before it escalates to SIGTERM (and logs an ERROR), for the
#: two nodes (launch's default: 5). A node finishes the work in flight for up to
#: node_common.STOP_BUDGET_S = 3 s, but during a map segmentation on a busy CPU the node saw the
#: signal 2.1 s late (measured; Python runs signal handlers only when the main thread gets the GIL,
#: which native segmentation code can hold) and exited 5.8 s after SIGINT.
NODE_SIGTERM_TIMEOUT_S = 8
#: Launch arguments forwarded as node parameters when given (""= not given): name -> nodes.
COMMAND_LINE_PARAMETERS = {"pose_source": ("occuseg_mapping_node",), "device": NODES}


def camera_prefix(namespace: str, name: str) -> str:
    """'/<namespace>/<name>' with redundant slashes removed ('' namespace -> '/<name>').

    ValueError for an empty camera name or characters ROS names do not allow."""
    parts = [p for p in f"{namespace}/{name}".split("/") if p]
    if not name.strip("/") or not parts:
        raise ValueError("camera_name must not be empty")
    for p in parts:
        if not (p[0].isalpha() or p[0] == "_") or not all(c.isalnum() or c == "_" for c in p):
            raise ValueError(f"{p!r} in camera namespace / name is not a valid ROS name token "
                             f"(letters, digits, '_', not starting with a digit)")
    return "/" + "/".join(parts)


def node_fqn(prefix: str, node: str) -> str:
    """Fully qualified name of ``node`` started in namespace ``prefix``."""
    return f"{prefix.rstrip('/')}/{node}"


def parameter_files(share: str | os.PathLike, node: str, mode: str, params_file: str,
                    overrides_file: str | None = None) -> list[str]:
    """``--params-file`` arguments of ``node`` in precedence order (later wins); see the module
    docstring. ``mode`` selects ``config/launch_<mode>.yaml`` (skipped when absent), ``params_file``
    "" means none. FileNotFoundError when ``params_file`` is given but does not exist."""
    cfg = Path(share) / "config"
    files = [str(cfg / f"{node}.yaml")]
    mode_file = cfg / f"launch_{mode}.yaml"
    if mode_file.is_file():
        files.append(str(mode_file))
    if params_file:
        p = Path(params_file).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"params_file {params_file} does not exist")
        files.append(str(p.resolve()))
    if overrides_file:
        files.append(str(overrides_file))
    return files


def command_line_overrides(prefix: str, given: Mapping[str, str]) -> dict[str, dict]:
    """Parameter-file content for the launch arguments in :data:`COMMAND_LINE_PARAMETERS` that were
    given (non-empty): ``{<fqn>: {"ros__parameters": {name: value}}}`` per node concerned.

    The key is the node's fully qualified name, a key none of the shipped files uses, so the block
    comes last among the blocks matching the node and wins. Values are typed as YAML would type
    them on the command line ("cpu" -> str, "1" -> int)."""
    out: dict[str, dict] = {}
    for arg, value in given.items():
        if arg not in COMMAND_LINE_PARAMETERS:
            raise KeyError(f"{arg} is not a launch argument forwarded to the nodes")
        if value == "":
            continue
        for node in COMMAND_LINE_PARAMETERS[arg]:
            block = out.setdefault(node_fqn(prefix, node), {"ros__parameters": {}})
            block["ros__parameters"][arg] = yaml.safe_load(value)
    return out


def write_command_line_overrides(prefix: str, given: Mapping[str, str], directory: str | os.PathLike) -> str | None:
    """:func:`command_line_overrides` written to ``<directory>/<prefix>_overrides.yaml``; None when
    no argument was given."""
    content = command_line_overrides(prefix, given)
    if not content:
        return None
    path = Path(directory) / f"{prefix.strip('/').replace('/', '_')}_overrides.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return str(path)


def fastdds_profile_value(environ: Mapping[str, str], share: str | os.PathLike) -> str:
    """Profile path for :data:`PROFILE_ENV`: the user's own when one is set, else the package's
    ``config/fastdds_profile.xml``."""
    for name in PROFILE_ENV:
        if environ.get(name):
            return environ[name]
    return str(Path(share) / "config" / "fastdds_profile.xml")


def missing_packages(names: Iterable[str]) -> list[str]:
    """The packages of ``names`` that the ament index does not know (all of them when there is no
    ament index: AMENT_PREFIX_PATH unset)."""
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    missing = []
    for n in names:
        try:
            get_package_share_directory(n)
        except (PackageNotFoundError, ValueError, OSError):
            missing.append(n)
    return missing


def parse_camera_pose(text: str) -> list[str] | None:
    """'x y z roll pitch yaw' (m, rad) -> static_transform_publisher's --x .. --yaw arguments;
    None for ''. ValueError for anything else."""
    if not text.strip():
        return None
    vals = text.replace(",", " ").split()
    try:
        nums = [float(v) for v in vals]
    except ValueError:
        nums = []
    if len(nums) != 6:
        raise ValueError(f"camera_pose {text!r} must be six numbers: x y z roll pitch yaw (m, rad)")
    args = []
    for flag, v in zip(("--x", "--y", "--z", "--roll", "--pitch", "--yaw"), nums):
        args += [flag, repr(v)]
    return args


def render_rviz(template: str | os.PathLike, prefixes: list[str], fixed_frame: str) -> dict:
    """The RViz layout ``template`` (displays subscribed under :data:`DEFAULT_PREFIX`) with those
    displays repeated for every camera prefix in ``prefixes`` (named "<prefix>: <display>" when
    there is more than one) and ``fixed_frame``. Returns the YAML document (a dict)."""
    if not prefixes:
        raise ValueError("render_rviz needs at least one camera prefix")
    doc = yaml.safe_load(Path(template).read_text())
    vm = doc["Visualization Manager"]
    vm["Global Options"]["Fixed Frame"] = fixed_frame
    displays = []
    for d in vm["Displays"]:
        topic = d.get("Topic", {}).get("Value", "")
        if not topic.startswith(DEFAULT_PREFIX + "/"):
            displays.append(d)
            continue
        for prefix in prefixes:
            c = copy.deepcopy(d)
            c["Topic"]["Value"] = prefix + topic[len(DEFAULT_PREFIX):]
            if len(prefixes) > 1:
                c["Name"] = f"{prefix}: {d['Name']}"
            displays.append(c)
    vm["Displays"] = displays
    return doc


def write_rviz(template: str | os.PathLike, prefixes: list[str], fixed_frame: str,
               directory: str | os.PathLike) -> str:
    """:func:`render_rviz` written to ``<directory>/instseg_<n>cam.rviz``; returns the path."""
    path = Path(directory) / f"instseg_{len(prefixes)}cam.rviz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(render_rviz(template, prefixes, fixed_frame), sort_keys=False))
    return str(path)


# ---------------------------------------------------------------------------------------------
# Launch actions (these import launch / launch_ros at call time: only launch files call them)

def share_dir() -> str:
    """instseg_ros's share directory (colcon install), else the source checkout."""
    from instseg_ros.ros.node_common import package_root

    return str(package_root())


def camera_actions(prefix: str, camera_name: str, mode: str, params_file: str, given: Mapping[str, str],
                   tmp: str | os.PathLike, serial_no: str | None = None, camera_pose: str = "") -> list:
    """Launch actions of one camera: the realsense2_camera driver (when ``serial_no`` is not None;
    a log line instead when the package is missing), both nodes in namespace ``prefix`` with
    :func:`parameter_files`, and a static map -> <camera_name>_link for ``camera_pose``."""
    from launch.actions import LogInfo
    from launch_ros.actions import Node
    from launch_ros.parameter_descriptions import ParameterValue

    share = share_dir()
    actions = []
    if serial_no is not None:
        if missing_packages(["realsense2_camera"]):
            actions.append(LogInfo(msg=f"realsense2_camera is not installed: no camera driver for {prefix} "
                                       "(the nodes wait for its topics)"))
        else:
            actions.append(Node(
                package="realsense2_camera", executable="realsense2_camera_node",
                namespace=prefix.rsplit("/", 1)[0] or "/", name=camera_name,
                parameters=[{"camera_name": camera_name, "serial_no": ParameterValue(serial_no, value_type=str),
                             "align_depth.enable": True, "enable_sync": True, "pointcloud.enable": False}],
                output="screen"))
    overrides = write_command_line_overrides(prefix, given, tmp)
    for node in NODES:
        actions.append(Node(package="instseg_ros", executable=node, name=node, namespace=prefix,
                            parameters=parameter_files(share, node, mode, params_file, overrides), output="screen",
                            sigterm_timeout=str(NODE_SIGTERM_TIMEOUT_S)))
    pose_args = parse_camera_pose(camera_pose)
    if pose_args is not None:
        if missing_packages(["tf2_ros"]):
            actions.append(LogInfo(msg=f"tf2_ros is not installed: camera_pose of {prefix} is not published"))
        else:
            actions.append(Node(package="tf2_ros", executable="static_transform_publisher",
                                name="camera_pose", namespace=prefix,
                                arguments=pose_args + ["--frame-id", "map", "--child-frame-id", f"{camera_name}_link"],
                                output="screen"))
    return actions


def rviz_actions(prefixes: list[str], fixed_frame: str, tmp: str | os.PathLike) -> list:
    """rviz2 on :func:`render_rviz` of ``prefixes``, or a log line when rviz2 is not installed."""
    from launch.actions import LogInfo
    from launch_ros.actions import Node

    if missing_packages(["rviz2"]):
        return [LogInfo(msg="rviz2 is not installed: starting without RViz")]
    cfg = write_rviz(Path(share_dir()) / "config" / "instseg.rviz", prefixes, fixed_frame, tmp)
    return [Node(package="rviz2", executable="rviz2", name="rviz2", arguments=["-d", cfg], output="screen")]


def profile_actions() -> list:
    """SetEnvironmentVariable for :data:`PROFILE_ENV` (the user's profile kept when one is set)."""
    from launch.actions import SetEnvironmentVariable

    value = fastdds_profile_value(os.environ, share_dir())
    return [SetEnvironmentVariable(n, value) for n in PROFILE_ENV]


def is_true(text: str) -> bool:
    """Launch-argument truth ('true' / '1' / 'yes', any case)."""
    return text.strip().lower() in ("true", "1", "yes", "on")
