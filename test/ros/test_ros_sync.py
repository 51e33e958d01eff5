"""ApproximateTimeSynchronizer: jittered, out-of-order and missing stamps, bounds, threads, rclpy headers."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image

from instseg_ros.ros.conversions import ns_to_stamp
from instseg_ros.ros.sync import ApproximateTimeSynchronizer, to_ns

MS = 1e-3


class Collector:
    def __init__(self):
        self.sets = []

    def __call__(self, *msgs):
        self.sets.append(msgs)


def test_exact_stamps_match_in_input_order():
    out = Collector()
    s = ApproximateTimeSynchronizer(3, out, queue_size=5, slop=0.0)
    for k in range(4):
        t = 1.0 + k / 30
        assert not s.add(2, ("c", k), stamp=t)
        assert not s.add(0, ("a", k), stamp=t)
        assert s.add(1, ("b", k), stamp=t)
    assert out.sets == [(("a", k), ("b", k), ("c", k)) for k in range(4)]
    st = s.stats()
    assert (st.matched, st.dropped, st.queued, st.received) == (4, [0, 0, 0], [0, 0, 0], [4, 4, 4])


def test_jittered_stamps_pair_with_the_right_partner():
    # 30 Hz colour, depth jittered by up to +-5 ms, slop 10 ms: each depth k pairs with colour k
    # (neighbours are 33 ms away, outside the slop).
    rng = np.random.default_rng(0)
    out = Collector()
    s = ApproximateTimeSynchronizer(2, out, queue_size=4, slop=10 * MS)
    n = 60
    for k in range(n):
        t = 100.0 + k / 30
        s.add(0, k, stamp=t)
        s.add(1, k, stamp=t + rng.uniform(-5, 5) * MS)
    assert [a for a, _ in out.sets] == list(range(n))
    assert all(a == b for a, b in out.sets)
    assert s.matched == n and s.dropped == 0


def test_out_of_order_arrivals_still_match():
    # depth arrives shuffled within blocks of 4 while colour is in order; queue 8 holds a block.
    rng = np.random.default_rng(1)
    out = Collector()
    s = ApproximateTimeSynchronizer(2, out, queue_size=8, slop=4 * MS)
    n = 40
    depth_order = np.concatenate([rng.permutation(np.arange(b, b + 4)) for b in range(0, n, 4)])
    for k in range(n):
        s.add(0, k, stamp=k * 0.1)
        d = int(depth_order[k])
        s.add(1, d, stamp=d * 0.1 + 2 * MS)
    assert sorted(a for a, _ in out.sets) == list(range(n))
    assert all(a == b for a, b in out.sets)
    assert s.stats().queued == [0, 0]


def test_missing_stamps_are_dropped_by_queue_bound_and_counted():
    # queue_size 1, depth frames 2 and 5 missing: colour 2 waits until colour 3 pushes it out,
    # same for 5, so 8 sets match and exactly 2 colour messages are dropped.
    out = Collector()
    s = ApproximateTimeSynchronizer(2, out, queue_size=1, slop=5 * MS)
    for k in range(10):
        s.add(0, k, stamp=k * 0.1)
        if k not in (2, 5):
            s.add(1, k, stamp=k * 0.1 + 1 * MS)
    assert [a for a, _ in out.sets] == [0, 1, 3, 4, 6, 7, 8, 9]
    st = s.stats()
    assert st.matched == 8 and st.dropped == [2, 0] and st.queued == [0, 0]


def test_set_must_fit_in_slop_not_just_pairwise_to_the_newest():
    # a at 0, b at +8 ms, c at -8 ms: each is within 10 ms of a, but the set spans 16 ms -> no match.
    # A later c at +1 ms makes (0, 8, 1), spread 8 ms <= 10 ms -> match with that c.
    out = Collector()
    s = ApproximateTimeSynchronizer(3, out, queue_size=5, slop=10 * MS)
    s.add(0, "a", stamp=1.000)
    s.add(1, "b", stamp=1.008)
    assert not s.add(2, "c_early", stamp=0.992)
    assert s.add(2, "c_late", stamp=1.001)
    assert out.sets == [("a", "b", "c_late")]
    assert s.stats().queued == [0, 0, 1]  # c_early still waiting


def test_closest_candidate_is_chosen():
    out = Collector()
    s = ApproximateTimeSynchronizer(2, out, queue_size=5, slop=10 * MS)
    s.add(1, "d95", stamp=0.095)
    s.add(1, "d103", stamp=0.103)
    s.add(0, "c100", stamp=0.100)
    assert out.sets == [("c100", "d103")]
    assert s.stats().queued == [0, 1]


def test_memory_is_bounded_by_queue_size():
    s = ApproximateTimeSynchronizer(2, Collector(), queue_size=5, slop=0.001)
    for k in range(1000):
        s.add(0, k, stamp=float(k))
    st = s.stats()
    assert st.queued == [5, 0] and st.dropped == [995, 0] and st.matched == 0
    s.reset()
    assert s.stats().queued == [0, 0] and s.dropped == 1000


def test_same_stamp_twice_replaces_and_counts():
    out = Collector()
    s = ApproximateTimeSynchronizer(2, out, queue_size=5, slop=0.0)
    s.add(0, "old", stamp=2.0)
    s.add(0, "new", stamp=2.0)
    s.add(1, "x", stamp=2.0)
    assert out.sets == [("new", "x")] and s.stats().dropped == [1, 0]


def test_rclpy_messages_with_header_stamps():
    out = Collector()
    s = ApproximateTimeSynchronizer(3, out, queue_size=3, slop=0.005)
    img, depth, info = Image(), Image(), CameraInfo()
    img.header.stamp = ns_to_stamp(5_000_000_000)
    depth.header.stamp = ns_to_stamp(5_003_000_000)
    info.header.stamp = ns_to_stamp(4_999_000_000)
    cbs = [s.input_callback(i) for i in range(3)]
    cbs[0](img)
    cbs[2](info)
    cbs[1](depth)
    assert len(out.sets) == 1 and out.sets[0][0] is img and out.sets[0][1] is depth and out.sets[0][2] is info
    with pytest.raises(ValueError, match="no header.stamp"):
        s.add(0, object())


def test_threads_adding_concurrently():
    # 3 inputs fed from 3 threads each, 300 exact-stamp sets: every set matched once, no tearing.
    n = 300
    out = Collector()
    lock = threading.Lock()

    def cb(*msgs):
        with lock:
            out(*msgs)

    s = ApproximateTimeSynchronizer(3, cb, queue_size=n, slop=0.0)
    barrier = threading.Barrier(9)

    def feed(i, part):
        barrier.wait()
        for k in range(part, n, 3):
            s.add(i, (i, k), stamp=k * 0.01)

    threads = [threading.Thread(target=feed, args=(i, p)) for i in range(3) for p in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert s.matched == n and len(out.sets) == n
    assert all(a[1] == b[1] == c[1] for a, b, c in out.sets)
    assert sorted(a[1] for a, _, _ in out.sets) == list(range(n))
    assert s.stats().queued == [0, 0, 0]


def test_stamp_conversion_and_argument_checks():
    assert to_ns(1.5) == 1_500_000_000
    assert to_ns(ns_to_stamp(123_456_789_012)) == 123_456_789_012
    with pytest.raises(ValueError, match="finite"):
        to_ns(float("nan"))
    with pytest.raises(ValueError, match="num_inputs"):
        ApproximateTimeSynchronizer(1, print)
    with pytest.raises(ValueError, match="queue_size"):
        ApproximateTimeSynchronizer(2, print, queue_size=0)
    with pytest.raises(ValueError, match="slop"):
        ApproximateTimeSynchronizer(2, print, slop=-1)
    s = ApproximateTimeSynchronizer(2, print)
    with pytest.raises(ValueError, match="input index 2"):
        s.add(2, None, stamp=0.0)
