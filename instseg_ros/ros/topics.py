"""Default topic names and output QoS depth shared by ``clusternet_node`` and ``occuseg_mapping_node``.

Input names are relative (resolved in the node's namespace) and follow realsense2_camera 4.x; launch
files and the demo remap them to the camera's real topics. Output topics are private (``~/...``) and
named where each node creates its publishers.
"""

#: Colour image (sensor_msgs/Image, rgb8 / bgr8 / rgba8 / bgra8 / mono8).
COLOR_TOPIC = "color/image_raw"
#: Depth aligned to the colour image (sensor_msgs/Image, 16UC1 mm or 32FC1 m).
DEPTH_TOPIC = "aligned_depth_to_color/image_raw"
#: Intrinsics of the colour camera (sensor_msgs/CameraInfo).
INFO_TOPIC = "color/camera_info"
#: Camera pose T_map_camera (geometry_msgs/PoseStamped) read with ``pose_source:=topic``.
POSE_TOPIC = "pose"
#: Output QoS of both nodes: reliable, KEEP_LAST of this depth.
OUTPUT_HISTORY = 5
