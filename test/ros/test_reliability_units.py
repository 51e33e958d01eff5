"""Regression tests, without a graph, for the reliability fixes of issue #17: stamp jumps (1),
world bound (2), near-zero quaternions (3), parameter ranges and non-finite values (5, 6), lost
messages estimated from stamp gaps and diagnostics levels (8), the TSDF map's messages going to the
logger it is given (8). Expected values are worked out by hand in the comments."""
from __future__ import annotations

import math
import platform
from pathlib import Path

import numpy as np
import pytest

from instseg_ros.core.instances import Instances
from instseg_ros.ros.node_common import FrameError, StampGuard, input_health, pose_from_xyz_quat
from instseg_ros.ros.node_params import (
    RANGES,
    ZERO_ALLOWED,
    ClusterNetNodeConfig,
    MappingNodeConfig,
    config_from_values,
    default_values,
)
from instseg_ros.ros.sync import ApproximateTimeSynchronizer

S = 1_000_000_000  # ns per second


# ------------------------------------------------------------------------------ 1: stamp jumps

def test_a_future_frame_is_rejected_once_and_does_not_block_later_frames():
    g = StampGuard(future_tolerance_s=2.0, reset_jump_s=2.0)
    now = 1000 * S
    assert g.check(now, now, arrival_ns=0) == (True, None)
    # +1 h: rejected, warned about, not the new "last stamp"
    ok, msg = g.check(now + 3600 * S, now + S // 30, arrival_ns=S // 30)
    assert not ok and "ahead of the node clock" in msg
    # the same clock fault again: still rejected, but no second log line
    assert g.check(now + 3601 * S, now + 2 * S // 30, arrival_ns=2 * S // 30) == (False, None)
    assert g.future == 2
    # the next normal frame goes through: the future stamps did not become the last stamp
    assert g.check(now + 3 * S // 30, now + 3 * S // 30, arrival_ns=3 * S // 30) == (True, None)
    assert g.last_ns == now + 3 * S // 30
    # 1.9 s ahead is within the tolerance of 2 s
    assert g.check(now + 4 * S // 30 + 19 * S // 10, now + 4 * S // 30, arrival_ns=4 * S // 30)[0]


def test_future_check_is_off_with_zero_tolerance_or_an_unset_sim_clock():
    assert StampGuard(0.0, 2.0).check(3600 * S, 0)[0]
    assert StampGuard(0.0, 2.0).check(3600 * S, 10 * S)[0]
    assert StampGuard(2.0, 2.0).check(3600 * S, 0)[0]   # node clock 0: use_sim_time before /clock


def test_small_steps_back_are_out_of_order_large_ones_restart_the_ordering():
    g = StampGuard(future_tolerance_s=0.0, reset_jump_s=2.0)
    assert g.check(100 * S, 0)[0]
    ok, msg = g.check(100 * S - S // 2, 0)          # 0.5 s back: out of order, logged
    assert not ok and "out-of-order" in msg
    assert g.check(100 * S - S, 0) == (False, None)  # 1 s back: out of order, not logged again
    assert g.check(100 * S, 0) == (False, None)      # equal stamp: not newer
    assert g.out_of_order == 3
    # a recording looped: 60 s back is a reset, the frame is accepted and becomes the last stamp
    ok, msg = g.check(40 * S, 0)
    assert ok and "frame order restarts" in msg and g.resets == 1 and g.last_ns == 40 * S
    assert g.check(40 * S + S // 30, 0) == (True, None)


def test_a_forward_jump_against_the_input_rate_is_reported_and_accepted():
    g = StampGuard(future_tolerance_s=0.0, reset_jump_s=2.0)
    period = S // 30
    t = 50 * S
    for k in range(6):  # 30 Hz, stamps and arrivals in step
        assert g.check(t + k * period, 0, arrival_ns=k * period) == (True, None)
    # the source clock jumps 1 h ahead while only one period passed: accepted, reported once
    ok, msg = g.check(t + 3600 * S, 0, arrival_ns=6 * period)
    assert ok and "jumped" in msg and g.forward_jumps == 1
    # a pause of the camera (10 s of stamps over 10 s of arrivals) is not a jump
    ok, msg = g.check(t + 3610 * S, 0, arrival_ns=6 * period + 10 * S)
    assert ok and msg is None and g.forward_jumps == 1


# ------------------------------------------------------------------------------ 2 / 3: poses

def test_near_zero_and_unnormalised_quaternions_are_bad_poses():
    with pytest.raises(FrameError, match="norm"):
        pose_from_xyz_quat([0, 0, 0], [0, 0, 1e-5, 1e-5])
    with pytest.raises(FrameError, match="norm"):
        pose_from_xyz_quat([0, 0, 0], [0, 0, 0, 1.05], quaternion_tolerance=0.01)
    with pytest.raises(FrameError, match="valid rigid"):
        pose_from_xyz_quat([0, 0, np.nan], [0, 0, 0, 1])
    # within the tolerance the quaternion is normalised: 90 degrees about z by hand
    T = pose_from_xyz_quat([1, 2, 3], [0, 0, math.sqrt(0.5) * 1.005, math.sqrt(0.5) * 1.005])
    np.testing.assert_allclose(T[:3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(T[:3, 3], [1, 2, 3])


def test_positions_beyond_the_world_bound_are_bad_poses():
    with pytest.raises(FrameError, match="world bound"):
        pose_from_xyz_quat([1e6, 0, 0], [0, 0, 0, 1], world_bound=1000.0)
    assert pose_from_xyz_quat([-999.0, 0, 0], [0, 0, 0, 1], world_bound=1000.0)[0, 3] == -999.0


def test_tsdf_world_bound_keeps_every_accepted_voxel_addressable():
    from instseg_ros.mapping.tsdf import BLOCK_RESOLUTION, VOXEL_INDEX_LIMIT, TsdfConfig

    cfg = TsdfConfig(voxel_size=0.005, depth_max=1.5, trunc_voxels=4.0)
    # (2^20 - 1) voxels of 5 mm = 5242.875 m, minus depth_max 1.5 and (4 + 8) voxels (0.06 m)
    assert cfg.max_world_bound() == pytest.approx((VOXEL_INDEX_LIMIT - 1) * 0.005 - 1.5 - 12 * 0.005)
    assert cfg.max_world_bound() == pytest.approx(5241.315)
    assert BLOCK_RESOLUTION == 8
    with pytest.raises(ValueError, match="world_bound"):
        TsdfConfig(voxel_size=0.001, depth_max=1.5, world_bound=1048.0)  # 1048 + 1.5 > 1048.575 m
    with pytest.raises(ValueError, match="world_bound"):
        MappingNodeConfig(voxel_size=0.0005)  # 1000 m at 0.5 mm needs 2e6 voxels per axis


def test_the_map_refuses_a_far_pose_and_the_segmenter_side_never_sees_an_unaddressable_voxel():
    from instseg_ros.mapping.stable_ids import voxel_keys
    from instseg_ros.mapping.tsdf import TsdfConfig, TsdfMap, snap_to_voxels

    m = TsdfMap(TsdfConfig(voxel_size=0.01, device="cpu", world_bound=100.0))
    depth = np.full((48, 64), 0.503, np.float32)   # a wall 0.503 m ahead (off the voxel grid planes)
    rgb = np.zeros((48, 64, 3), np.uint8)
    K = np.array([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]])
    far = np.eye(4)
    far[0, 3] = 1e6
    with pytest.raises(ValueError, match="world bound"):
        m.integrate(depth, rgb, K, far)
    assert m.num_blocks == 0
    # a pose at the edge of the bound is accepted, and its voxels can be keyed
    edge = np.eye(4)
    edge[:3, 3] = [-100.0, 100.0, 100.0]
    assert m.integrate(depth, rgb, K, edge) == depth.size
    sv = snap_to_voxels(*m.extract_points(0.0), m.voxel_size)
    assert len(sv) > 1000
    assert len(np.unique(voxel_keys(sv.coords))) == len(sv)
    # the wall lies at z = 100.503 m: voxel index floor(100.503 / 0.01) = 10050
    assert set(np.unique(sv.coords[:, 2])) <= {10049, 10050, 10051}


class ListLogger:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, msg: str) -> None:
        self.lines.append(("info", msg))

    def warning(self, msg: str) -> None:
        self.lines.append(("warning", msg))


def test_block_budget_message_goes_to_the_given_logger_once():
    from instseg_ros.mapping.tsdf import TsdfConfig, TsdfMap

    log = ListLogger()
    m = TsdfMap(TsdfConfig(voxel_size=0.005, max_blocks=4, device="cpu"), logger=log)
    K = np.array([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]])
    depth = np.full((48, 64), 0.4, np.float32)
    rgb = np.zeros((48, 64, 3), np.uint8)
    for x in (0.0, 0.5, 1.0):   # three frames whose surfaces need far more than 4 blocks
        T = np.eye(4)
        T[0, 3] = x
        m.integrate(depth, rgb, K, T)
        assert m.last_budget_limited
    assert m.num_blocks == 4 and m.blocks_dropped > 0
    warnings = [msg for lvl, msg in log.lines if lvl == "warning"]
    assert len(warnings) == 1 and "block budget 4 reached" in warnings[0]
    m.reset()
    assert not m.last_budget_limited


# ------------------------------------------------------------------------------ 5 / 6: parameters

@pytest.mark.parametrize("cls", [ClusterNetNodeConfig, MappingNodeConfig])
@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_non_finite_float_parameters_are_refused(cls, bad):
    floats = [k for k, v in default_values(cls).items() if isinstance(v, float)]
    assert "slop" in floats and "diagnostics_period_s" in floats
    for name in floats:
        with pytest.raises(ValueError, match=name):
            config_from_values(cls, {name: bad})
    if cls is MappingNodeConfig:
        with pytest.raises(ValueError, match="static_pose"):
            config_from_values(cls, {"static_pose": [0, 0, math.inf, 0, 0, 0, 1]})
        with pytest.raises(ValueError, match="workspace_min"):
            config_from_values(cls, {"workspace_min": [0, 0, math.nan], "workspace_max": [1, 1, 1]})


@pytest.mark.parametrize("cls, values, word", [
    (ClusterNetNodeConfig, {"diagnostics_period_s": 1e-6}, "diagnostics_period_s"),
    (ClusterNetNodeConfig, {"queue_size": 1_000_000_000}, "queue_size"),
    (ClusterNetNodeConfig, {"input_history": 100_000}, "input_history"),
    (ClusterNetNodeConfig, {"slop": 5.0}, "slop"),
    (ClusterNetNodeConfig, {"cloud_stride": 1000}, "cloud_stride"),
    (ClusterNetNodeConfig, {"network_height": 100_000, "network_width": 640}, "network_height"),
    (ClusterNetNodeConfig, {"stamp_jump_reset_s": 0.0}, "stamp_jump_reset_s"),
    (ClusterNetNodeConfig, {"input_timeout_s": 0.0}, "input_timeout_s"),
    (MappingNodeConfig, {"max_blocks": 10_000_000}, "max_blocks"),
    (MappingNodeConfig, {"queue_size": 1_000_000_000}, "queue_size"),
    (MappingNodeConfig, {"quaternion_tolerance": 0.0}, "quaternion_tolerance"),
    (MappingNodeConfig, {"world_bound_m": 0.0}, "world_bound_m"),
    (MappingNodeConfig, {"static_pose": [0, 0, 0, 0, 0, 1e-5, 1e-5]}, "static_pose"),
    (MappingNodeConfig, {"static_pose": [2000.0, 0, 0, 0, 0, 0, 1]}, "world_bound_m"),
])
def test_out_of_range_parameters_are_refused_naming_the_range(cls, values, word):
    with pytest.raises(ValueError, match=word):
        config_from_values(cls, values)


@pytest.mark.parametrize("cls", [ClusterNetNodeConfig, MappingNodeConfig])
def test_every_range_end_is_accepted_and_every_default_is_inside(cls):
    defaults = default_values(cls)
    for name, (lo, hi) in RANGES.items():
        if name not in defaults or name.startswith("network_"):
            continue
        d = defaults[name]
        assert lo <= d <= hi or (d == 0 and name in ZERO_ALLOWED), name
        for v in (lo, hi):
            values = {name: type(d)(v)}
            # the world bound has to fit the voxel index range (+-2^20 voxels): 0.5 mm voxels address
            # +-524 m, a 100 km bound needs voxels of at least 0.1 m
            if name == "voxel_size" and v == lo:
                values["world_bound_m"] = 100.0
            if name == "world_bound_m" and v == hi:
                values["voxel_size"] = 0.5
            config_from_values(cls, values)


# ------------------------------------------------------------------------------ 8: observability

def test_lost_messages_are_estimated_from_stamp_gaps():
    sync = ApproximateTimeSynchronizer(2, lambda *m: None, queue_size=5, slop=0.01)
    period = S // 30
    stamps = [k * period for k in range(10)]
    stamps += [11 * period, 12 * period, 16 * period]  # frame 10 lost (1), then 13, 14, 15 lost (3)
    stamps += [16 * period + 5 * S]                     # a 5 s pause of the source: a gap, not 150 losses
    for t in stamps:
        sync.add(0, object(), stamp=t / S)
    st = sync.stats()
    assert st.lost_estimate == [4, 0]
    assert st.gaps == [1, 0]
    assert st.received == [len(stamps), 0]
    assert st.silent_s[0] < st.silent_s[1]


def test_diagnostics_level_from_silent_inputs_and_drops():
    from diagnostic_msgs.msg import DiagnosticStatus

    names = ["color", "depth", "info"]
    lvl, msg = input_health(True, names, [0.1, 12.0, 0.1], 3.0, {"bad_frames": 5})
    assert lvl == DiagnosticStatus.ERROR and "depth (12.0 s)" in msg
    lvl, msg = input_health(True, names, [0.1, 0.1, 0.1], 3.0, {"bad_frames": 0, "lost_estimate": 2})
    assert lvl == DiagnosticStatus.WARN and "lost_estimate+2" in msg
    assert input_health(True, names, [0.1] * 3, 3.0, {"bad_frames": 0})[0] == DiagnosticStatus.OK
    assert input_health(False, names, [99.0] * 3, 3.0, {"bad_frames": 9})[0] == DiagnosticStatus.OK


def test_infinite_slop_is_refused_by_the_synchronizer():
    with pytest.raises(ValueError, match="slop"):
        ApproximateTimeSynchronizer(3, lambda *m: None, queue_size=5, slop=math.inf)


def test_soak_rss_slope_is_megabytes_per_minute():
    from instseg_ros.ros.tools.bench_soak import slope_per_min

    t = np.arange(0.0, 120.0, 1.0)               # two minutes of 1 s samples
    assert slope_per_min(t, 500.0 + 0.05 * t) == pytest.approx(3.0)   # 0.05 MB/s = 3 MB/min
    assert slope_per_min(t, np.full_like(t, 500.0)) == pytest.approx(0.0, abs=1e-9)
    assert slope_per_min(t[:1], t[:1]) == 0.0


def test_package_logging_is_forwarded_to_the_node_logger():
    import logging

    from instseg_ros.ros.node_common import PACKAGE_LOGGER, route_package_logging

    log = ListLogger()
    handler = route_package_logging(log)
    try:
        logging.getLogger("instseg_ros.core.device").info("device=cpu")
        logging.getLogger("instseg_ros.mapping").warning("budget")
        logging.getLogger("instseg_ros.mapping").debug("not forwarded")
        assert log.lines == [("info", "instseg_ros.core.device: device=cpu"),
                             ("warning", "instseg_ros.mapping: budget")]
        # a second node replaces the first one's handler
        log2 = ListLogger()
        handler = route_package_logging(log2)
        logging.getLogger("instseg_ros.x").warning("w")
        assert log2.lines == [("warning", "instseg_ros.x: w")] and len(log.lines) == 2
    finally:
        pkg = logging.getLogger(PACKAGE_LOGGER)
        pkg.removeHandler(handler)
        pkg.propagate = True
        pkg.setLevel(logging.NOTSET)


def test_tracker_restart_after_a_clock_reset_never_reuses_ids():
    from instseg_ros.core.tracking import Tracker

    inst = Instances(labels=np.zeros((4, 4), np.int32))
    t = Tracker()
    t.update(inst, 100 * S)
    t._next_id = 7      # as if six ids had been handed out
    with pytest.raises(ValueError, match="not later"):
        t.update(inst, 40 * S)
    t.restart()
    assert t.last_stamp_ns is None and t.tracks == []
    t.update(inst, 40 * S)
    assert t._new_id() == 7


# ------------------------------------------------------------------------------ soak: heap retention

_HEAP_PROBE = """
import sys, numpy as np
from instseg_ros.ros.node_common import limit_heap_retention
def rss_mib():
    return int([l for l in open("/proc/self/status") if l.startswith("VmRSS")][0].split()[1]) / 1024
applied = limit_heap_retention() if sys.argv[1] == "1" else False
base = rss_mib()
for _ in range(3):
    a = np.ones(6 << 20, np.uint8)   # 6 MiB, every page touched
    del a
print(applied, rss_mib() - base)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists() or platform.libc_ver()[0] != "glibc",
                    reason="glibc's malloc and /proc only")
def test_fixed_mmap_threshold_gives_large_freed_blocks_back():
    """glibc's default: the first 6 MiB block is mapped; freeing it raises the mmap threshold past 6 MiB, so the
    next two come from the heap and stay resident after free (~6 MiB more RSS). With the threshold fixed at
    4 MiB (what the nodes set at start) every one is mapped and unmapped: RSS back to where it was (< 1 MiB)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    out = {}
    for flag in ("0", "1"):
        r = subprocess.run([sys.executable, "-c", _HEAP_PROBE, flag], env=env, capture_output=True, text=True,
                           timeout=60, check=True)
        applied, grown = r.stdout.split()
        out[flag] = (applied == "True", float(grown))
    assert out["0"][0] is False and out["1"][0] is True
    assert out["0"][1] > 5.0          # default glibc: one 6 MiB block kept in the heap
    assert out["1"][1] < 1.0          # fixed threshold: nothing kept
    env["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)   # the user's own setting is left alone
    r = subprocess.run([sys.executable, "-c", _HEAP_PROBE, "1"], env=env, capture_output=True, text=True,
                       timeout=60, check=True)
    assert r.stdout.split()[0] == "False"
