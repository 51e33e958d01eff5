"""Helpers for running rclpy graphs on one machine: environment, QoS, waiting for matches.

Shared by the nodes, the graph tests and ``instseg bench ros``. Nothing here imports rclpy at
module import time, so :func:`ros_environment` can be called before the middleware is loaded
(the RMW reads these variables when a context is initialised, not later).
"""
from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path

#: Fast DDS profile shipped in ``config/`` (shared memory 64 MB + UDPv4 on 127.0.0.1 only).
PROFILE_FILENAME = "fastdds_profile.xml"

#: Domain ids handed out by :func:`pick_domain_id`. Fast DDS derives UDP ports from the domain id;
#: ids above 232 overflow the port range on Linux. 0 is the shared default: never used for tests.
DOMAIN_ID_RANGE = (1, 232)

#: Default RMW: the only one installed from the ros-jazzy-* wheels in the pip path.
DEFAULT_RMW = "rmw_fastrtps_cpp"


def fastdds_profile_path() -> Path:
    """Absolute path of ``config/fastdds_profile.xml``.

    Looked up next to the source tree first (pip editable install, a checkout), then in the
    package's share directory (colcon install). FileNotFoundError if neither has it.
    """
    here = Path(__file__).resolve().parents[2] / "config" / PROFILE_FILENAME
    if here.is_file():
        return here
    try:
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory("instseg_ros")) / "config" / PROFILE_FILENAME
        if share.is_file():
            return share
    except (ImportError, LookupError, ValueError):
        pass
    raise FileNotFoundError(f"{PROFILE_FILENAME} found neither at {here} nor in the instseg_ros share directory")


def pick_domain_id(rng: random.Random | None = None) -> int:
    """A random ROS_DOMAIN_ID in :data:`DOMAIN_ID_RANGE`, so that concurrent runs on one machine
    (several test sessions, a bench) rarely share a domain; tests also use unique topic names."""
    rng = rng or random.Random(os.getpid() ^ time.time_ns())
    return rng.randint(*DOMAIN_ID_RANGE)


def ros_environment(domain_id: int | None = None, base: Mapping[str, str] | None = None,
                    profile: str | os.PathLike | None = None) -> dict[str, str]:
    """Environment for one isolated ROS 2 run on this machine.

    Args:
        domain_id: ROS_DOMAIN_ID; a random one from :data:`DOMAIN_ID_RANGE` when None.
        base: environment to start from (default: ``os.environ``); not modified.
        profile: Fast DDS XML profile (default: :func:`fastdds_profile_path`).
    Returns:
        A new dict: ``base`` plus ROS_DOMAIN_ID, ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (discovery
        never leaves the machine), RMW_IMPLEMENTATION=rmw_fastrtps_cpp and the profile file under
        both FASTRTPS_DEFAULT_PROFILES_FILE (Fast DDS 2.x, Jazzy) and FASTDDS_DEFAULT_PROFILES_FILE
        (3.x). ROS_PYTHON_CHECK_FIELDS is removed: it makes every array assignment to a message
        iterate element by element (seconds for a point cloud).
    Pass it as ``env=`` to subprocesses, or apply it with :func:`apply_ros_environment` before the
    first ``rclpy.init`` of this process.
    """
    if domain_id is None:
        domain_id = pick_domain_id()
    if not (0 <= int(domain_id) <= DOMAIN_ID_RANGE[1]):
        raise ValueError(f"ROS_DOMAIN_ID {domain_id} outside 0..{DOMAIN_ID_RANGE[1]}")
    profile_path = Path(profile) if profile is not None else fastdds_profile_path()
    if not profile_path.is_file():
        raise FileNotFoundError(f"Fast DDS profile {profile_path} does not exist")
    env = dict(os.environ if base is None else base)
    env.pop("ROS_PYTHON_CHECK_FIELDS", None)
    env.update({
        "ROS_DOMAIN_ID": str(int(domain_id)),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "RMW_IMPLEMENTATION": DEFAULT_RMW,
        "FASTRTPS_DEFAULT_PROFILES_FILE": str(profile_path.resolve()),
        "FASTDDS_DEFAULT_PROFILES_FILE": str(profile_path.resolve()),
    })
    # ROS_LOCALHOST_ONLY is the pre-Jazzy switch; it conflicts with the discovery range above.
    env.pop("ROS_LOCALHOST_ONLY", None)
    return env


#: Variables :func:`apply_ros_environment` sets (and :func:`restore_environment` puts back).
ROS_ENV_KEYS = ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "RMW_IMPLEMENTATION",
                "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE",
                "ROS_PYTHON_CHECK_FIELDS", "ROS_LOCALHOST_ONLY")


def apply_ros_environment(env: Mapping[str, str]) -> dict[str, str | None]:
    """Copy the ROS keys of ``env`` into ``os.environ``; returns the previous values for
    :func:`restore_environment`. Must run before ``rclpy.init`` to take effect."""
    previous = {k: os.environ.get(k) for k in ROS_ENV_KEYS}
    for k in ROS_ENV_KEYS:
        if k in env:
            os.environ[k] = env[k]
        else:
            os.environ.pop(k, None)
    return previous


def restore_environment(previous: Mapping[str, str | None]) -> None:
    """Undo :func:`apply_ros_environment`."""
    for k, v in previous.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def image_qos(reliability: str = "reliable", depth: int = 5):
    """QoS for image / cloud topics: KEEP_LAST ``depth``, VOLATILE, ``reliability``.

    Args:
        reliability: "reliable" (no loss while the subscriber keeps up; what the nodes and tests
            use) or "best_effort" (what camera drivers publish with ``qos_profile_sensor_data``; a
            reliable subscription does not match a best-effort publisher).
        depth: history depth (messages), >= 1.
    """
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    policies = {"reliable": ReliabilityPolicy.RELIABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT}
    key = str(reliability).lower().replace("-", "_")
    if key not in policies:
        raise ValueError(f"reliability must be 'reliable' or 'best_effort', got {reliability!r}")
    if int(depth) < 1:
        raise ValueError(f"QoS depth must be >= 1, got {depth}")
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth),
                      reliability=policies[key], durability=DurabilityPolicy.VOLATILE)


def reliable_qos(depth: int = 10):
    """QoS for messages that must not be lost (instances, poses, the replayed recording): KEEP_LAST
    ``depth``, RELIABLE, VOLATILE."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def wait_until(predicate: Callable[[], bool], timeout: float, spin_once: Callable[[float], None] | None = None,
               period: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; returns its last value.

    ``spin_once(timeout_sec)`` (e.g. ``executor.spin_once``) is called between polls so callbacks
    keep running while waiting; otherwise the thread sleeps ``period`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bool(predicate())
        if spin_once is not None:
            spin_once(min(period, remaining))
        else:
            time.sleep(min(period, remaining))


def wait_for_subscribers(publishers, timeout: float = 10.0, count: int = 1,
                         spin_once: Callable[[float], None] | None = None) -> bool:
    """Wait until every publisher in ``publishers`` has >= ``count`` matched subscriptions.

    Publishing before the match loses the first messages even on a reliable, volatile topic:
    call this before the first ``publish``. Discovery on localhost takes ~0.5-3 s here.
    """
    pubs = list(publishers)
    return wait_until(lambda: all(p.get_subscription_count() >= count for p in pubs), timeout, spin_once)


def wait_for_publishers(subscriptions, timeout: float = 10.0, count: int = 1,
                        spin_once: Callable[[float], None] | None = None) -> bool:
    """Wait until every subscription has >= ``count`` matched publishers."""
    subs = list(subscriptions)
    return wait_until(lambda: all(s.get_publisher_count() >= count for s in subs), timeout, spin_once)
