"""ROS-free core: geometry and the `Instances` result container."""
from .instances import BACKGROUND, Instances

__all__ = ["BACKGROUND", "Instances"]
