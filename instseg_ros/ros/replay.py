"""``replay_player``: plays a rosbag2 recording once the nodes that consume it are ready.

``ros2 bag play`` publishes as soon as its own publishers exist; lifecycle nodes that load a model
on activate are subscribed seconds later (5-16 s measured), so a short recording is over before
anyone listens. This player (what ``launch/replay.launch.py`` starts) waits first:

1. every node named with ``--wait-for`` (fully qualified, e.g. ``/camera/camera/clusternet_node``)
   reports the lifecycle state ``active`` through its ``get_state`` service;
2. every topic those nodes subscribe to that the bag also carries (after ``--remap``) has a
   publisher here matched to each of those nodes' subscriptions;

then publishes the messages at their recorded spacing (``--rate`` times faster), and finally waits
until the reliable subscribers acknowledged the last messages. ``--timeout`` bounds the wait: past
it the player exits with an error naming the node or topic that is not ready.

Stamps: by default every ``header.stamp`` is rewritten to ``now + (recorded stamp - first recorded
stamp) / rate`` (``--restamp``, on by default), so latencies in /diagnostics are real and
``--loop`` keeps stamps increasing (each pass starts after the previous one; nodes reject stamps
that go backwards). ``--no-restamp`` publishes the recorded stamps (only once; no ``--loop``).

``--tf`` (default on) also publishes each PoseStamped as a map -> camera transform on ``/tf``, so
RViz with fixed frame ``map`` places the camera results; that needs ``tf2_msgs`` (a ROS 2 install),
without it the player says so once and plays the rest.

Messages are read with ``rosbags`` (pure Python, MCAP or sqlite3 bags) and published with rclpy, so
this works on the pip path too, where ``ros2 bag`` does not exist.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Seconds between readiness checks while waiting for the nodes.
POLL_S = 0.2
#: How long the last messages may take to be acknowledged by reliable subscribers (s).
ACK_TIMEOUT_S = 10.0
#: lifecycle_msgs/State.PRIMARY_STATE_ACTIVE
STATE_ACTIVE = 3
#: s after which an unanswered get_state request is dropped and sent again
STATE_REQUEST_TIMEOUT_S = 2.0


@dataclass
class BagMessage:
    """One recorded message: ``topic`` after remapping, rclpy ``msg``, ``t_ns`` its playback time
    base (header stamp when it has one, else the bag's receive time), nanoseconds."""

    topic: str
    msgtype: str
    msg: object
    t_ns: int


@dataclass
class PlayerConfig:
    """Command-line options of the player (see :func:`parse_args`)."""

    bag: Path
    remaps: dict[str, str] = field(default_factory=dict)
    wait_for: list[str] = field(default_factory=list)
    rate: float = 1.0
    loop: bool = False
    restamp: bool = True
    tf: bool = True
    timeout_s: float = 120.0
    topics: list[str] | None = None


def parse_remap(pair: list[str]) -> tuple[str, str]:
    """[from, to] of ``--remap FROM TO`` (absolute topic names); ValueError otherwise. (Not the
    'from:=to' form: rcl takes any such argument for a remap rule of the player node itself.)"""
    src, dst = pair
    if not src.startswith("/") or not dst.startswith("/"):
        raise ValueError(f"--remap {src} {dst}: both topics must be absolute (/recorded/topic /published/topic)")
    return src, dst


def load_messages(cfg: PlayerConfig) -> list[BagMessage]:
    """Every message of ``cfg.bag`` (only ``cfg.topics`` when given, names as recorded), remapped,
    deserialized, sorted by playback time. ValueError when the bag is missing or empty."""
    from instseg_ros.ros.bag import deserialize, read_bag
    from instseg_ros.ros.conversions import stamp_to_ns

    out = []
    for topic, typ, t, raw in read_bag(cfg.bag, cfg.topics):
        msg = deserialize(raw, typ)
        header = getattr(msg, "header", None)
        t_ns = stamp_to_ns(header.stamp) if header is not None else t
        out.append(BagMessage(cfg.remaps.get(topic, topic), typ, msg, int(t_ns)))
    if not out:
        raise ValueError(f"{cfg.bag} holds no message to play")
    out.sort(key=lambda m: m.t_ns)
    return out


def playback_schedule(t_ns: list[int], rate: float, start_ns: int, passes: int = 1) -> list[tuple[int, int]]:
    """(index into ``t_ns``, new stamp ns) for every message of every pass, in order.

    Pass k of a recording spanning ``span`` ns starts at ``start_ns + k * (span + gap) / rate``, the
    gap being the median spacing of distinct stamps (or 1 s for a single stamp), so stamps strictly
    increase from pass to pass; within a pass a message keeps its offset from the first one."""
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    t0, span = t_ns[0], t_ns[-1] - t_ns[0]
    distinct = sorted(set(t_ns))
    gaps = [b - a for a, b in zip(distinct, distinct[1:])]
    gap = sorted(gaps)[len(gaps) // 2] if gaps else 1_000_000_000
    out = []
    for k in range(passes):
        base = start_ns + int(k * (span + gap) / rate)
        out += [(i, base + int((t - t0) / rate)) for i, t in enumerate(t_ns)]
    return out


def pose_to_transform(pose, child_frame: str):
    """geometry_msgs/PoseStamped of ``child_frame`` in ``pose.header.frame_id`` (T_parent_child, m)
    -> the same transform as geometry_msgs/TransformStamped (parent -> child), same header."""
    from geometry_msgs.msg import TransformStamped

    t = TransformStamped()
    t.header = pose.header
    t.child_frame_id = child_frame
    p = pose.pose.position
    t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = p.x, p.y, p.z
    t.transform.rotation = pose.pose.orientation
    return t


def set_stamp(msg, stamp_ns: int) -> None:
    """Rewrite ``msg.header.stamp`` (no-op for messages without a header)."""
    from instseg_ros.ros.conversions import ns_to_stamp

    header = getattr(msg, "header", None)
    if header is not None:
        header.stamp = ns_to_stamp(stamp_ns)


class Player:
    """Publishers for the bag's topics on ``node`` plus the readiness checks (see the module docstring)."""

    def __init__(self, node, cfg: PlayerConfig, messages: list[BagMessage]) -> None:
        from instseg_ros.ros.graph import reliable_qos

        self.node, self.cfg, self.messages = node, cfg, messages
        self.pubs = {}
        for m in messages:
            if m.topic not in self.pubs:
                self.pubs[m.topic] = node.create_publisher(type(m.msg), m.topic, reliable_qos(10))
        self.tf_pub = None
        self.tf_child = ""
        if cfg.tf:
            self._make_tf_publisher()

    def _make_tf_publisher(self) -> None:
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            self.node.get_logger().info("tf2_msgs is not installed (no ROS 2 install): the poses are not "
                                        "published on /tf; RViz needs fixed_frame set to the camera frame")
            return
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        # the camera frame the poses place: the frame of the image messages
        frames = [m.msg.header.frame_id for m in self.messages if m.msgtype == "sensor_msgs/msg/Image"]
        if not frames or not any(m.msgtype == "geometry_msgs/msg/PoseStamped" for m in self.messages):
            return
        self.tf_child = frames[0]
        self.tf_pub = self.node.create_publisher(TFMessage, "/tf", QoSProfile(depth=100,
                                                                               reliability=ReliabilityPolicy.RELIABLE))

    # ------------------------------------------------------------------ readiness
    def not_ready(self, states: dict[str, int | None]) -> str | None:
        """Why playback cannot start yet (None when it can). ``states``: node fqn -> lifecycle state id."""
        from rclpy.node import NodeNameNonExistentError

        for fqn in self.cfg.wait_for:
            if states.get(fqn) != STATE_ACTIVE:
                return f"{fqn} is not active yet (state {states.get(fqn)})"
        need: dict[str, int] = {}
        for fqn in self.cfg.wait_for:
            ns, _, name = fqn.rpartition("/")
            try:
                subs = self.node.get_subscriber_names_and_types_by_node(name, ns or "/")
            except NodeNameNonExistentError:
                return f"{fqn} is not discovered yet"
            mine = [topic for topic, _types in subs if topic in self.pubs]
            if not mine:
                # also what a wrong --remap looks like: the wait then ends in the timeout's error
                return f"{fqn} subscribes to none of the played topics (yet)"
            for topic in mine:
                need[topic] = need.get(topic, 0) + 1
        for topic, n in sorted(need.items()):
            if self.pubs[topic].get_subscription_count() < n:
                return f"{topic}: {self.pubs[topic].get_subscription_count()} of {n} subscriptions matched"
        return None

    # ------------------------------------------------------------------ playback
    def play(self, stop: threading.Event) -> int:
        """Publish the recording (again and again with ``loop``) until done or ``stop`` is set;
        returns the number of messages published."""
        start_ns = time.time_ns()
        t_start = time.monotonic()
        n = 0
        for i, stamp in self._schedule(start_ns):
            due = t_start + (stamp - start_ns) * 1e-9
            delay = due - time.monotonic()
            if stop.is_set() or (delay > 0 and stop.wait(delay)):
                break
            m = self.messages[i]
            if self.cfg.restamp:
                set_stamp(m.msg, stamp)
            self.pubs[m.topic].publish(m.msg)
            if self.tf_pub is not None and m.msgtype == "geometry_msgs/msg/PoseStamped":
                self.tf_pub.publish(self._tf(m.msg))
            n += 1
        return n

    def _schedule(self, start_ns: int):
        """(message index, stamp ns): one pass, or endless passes with ``loop``."""
        t_ns = [m.t_ns for m in self.messages]
        if not self.cfg.loop:
            yield from playback_schedule(t_ns, self.cfg.rate, start_ns, 1)
            return
        two = playback_schedule(t_ns, self.cfg.rate, start_ns, 2)
        period = two[len(t_ns)][1] - two[0][1]
        k = 0
        while True:
            for i, stamp in two[:len(t_ns)]:
                yield i, stamp + k * period
            k += 1

    def _tf(self, pose):
        from tf2_msgs.msg import TFMessage

        return TFMessage(transforms=[pose_to_transform(pose, self.tf_child)])

    def wait_acked(self) -> bool:
        """True when every reliable subscriber acknowledged what was published (bounded wait)."""
        from rclpy.duration import Duration

        return all(p.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S)) for p in self.pubs.values())


class LifecycleStates:
    """Polls ``<node>/get_state`` of each node without blocking; ``poll()`` returns the last
    answered lifecycle state id per node (None until one arrived)."""

    def __init__(self, node, fqns: list[str]) -> None:
        from lifecycle_msgs.srv import GetState

        self._req = GetState.Request()
        self.node = node
        self.clients = {fqn: node.create_client(GetState, f"{fqn}/get_state") for fqn in fqns}
        self.pending: dict = {}
        self.sent: dict[str, float] = {}
        self.last: dict[str, int | None] = {fqn: None for fqn in fqns}

    def poll(self) -> dict[str, int | None]:
        now = time.monotonic()
        for fqn, cli in self.clients.items():
            fut = self.pending.get(fqn)
            if fut is not None and fut.done():
                res = fut.result()
                self.last[fqn] = res.current_state.id if res is not None else None
                fut = self.pending[fqn] = None
            elif fut is not None and now - self.sent.get(fqn, now) > STATE_REQUEST_TIMEOUT_S:
                # a response can be lost for good: the service sends it before its writer has matched this
                # client's reader ("failed to send response (timeout)" in the node's log). Ask again.
                cli.remove_pending_request(fut)
                fut.cancel()
                fut = self.pending[fqn] = None
            # no new request once a node is active: a client destroyed with a request pending
            # makes the node's service warn that its response could not be sent
            if fut is None and self.last[fqn] != STATE_ACTIVE and cli.service_is_ready():
                self.pending[fqn] = cli.call_async(self._req)
                self.sent[fqn] = now
        return dict(self.last)

    def close(self) -> None:
        for cli in self.clients.values():
            self.node.destroy_client(cli)
        self.clients = {}


def parse_args(argv: list[str] | None) -> PlayerConfig:
    from instseg_ros.ros.bag import DEMO_BAG

    ap = argparse.ArgumentParser(prog="replay_player", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bag", default=str(DEMO_BAG), help="rosbag2 directory (default: the demo recording)")
    ap.add_argument("--remap", action="append", nargs=2, default=[], metavar=("/FROM", "/TO"),
                    help="publish the recorded topic /FROM as /TO (repeatable)")
    ap.add_argument("--topics", nargs="*", default=None, help="recorded topics to play (default: all)")
    ap.add_argument("--wait-for", action="append", default=[], metavar="NODE",
                    help="fully qualified lifecycle node that must be active and subscribed first (repeatable)")
    ap.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    ap.add_argument("--loop", action="store_true", help="play again and again (stamps keep increasing)")
    ap.add_argument("--restamp", action=argparse.BooleanOptionalAction, default=True,
                    help="rewrite header stamps to the playback time (default on)")
    ap.add_argument("--tf", action=argparse.BooleanOptionalAction, default=True,
                    help="publish the PoseStamped poses on /tf as map -> camera (needs tf2_msgs)")
    ap.add_argument("--timeout", type=float, default=120.0, help="s to wait for the nodes before giving up")
    a = ap.parse_args(argv)
    if a.loop and not a.restamp:
        ap.error("--loop needs --restamp: replayed stamps would go backwards and the nodes reject them")
    try:
        remaps = dict(parse_remap(r) for r in a.remap)
    except ValueError as e:
        ap.error(str(e))
    return PlayerConfig(bag=Path(a.bag), remaps=remaps, wait_for=[w.rstrip("/") for w in a.wait_for],
                        rate=a.rate, loop=a.loop, restamp=a.restamp, tf=a.tf, timeout_s=a.timeout,
                        topics=a.topics or None)


def main(argv: list[str] | None = None) -> int:
    import signal

    import rclpy
    from rclpy.signals import SignalHandlerOptions
    from rclpy.utilities import remove_ros_args

    args = sys.argv if argv is None else ["replay_player"] + list(argv)
    cfg = parse_args(remove_ros_args(args)[1:])
    try:
        messages = load_messages(cfg)
    except ValueError as e:
        print(f"replay_player: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    # as in the nodes (node_common.run): a signal only stops playback, the context stays valid
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    node = rclpy.create_node("replay_player")
    log = node.get_logger()
    try:
        player = Player(node, cfg, messages)
        states = LifecycleStates(node, cfg.wait_for)
        log.info(f"{len(messages)} messages on {len(player.pubs)} topics from {cfg.bag}; waiting for "
                 f"{', '.join(cfg.wait_for) or 'nothing'}")
        deadline = time.monotonic() + cfg.timeout_s
        t0 = time.monotonic()
        reason = "?"
        while not stop.is_set():
            rclpy.spin_once(node, timeout_sec=POLL_S)
            reason = player.not_ready(states.poll())
            if reason is None or time.monotonic() > deadline:
                break
        if stop.is_set():
            return 0
        if reason is not None:
            log.error(f"gave up after {cfg.timeout_s:.0f} s: {reason}")
            return 1
        states.close()
        log.info(f"nodes active and subscribed after {time.monotonic() - t0:.1f} s: playing at rate {cfg.rate}"
                 f"{' in a loop' if cfg.loop else ''}, stamps {'rewritten to now' if cfg.restamp else 'as recorded'}")
        n = player.play(stop)
        acked = player.wait_acked()
        log.info(f"published {n} messages" + ("" if acked else "; some were not acknowledged within "
                                                                 f"{ACK_TIMEOUT_S:.0f} s"))
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        for s, h in previous.items():
            signal.signal(s, h)
    return 0


if __name__ == "__main__":
    sys.exit(main())
