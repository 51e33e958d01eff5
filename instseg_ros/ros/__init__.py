"""ROS 2 edge of instseg_ros: the only subpackage that imports rclpy and ROS messages.

Submodules (imported explicitly, nothing is imported here so that ``import instseg_ros.ros.graph``
can set up the ROS environment before the middleware loads):

* ``conversions``: numpy <-> Image / CameraInfo / PointCloud2 / MarkerArray / ObjectInstanceArray.
* ``sync``: approximate-time synchronizer (message_filters semantics) for N inputs.
* ``graph``: per-run ROS environment (domain id, localhost discovery, Fast DDS profile), QoS, waits.
* ``peer``: a publisher process used by the graph tests and ``instseg bench ros``.
* ``bench``: ``instseg bench ros``.
"""
