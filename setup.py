"""pip path for instseg_ros (the colcon path uses CMakeLists.txt + package.xml).

scripts/setup.sh installs this editable into .venv after building msg/ with rosidl.
"""
from pathlib import Path

from setuptools import find_packages, setup


def _share(folder: str) -> list[tuple[str, list[str]]]:
    """launch/, config/, models/ into share/instseg_ros/ as colcon installs them, so that
    ament_index lookups (and the Fast DDS profile) work from a non-editable install too."""
    files = [str(p) for p in Path(folder).glob("*") if p.is_file()]
    return [(f"share/instseg_ros/{folder}", files)] if files else []


setup(
    name="instseg_ros",
    version="0.1.0",
    description="ClusterNet + OccuSeg instance segmentation for ROS 2 bin picking",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["instseg_ros", "instseg_ros.*"]),
    include_package_data=True,
    package_data={"instseg_ros.data": ["sample/**/*", "demo/**/*"]},
    data_files=_share("launch") + _share("config") + _share("models"),
    entry_points={
        "console_scripts": [
            "instseg = instseg_ros.cli:main",
            "clusternet_node = instseg_ros.ros.clusternet_node:main",
            "occuseg_mapping_node = instseg_ros.ros.mapping_node:main",
            "grasp_consumer = instseg_ros.ros.grasp_consumer:main",
            "replay_player = instseg_ros.ros.replay:main",
        ]
    },
)
