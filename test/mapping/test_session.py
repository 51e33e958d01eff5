"""MapSession without ROS: rendered views of known boxes fused at known poses, segmented by a real
(randomly initialised, so arbitrary) OccuSeg segmenter; what is checked is the session: versions,
stamps, stable ids, reset, save (PLY and JSON read back by hand) and that integration does not wait
for a running segmentation."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from instseg_ros.data.mesh_render import box_mesh, intrinsics, look_at, render
from instseg_ros.mapping import MapSession, MapSessionConfig, NotSegmentable, TsdfConfig

W, H = 160, 120
VOXEL = 0.005
K = intrinsics(W, H)
#: (centre, size) m: a plate and two boxes on it.
BOXES = [((0.0, 0.0, -0.01), (0.30, 0.30, 0.02)), ((0.06, 0.02, 0.03), (0.06, 0.08, 0.06)),
         ((-0.07, -0.05, 0.025), (0.05, 0.05, 0.05))]
S = 1_000_000_000  # ns per second


def box_distance(p: np.ndarray) -> np.ndarray:
    """Distance (m) from points (N, 3) to the nearest box surface (exact, axis-aligned boxes)."""
    best = np.full(len(p), np.inf)
    for c, s in BOXES:
        q = np.abs(p - np.asarray(c)) - np.asarray(s) / 2
        best = np.minimum(best, np.abs(np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0)))
    return best


def views(n: int = 4):
    """n frames (rgb, depth m, T_world_camera) on a circle 0.3 m out, 0.35 m up, looking at the origin."""
    meshes = [box_mesh(c, s, col) for (c, s), col in zip(BOXES, [(120, 120, 120), (200, 50, 50), (50, 200, 50)])]
    out = []
    for k in range(n):
        a = 2 * np.pi * k / n
        T = look_at((0.3 * np.cos(a), 0.3 * np.sin(a), 0.35), (0, 0, 0))
        depth, rgb, _ = render(meshes, K, T, W, H)
        out.append((rgb, depth, T))
    return out


@pytest.fixture(scope="module")
def frames():
    return views(4)


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    import torch

    from instseg_ros.occuseg import MapSegmenter
    from instseg_ros.occuseg.checkpoint import save_checkpoint
    from instseg_ros.occuseg.config import NetConfig
    from instseg_ros.occuseg.model import OccuSegNet

    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("session") / "occuseg_random.pt")
    save_checkpoint(path, OccuSegNet(NetConfig(channels=(8, 16), embed_dim=4)), VOXEL)
    return MapSegmenter.from_checkpoint(path, device="cpu")


def new_session(segmenter=None, voxel=VOXEL, **kw) -> tuple[MapSession, list]:
    """A session on the CPU and the list its on_update callback appends to."""
    updates = []
    s = MapSession(MapSessionConfig(TsdfConfig(voxel_size=voxel, device="cpu"), **kw), on_update=updates.append)
    if segmenter is not None:
        s.attach_segmenter(segmenter)
    return s, updates


def fuse(session: MapSession, frames, t0_s: int = 100) -> list[int]:
    """Integrate ``frames`` stamped t0_s, t0_s + 1, ... s; returns the stamps (ns)."""
    stamps = []
    for i, (rgb, depth, T) in enumerate(frames):
        stamps.append((t0_s + i) * S)
        assert session.integrate(depth, rgb, K, T, stamps[-1]) == int((depth > 0).sum())
    return stamps


def test_integrate_bumps_the_version_and_keeps_the_newest_stamp(frames):
    s, _ = new_session()
    assert s.version == 0 and s.needs_segmentation
    stamps = fuse(s, frames[:3])
    assert s.version == 3 and s.stats()["map_blocks"] > 0 and s.stats()["frames_no_depth"] == 0
    rgb, depth, T = frames[0]
    # a bad pose is refused before anything changes
    skew = T.copy()
    skew[0, 1] += 0.3
    with pytest.raises(ValueError):
        s.integrate(depth, rgb, K, skew, 999 * S)
    assert s.version == 3
    # depth all beyond depth_max (3 m): nothing integrated, counted, the stamp is not the newest
    assert s.integrate(np.full_like(depth, 5.0), rgb, K, T, 500 * S) == 0
    assert s.version == 4 and s.stats()["frames_no_depth"] == 1
    assert s._newest_stamp_ns == stamps[-1]


def test_segment_gives_ids_that_stay_across_segmentations_of_the_same_map(frames, segmenter):
    s, updates = new_session(segmenter, min_segment_voxels=100)
    stamps = fuse(s, frames)
    first = s.segment()
    inst = first.instances
    assert first.version == 4 and first.stamp_ns == stamps[-1] and not s.needs_segmentation
    assert updates == [first] and s.result is first
    # the labelled points are the fused surface, in the world frame, on the true geometry
    assert len(inst.labels) == len(inst.points) > 1000
    d = box_distance(inst.points.astype(np.float64))
    assert np.percentile(d, 99) < 2 * VOXEL and d.max() < 4 * VOXEL
    # every instance's figures are the moments of its label set; ids 1..N on the first run
    assert inst.ids.tolist() == list(range(1, len(inst) + 1))
    for i, iid in enumerate(inst.ids):
        p = inst.points[inst.labels == iid].astype(np.float64)
        assert inst.num_points[i] == len(p) > 0
        np.testing.assert_allclose(inst.centroids[i], p.mean(0), atol=1e-6)
    assert set(np.unique(inst.labels)) <= {0, *inst.ids.tolist()}
    assert {"extract", "voxelize", "network", "supervoxels", "clustering", "segmenter", "ids", "total"} \
        <= set(first.timings_ms)
    assert first.timings_ms["total"] >= first.timings_ms["segmenter"] >= 0
    # the same map again: the same labels and ids, each found twice now
    second = s.segment()
    np.testing.assert_array_equal(second.instances.labels, inst.labels)
    assert second.instances.ids.tolist() == inst.ids.tolist() and (second.instances.hits == 2).all()
    assert second.version == first.version and s.stats()["segmentations"] == 2 and len(updates) == 2


def test_nothing_to_segment_is_said_and_not_retried_until_the_map_changes(frames, segmenter):
    s, updates = new_session()
    with pytest.raises(NotSegmentable, match="no segmenter"):
        s.segment()
    s.attach_segmenter(segmenter)
    with pytest.raises(NotSegmentable, match="0 surface voxels, fewer than min_segment_voxels=200"):
        s.segment()
    assert not s.needs_segmentation and s.result is None and updates == []
    fuse(s, frames[:1])
    assert s.needs_segmentation


def test_reset_empties_the_map_and_restarts_the_ids(frames, segmenter):
    s, updates = new_session(segmenter, min_segment_voxels=100)
    fuse(s, frames)
    ids = s.segment().instances.ids.tolist()
    v = s.version
    s.reset(stamp_ns=777)
    assert s.version == v + 1 and s.result is None and not s.needs_segmentation
    assert s.stats()["map_blocks"] == 0 and s.stats()["instances"] == 0
    empty = updates[-1]
    assert empty.stamp_ns == 777 and len(empty.instances) == 0 and len(empty.instances.points) == 0
    with pytest.raises(NotSegmentable, match="0 surface voxels"):
        s.segment()
    # the same frames again: the same segmentation, numbered from 1 again, each id new (one hit)
    fuse(s, frames)
    again = s.segment().instances
    assert again.ids.tolist() == ids and (again.hits == 1).all()


def read_ply(path) -> tuple[str, np.ndarray]:
    """(header text, records) of a binary little-endian PLY with x y z red green blue label vertices."""
    raw = path.read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    dtype = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"),
             ("label", "<u4")]
    return raw[:end].decode("ascii"), np.frombuffer(raw[end:], dtype=dtype)


def test_save_writes_the_segmented_map_and_segments_a_changed_map_first(frames, segmenter, tmp_path):
    s, _ = new_session(segmenter, min_segment_voxels=100, frame_id="bin")
    with pytest.raises(NotSegmentable):
        s.save(tmp_path / "empty")
    fuse(s, frames[:3])
    seg = s.segment()
    result, out = s.save(tmp_path / "a")
    assert result is seg and out == (tmp_path / "a").resolve() and s.stats()["segmentations"] == 1
    inst = seg.instances
    head, rec = read_ply(out / "map.ply")
    assert head.startswith("ply\nformat binary_little_endian 1.0\n")
    assert f"element vertex {len(inst.labels)}\n" in head and "property uint label\n" in head
    assert len(rec) == len(inst.labels)
    np.testing.assert_array_equal(np.stack([rec["x"], rec["y"], rec["z"]], 1), inst.points)
    np.testing.assert_array_equal(np.stack([rec["red"], rec["green"], rec["blue"]], 1), inst.colors)
    np.testing.assert_array_equal(rec["label"], inst.labels)
    doc = json.loads((out / "instances.json").read_text())
    assert doc["frame_id"] == "bin" and doc["stamp_ns"] == seg.stamp_ns
    assert [o["id"] for o in doc["instances"]] == inst.ids.tolist()
    for o in doc["instances"]:
        p = inst.points[inst.labels == o["id"]].astype(np.float64)
        assert o["num_points"] == len(p)
        np.testing.assert_allclose(o["centroid"], p.mean(0), atol=1e-6)
        np.testing.assert_allclose(np.reshape(o["covariance"], (3, 3)), np.cov(p.T, bias=True), atol=1e-7)
        # the box along the principal axes holds the points: no side longer than their spread allows
        assert 0 <= min(o["extent"]) and max(o["extent"]) <= np.linalg.norm(p.max(0) - p.min(0)) + 1e-6
    assert not list(out.glob("*.tmp"))
    # one more frame: save segments the changed map first and writes that
    rgb, depth, T = frames[3]
    s.integrate(depth, rgb, K, T, 200 * S)
    result, out = s.save(tmp_path / "b")
    assert s.stats()["segmentations"] == 2 and result.stamp_ns == 200 * S
    assert json.loads((out / "instances.json").read_text())["stamp_ns"] == 200 * S
    assert len(read_ply(out / "map.ply")[1]) == len(result.instances.labels) > len(inst.labels)


class GatedSegmenter:
    """The real segmenter, held at the start of ``predict`` until the test releases it: a
    segmentation that is "running" for as long as the test needs."""

    def __init__(self, segmenter) -> None:
        self._segmenter = segmenter
        self.started, self.release = threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self._segmenter, name)

    def predict(self, sv):
        self.started.set()
        assert self.release.wait(60.0), "the test never released the segmentation"
        return self._segmenter.predict(sv)


def test_integration_does_not_wait_for_a_running_segmentation(frames, segmenter):
    gated = GatedSegmenter(segmenter)
    s, _ = new_session(gated, min_segment_voxels=100)
    fuse(s, frames[:3])
    results = []
    seg = threading.Thread(target=lambda: results.append(s.segment()))
    seg.start()
    try:
        assert gated.started.wait(60.0)
        # the network is "running" (held): a frame integrates now, not after it
        rgb, depth, T = frames[3]
        done = threading.Thread(target=s.integrate, args=(depth, rgb, K, T, 300 * S))
        done.start()
        done.join(30.0)
        assert not done.is_alive() and seg.is_alive(), "integration waited for the segmentation"
        assert s.version == 4
    finally:
        gated.release.set()
        seg.join(60.0)
    # the segmentation describes the map as it was extracted (3 frames); the 4th frame is still to do
    assert results[0].version == 3 and results[0].stamp_ns == 102 * S and s.needs_segmentation


def test_the_segmenter_must_work_at_the_maps_voxel_size(segmenter):
    s, _ = new_session(voxel=0.01)
    with pytest.raises(ValueError, match=r"voxel_size 0\.005 m but the map uses 0\.01 m"):
        s.attach_segmenter(segmenter)
    assert s.segmenter is None


def test_a_closed_session_integrates_nothing_and_refuses_the_rest(frames, segmenter):
    s, _ = new_session(segmenter)
    s.close()
    rgb, depth, T = frames[0]
    assert s.integrate(depth, rgb, K, T, S) == 0 and s.version == 0 and s.segmenter is None
    with pytest.raises(NotSegmentable):
        s.segment()
    with pytest.raises(RuntimeError, match="closed"):
        s.reset()
    assert s.stats()["map_blocks"] == 0
