"""Tracker on hand-built sequences: every expected id below is worked out by hand from the
sequence (objects 10 cm apart, moves of 1-2 cm, sigma 2 cm objects), not taken from a run."""
from __future__ import annotations

import numpy as np
import pytest

from instseg_ros.core.geometry import quaternion_to_rotation
from instseg_ros.core.instances import Instances
from instseg_ros.core.tracking import (
    Tracker,
    TrackerConfig,
    bhattacharyya,
    mask_iou,
    tracked_instances,
    transform_moments,
)

S = 1_000_000_000  # ns per second
SIGMA = 0.02       # m, object point spread used in the sequences
PERIOD = S // 10   # 10 Hz frames


def frame(centroids, num_points=None, sigma=SIGMA, labels=None) -> Instances:
    """Instances with ids 1..N in the given order (= the segmenter's score order), isotropic sigma."""
    c = np.asarray(centroids, np.float64).reshape(-1, 3)
    n = len(c)
    return Instances(labels=np.zeros(0, np.int32) if labels is None else labels, ids=np.arange(1, n + 1),
                     centroids=c, covariances=np.repeat((sigma ** 2 * np.eye(3))[None], n, 0),
                     scores=np.linspace(0.9, 0.5, n), num_points=[500] * n if num_points is None else num_points)


def run(tracker, frames, poses=None, t0=0):
    """Track ids per frame (list of lists, instance order)."""
    out = []
    for k, f in enumerate(frames):
        u = tracker.update(f, t0 + k * PERIOD, None if poses is None else poses[k])
        out.append(u.track_ids.tolist())
    return out


A, B, C = np.array([0.0, 0.0, 0.5]), np.array([0.1, 0.0, 0.5]), np.array([0.0, 0.1, 0.5])


def test_objects_moving_by_known_offsets_keep_their_ids():
    # A moves +1 cm in x per frame, B +1 cm in y, C 1.5 cm in z (towards the camera): every move is
    # well inside the gate (Bhattacharyya 0.015^2 / (8 * (0.02^2 + 0.01^2)) = 0.06 < 1.5) and far below
    # the 10 cm spacing (0.1^2 / 0.004 = 2.5 > 1.5 and 10 cm > the 8 cm distance gate).
    frames = [frame([A + [0.01 * k, 0, 0], B + [0, 0.01 * k, 0], C - [0, 0, 0.015 * k]]) for k in range(6)]
    ids = run(Tracker(TrackerConfig(min_hits=2)), frames)
    # frame 0: three tentative tracks (no id yet); frame 1 confirms them, ids in instance order
    assert ids == [[0, 0, 0]] + [[1, 2, 3]] * 5


def test_min_hits_one_confirms_at_once_and_every_instance_is_published():
    tr = Tracker(TrackerConfig(min_hits=1))
    u = tr.update(frame([A, B]), 0)
    assert u.track_ids.tolist() == [1, 2] and u.confirmed.tolist() == [True, True]
    assert u.hits.tolist() == [1, 1] and u.age_s.tolist() == [0.0, 0.0]


def test_disappearing_object_returns_with_its_id_within_max_age_and_a_new_one_after():
    cfg = TrackerConfig(min_hits=2, max_age_s=0.35)
    tr = Tracker(cfg)
    # frames 0, 1: A and B (confirmed at frame 1 -> ids 1, 2); frames 2, 3: only A; B was last seen
    # at frame 1 (t = 0.1 s) and comes back at frame 4 (t = 0.4 s): unseen 0.3 s <= 0.35 s -> id 2 again
    seq = [frame([A, B]), frame([A, B]), frame([A]), frame([A]), frame([B, A])]
    assert run(tr, seq) == [[0, 0], [1, 2], [1], [1], [2, 1]]
    u = tr.update(frame([A, B]), 5 * PERIOD)
    assert u.track_ids.tolist() == [1, 2]
    assert u.hits.tolist() == [6, 4]                      # A in every frame, B in frames 0, 1, 4, 5
    np.testing.assert_allclose(u.age_s, [0.5, 0.5], atol=1e-6)

    # now B stays away for 0.5 s > 0.35 s: its track is deleted and it comes back as a new object,
    # tentative first (id 0), then confirmed with the next unused id 3 (ids are never reused)
    tr2 = Tracker(cfg)
    seq = [frame([A, B]), frame([A, B])] + [frame([A])] * 4 + [frame([A, B]), frame([A, B])]
    assert run(tr2, seq) == [[0, 0], [1, 2], [1], [1], [1], [1], [1, 0], [1, 3]]


def test_frames_slower_than_max_age_still_track():
    # a segmenter that needs 2 s per frame with max_age_s = 1: every track was seen in the previous
    # processed frame, so none is deleted for its age; a track that then misses a frame is
    tr = Tracker(TrackerConfig(min_hits=2, max_age_s=1.0))
    ids = [tr.update(f, k * 2 * S).track_ids.tolist() for k, f in enumerate([frame([A, B])] * 3 + [frame([A])])]
    assert ids == [[0, 0], [1, 2], [1, 2], [1]]
    u = tr.update(frame([A, B]), 8 * S)   # B unseen since t = 4 s, missed the frame at 6 s: deleted
    assert u.track_ids.tolist() == [1, 0] and u.hits.tolist() == [5, 1]


def test_two_objects_swapping_score_order_keep_their_ids():
    # the segmenter lists A first, then B first, then A first again (ids 1..N follow the scores)
    seq = [frame([A, B]), frame([A, B]), frame([B, A]), frame([A, B]), frame([B + [0.01, 0, 0], A])]
    assert run(Tracker(), seq) == [[0, 0], [1, 2], [2, 1], [1, 2], [2, 1]]


def test_one_frame_fragment_is_never_confirmed_nor_published_and_uses_no_id():
    # 10.7 cm from A and B: beyond the 8 cm distance gate and the Bhattacharyya gate (0.107^2 / 0.004 = 2.9)
    frag = np.array([0.05, 0.05, 0.42])
    seq = [frame([A, B]), frame([A, B, frag], num_points=[500, 500, 40]), frame([A, B]), frame([C, A, B])]
    tr = Tracker(TrackerConfig(min_hits=2))
    ups = []
    for k, f in enumerate(seq):
        ups.append(tr.update(f, k * PERIOD))
    assert ups[1].track_ids.tolist() == [1, 2, 0] and ups[1].confirmed.tolist() == [True, True, False]
    pub = tracked_instances(seq[1], ups[1])
    assert pub.ids.tolist() == [1, 2] and pub.confirmed.tolist() == [True, True]
    assert ups[2].track_ids.tolist() == [1, 2]
    # C appears at frame 3: tentative, and when confirmed it will get id 3 (the fragment used none)
    assert ups[3].track_ids.tolist() == [0, 1, 2]
    assert tr.update(frame([C, A, B]), 4 * PERIOD).track_ids.tolist() == [3, 1, 2]
    # with publish_unconfirmed semantics (ids at creation) the fragment gets an id and is kept
    tr2 = Tracker(TrackerConfig(min_hits=2, id_on_confirm=False))
    u0 = tr2.update(seq[0], 0)
    u1 = tr2.update(seq[1], PERIOD)
    assert u0.track_ids.tolist() == [1, 2] and u1.track_ids.tolist() == [1, 2, 3]
    kept = tracked_instances(seq[1], u1, keep_unconfirmed=True)
    assert kept.ids.tolist() == [1, 2, 3] and kept.confirmed.tolist() == [True, True, False]
    assert tracked_instances(seq[1], u1).ids.tolist() == [1, 2]


def _pose(yaw_deg, t):
    c, s = np.cos(np.radians(yaw_deg) / 2), np.sin(np.radians(yaw_deg) / 2)
    T = np.eye(4)
    T[:3, :3] = quaternion_to_rotation([0.0, 0.0, s, c])
    T[:3, 3] = t
    return T


def test_moving_camera_with_known_poses_over_static_objects():
    # three static objects in the world; the camera turns 10 degrees and moves 30 cm per frame, so
    # in the camera frame every object lands more than 8 cm (the distance gate) from where any
    # object was in the previous frame
    world = np.stack([A, B, C])
    poses = [_pose(10 * k, [0.3 * k, -0.1 * k, 0.0]) for k in range(5)]
    frames = []
    for T in poses:
        cam = (world - T[:3, 3]) @ T[:3, :3]                # T_world_camera^-1 applied to the points
        cov = np.repeat((SIGMA ** 2 * np.eye(3))[None], 3, 0)
        f = frame(cam)
        f.covariances = transform_moments(np.zeros((3, 3)), cov, np.linalg.inv(T))[1]
        frames.append(f)
    for f0, f1 in zip(frames, frames[1:]):
        jump = np.linalg.norm(f1.centroids[:, None] - f0.centroids[None], axis=2)
        assert jump.min() > 0.08, "the sequence must move the objects beyond the gate in the camera frame"
    assert run(Tracker(), frames, poses) == [[0, 0, 0]] + [[1, 2, 3]] * 4
    # the same frames without the poses cannot be associated: every frame starts new tentative tracks
    assert run(Tracker(), frames) == [[0, 0, 0]] * 5


def test_camera_frame_mask_overlap_decides_between_equidistant_tracks():
    # two tracks at x = -0.01 and +0.01 m, one new instance at x = 0 (equal Mahalanobis to both);
    # its mask covers pixels 2..5 = exactly the right track's previous mask -> it goes to that track
    lab0 = np.array([1, 1, 2, 2, 2, 2, 0, 0], np.int32)
    f0 = frame([[-0.01, 0, 0.5], [0.01, 0, 0.5]], labels=lab0)
    lab1 = np.array([0, 0, 1, 1, 1, 1, 0, 0], np.int32)
    f1 = frame([[0.0, 0, 0.5]], labels=lab1)
    tr = Tracker(TrackerConfig(min_hits=1, overlap_weight=0.5))
    assert tr.update(f0, 0).track_ids.tolist() == [1, 2]
    assert tr.update(f1, PERIOD).track_ids.tolist() == [2]


def test_bhattacharyya_by_hand():
    s2 = 0.02 ** 2
    c0 = np.zeros((1, 3))
    iso = lambda v: (v * np.eye(3))[None]  # noqa: E731
    # equal shapes: D = d^2 / (8 sigma^2): 4 cm at sigma 2 cm -> 16 / 32 = 0.5
    np.testing.assert_allclose(bhattacharyya(c0, iso(s2), [[0.04, 0, 0]], iso(s2)), [[0.5]])
    # same centroid, sigma and 2 sigma: 1/2 ln(det S / sqrt(det A det B)) = 3/2 ln(2.5 / 2) = 0.3347
    np.testing.assert_allclose(bhattacharyya(c0, iso(s2), c0, iso(4 * s2)), [[1.5 * np.log(1.25)]])
    # the noise term is added to both: sigma^2 + n^2 = 2 * 0.02^2 with n = 2 cm -> 16 / 64 = 0.25
    np.testing.assert_allclose(bhattacharyya(c0, iso(s2), [[0.04, 0, 0]], iso(s2), noise_m=0.02), [[0.25]])


def test_whole_object_wins_over_a_fragment_at_the_track_centroid():
    # a track of a 3 cm-sigma object; next frame: the object moved 1 cm and a 0.5 cm-sigma fragment
    # sits exactly at the old centroid. Bhattacharyya (n = 1 cm, A = 10e-4, fragment B = 1.25e-4 m^2):
    # whole: 0.01^2 / (8 * 10e-4) = 0.0125; fragment: 3/2 ln(5.625e-4 / sqrt(10e-4 * 1.25e-4)) = 0.696.
    # (A Mahalanobis distance with summed covariances would pick the fragment: distance 0.)
    tr = Tracker(TrackerConfig(min_hits=1))
    assert tr.update(frame([A], sigma=0.03), 0).track_ids.tolist() == [1]
    nxt = frame([A, A + [0.01, 0, 0]], num_points=[500, 500])
    nxt.covariances[0] = 0.005 ** 2 * np.eye(3)
    nxt.covariances[1] = 0.03 ** 2 * np.eye(3)
    assert tr.update(nxt, PERIOD).track_ids.tolist() == [2, 1]


def test_one_good_pair_beats_two_poor_ones():
    # tracks: X (sigma 2 cm, 1000 points) and a fragment F (sigma 0.5 cm, 15 points) 3 cm to its right.
    # Next frame: X' (X moved 0.5 cm, 900 points) and a fragment G (12 points) 3 cm to X's left, 6 cm
    # from F (D_B = 0.06^2 / (8 * 1.25e-4) = 3.6: outside the gate). Allowed pairs, D_B by hand
    # (n = 1 cm): X-X' 0.00625, X-G 0.695, F-X' 0.585; cost = 0.7 D_B / 1.5 + 0.3 (1 - count ratio)
    # (world frame: identity pose): X-X' 0.033, X-G 0.62, F-X' 0.568. Two pairs X-G + F-X' = 1.19;
    # X-X' with F and G unassigned = 0.033 + 2 * 0.5 = 1.033: X keeps id 1, G starts track 3.
    cfg = TrackerConfig(min_hits=1)
    f0 = frame([A, A + [0.03, 0, 0]], num_points=[1000, 15])
    f0.covariances[1] = 0.005 ** 2 * np.eye(3)
    f1 = frame([A + [0.005, 0, 0], A - [0.03, 0, 0]], num_points=[900, 12])
    f1.covariances[1] = 0.005 ** 2 * np.eye(3)
    tr = Tracker(cfg)
    assert tr.update(f0, 0, np.eye(4)).track_ids.tolist() == [1, 2]
    assert tr.update(f1, PERIOD, np.eye(4)).track_ids.tolist() == [1, 3]


def test_mask_iou_by_hand():
    a = np.array([[1, 1, 0], [2, 2, 2]])
    b = np.array([[5, 0, 0], [5, 5, 0]])
    # key 1 = {0, 1}, key 2 = {3, 4, 5}, key 5 = {0, 3, 4}: IoU(1, 5) = 1/4, IoU(2, 5) = 2/4
    np.testing.assert_allclose(mask_iou(a, [1, 2, 9], b, [5]), [[0.25], [0.5], [0.0]])


def test_bad_calls_raise_with_the_reason():
    tr = Tracker()
    tr.update(frame([A]), 10)
    with pytest.raises(ValueError, match="not later"):
        tr.update(frame([A]), 10)
    with pytest.raises(ValueError, match="reset"):
        tr.update(frame([A]), 20, np.eye(4))
    tr.reset()
    with pytest.raises(ValueError, match="4x4"):
        tr.update(frame([A]), 30, np.eye(3))
    for bad in ({"min_hits": 0}, {"max_age_s": -1.0}, {"gate_bhattacharyya": 0.0}, {"overlap_weight": 1.5},
                {"smoothing": 0.0}, {"gate_distance_m": -0.1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrackerConfig(**bad)


def test_tracked_instances_relabels_the_image_and_drops_unconfirmed():
    lab = np.array([[1, 1, 0], [2, 3, 3]], np.int32)
    inst = frame([A, B, C], labels=lab)
    tr = Tracker(TrackerConfig(min_hits=2))
    tr.update(inst, 0)
    u = tr.update(frame([B, A], labels=np.array([[2, 2, 0], [1, 0, 0]], np.int32)), PERIOD)
    assert u.track_ids.tolist() == [2, 1]
    out = tracked_instances(frame([B, A], labels=np.array([[2, 2, 0], [1, 0, 0]], np.int32)), u)
    assert out.ids.tolist() == [2, 1] and out.labels.tolist() == [[1, 1, 0], [2, 0, 0]]
    np.testing.assert_allclose(out.centroids, [B, A])
    assert out.hits.tolist() == [2, 2]
