"""Tools around the nodes, not part of them: the demo, the benchmarks, the demo recording and the
process / publisher helpers the graph tests share.

* ``demo``: ``instseg demo`` (both nodes on the shipped recording, outputs and accuracy to a folder).
* ``bench``, ``bench_nodes``, ``bench_soak``: ``instseg bench ros | nodes | soak``.
* ``recording``: writes the demo recording (``python -m instseg_ros.ros.tools.recording``).
* ``launcher``: start nodes as processes, publish frames, collect outputs, drive lifecycle transitions.
* ``peer``: a publisher process for the graph tests and ``instseg bench ros``.

This is a subpackage of ``instseg_ros.ros`` rather than a top-level one because every tool builds or
reads ROS messages and runs rclpy graphs, and the package rule is that only ``instseg_ros.ros`` imports
ROS. The dependency goes one way: tools import the nodes' modules (conversions, graph, bag, ...), no
node imports a tool.
"""
