"""ROS 2 edge of instseg_ros: the only subpackage that imports rclpy and ROS messages.

Submodules (imported explicitly, nothing is imported here so that ``import instseg_ros.ros.graph``
can set up the ROS environment before the middleware loads):

* nodes: ``clusternet_node``, ``mapping_node`` (``occuseg_mapping_node``), ``replay`` (``replay_player``),
  ``grasp_consumer`` (an example client).
* ``conversions``: numpy <-> Image / CameraInfo / PointCloud2 / MarkerArray / ObjectInstanceArray, stamps.
* ``sync``: approximate-time synchronizer (message_filters semantics) for N inputs.
* ``topics``: the input topic names and output QoS depth both nodes use.
* ``node_params``, ``node_common``, ``pose_source``: parameters, lifecycle / diagnostics / frame helpers,
  camera pose sources shared by the nodes.
* ``graph``: per-run ROS environment (domain id, localhost discovery, Fast DDS profile), QoS, waits.
* ``bag``: rosbag2 reading / writing (the replay player, the demo).
* ``launch_support``: what the launch files compute (parameter files, RViz layout, camera prefixes).
* ``tools``: the demo, the benchmarks, the demo recording writer and the test / bench process helpers.
"""
