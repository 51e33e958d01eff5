"""rosbag2 (MCAP) reading and writing with ``rosbags``, and the location of the shipped recording.

rosbag2_py is not installable outside a ROS distribution; ``rosbags`` (pure Python) reads and writes
rosbag2 directories, and the CDR bytes rclpy's ``serialize_message`` produces are exactly what a bag
stores, so messages are built with rclpy and written as bytes. Used by the ``replay_player`` node, the
demo and the tool that writes the demo recording.
"""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

#: The shipped demo recording (``instseg_ros/data/demo/bin_sequence``; the replay player's default bag).
DEMO_DIR = Path(__file__).resolve().parents[1] / "data" / "demo"
DEMO_BAG = DEMO_DIR / "bin_sequence"


def typestore():
    """rosbags type store of ROS 2 Jazzy plus this package's messages (read from ``msg/``)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    from instseg_ros.ros.node_common import package_root

    store = get_typestore(Stores.ROS2_JAZZY)
    types = {}
    for name in ("ObjectInstance", "ObjectInstanceArray"):
        path = package_root() / "msg" / f"{name}.msg"
        types.update(get_types_from_msg(path.read_text(), f"instseg_ros/msg/{name}"))
    store.register(types)
    return store


def ros_type_name(msg_or_cls) -> str:
    """'pkg/msg/Type' of an rclpy message (instance or class)."""
    cls = msg_or_cls if isinstance(msg_or_cls, type) else type(msg_or_cls)
    mod = cls.__module__.split(".")  # e.g. sensor_msgs.msg._image
    return f"{mod[0]}/msg/{cls.__name__}"


class BagWriter:
    """rosbag2 MCAP writer (zstd chunk compression) taking rclpy messages or CDR bytes; topics are
    added on first use."""

    def __init__(self, path: str | Path, overwrite: bool = True, compress: bool = True) -> None:
        from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

        self.path = Path(path)
        if self.path.exists():
            if not overwrite:
                raise FileExistsError(f"{self.path} exists")
            shutil.rmtree(self.path)
        self._store = typestore()
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        if compress:
            self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self._writer.open()
        self._conns: dict[str, object] = {}
        self.counts: dict[str, int] = {}

    def write(self, topic: str, msg, stamp_ns: int, msgtype: str | None = None) -> None:
        """Write ``msg`` (an rclpy message, or CDR bytes with ``msgtype``) at ``stamp_ns``."""
        from rclpy.serialization import serialize_message

        if isinstance(msg, (bytes, bytearray, memoryview)):
            if msgtype is None:
                raise ValueError("msgtype is needed to write serialized bytes")
            data = bytes(msg)
        else:
            msgtype = msgtype or ros_type_name(msg)
            data = serialize_message(msg)
        if topic not in self._conns:
            self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=self._store)
            self.counts[topic] = 0
        self._writer.write(self._conns[topic], int(stamp_ns), data)
        self.counts[topic] += 1

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_bag(path: str | Path, topics: list[str] | None = None) -> Iterator[tuple[str, str, int, bytes]]:
    """(topic, msgtype, bag timestamp ns, CDR bytes) in time order; ValueError if ``path`` is no bag."""
    from rosbags.rosbag2 import Reader

    p = Path(path)
    if not (p / "metadata.yaml").is_file():
        raise ValueError(f"{p} is not a rosbag2 directory (no metadata.yaml)")
    with Reader(p) as reader:
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        for conn, t, raw in reader.messages(connections=conns):
            yield conn.topic, conn.msgtype, int(t), bytes(raw)


def deserialize(raw: bytes, msgtype: str):
    """CDR bytes -> rclpy message of ``msgtype`` ('pkg/msg/Type')."""
    import importlib

    from rclpy.serialization import deserialize_message

    pkg, _, name = msgtype.split("/")
    cls = getattr(importlib.import_module(f"{pkg}.msg"), name)
    return deserialize_message(raw, cls)
