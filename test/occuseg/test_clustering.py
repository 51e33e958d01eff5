"""Occupancy-aware clustering, eq. (12)-(14), on constructed supervoxel graphs."""
import math

import numpy as np
import pytest

from instseg_ros.occuseg.clustering import ClusterConfig, SupervoxelStats, cluster_voxels, merge_graph, merge_weights
from instseg_ros.occuseg.supervoxels import voxel_adjacency


def _stats(n, emb, centre, occ, sigma=(1.0, 1.0), K=2):
    """Stats of vertices whose voxels all share the given per-voxel values (sums = n * value)."""
    n = np.asarray(n, np.int64)
    emb = np.asarray(emb, float).reshape(len(n), -1)
    centre = np.asarray(centre, float).reshape(len(n), 3)
    prob = np.zeros((len(n), K))
    prob[:, 1] = 1.0
    return SupervoxelStats(n=n.copy(), centre=centre * n[:, None], emb=emb * n[:, None],
                           log_occ=np.log(np.asarray(occ, float)) * n,
                           sigma=np.tile(sigma, (len(n), 1)) * n[:, None], prob=prob * n[:, None])


def test_merge_weight_eq14_by_hand():
    # S_i - S_j = 1, sigma_s = 2 -> 0.25; ||D_i - D_j|| = 0.6, sigma_d = 1.2 -> 0.25;
    # n = 10 + 30 = 40, both predict O = 20 -> r = 40 / 20 = 2 -> w = exp(-0.5) / 2
    st = _stats([10, 30], [[0.0], [1.0]], [[0, 0, 0], [0.6, 0, 0]], [20, 20], sigma=(2.0, 1.2))
    w = merge_weights(st, [0], [1], ClusterConfig())
    assert w[0] == pytest.approx(math.exp(-0.5) / 2)
    # w/o occupancy: r = 1
    assert merge_weights(st, [0], [1], ClusterConfig(use_occupancy=False))[0] == pytest.approx(math.exp(-0.5))
    # r < 0.5 is floored at 0.5: O = 400 -> r = 0.1 -> w = exp(-0.5) / 0.5
    st2 = _stats([10, 30], [[0.0], [1.0]], [[0, 0, 0], [0.6, 0, 0]], [400, 400], sigma=(2.0, 1.2))
    assert merge_weights(st2, [0], [1], ClusterConfig())[0] == pytest.approx(math.exp(-0.5) / 0.5)
    # ablations drop their term
    assert merge_weights(st, [0], [1], ClusterConfig(use_feature=False))[0] == pytest.approx(math.exp(-0.25) / 2)
    assert merge_weights(st, [0], [1], ClusterConfig(use_spatial=False))[0] == pytest.approx(math.exp(-0.25) / 2)


def test_graph_is_updated_after_each_merge():
    # chain a - b - c, 100 voxels each, all predicting an instance of 150 voxels.
    # w_ab = exp(-0.05^2) / (200/150) = 0.748 and w_bc = exp(-0.3^2) / (200/150) = 0.686: a-b merge
    # first; then (ab)-c has n = 300, r = 2 and w = exp(-0.325^2) / 2 = 0.45 < 0.5, so c stays
    # apart. Stale weights (w_bc = 0.686) would have merged c too.
    st = _stats([100, 100, 100], [[0.0], [0.05], [0.35]], np.zeros((3, 3)), [150, 150, 150])
    rep = merge_graph(st, np.array([[0, 1], [1, 2]]), ClusterConfig())
    assert rep[0] == rep[1] != rep[2]
    st = _stats([100, 100, 100], [[0.0], [0.05], [0.35]], np.zeros((3, 3)), [150, 150, 150])
    rep = merge_graph(st, np.array([[0, 1], [1, 2]]), ClusterConfig(use_occupancy=False))
    assert rep[0] == rep[1] == rep[2]


def _two_touching_boxes():
    """Surface voxels of two 10x10x10 boxes sharing the face x = 10 (each keeps its own surface)."""
    def shell(x0):
        c = np.stack(np.meshgrid(np.arange(10), np.arange(10), np.arange(10), indexing="ij"), -1).reshape(-1, 3)
        c = c[((c == 0) | (c == 9)).any(1)]
        return c + [x0, 0, 0]
    a, b = shell(0), shell(10)
    coords = np.concatenate([a, b])
    box = np.r_[np.zeros(len(a), int), np.ones(len(b), int)]
    return coords, box


@pytest.mark.parametrize("occ_per_box_factor, expect_instances", [(1.0, 2), (2.0, 1)])
def test_two_touching_boxes_follow_their_predicted_occupancy(occ_per_box_factor, expect_instances):
    coords, box = _two_touching_boxes()
    n_box = (box == 0).sum()
    V = len(coords)
    # the network cannot tell the boxes apart by embedding: identical features, centres 0.2 apart
    centre = np.where(box[:, None] == 0, [[0.0, 0, 0]], [[0.2, 0, 0]])
    emb = np.zeros((V, 4))
    sigma = np.ones((V, 2))
    prob = np.tile([0.1, 0.9], (V, 1))
    # each voxel predicts its instance's voxel count: one box (apart) or both boxes (merge)
    log_occ = np.full(V, np.log(n_box * occ_per_box_factor))
    res = cluster_voxels(box, voxel_adjacency(coords), centre, emb, log_occ, sigma, prob, ClusterConfig())
    assert len(res.num_voxels) == expect_instances
    if expect_instances == 2:
        assert len(np.unique(np.stack([res.labels, box], 1), axis=0)) == 2
        np.testing.assert_allclose(res.ratio, [1.0, 1.0])
    else:
        assert (res.labels == 1).all()
        np.testing.assert_allclose(res.occupancy, [2 * n_box])
    # without occupancy both cases merge (similarity exp(-0.04) > T0)
    res = cluster_voxels(box, voxel_adjacency(coords), centre, emb, log_occ, sigma, prob,
                         ClusterConfig(use_occupancy=False))
    assert len(res.num_voxels) == 1


def test_ratio_filter_and_background():
    coords, box = _two_touching_boxes()
    V = len(coords)
    n_box = (box == 0).sum()
    prob = np.where(box[:, None] == 0, [[0.1, 0.9]], [[0.9, 0.1]])   # box 1 is background
    centre = np.where(box[:, None] == 0, [[0.0, 0, 0]], [[5.0, 0, 0]])
    args = (box, voxel_adjacency(coords), centre, np.zeros((V, 2)))
    # box 0 predicts 10x its size: r = 0.1 < 0.3 -> rejected
    res = cluster_voxels(*args, np.full(V, np.log(10.0 * n_box)), np.ones((V, 2)), prob)
    assert len(res.num_voxels) == 0 and (res.labels == 0).all()
    res = cluster_voxels(*args, np.full(V, np.log(n_box)), np.ones((V, 2)), prob)
    assert len(res.num_voxels) == 1
    assert (res.labels[box == 0] == 1).all() and (res.labels[box == 1] == 0).all()
    assert res.class_ids.tolist() == [1]


def test_mean_membership_by_hand():
    from instseg_ros.occuseg.clustering import mean_membership

    # instance 1: embeddings 0 and 2 (mean 1, sigma_s 1 -> exp(-1) each), centres equal;
    # instance 2: one voxel -> p = 1; instance 3: centres 0 and 1.2 along x (mean 0.6), sigma_d 2 ->
    # exp(-(0.6 / 2)^2) = exp(-0.09) each. Label 0 voxels are ignored.
    labels = np.array([1, 1, 2, 0, 3, 3])
    emb = np.array([[0.0], [2.0], [5.0], [9.0], [0.0], [0.0]])
    centre = np.zeros((6, 3))
    centre[5, 0] = 1.2
    sigma = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 2.0], [1.0, 2.0]])
    p = mean_membership(labels, 3, centre, emb, sigma, ClusterConfig())
    np.testing.assert_allclose(p, [math.exp(-1), 1.0, math.exp(-0.09)])
    # ablations leave their term out
    np.testing.assert_allclose(mean_membership(labels, 3, centre, emb, sigma, ClusterConfig(use_feature=False)),
                               [1.0, 1.0, math.exp(-0.09)])
    np.testing.assert_allclose(mean_membership(labels, 3, centre, emb, sigma, ClusterConfig(use_spatial=False)),
                               [math.exp(-1), 1.0, 1.0])


def test_scores_rank_a_loose_cluster_below_a_tight_one():
    coords, box = _two_touching_boxes()
    V = len(coords)
    n_box = (box == 0).sum()
    centre = np.where(box[:, None] == 0, [[0.0, 0, 0]], [[5.0, 0, 0]])
    emb = np.zeros((V, 4))
    # box 1's voxels disagree about their embedding (alternating +-0.5 with sigma_s 1 -> p = exp(-0.25))
    emb[box == 1, 0] = np.where(np.arange((box == 1).sum()) % 2 == 0, 0.5, -0.5)
    sigma = np.ones((V, 2))
    prob = np.tile([0.1, 0.9], (V, 1))
    log_occ = np.full(V, np.log(n_box))
    res = cluster_voxels(box, voxel_adjacency(coords), centre, emb, log_occ, sigma, prob, ClusterConfig())
    assert len(res.scores) == 2
    tight, loose = res.labels[box == 0][0] - 1, res.labels[box == 1][0] - 1
    # both: foreground 0.9, r = 1
    assert res.scores[tight] == pytest.approx(0.9, rel=1e-5)
    assert res.scores[loose] == pytest.approx(0.9 * math.exp(-0.25), rel=1e-5)


@pytest.mark.parametrize("radius, expect_instances", [(math.sqrt(3), 2), (2.0, 1)])
def test_object_cut_by_a_one_cell_hole_is_joined_with_radius_two(radius, expect_instances):
    from instseg_ros.occuseg.supervoxels import SupervoxelConfig, supervoxels

    # one flat object of 2 x 100 voxels whose surface misses the column x = 10 (a fusion hole): every voxel
    # predicts the same centre / embedding and the whole object's count (200)
    xs, ys = np.meshgrid(np.arange(21), np.arange(10), indexing="ij")
    coords = np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size, int)], 1)
    coords = coords[coords[:, 0] != 10]
    V = len(coords)
    sv, edges = supervoxels(coords, np.tile([0, 0, 1.0], (V, 1)), np.full((V, 3), 90, np.uint8),
                            SupervoxelConfig(k=0.2, min_size=5, radius=radius))
    res = cluster_voxels(sv, edges, np.zeros((V, 3)), np.zeros((V, 4)), np.full(V, np.log(200.0)),
                         np.ones((V, 2)), np.tile([0.1, 0.9], (V, 1)), ClusterConfig(t0=0.25))
    assert len(res.num_voxels) == expect_instances
    # 26-adjacency: the halves never meet and each is half its predicted size (r = 0.5, kept by 0.3 < r < 2);
    # radius 2: the hole is bridged and the object is whole (r = 1)
    np.testing.assert_allclose(res.ratio, [0.5, 0.5] if expect_instances == 2 else [1.0])
    if expect_instances == 2:
        assert _same_partition_labels(res.labels, coords[:, 0] < 10)
    else:
        assert (res.labels == 1).all()


def _same_partition_labels(a, b):
    pairs = np.unique(np.stack([a, b], 1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def test_voxel_background_trim_by_hand():
    coords, box = _two_touching_boxes()
    V = len(coords)
    n_box = int((box == 0).sum())                   # 488 shell voxels per box
    foot = (box == 0) & (coords[:, 2] == 0)         # box 0's bottom face: 100 voxels that look like table
    n_foot = int(foot.sum())
    prob = np.where(box[:, None] == 0, [[0.1, 0.9]], [[0.45, 0.55]])
    prob[foot] = [0.8, 0.2]
    # supervoxel means: box 0 (388 * 0.1 + 100 * 0.8) / 488 = 0.243, box 1 0.45: both foreground
    centre = np.where(box[:, None] == 0, [[0.0, 0, 0]], [[5.0, 0, 0]])   # far apart: never merged
    args = (box, voxel_adjacency(coords), centre, np.zeros((V, 2)), np.full(V, np.log(n_box)), np.ones((V, 2)),
            prob)
    res = cluster_voxels(*args, ClusterConfig())
    assert res.num_voxels.tolist() == [n_box, n_box]
    i0 = res.labels[box == 0][0] - 1
    assert res.scores[i0] == pytest.approx(1 - (388 * 0.1 + 100 * 0.8) / 488, rel=1e-5)
    # trim at 0.5: the foot voxels (0.8) leave box 0, box 1 (0.45) stays whole
    res = cluster_voxels(*args, ClusterConfig(voxel_bg_max=0.5))
    assert (res.labels[foot] == 0).all() and (res.labels[(box == 0) & ~foot] > 0).all()
    i0 = res.labels[(box == 0) & ~foot][0] - 1
    assert res.num_voxels[i0] == n_box - n_foot == 388
    # the instance is described by its kept voxels: r = 388 / 488, foreground 0.9, class probability 0.9
    assert res.ratio[i0] == pytest.approx(388 / 488)
    assert res.occupancy[i0] == pytest.approx(488)
    assert res.class_prob[i0] == pytest.approx(0.9)
    assert res.scores[i0] == pytest.approx(0.9 * 388 / 488, rel=1e-5)
    # trim at 0.4: box 1 loses every voxel and is dropped; the labels stay 1..N
    res = cluster_voxels(*args, ClusterConfig(voxel_bg_max=0.4))
    assert len(res.num_voxels) == 1 and res.num_voxels.tolist() == [388]
    assert (res.labels[box == 1] == 0).all() and set(np.unique(res.labels)) == {0, 1}
    with pytest.raises(ValueError):
        ClusterConfig(voxel_bg_max=1.5)


def test_a_large_object_stays_whole_when_its_occupancy_is_right_and_splits_when_under_counted():
    # the surface of a 40 x 30 x 20 cell box (4,848 voxels) cut into 8-cell cube supervoxels (54 vertices); the
    # heads are perfect except for the predicted voxel count O: every voxel agrees on centre and embedding, so
    # eq. (14) gives w = 1 / max(r, 0.5) with r = n / O. O = the true count -> w >= 1 until the last merge: one
    # instance with every voxel. O = half the count (large objects are under-counted on real-shape maps) -> a
    # merge whose result would exceed r = 2 has w < T0 = 0.5 and is refused: the box ends in two halves.
    c = np.stack(np.meshgrid(np.arange(40), np.arange(30), np.arange(20), indexing="ij"), -1).reshape(-1, 3)
    coords = c[((c == 0) | (c == [39, 29, 19])).any(1)]
    n = len(coords)
    assert n == 40 * 30 * 20 - 38 * 28 * 18
    _, sv = np.unique(coords // 8, axis=0, return_inverse=True)
    sv = sv.reshape(-1)
    V = len(coords)
    args = (sv, voxel_adjacency(coords), np.zeros((V, 3)), np.zeros((V, 4)))
    sigma, prob = np.ones((V, 2)), np.tile([0.1, 0.9], (V, 1))
    whole = cluster_voxels(*args, np.full(V, np.log(n)), sigma, prob, ClusterConfig(t0=0.5))
    assert whole.num_voxels.tolist() == [n] and (whole.labels == 1).all()
    np.testing.assert_allclose(whole.occupancy, [n])
    under = cluster_voxels(*args, np.full(V, np.log(0.5 * n)), sigma, prob, ClusterConfig(t0=0.5))
    assert len(under.num_voxels) == 2 and under.num_voxels.sum() == n
    assert (np.abs(under.ratio - 1.0) < 0.1).all()  # each half is about the predicted count
