"""InstanceIdTracker: ids stable across segmentations of a growing map (voxel IoU matching)."""
from __future__ import annotations

import numpy as np

from instseg_ros.core.instances import Instances
from instseg_ros.mapping.stable_ids import InstanceIdTracker, overlap_iou, voxel_keys


def _map_instances(labels):
    labels = np.asarray(labels, np.int32)
    ids = np.unique(labels[labels > 0])
    n = len(ids)
    return Instances(labels=labels, ids=ids, centroids=np.zeros((n, 3)), covariances=np.zeros((n, 3, 3)),
                     scores=np.ones(n), num_points=np.ones(n))


def test_overlap_iou_by_hand():
    coords = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]])
    k = voxel_keys(coords)
    # a: {0,1} -> 1, {2,3} -> 2 ; b: {1,2} -> 7, {3} -> 9
    iou = overlap_iou(k, np.array([1, 1, 2, 2]), np.array([1, 2]), k, np.array([0, 7, 7, 9]), np.array([7, 9]))
    np.testing.assert_allclose(iou, [[1 / 3, 0.0], [1 / 3, 1 / 2]])


def test_ids_survive_renumbering_and_new_objects_get_fresh_ids():
    tr = InstanceIdTracker(iou_threshold=0.3)
    coords = np.array([[i, 0, 0] for i in range(10)])
    first = tr.assign(coords, _map_instances([1, 1, 1, 2, 2, 2, 0, 0, 0, 0]), stamp_ns=10_000_000_000)
    assert first.ids.tolist() == [1, 2]
    assert first.hits.tolist() == [1, 1] and first.age_s.tolist() == [0, 0] and first.confirmed.all()
    # the map grew by one voxel; the segmenter numbered the objects the other way round and found a
    # third one: the old objects keep ids 1 and 2 (IoU 1 and 3/4), the new one gets 3
    coords2 = np.array([[i, 0, 0] for i in range(11)])
    second = tr.assign(coords2, _map_instances([2, 2, 2, 1, 1, 1, 1, 0, 3, 3, 3]), stamp_ns=12_500_000_000)
    np.testing.assert_array_equal(second.labels, [1, 1, 1, 2, 2, 2, 2, 0, 3, 3, 3])
    assert sorted(second.ids.tolist()) == [1, 2, 3]
    # runs found in, and seconds since the first run (2.5 s for the old objects, 0 for the new one)
    by_id = {i: (h, a) for i, h, a in zip(second.ids.tolist(), second.hits.tolist(), second.age_s.tolist())}
    assert by_id == {1: (2, 2.5), 2: (2, 2.5), 3: (1, 0.0)}
    # object 1 vanishes, object 2 stays (as 5), a new object appears at an unused voxel (as 6): it
    # gets 4, not the freed id 1
    third = tr.assign(coords2, _map_instances([0, 0, 0, 5, 5, 5, 5, 6, 0, 0, 0]), stamp_ns=13_000_000_000)
    np.testing.assert_array_equal(third.labels, [0, 0, 0, 2, 2, 2, 2, 4, 0, 0, 0])
    assert dict(zip(third.ids.tolist(), third.hits.tolist())) == {2: 3, 4: 1}


def test_id_match_respects_the_threshold():
    tr = InstanceIdTracker(iou_threshold=0.5)
    coords = np.array([[i, 0, 0] for i in range(4)])
    tr.assign(coords, _map_instances([1, 1, 1, 1]))
    out = tr.assign(coords, _map_instances([0, 0, 0, 9]))  # IoU 1/4 < 0.5
    assert out.ids.tolist() == [2]
