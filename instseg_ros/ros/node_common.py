"""Machinery shared by ``clusternet_node`` and ``occuseg_mapping_node`` (rclpy only at call time).

* :class:`LatestFrameWorker`: one processing thread with a single pending slot, so at most one
  frame waits while one is processed; a newer frame replaces the waiting one (counted as a drop),
  stale frames are never queued.
* :class:`RateMeter` / :class:`LatencyStats`: sliding-window counters for diagnostics.
* :func:`diagnostic_status`: a ``diagnostic_msgs/DiagnosticStatus`` from a flat dict.
* :func:`resolve_model_path`: "" / relative model paths -> the shipped ``models/`` file.
* :class:`SyncWatch`: names the input that is missing when frames never synchronize.
* :func:`frame_to_arrays` / :class:`FrameError`: one synchronized frame checked and converted.
* :func:`run` / :func:`autostart`: a lifecycle node's ``main``.
"""
from __future__ import annotations

import collections
import threading
import time
from pathlib import Path
from typing import Any, Callable

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


class LifecycleTeardown:
    """The deactivate / cleanup / shutdown transitions both nodes share, as a mixin placed before
    ``rclpy.lifecycle.Node``. The node provides ``_stop_processing()`` (unsubscribe, stop workers, free
    the model) and ``_destroy_outputs()`` (publishers, services, timers)."""

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
