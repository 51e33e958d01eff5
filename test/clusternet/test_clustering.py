"""Sphere seeding + GMM clustering recovers known clusters exactly (incl. touching spheres, 0/1/35 objects)."""
import numpy as np
import pytest
import torch

from instseg_ros.clusternet.clustering import (
    ClusterParams,
    cluster_pixels,
    cluster_stats,
    gmm_iteration,
    sphere_seeding,
)


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True if label arrays a and b induce the same partition (0 = background in both)."""
    if ((a == 0) != (b == 0)).any():
        return False
    pairs = set(zip(a[a > 0].tolist(), b[b > 0].tolist()))
    return len(pairs) == len(np.unique(a[a > 0])) == len(np.unique(b[b > 0]))


def _image_from_clusters(centers, radius, h, w, rng, spread, centre_eta=True):
    """Each cluster takes a block of pixels; ξ = centre + noise within `spread` (< radius)."""
    n = len(centers)
    gt = np.zeros((h, w), np.int64)
    xi = np.zeros((3, h, w), np.float32)
    eta = np.zeros((h, w), np.float32)
    cols = int(np.ceil(np.sqrt(n)))
    bh, bw = h // cols, w // cols
    for k, c in enumerate(centers):
        r0, c0 = (k // cols) * bh, (k % cols) * bw
        gt[r0:r0 + bh - 1, c0:c0 + bw - 1] = k + 1
        m = gt == k + 1
        d = rng.normal(size=(m.sum(), 3))
        d *= (rng.uniform(0, spread, size=(len(d), 1)) / np.linalg.norm(d, axis=1, keepdims=True))
        xi[:, m] = (np.asarray(c)[None] + d).T
        eta[m] = rng.uniform(0.2, 0.9, size=m.sum())
        if centre_eta:  # the pixel whose feature is nearest the true centre is the most confident seed
            idx = np.flatnonzero(m.reshape(-1))[np.argmin(np.linalg.norm(d, axis=1))]
            eta.reshape(-1)[idx] = 1.0
    radius_img = np.full((h, w), radius, np.float32)
    fg = (gt > 0).astype(np.float32)
    return gt, [torch.from_numpy(a) for a in (xi, eta, radius_img, fg)]


@pytest.mark.parametrize("gmm", [False, True])
def test_separated_clusters_recovered_exactly(rng, gmm):
    centers = [(0.0, 0.0, 1.0), (0.3, 0.0, 1.0), (0.0, 0.3, 1.2)]
    gt, t = _image_from_clusters(centers, 0.05, 30, 30, rng, spread=0.02)
    labels, scores = cluster_pixels(*t, ClusterParams(gmm=gmm, min_size=5))
    assert _same_partition(labels.numpy(), gt)
    assert len(scores) == 3 and (scores > 0.9).all()


@pytest.mark.parametrize("gmm", [False, True])
def test_touching_spheres(rng, gmm):
    # two clusters whose feature balls of radius 0.05 touch: nearest cross-cluster points are ~2 mm apart
    centers = [(0.0, 0.0, 1.0), (0.1, 0.0, 1.0)]
    gt, t = _image_from_clusters(centers, 0.05, 40, 40, rng, spread=0.049)
    xi = t[0].reshape(3, -1)
    a, b = xi[:, torch.from_numpy(gt.reshape(-1) == 1)], xi[:, torch.from_numpy(gt.reshape(-1) == 2)]
    gap = torch.cdist(a.t().double(), b.t().double()).min().item()
    assert gap < 0.02                                      # the clusters really are touching
    labels, _ = cluster_pixels(*t, ClusterParams(gmm=gmm, min_size=5))
    assert _same_partition(labels.numpy(), gt)


def test_empty_and_single_and_many(rng):
    h = w = 12
    z = torch.zeros(h, w)
    labels, scores = cluster_pixels(torch.zeros(3, h, w), z, z + 0.05, z)
    assert labels.shape == (h, w) and (labels == 0).all() and scores.numel() == 0
    gt, t = _image_from_clusters([(0.1, 0.2, 0.9)], 0.05, 20, 20, rng, spread=0.01)
    labels, scores = cluster_pixels(*t, ClusterParams(min_size=5))
    assert _same_partition(labels.numpy(), gt) and len(scores) == 1
    # 36 objects on a 6x6 grid 0.2 m apart
    centers = [(0.2 * i, 0.2 * j, 1.0) for i in range(6) for j in range(6)]
    gt, t = _image_from_clusters(centers, 0.09, 120, 120, rng, spread=0.03)
    labels, scores = cluster_pixels(*t, ClusterParams(min_size=5, block=4))
    assert _same_partition(labels.numpy(), gt) and len(scores) == 36
    assert (np.diff(scores.numpy()) <= 1e-6).all()        # ids ordered by decreasing score


def test_seeding_order_and_sphere_membership_by_hand():
    # 1-D layout in x: points at 0, 0.04, 0.08, 0.5 ; radius 0.05 ; eta prefers point 1 (x=0.04)
    xi = torch.tensor([[0.0, 0, 1], [0.04, 0, 1], [0.08, 0, 1], [0.5, 0, 1]])
    eta = torch.tensor([0.5, 0.9, 0.1, 0.3])
    r = torch.full((4,), 0.05)
    assign, seeds, sr = sphere_seeding(xi, eta, r, min_radius=0.001, max_radius=1.0, max_instances=10, block=3)
    # seed 1 (x=0.04) takes 0, 0.04, 0.08 ; then seed 3 takes 0.5
    assert assign.tolist() == [0, 0, 0, 1] and seeds.tolist() == [1, 3]
    # smaller radius: seed 1 captures only itself ... then 0 (eta .5) -> {0}, 3 -> {3}, 2 -> {2}
    assign, seeds, _ = sphere_seeding(xi, eta, torch.full((4,), 0.03), min_radius=0.001, max_radius=1.0,
                                      max_instances=10, block=2)
    assert assign.tolist() == [1, 0, 3, 2] and seeds.tolist() == [1, 0, 3, 2]
    # max_instances runs out: the rest stays unassigned
    assign, seeds, _ = sphere_seeding(xi, eta, torch.full((4,), 0.03), min_radius=0.001, max_radius=1.0,
                                      max_instances=2, block=8)
    assert assign.tolist() == [1, 0, -1, -1]


def test_gmm_iteration_assigns_by_posterior():
    # cluster A around x=0 (per-axis variance 2e-4 / 6), cluster B around x=1 with 10x the spread
    xa = torch.tensor([[-0.01, 0, 0], [0.01, 0, 0], [0.0, 0.01, 0], [0.0, -0.01, 0], [0, 0, 0.01], [0, 0, -0.01]])
    xb = xa * 10 + torch.tensor([1.0, 0, 0])
    x = torch.cat([xa, xb, torch.tensor([[0.2, 0, 0], [0.5, 0, 0]])])
    init = torch.tensor([0] * 6 + [1] * 6 + [-1, 1])   # -1: not used to fit ; the last point starts in B
    cnt, mean, cov = cluster_stats(x[:12].double(), init[:12], 2, 0.0)
    assert cnt.tolist() == [6, 6]
    np.testing.assert_allclose(mean[0].numpy(), [0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(cov[0].numpy(), np.diag([2e-4 / 6] * 3), atol=1e-12)
    np.testing.assert_allclose(cov[1].numpy(), np.diag([2e-2 / 6] * 3), rtol=1e-5, atol=1e-9)
    out = gmm_iteration(x, torch.cat([init[:12], torch.tensor([-1, -1])]), 2, 0.0)
    # x = 0.2: Mahalanobis^2 to A = 0.04 / 3.33e-5 = 1200, to B = 0.64 / 3.33e-3 = 192 -> B wins despite
    # being 4x closer to A in Euclidean terms ; x = 0.5 -> B as well. Points of A and B stay.
    assert out.tolist() == [0] * 6 + [1] * 6 + [1, 1]
    xc = torch.cat([xa, xb, torch.tensor([[0.01, 0.005, 0]])])
    out = gmm_iteration(xc, torch.tensor([0] * 6 + [1] * 6 + [-1]), 2, 0.0)
    assert out[-1].item() == 0
    assert gmm_iteration(x, init, 0, 1e-6).tolist() == [-1] * 14


def test_min_size_drops_small_clusters_and_seed_stride(rng):
    centers = [(0.0, 0.0, 1.0), (0.3, 0.0, 1.0), (0.6, 0.0, 1.0), (0.9, 0, 1)]
    gt, t = _image_from_clusters(centers, 0.05, 40, 40, rng, spread=0.02)
    # an outlier pixel inside cluster 1's block with a far-away feature forms its own 1-pixel cluster
    t[0][:, 0, 0] = torch.tensor([5.0, 5.0, 5.0])
    labels, scores = cluster_pixels(*t, ClusterParams(gmm=False, min_size=5))
    assert labels[0, 0] == 0 and len(scores) == 4
    labels_s, scores_s = cluster_pixels(*t, ClusterParams(gmm=True, min_size=5, seed_stride=2))
    gt2 = gt.copy()
    gt2[0, 0] = labels_s[0, 0].item() and gt[0, 0]
    assert len(scores_s) == 4 and _same_partition(labels_s.numpy()[1:, 1:], gt[1:, 1:])
    with pytest.raises(ValueError):
        ClusterParams(gmm=False, seed_stride=2)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_score_is_fg_times_compactness_times_highest_eta(backend):
    # two 4x4 clusters in a 4x8 image, ξ exactly at two centres 0.5 m apart (every pixel inside its sphere);
    # fg probability 0.8 on the left object, 0.6 on the right; highest η 0.5 on the left, 1.0 on the right
    h, w = 4, 8
    xi = np.zeros((3, h, w), np.float32)
    xi[2] = 1.0
    xi[0, :, 4:] = 0.5
    fg = np.full((h, w), 0.8, np.float32)
    fg[:, 4:] = 0.6
    eta = np.full((h, w), 0.1, np.float32)
    eta[1, 1], eta[2, 6] = 0.5, 1.0
    t = [torch.from_numpy(a) for a in (xi, eta, np.full((h, w), 0.05, np.float32), fg)]
    labels, scores = cluster_pixels(*t, ClusterParams(min_size=1, gmm_reg=1e-6), backend=backend)
    # with the η factor: left 0.8 * 1 * 0.5 = 0.4, right 0.6 * 1 * 1.0 = 0.6 -> the right object is id 1
    assert scores.tolist() == pytest.approx([0.6, 0.4], abs=1e-6)
    assert (labels.numpy()[:, 4:] == 1).all() and (labels.numpy()[:, :4] == 2).all()
    labels, scores = cluster_pixels(*t, ClusterParams(min_size=1, gmm_reg=1e-6, score_centroid=False),
                                    backend=backend)
    # without it: 0.8 and 0.6 -> the left object is id 1
    assert scores.tolist() == pytest.approx([0.8, 0.6], abs=1e-6)
    assert (labels.numpy()[:, :4] == 1).all() and (labels.numpy()[:, 4:] == 2).all()
