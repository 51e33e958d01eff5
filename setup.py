"""pip path for instseg_ros (the colcon path uses CMakeLists.txt + package.xml).

scripts/setup.sh installs this editable into .venv after building msg/ with rosidl.
"""
from setuptools import find_packages, setup

setup(
    name="instseg_ros",
    version="0.1.0",
    description="ClusterNet + OccuSeg instance segmentation for ROS 2 bin picking",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["instseg_ros", "instseg_ros.*"]),
    include_package_data=True,
    entry_points={
        "console_scripts": [
            "instseg = instseg_ros.cli:main",
            "clusternet_node = instseg_ros.ros.clusternet_node:main",
            "occuseg_mapping_node = instseg_ros.ros.mapping_node:main",
            "grasp_consumer = instseg_ros.ros.grasp_consumer:main",
        ]
    },
)
