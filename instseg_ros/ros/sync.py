"""Approximate-time synchronizer for N message streams (message_filters' semantics, no ROS install).

Semantics (those of ``message_filters.ApproximateTimeSynchronizer``, Python flavour):

* every input keeps its own queue of at most ``queue_size`` messages keyed by stamp; when a queue
  overflows its oldest message is discarded (counted in ``dropped``); a second message with the
  same stamp on the same input replaces the first (also counted);
* when a message with stamp t arrives on input i, a set is searched that contains it and one
  queued message from every other input, all within ``slop`` seconds of each other
  (max stamp - min stamp <= slop). Among the valid sets the one closest to t (smallest sum of
  |stamp - t|) is chosen, the callback receives the messages in input order, and they leave their
  queues (counted in ``matched``, once per set);
* messages that never match stay until pushed out by newer ones, so memory is bounded by
  N * queue_size messages, and late (out-of-order) messages can still match.

For diagnostics it also watches each input's stamps: a step between consecutive stamps of k
recent periods (median of the last :data:`PERIOD_WINDOW` steps) means about k - 1 messages were lost
before reaching the synchronizer (``lost_estimate``; e.g. overwritten in a full subscription
history); a step longer than :data:`PAUSE_S` (and :data:`PAUSE_PERIODS` periods) counts as a pause of
the source (``gaps``), not as losses. ``silent_s`` is the time since each input's last message.

Stamps come from ``msg.header.stamp`` (rclpy messages), or are passed explicitly as float
seconds / ``builtin_interfaces/Time`` / integer nanoseconds (:func:`to_ns`), which is how the
unit tests drive it. Thread-safe: ``add`` may be called from several executor threads; the
callback runs outside the lock, in the thread whose message completed the set.
"""
from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from instseg_ros.ros.conversions import stamp_to_ns

_NS = 1_000_000_000
#: Stamp steps per input kept to estimate its period (median).
PERIOD_WINDOW = 16
#: Steps needed before gaps are judged.
MIN_PERIODS = 4
#: A step longer than this many periods counts as missed messages ...
GAP_FACTOR = 1.5
#: ... unless it is longer than both PAUSE_S seconds and PAUSE_PERIODS periods: the source paused.
PAUSE_S = 1.0
PAUSE_PERIODS = 10


def to_ns(stamp: Any) -> int:
    """A stamp -> integer nanoseconds.

    Accepts builtin_interfaces/Time (``sec``/``nanosec``), rclpy.time.Time (``nanoseconds``),
    float seconds, or ``numpy``/Python ints, which are taken as *seconds* like floats (use
    ``Time`` objects for nanosecond precision). ValueError for NaN/inf or anything else.
    """
    if hasattr(stamp, "sec") and hasattr(stamp, "nanosec"):
        return stamp_to_ns(stamp)
    if hasattr(stamp, "nanoseconds"):
        return int(stamp.nanoseconds)
    try:
        x = float(stamp)
    except (TypeError, ValueError):
        raise ValueError(f"cannot read a time stamp from {type(stamp).__name__}") from None
    if x != x or x in (float("inf"), float("-inf")):
        raise ValueError(f"stamp must be finite, got {x}")
    return int(round(x * _NS))


def stamp_of(msg: Any) -> int:
    """``msg.header.stamp`` in nanoseconds; ValueError if the message has no header."""
    header = getattr(msg, "header", None)
    if header is None or not hasattr(header, "stamp"):
        raise ValueError(f"{type(msg).__name__} has no header.stamp; pass stamp= explicitly")
    return to_ns(header.stamp)


@dataclass
class SyncStats:
    """Counters for diagnostics.

    Attributes:
        received: messages added, per input.
        matched: sets delivered to the callback.
        dropped: messages that left a queue without being matched (overflow or replaced), per input.
        queued: messages waiting now, per input.
        lost_estimate: messages estimated lost upstream from gaps in the stamps, per input.
        gaps: pauses of the source (stamp steps over PAUSE_S and PAUSE_PERIODS periods), per input.
        silent_s: seconds since the last message (since creation if none), per input.
    """

    received: list[int]
    matched: int
    dropped: list[int]
    queued: list[int]
    lost_estimate: list[int] = field(default_factory=list)
    gaps: list[int] = field(default_factory=list)
    silent_s: list[float] = field(default_factory=list)


class ApproximateTimeSynchronizer:
    """Group messages from ``num_inputs`` streams whose stamps lie within ``slop`` seconds.

    Args:
        num_inputs: number of streams (>= 2).
        callback: called as ``callback(msg_0, ..., msg_{N-1})`` for each matched set.
        queue_size: messages kept per input (>= 1).
        slop: largest allowed spread of stamps within a set, seconds (>= 0).

    Use ``sync.add(i, msg)`` from subscription callbacks (``node.create_subscription(Image,
    topic, sync.input_callback(0), qos)``), or ``sync.add(i, obj, stamp=t)`` with an explicit
    stamp.
    """

    def __init__(self, num_inputs: int, callback: Callable[..., Any], queue_size: int = 10, slop: float = 0.05):
        if int(num_inputs) < 2:
            raise ValueError(f"num_inputs must be >= 2, got {num_inputs}")
        if int(queue_size) < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if not (0.0 <= float(slop) < float("inf")):
            raise ValueError(f"slop must be a finite number >= 0 seconds, got {slop}")
        self.num_inputs = int(num_inputs)
        self.queue_size = int(queue_size)
        self.slop = float(slop)
        self._slop_ns = int(round(self.slop * _NS))
        self._callback = callback
        self._lock = threading.Lock()
        self._queues: list[dict[int, Any]] = [{} for _ in range(self.num_inputs)]
        self._received = [0] * self.num_inputs
        self._dropped = [0] * self.num_inputs
        self._matched = 0
        self._created = time.monotonic()
        self._last_arrival: list[float | None] = [None] * self.num_inputs
        self._last_stamp: list[int | None] = [None] * self.num_inputs
        self._steps = [collections.deque(maxlen=PERIOD_WINDOW) for _ in range(self.num_inputs)]
        self._lost = [0] * self.num_inputs
        self._gaps = [0] * self.num_inputs

    # -- counters ---------------------------------------------------------------------------
    @property
    def matched(self) -> int:
        """Sets delivered to the callback so far."""
        return self._matched

    @property
    def dropped(self) -> int:
        """Messages (all inputs) discarded without being matched so far."""
        return sum(self._dropped)

    def stats(self) -> SyncStats:
        now = time.monotonic()
        with self._lock:
            return SyncStats(received=list(self._received), matched=self._matched,
                             dropped=list(self._dropped), queued=[len(q) for q in self._queues],
                             lost_estimate=list(self._lost), gaps=list(self._gaps),
                             silent_s=[now - (a if a is not None else self._created) for a in self._last_arrival])

    def _watch_gaps(self, index: int, t: int) -> None:
        """Update the lost-message estimate of input ``index`` with stamp ``t`` (lock held)."""
        self._last_arrival[index] = time.monotonic()
        prev = self._last_stamp[index]
        steps = self._steps[index]
        if prev is None or t < prev - PAUSE_S * _NS:   # first message, or the source clock restarted
            self._last_stamp[index] = t
            steps.clear()
            return
        if t <= prev:  # duplicate / slightly out of order: no step
            return
        step = t - prev
        if len(steps) >= MIN_PERIODS:
            period = sorted(steps)[len(steps) // 2]
            if period > 0 and step > GAP_FACTOR * period:
                if step > max(PAUSE_S * _NS, PAUSE_PERIODS * period):
                    self._gaps[index] += 1
                else:
                    self._lost[index] += int(round(step / period)) - 1
        steps.append(step)
        self._last_stamp[index] = t

    def reset(self) -> None:
        """Empty the queues (queued messages count as dropped); counters otherwise kept."""
        with self._lock:
            for i, q in enumerate(self._queues):
                self._dropped[i] += len(q)
                q.clear()

    # -- input ------------------------------------------------------------------------------
    def input_callback(self, index: int) -> Callable[[Any], None]:
        """A one-argument callable feeding input ``index`` (for ``create_subscription``)."""
        self._check_index(index)
        return lambda msg: self.add(index, msg)

    def _check_index(self, index: int) -> None:
        if not (0 <= int(index) < self.num_inputs):
            raise ValueError(f"input index {index} outside 0..{self.num_inputs - 1}")

    def add(self, index: int, msg: Any, stamp: Any = None) -> bool:
        """Queue ``msg`` on input ``index``; returns True if it completed a set (callback called).

        ``stamp`` overrides ``msg.header.stamp`` (see :func:`to_ns` for accepted types).
        """
        self._check_index(index)
        t = stamp_of(msg) if stamp is None else to_ns(stamp)
        with self._lock:
            self._received[index] += 1
            self._watch_gaps(index, t)
            queue = self._queues[index]
            if t in queue:
                self._dropped[index] += 1
            queue[t] = msg
            while len(queue) > self.queue_size:
                del queue[min(queue)]
                self._dropped[index] += 1
            if t not in queue:  # this message was the oldest and fell out at once
                return False
            chosen = self._search(index, t)
            if chosen is None:
                return False
            msgs = [self._queues[j].pop(s) for j, s in enumerate(chosen)]
            self._matched += 1
        self._callback(*msgs)
        return True

    def _search(self, index: int, t: int) -> list[int] | None:
        """Stamps (one per input, input ``index`` = t) of the best set containing t, or None.

        Every valid set fits in a window [a, a + slop] with t inside, whose lower end a is one of
        the set's stamps; so it suffices to try each candidate stamp a in [t - slop, t] as the
        window start and take, per input, the queued stamp in the window closest to t.
        """
        slop = self._slop_ns
        candidates: list[list[int]] = []
        for j, q in enumerate(self._queues):
            if j == index:
                candidates.append([t])
                continue
            near = [s for s in q if abs(s - t) <= slop]
            if not near:
                return None
            candidates.append(near)
        starts = sorted({s for c in candidates for s in c if t - slop <= s <= t})
        best, best_cost = None, None
        for a in starts:
            b = a + slop
            pick = []
            for c in candidates:
                inside = [s for s in c if a <= s <= b]
                if not inside:
                    break
                pick.append(min(inside, key=lambda s: (abs(s - t), s)))
            else:
                cost = sum(abs(s - t) for s in pick)
                if best_cost is None or cost < best_cost:
                    best, best_cost = pick, cost
        return best
