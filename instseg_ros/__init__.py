"""instseg_ros: ClusterNet (camera) and OccuSeg (map) instance segmentation for ROS 2.

The generated message module ``instseg_ros.msg`` is installed by rosidl into a different
directory than this source tree (the venv's site-packages on the pip path, the colcon install
space otherwise). ``extend_path`` lets both halves of the package be imported as one.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
