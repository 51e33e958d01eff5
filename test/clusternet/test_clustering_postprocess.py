"""The predictor's fused upsample + moments kernel against the plain route it replaced: numpy nearest
upsampling, :func:`backproject` of the whole frame and :func:`instance_moments` (np.bincount sums)."""
import numpy as np
import pytest

from instseg_ros.clusternet.config import ModelConfig
from instseg_ros.clusternet.model import ClusterNet
from instseg_ros.clusternet.predictor import ClusterNetPredictor, instance_moments, nearest_index
from instseg_ros.clusternet.refine import RefineParams, refine_labels
from instseg_ros.core.geometry import backproject

TINY = dict(base_width=8, c1_channels=16, aspp_channels=16, decoder_channels=16, depth_widths=[4, 8, 8, 8])


def _plain(lab, scores, depth, K, min_valid):
    h0, w0 = depth.shape
    up = lab[nearest_index(lab.shape[0], h0)[:, None], nearest_index(lab.shape[1], w0)[None, :]]
    valid = np.isfinite(depth) & (depth > 0)
    cnt, cen, cov = instance_moments(up, backproject(depth, K), valid, len(scores))
    keep = cnt >= max(1, min_valid)
    new_id = np.zeros(len(scores) + 1, np.int32)
    new_id[1:][keep] = np.arange(1, keep.sum() + 1)
    return new_id[up], cnt[keep], cen[keep], cov[keep], scores[keep]


@pytest.mark.parametrize("net_hw,in_hw", [((24, 32), (48, 64)), ((30, 40), (30, 40)), ((24, 32), (37, 50))])
def test_postprocess_matches_plain_route(net_hw, in_hw):
    rng = np.random.default_rng(sum(in_hw))
    n = 7
    lab = rng.integers(0, n + 1, net_hw)
    lab[lab == 5] = 0                                     # instance 5 has no pixels -> dropped
    lab[0, 0] = 6
    lab[lab == 6] = 0
    lab[0, 0] = 6                                         # instance 6: one network pixel -> too few points
    depth = rng.uniform(0.4, 1.5, in_hw).astype(np.float32)
    depth[rng.random(in_hw) < 0.1] = 0.0
    depth[rng.random(in_hw) < 0.05] = np.nan
    depth[rng.random(in_hw) < 0.02] = np.inf
    K = np.array([[in_hw[1] * 0.9, 0, in_hw[1] / 2 - 0.3], [0, in_hw[1] * 0.95, in_hw[0] / 2 + 0.2], [0, 0, 1]])
    scores = np.linspace(0.9, 0.3, n).astype(np.float32)
    pred = ClusterNetPredictor(ClusterNet(ModelConfig(**TINY)), "cpu", min_valid_points=5,
                               refine=RefineParams(enabled=False))
    inst = pred._postprocess(lab, scores, depth, K)
    labels, cnt, cen, cov, sc = _plain(lab, scores, depth, K, 5)
    assert 0 < len(inst) < n                              # some instances dropped, some kept
    np.testing.assert_array_equal(inst.labels, labels)
    np.testing.assert_array_equal(inst.num_points, cnt)
    np.testing.assert_array_equal(inst.scores, sc)
    np.testing.assert_allclose(inst.centroids, cen, rtol=1e-12, atol=0)
    np.testing.assert_allclose(inst.covariances, cov, rtol=1e-9, atol=1e-15)
    with pytest.raises(ValueError, match="labels"):
        pred._postprocess(lab, scores[:3], depth, K)      # labels beyond len(scores)


def test_refined_postprocess_is_refine_then_the_plain_route():
    """With refinement on, the predictor upsamples, refines at the input resolution (mean ξ̂ per label for the
    merge test) and then takes the same moments as the plain route."""
    rng = np.random.default_rng(3)
    h, w = 40, 60
    depth = np.full((h, w), 0.6, np.float32)
    depth[5:25, 5:30] = 0.45                       # two boxes on a table, with depth steps to it
    depth[10:35, 35:55] = 0.50
    depth += rng.normal(0, 0.0005, (h, w)).astype(np.float32)
    lab = np.zeros((h // 2, w // 2), np.int64)     # network labels at half resolution, a bit off the steps
    lab[3:12, 3:15] = 1
    lab[5:17, 17:27] = 2
    lab[16:18, 10:12] = 3                          # a blob on the table
    K = np.array([[300.0, 0, 29.5], [0, 300.0, 19.5], [0, 0, 1]])   # 1.5-2 mm per pixel, as at 0.5 m
    scores = np.array([0.9, 0.8, 0.3])
    xi = np.zeros((3, h // 2, w // 2))
    pred = ClusterNetPredictor(ClusterNet(ModelConfig(**TINY)), "cpu", min_valid_points=5)
    inst = pred._postprocess(lab, scores, depth, K, xi)
    up = lab[nearest_index(h // 2, h)[:, None], nearest_index(w // 2, w)[None, :]]
    ref_lab, ref_sc = refine_labels(up, scores, depth, K, RefineParams(), np.zeros((3, 3)))
    labels, cnt, cen, cov, sc = _plain(ref_lab, ref_sc, depth, K, 5)
    np.testing.assert_array_equal(inst.labels, labels)
    np.testing.assert_array_equal(inst.num_points, cnt)
    np.testing.assert_allclose(inst.centroids, cen, rtol=1e-12)
    np.testing.assert_allclose(inst.scores, sc)
    # the boxes' labels now end exactly at their depth steps
    assert (inst.labels[5:25, 5:30] == inst.labels[15, 15]).all() and inst.labels[15, 15] > 0
    assert (inst.labels[10:35, 35:55] == inst.labels[20, 45]).all() and inst.labels[20, 45] > 0
