"""Machinery shared by ``clusternet_node`` and ``occuseg_mapping_node`` (rclpy only at call time).

* :class:`LatestFrameWorker`: one processing thread with a single pending slot, so at most one
  frame waits while one is processed; a newer frame replaces the waiting one (counted as a drop),
  stale frames are never queued.
* :class:`RateMeter` / :class:`LatencyStats`: sliding-window counters for diagnostics.
* :func:`diagnostic_status`: a ``diagnostic_msgs/DiagnosticStatus`` from a flat dict.
* :func:`resolve_model_path`: "" / relative model paths -> the shipped ``models/`` file.
* :class:`SyncWatch`: names the input that is missing when frames never synchronize.
* :func:`frame_to_arrays` / :class:`FrameError`: one synchronized frame checked and converted.
* :class:`StampGuard`: frame ordering that survives clock jumps (future stamps, bag loops).
* :class:`LifecycleTeardown`: shared deactivate / cleanup / shutdown; every transition's failure is
  logged with its reason and whatever the failed transition created is released.
* :func:`input_health`: /diagnostics level (OK / WARN / ERROR) from silent inputs and dropped or
  rejected frames.
* :func:`pose_from_xyz_quat`: a camera pose checked against a quaternion-norm tolerance and a world bound.
* :func:`run` / :func:`autostart`: a lifecycle node's ``main``.
"""
from __future__ import annotations

import collections
import functools
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: Window (seconds) over which input / output rates are computed.
RATE_WINDOW_S = 5.0
#: Latencies kept for the diagnostics statistics.
LATENCY_WINDOW = 100


class RateMeter:
    """Events per second over the last :data:`RATE_WINDOW_S` seconds (monotonic clock); thread-safe."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = float(window_s)
        self.total = 0
        self._times: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def tick(self) -> None:
        now = time.monotonic()
        with self._lock:
            self.total += 1
            self._times.append(now)
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()

    def rate(self) -> float:
        """Hz; 0 with fewer than two events in the window."""
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            if len(self._times) < 2:
                return 0.0
            span = max(now - self._times[0], 1e-6)
            return (len(self._times) - 1) / span


class LatencyStats:
    """Last :data:`LATENCY_WINDOW` latencies in milliseconds; thread-safe."""

    def __init__(self, window: int = LATENCY_WINDOW) -> None:
        self._values: collections.deque[float] = collections.deque(maxlen=int(window))
        self._lock = threading.Lock()

    def add(self, ms: float) -> None:
        with self._lock:
            self._values.append(float(ms))

    def summary(self) -> dict[str, float]:
        """{"mean_ms", "p50_ms", "max_ms", "n"} (zeros when empty)."""
        with self._lock:
            v = np.asarray(self._values, np.float64)
        if v.size == 0:
            return {"mean_ms": 0.0, "p50_ms": 0.0, "max_ms": 0.0, "n": 0}
        return {"mean_ms": float(v.mean()), "p50_ms": float(np.median(v)), "max_ms": float(v.max()),
                "n": int(v.size)}


class LatestFrameWorker:
    """Runs ``process(item)`` in one background thread on the newest submitted item only.

    ``submit`` never blocks: if an item is already waiting it is replaced (``dropped`` += 1), so
    at most one item waits while one is processed and a slow model never accumulates a backlog of
    stale frames. Exceptions from ``process`` are passed to ``on_error(item, exc)`` and the worker
    carries on with the next item.
    """

    def __init__(self, process: Callable[[Any], None], on_error: Callable[[Any, BaseException], None],
                 name: str = "instseg-worker") -> None:
        self._process = process
        self._on_error = on_error
        self._cond = threading.Condition()
        self._pending: Any = None
        self._has_pending = False
        self._busy = False
        self._stop = False
        self.dropped = 0
        self.processed = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> None:
        with self._cond:
            if self._has_pending:
                self.dropped += 1
            self._pending = item
            self._has_pending = True
            self._cond.notify()

    def clear(self) -> None:
        """Discard the waiting item, if any (not counted as a drop: used on deactivate)."""
        with self._cond:
            self._pending, self._has_pending = None, False

    def idle(self) -> bool:
        """True when nothing is waiting or being processed."""
        with self._cond:
            return not self._has_pending and not self._busy

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._has_pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._pending, self._has_pending = None, False
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._has_pending and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                item, self._pending, self._has_pending = self._pending, None, False
                self._busy = True
            try:
                self._process(item)
                self.processed += 1
            except Exception as exc:  # noqa: BLE001 - reported through on_error, worker stays up
                self._on_error(item, exc)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


def _release_after_failure(node, transition: str, state) -> None:
    """Undo what a failed ``transition`` may have created, so that the state the node falls back to
    holds exactly what it held before (a retried configure / activate then creates nothing twice)."""
    try:
        if transition in ("on_activate", "on_deactivate"):
            # back to (or staying) inactive: no subscriptions, workers or model; managed publishers off
            node._stop_processing()
            from rclpy.lifecycle import Node as _LifecycleNode

            _LifecycleNode.on_deactivate(node, state)
        else:
            # back to unconfigured (configure / cleanup failed) or finalized (shutdown)
            node._stop_processing()
            node._destroy_outputs()
    except Exception as e:  # noqa: BLE001 - reported; the transition's own failure is what matters
        node.get_logger().error(f"releasing what the failed {transition[3:]} created also failed: "
                                f"{type(e).__name__}: {e}")


class NodeLogHandler(logging.Handler):
    """Forwards Python ``logging`` records (library code such as ``instseg_ros.core.device``) to a ROS
    node's logger, so every line a node process prints carries the node's name and ROS severity."""

    def __init__(self, node_logger) -> None:
        super().__init__(level=logging.INFO)
        self.node_logger = node_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.name}: {record.getMessage()}"
            if record.levelno >= logging.ERROR:
                self.node_logger.error(text)
            elif record.levelno >= logging.WARNING:
                self.node_logger.warning(text)
            else:
                self.node_logger.info(text)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


#: Python logger whose records a node forwards (the package's root logger).
PACKAGE_LOGGER = "instseg_ros"


def route_package_logging(node_logger) -> NodeLogHandler:
    """Send the package's Python logging (INFO and above) to ``node_logger`` instead of stderr;
    replaces a previous node's handler (one node per process in the shipped executables)."""
    log = logging.getLogger(PACKAGE_LOGGER)
    for h in list(log.handlers):
        if isinstance(h, NodeLogHandler):
            log.removeHandler(h)
    handler = NodeLogHandler(node_logger)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return handler


def _guard_transition(name: str, fn):
    """Wrap a lifecycle transition callback: an exception is logged with its reason (rclpy would
    swallow it silently) and turned into FAILURE; any non-SUCCESS result releases what the
    transition created (:func:`_release_after_failure`)."""

    @functools.wraps(fn)
    def guarded(self, state):
        from rclpy.lifecycle import TransitionCallbackReturn

        if name == "on_configure":
            route_package_logging(self.get_logger())
        try:
            ret = fn(self, state)
        except Exception as e:  # noqa: BLE001 - every failure is logged and cleaned up here
            where = traceback.extract_tb(e.__traceback__)[-1]
            self.get_logger().error(f"{name[3:]} failed: {type(e).__name__}: {e} "
                                    f"(at {where.filename.rsplit('/', 1)[-1]}:{where.lineno})")
            ret = TransitionCallbackReturn.FAILURE
        if ret != TransitionCallbackReturn.SUCCESS:
            _release_after_failure(self, name, state)
            self.get_logger().warning(f"{name[3:]} did not succeed ({ret.to_label()}); "
                                      f"what it created was released")
        return ret

    guarded._transition_guarded = True
    return guarded


#: Transition callbacks wrapped by :func:`_guard_transition` in every :class:`LifecycleTeardown` node.
GUARDED_TRANSITIONS = ("on_configure", "on_activate", "on_deactivate", "on_cleanup", "on_shutdown")


class LifecycleTeardown:
    """The deactivate / cleanup / shutdown transitions both nodes share, as a mixin placed before
    ``rclpy.lifecycle.Node``. The node provides ``_stop_processing()`` (unsubscribe, stop workers, free
    the model) and ``_destroy_outputs()`` (publishers, services, timers); both must be safe to call
    at any time, also on a half-built state.

    Every transition callback a subclass defines (and the ones here) is wrapped when the class is
    created: an exception is logged with its type, message and line and becomes FAILURE (rclpy
    itself swallows it and, through ERROR, drops the node to unconfigured without a cleanup, leaking
    publishers, timers and worker threads); a failed configure releases the outputs it created and a
    failed activate the subscriptions, workers and model, so retrying creates nothing twice.
    """

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        for name in GUARDED_TRANSITIONS:
            fn = cls.__dict__.get(name)
            if fn is not None and not getattr(fn, "_transition_guarded", False):
                setattr(cls, name, _guard_transition(name, fn))

    def on_deactivate(self, state):
        self._stop_processing()
        return super().on_deactivate(state)

    def on_cleanup(self, state):
        from rclpy.lifecycle import TransitionCallbackReturn

        self._destroy_outputs()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state):
        from rclpy.lifecycle import TransitionCallbackReturn

        self._stop_processing()
        self._destroy_outputs()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state):
        """A transition returned ERROR: release everything (the node goes to unconfigured)."""
        from rclpy.lifecycle import TransitionCallbackReturn

        self.get_logger().error(f"lifecycle error processing from {state.label}: releasing everything")
        _release_after_failure(self, "on_cleanup", state)
        return TransitionCallbackReturn.SUCCESS


for _name in ("on_deactivate", "on_cleanup", "on_shutdown"):
    setattr(LifecycleTeardown, _name, _guard_transition(_name, LifecycleTeardown.__dict__[_name]))


class StampGuard:
    """Which frame stamps a node processes, robust to clock jumps. Thread-safe.

    * A stamp more than ``future_tolerance_s`` ahead of the node clock is rejected (``future`` += 1)
      and does *not* become the last stamp, so one bad stamp cannot block later frames. Off when
      ``future_tolerance_s`` is 0 or the node clock reads 0 (sim time before the first /clock).
    * A stamp not newer than the last accepted one is out of order (``out_of_order`` += 1), unless it
      lies more than ``reset_jump_s`` behind it: then the source's clock was reset (a bag played in a
      loop, a driver restart) and the ordering restarts from this frame (``resets`` += 1).
    * A forward step that exceeds the time between arrivals by more than
      max(:data:`FORWARD_JUMP_FACTOR` x the recent period, :data:`FORWARD_JUMP_MIN_S`) is accepted but
      reported (``forward_jumps`` += 1): the source clock jumped without the node clock seeing it.

    :meth:`check` returns (accept, message); the message is a WARN text for the first frame of each
    kind of episode (future stamps until the next accepted frame, each reset, each forward jump),
    None otherwise, so a stuck clock does not flood the log (the counters keep counting).
    """

    def __init__(self, future_tolerance_s: float, reset_jump_s: float) -> None:
        self.future_tolerance_ns = int(round(float(future_tolerance_s) * 1e9))
        self.reset_jump_ns = int(round(float(reset_jump_s) * 1e9))
        self._lock = threading.Lock()
        self.future = self.out_of_order = self.resets = self.forward_jumps = 0
        self.reset()

    def reset(self) -> None:
        """Forget the last stamp (activate, map reset); counters are kept."""
        with self._lock:
            self._last_ns = None
            self._last_arrival_ns = None
            self._periods: collections.deque[int] = collections.deque(maxlen=PERIOD_WINDOW)
            self._future_warned = False
            self._order_warned = False

    @property
    def last_ns(self) -> int | None:
        return self._last_ns

    def check(self, stamp_ns: int, clock_ns: int, arrival_ns: int | None = None) -> tuple[bool, str | None]:
        """Decide on a frame stamped ``stamp_ns`` arriving when the node clock reads ``clock_ns``
        (both ns, node clock time base) and the monotonic clock reads ``arrival_ns`` (default now)."""
        arrival_ns = time.monotonic_ns() if arrival_ns is None else int(arrival_ns)
        with self._lock:
            ahead = stamp_ns - clock_ns
            if self.future_tolerance_ns > 0 and clock_ns > 0 and ahead > self.future_tolerance_ns:
                self.future += 1
                if self._future_warned:
                    return False, None
                self._future_warned = True
                return False, (f"frame stamped {stamp_ns * 1e-9:.3f} s is {ahead * 1e-9:.3f} s ahead of the node "
                               f"clock (future_stamp_tolerance_s={self.future_tolerance_ns * 1e-9:g}): rejected, "
                               f"the camera clock jumped or is not synchronised; further such frames are "
                               f"counted in 'future_stamps' without a log line")
            last = self._last_ns
            if last is not None and stamp_ns <= last:
                behind = last - stamp_ns
                if behind <= self.reset_jump_ns:
                    self.out_of_order += 1
                    msg = None
                    if not self._order_warned:
                        self._order_warned = True
                        msg = (f"skipping frame stamped {stamp_ns * 1e-9:.3f} s: not newer than the last frame "
                               f"({last * 1e-9:.3f} s) (out-of-order stamps; further ones are counted in "
                               f"'out_of_order' until a frame is accepted)")
                    return False, msg
                self.resets += 1
                self._accept(stamp_ns, arrival_ns, keep_period=False)
                return True, (f"frame stamped {stamp_ns * 1e-9:.3f} s is {behind * 1e-9:.3f} s older than the last "
                              f"frame (more than stamp_jump_reset_s={self.reset_jump_ns * 1e-9:g}): the source clock "
                              f"was reset or a recording looped; frame order restarts here")
            msg = None
            if last is not None and self._last_arrival_ns is not None and len(self._periods) >= MIN_PERIODS:
                step = stamp_ns - last
                waited = max(arrival_ns - self._last_arrival_ns, 0)
                period = float(np.median(self._periods))
                excess = step - waited
                if excess > max(FORWARD_JUMP_FACTOR * period, FORWARD_JUMP_MIN_S * 1e9):
                    self.forward_jumps += 1
                    msg = (f"frame stamped {stamp_ns * 1e-9:.3f} s jumped {step * 1e-9:.3f} s ahead of the last frame "
                           f"after {waited * 1e-9:.3f} s (recent period {period * 1e-9:.3f} s): the source clock "
                           f"jumped forward")
            self._accept(stamp_ns, arrival_ns, keep_period=msg is None)
            return True, msg

    def _accept(self, stamp_ns: int, arrival_ns: int, keep_period: bool) -> None:
        if keep_period and self._last_ns is not None:
            self._periods.append(stamp_ns - self._last_ns)
        elif not keep_period:
            self._periods.clear()
        self._last_ns = stamp_ns
        self._last_arrival_ns = arrival_ns
        self._future_warned = False
        self._order_warned = False


#: Stamp steps kept for the recent input period (median).
PERIOD_WINDOW = 16
#: Steps needed before forward jumps are judged against the period.
MIN_PERIODS = 4
#: A forward stamp step exceeding the arrival gap by this many periods (and by FORWARD_JUMP_MIN_S) is a jump.
FORWARD_JUMP_FACTOR = 10.0
FORWARD_JUMP_MIN_S = 1.0


class CounterDelta:
    """Increments of named counters since the previous :meth:`update` (diagnostics periods)."""

    def __init__(self) -> None:
        self._prev: dict[str, int] = {}

    def update(self, counters: dict[str, int]) -> dict[str, int]:
        out = {k: int(v) - self._prev.get(k, 0) for k, v in counters.items()}
        self._prev = {k: int(v) for k, v in counters.items()}
        return out


def input_health(active: bool, names: list[str], silent_s: list[float], timeout_s: float,
                 increments: dict[str, int]) -> tuple[int, str]:
    """(diagnostic level, message) of an active node's inputs.

    ERROR when an input has received nothing for more than ``timeout_s`` seconds (``silent_s``:
    seconds since the last message per input, in ``names`` order); WARN when any of ``increments``
    (frames dropped / rejected / estimated lost since the previous status, by cause) is positive;
    OK otherwise. An inactive node is OK ("inactive").
    """
    from diagnostic_msgs.msg import DiagnosticStatus

    if not active:
        return DiagnosticStatus.OK, "inactive"
    silent = [f"{n} ({s:.1f} s)" for n, s in zip(names, silent_s) if s > timeout_s]
    if silent:
        return DiagnosticStatus.ERROR, f"input missing: nothing received on {', '.join(silent)}"
    causes = [f"{k}+{v}" for k, v in increments.items() if v > 0]
    if causes:
        return DiagnosticStatus.WARN, f"frames dropped or rejected since the last status: {', '.join(causes)}"
    return DiagnosticStatus.OK, "active"


def diagnostic_status(name: str, hardware_id: str, values: dict[str, Any], level: int, message: str):
    """``diagnostic_msgs/DiagnosticStatus`` with one KeyValue per entry of ``values`` (floats to 3 decimals)."""
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

    st = DiagnosticStatus()
    st.name = name
    st.hardware_id = hardware_id
    st.level = bytes([level]) if isinstance(level, int) else level
    st.message = message
    kv = []
    for k, v in values.items():
        kv.append(KeyValue(key=str(k), value=f"{v:.3f}" if isinstance(v, float) else str(v)))
    st.values = kv
    return st


def publish_status(node, publisher, name: str, values: dict[str, Any], level: int, message: str) -> None:
    """Publish one :func:`diagnostic_status` of ``node`` (hardware_id = its full name) on ``publisher``
    (/diagnostics), stamped with the node's clock."""
    from diagnostic_msgs.msg import DiagnosticArray

    arr = DiagnosticArray()
    arr.header.stamp = node.get_clock().now().to_msg()
    arr.status = [diagnostic_status(name, node.get_fully_qualified_name(), values, level, message)]
    publisher.publish(arr)


def package_root() -> Path:
    """Directory holding ``models/`` and ``config/``: the source checkout (pip editable install) or
    the package's share directory (colcon install)."""
    here = Path(__file__).resolve().parents[2]
    if (here / "config").is_dir():
        return here
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("instseg_ros"))
    except (ImportError, LookupError, ValueError):
        return here


def resolve_model_path(path: str, default_name: str) -> str:
    """Model file to load: ``path`` as given when absolute or existing; a relative path that does
    not exist from the working directory is looked up under ``<package root>/``; "" means
    ``models/<default_name>``. FileNotFoundError names every place looked at."""
    if not path:
        path = f"models/{default_name}"
    p = Path(path).expanduser()
    if p.is_file():
        return str(p.resolve())
    candidates = [p]
    if not p.is_absolute():
        q = package_root() / p
        candidates.append(q)
        if q.is_file():
            return str(q)
    raise FileNotFoundError(f"model file not found (looked at {', '.join(map(str, candidates))})")


class SyncWatch:
    """Notices inputs that arrive but never form a synchronized set (a missing camera_info or pose
    stream, stamps further apart than ``slop``) so the node can say which input is missing.

    Call :meth:`check` periodically with the synchronizer's :class:`~instseg_ros.ros.sync.SyncStats`;
    it returns a warning text when, since the previous call, some input received messages but no
    set was matched, else None.
    """

    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self._received = [0] * len(self.names)
        self._matched = 0

    def check(self, stats) -> str | None:
        got = [r - p for r, p in zip(stats.received, self._received)]
        matched = stats.matched - self._matched
        self._received, self._matched = list(stats.received), stats.matched
        if matched > 0 or not any(got):
            return None
        silent = [n for n, g in zip(self.names, got) if g == 0]
        counts = ", ".join(f"{n}={g}" for n, g in zip(self.names, got))
        if silent:
            return (f"frames skipped: no synchronized set since the last check (received {counts}); "
                    f"nothing arrived on {', '.join(silent)}")
        return (f"frames skipped: no synchronized set since the last check (received {counts}); "
                f"stamps differ by more than slop")


#: Least history of a PoseStamped input (a pose is small: a deep reliable queue loses none while images queue).
POSE_HISTORY = 50


def subscribe_synced(node, inputs: list[tuple[type, str]], callback: Callable, cfg) -> tuple[Any, SyncWatch, list]:
    """Subscribe ``node`` to ``inputs`` ([(message type, topic), ...]) through one approximate-time
    synchronizer that calls ``callback`` with one message per input, in that order.

    Images and camera_info get the image QoS of ``cfg.input_reliability`` / ``cfg.input_history``; a
    PoseStamped is reliable with a history of max(:data:`POSE_HISTORY`, ``cfg.queue_size``). ``cfg``: a
    node config with queue_size, slop, input_reliability, input_history.
    Returns (the :class:`~instseg_ros.ros.sync.ApproximateTimeSynchronizer`, a :class:`SyncWatch` over
    the topics, the subscriptions)."""
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from instseg_ros.ros.graph import image_qos
    from instseg_ros.ros.sync import ApproximateTimeSynchronizer

    sync = ApproximateTimeSynchronizer(len(inputs), callback, queue_size=cfg.queue_size, slop=cfg.slop)
    image = image_qos(cfg.input_reliability, cfg.input_history)
    pose = QoSProfile(depth=max(POSE_HISTORY, cfg.queue_size), reliability=ReliabilityPolicy.RELIABLE)
    subs = [node.create_subscription(t, topic, sync.input_callback(i), pose if t is PoseStamped else image)
            for i, (t, topic) in enumerate(inputs)]
    return sync, SyncWatch([topic for _, topic in inputs]), subs


def sync_values(stats) -> dict[str, Any]:
    """A node's synchronizer figures for /diagnostics from its :class:`~instseg_ros.ros.sync.SyncStats`
    (None before activate: zeros); per-input lists comma-separated in input order."""
    if stats is None:
        return {"sync_matched": 0, "sync_dropped": 0, "lost_estimate": 0, "input_gaps": 0, "sync_received": "",
                "sync_queued": "", "sync_lost_estimate": "", "input_silent_s": ""}
    return {"sync_matched": stats.matched, "sync_dropped": sum(stats.dropped),
            "lost_estimate": sum(stats.lost_estimate), "input_gaps": sum(stats.gaps),
            "sync_received": ",".join(map(str, stats.received)), "sync_queued": ",".join(map(str, stats.queued)),
            "sync_lost_estimate": ",".join(map(str, stats.lost_estimate)),
            "input_silent_s": ",".join(f"{x:.1f}" for x in stats.silent_s)}


def log_skipped_frame(logger, stamp_ns: int, exc: BaseException) -> None:
    """Log a frame a node's worker could not process: WARN for a bad frame (ValueError), ERROR otherwise."""
    stamp = stamp_ns * 1e-9
    if isinstance(exc, ValueError):
        logger.warning(f"skipping frame stamped {stamp:.3f} s: {exc}")
    else:
        logger.error(f"frame stamped {stamp:.3f} s failed: {type(exc).__name__}: {exc}")


def trigger_callback(fn: Callable[[], tuple[bool, str]], failed: str):
    """A std_srvs/Trigger service callback answering ``fn() -> (success, message)``; an exception is a
    failure whose message is ``failed`` followed by its type and text (the node stays up)."""
    def callback(request, response):
        try:
            response.success, response.message = fn()
        except Exception as e:  # noqa: BLE001 - the reason goes back to the caller
            response.success, response.message = False, f"{failed}{type(e).__name__}: {e}"
        return response

    return callback


class FrameError(ValueError):
    """A frame that cannot be processed (logged and skipped, never fatal)."""


def frame_to_arrays(color, depth, info) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check and convert one synchronized frame.

    Args: sensor_msgs/Image colour, sensor_msgs/Image depth (16UC1 mm / 32FC1 m), sensor_msgs/CameraInfo.
    Returns rgb uint8 (H, W, 3), depth float32 (H, W) metres (0 = invalid; NaN -> 0), K (3, 3).
    Raises FrameError naming the problem: unsupported encodings, colour / depth / camera_info sizes
    that disagree, invalid camera_info, or no valid depth pixel at all.
    """
    from instseg_ros.ros.conversions import camera_info_to_intrinsics, image_to_depth, image_to_rgb

    try:
        rgb = image_to_rgb(color)
    except ValueError as e:
        raise FrameError(f"colour image rejected: {e}") from None
    try:
        d = image_to_depth(depth)
    except ValueError as e:
        raise FrameError(f"depth image rejected: {e}") from None
    try:
        intr = camera_info_to_intrinsics(info)
    except ValueError as e:
        raise FrameError(f"camera_info rejected: {e}") from None
    if rgb.shape[:2] != d.shape or d.shape != (intr.height, intr.width):
        raise FrameError(f"size mismatch: colour {rgb.shape[1]}x{rgb.shape[0]}, depth {d.shape[1]}x{d.shape[0]}, "
                         f"camera_info {intr.width}x{intr.height} (depth must be aligned to colour)")
    d = np.where(np.isfinite(d) & (d > 0), d, np.float32(0.0)).astype(np.float32, copy=False)
    if not (d > 0).any():
        raise FrameError("depth image has no valid pixel (all zero or NaN)")
    return rgb, d, intr.K


@functools.cache
def _glibc_function(name: str):
    """The C function ``name`` of glibc (looked up once), or None off glibc / when it lacks it."""
    try:
        import ctypes

        return getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def release_free_heap() -> None:
    """Give freed heap memory back to the operating system (glibc ``malloc_trim``; no-op elsewhere).

    Worker threads that allocate large transient buffers (map extraction, segmentation) each get a
    glibc malloc arena; freed blocks stay in those arenas and the resident size creeps up over hours
    although nothing is leaked. Trimming after each large job keeps RSS flat (see ``instseg bench soak``).
    """
    trim = _glibc_function("malloc_trim")
    if trim is not None:
        trim(0)


#: glibc's mmap threshold set by :func:`limit_heap_retention` (bytes): blocks at least this large get their own
#: mapping and go back to the OS when freed. Without it glibc raises the threshold (up to 32 MiB) each time such a
#: block is freed, after which the per-frame and per-segmentation arrays (1-30 MB) are carved from the heap arenas
#: and fragment them: a 20-minute mapping soak at 30 Hz grew 1.18 MB/min with flat Python-level memory (tracemalloc).
MMAP_THRESHOLD_BYTES = 4 << 20


def limit_heap_retention(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold (``mallopt(M_MMAP_THRESHOLD)``, which also stops its dynamic growth) so that large
    transient arrays are mapped and unmapped instead of fragmenting the heap over hours. A ``MALLOC_MMAP_THRESHOLD_``
    in the environment (the user's own choice) is left in force. Returns True when the setting was applied (False
    off glibc or when the environment sets it)."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    mallopt = _glibc_function("mallopt")
    return mallopt is not None and bool(mallopt(-3, int(threshold)))   # M_MMAP_THRESHOLD = -3 (malloc.h)


#: Default largest deviation of a pose quaternion's norm from 1 (``quaternion_tolerance``).
QUATERNION_TOLERANCE = 0.01


def pose_from_xyz_quat(position, quaternion, quaternion_tolerance: float = QUATERNION_TOLERANCE,
                       world_bound: float = float("inf"), what: str = "camera pose") -> np.ndarray:
    """Position (x, y, z) m + quaternion (x, y, z, w) -> rigid T (4, 4) float64.

    Raises FrameError (a bad pose: the frame is skipped) for non-finite numbers, a quaternion whose
    norm differs from 1 by more than ``quaternion_tolerance`` (a near-zero quaternion would
    otherwise be "normalised" into an arbitrary rotation), or a coordinate beyond +-``world_bound`` m.
    """
    from instseg_ros.core.geometry import quaternion_to_rotation

    p = np.asarray(position, np.float64).reshape(-1)
    q = np.asarray(quaternion, np.float64).reshape(-1)
    if p.shape != (3,) or q.shape != (4,) or not (np.isfinite(p).all() and np.isfinite(q).all()):
        raise FrameError(f"{what} is not a valid rigid transform (position {p.tolist()}, quaternion {q.tolist()})")
    norm = float(np.linalg.norm(q))
    if abs(norm - 1.0) > quaternion_tolerance:
        raise FrameError(f"{what} is not a valid rigid transform: quaternion {q.tolist()} has norm {norm:.6g}, "
                         f"not 1 within quaternion_tolerance={quaternion_tolerance:g}")
    if np.abs(p).max() > world_bound:
        raise FrameError(f"{what} position {p.tolist()} m lies outside the world bound +-{world_bound:g} m "
                         f"(world_bound_m)")
    T = np.eye(4)
    T[:3, :3] = quaternion_to_rotation(q)
    T[:3, 3] = p
    return T


def autostart(node) -> bool:
    """configure + activate when the ``autostart`` parameter is true; False if a transition failed."""
    from rclpy.lifecycle import TransitionCallbackReturn

    if not node.get_parameter("autostart").value:
        return True
    if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
        node.get_logger().error("autostart: configure failed; the node stays unconfigured")
        return False
    if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
        node.get_logger().error("autostart: activate failed; the node stays inactive")
        return False
    return True


#: Longest wait of the spin loop before it looks at the stop flag again (s): bounds how long a
#: SIGINT / SIGTERM waits before the ordered shutdown starts.
SPIN_PERIOD_S = 0.1
#: At shutdown, how long the work in flight (a frame, a map segmentation: seconds on a CPU) may
#: take to finish and publish (s). Past it the process exits without it: launch escalates SIGINT
#: to SIGTERM after 5 s and logs that as an ERROR.
STOP_BUDGET_S = 3.0
#: ``executor.shutdown`` waits this long for callbacks still running (a service call) (s).
EXECUTOR_SHUTDOWN_TIMEOUT_S = 0.5


def run(node_cls, args=None, exit_process: bool = True) -> int:
    """Create ``node_cls``, autostart it and spin until SIGINT / SIGTERM; then exit the process with
    code 0 (``exit_process``, what a node's ``main`` wants) or return 0.

    Shutdown is ordered so that nothing is published or logged on a dead context: rclpy's own
    signal handlers are not installed (they invalidate the context the moment the signal arrives,
    while a worker thread may still be publishing a frame: "publisher's context is invalid"), so a
    signal only sets a flag (during start-up, before anything is in flight, it interrupts the model
    loading instead); the spin loop then stops, ``_stop_processing()`` lets the frame in
    flight finish and frees the model, the executor and node are shut down and destroyed, and only
    then is the context shut down. Exit code 0 after a signal, as launch expects of a clean stop;
    the process ends right there (:func:`_exit_now`) rather than after seconds of module teardown.
    Work that takes longer than :data:`STOP_BUDGET_S` (a map segmentation on a busy CPU) is not
    waited for: the process ends with the node and context still valid under it, so that work
    never publishes into a dead context.

    ``node_cls`` must provide ``_stop_processing()`` (workers and model released before exit)."""
    import signal

    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        stop.set()

    def interrupt(signum, _frame) -> None:
        raise KeyboardInterrupt

    limit_heap_retention()   # before the model and the first frames allocate anything large
    signals = {signal.SIGINT, signal.SIGTERM}
    # A signal must not interrupt rclpy.init half-way: hold it back until the handlers are in place.
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        # rclpy 7.1 (Jazzy) has no context-manager form of init: shut down explicitly.
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        # While the model loads (seconds) nothing is in flight: a signal interrupts the start-up at once.
        previous = {s: signal.signal(s, interrupt) for s in signals}
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
    node = executor = None
    try:
        node = node_cls()
        autostart(node)
        executor = MultiThreadedExecutor(num_threads=2)
        executor.add_node(node)
        for s in previous:
            signal.signal(s, on_signal)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=SPIN_PERIOD_S)
        if stop.is_set():
            node.get_logger().info("signal received: stopping (finishing the frame in flight)")
    except (KeyboardInterrupt, ExternalShutdownException):
        stop.set()
    finally:
        for s in previous:  # a second Ctrl-C must not interrupt the shutdown itself
            signal.signal(s, on_signal)
        stopped = node is None or _within(node._stop_processing, STOP_BUDGET_S)
        if executor is not None:
            stopped = executor.shutdown(timeout_sec=EXECUTOR_SHUTDOWN_TIMEOUT_S) and stopped
        if not stopped and exit_process and stop.is_set():
            # Work still running would publish into a destroyed node or a shut-down context (an
            # ERROR line): leave both alive and end the process, which ends that work too.
            node.get_logger().warning(f"work in flight did not finish within {STOP_BUDGET_S:.0f} s "
                                      "(a segmentation?): exiting without waiting for it")
            _exit_now(0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        for s, h in previous.items():
            signal.signal(s, h)
    if exit_process:
        _exit_now(0)
    return 0


def _within(fn: Callable[[], None], budget_s: float) -> bool:
    """Run ``fn`` in a helper thread; True when it returned within ``budget_s`` seconds (its
    exception, if any, is re-raised here), False when it is still running."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller below
            errors.append(e)

    t = threading.Thread(target=target, name="instseg-shutdown", daemon=True)
    t.start()
    t.join(budget_s)
    if t.is_alive():
        return False
    if errors:
        raise errors[0]
    return True


def _exit_now(code: int) -> None:
    """End the process at once, after flushing Python's and C's output buffers.

    Used once the node is destroyed and the context (and with it ROS logging) is shut down: what the
    interpreter would still do is tear down torch / open3d / numba module state, measured at 1.5-3 s
    on a loaded 2-core machine, which pushes the exit past launch's 5 s SIGINT -> SIGTERM
    escalation (an ERROR line, then SIGTERM / SIGKILL) for no benefit."""
    import ctypes
    import os
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    try:
        ctypes.CDLL(None).fflush(None)  # C stdio buffers (rcutils console output)
    except (OSError, AttributeError):
        pass
    os._exit(code)
