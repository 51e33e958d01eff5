"""Geometric label refinement (instseg_ros.clusternet.refine) on constructed depth images whose right
answers follow by hand from the geometry."""
from __future__ import annotations

import numpy as np
import pytest

from instseg_ros.clusternet.refine import (
    RefineParams,
    depth_edges,
    locally_convex,
    merge_fragments,
    refine_labels,
    snap_boundaries,
)

F = 500.0
H, W = 60, 80


def K_(h=H, w=W):
    return np.array([[F, 0, (w - 1) / 2], [0, F, (h - 1) / 2], [0, 0, 1.0]])


def plane_depth(n, d, h=H, w=W):
    """Depth (H, W) of the plane n . X = d seen by the camera of K_() (n need not be unit)."""
    K = K_(h, w)
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    ray = np.stack([(u - K[0, 2]) / F, (v - K[1, 2]) / F, np.ones_like(u, float)], -1)
    return (d / (ray @ np.asarray(n, float))).astype(np.float32)


def test_depth_edges_mark_both_sides_of_a_step_only():
    depth = np.full((H, W), 0.50, np.float32)
    depth[:, 40:] = 0.52                       # 2 cm step > max(1 cm, 2 % of 0.5 m)
    edge = depth_edges(depth, 0.01, 0.02)
    expect = np.zeros((H, W), bool)
    expect[:, 39:41] = True
    np.testing.assert_array_equal(edge, expect)
    depth[:, 40:] = 0.505                      # 5 mm: below both thresholds
    assert not depth_edges(depth, 0.01, 0.02).any()


def test_two_boxes_touching_with_a_2cm_step_split_exactly_at_the_step():
    """Box A (z 0.50 m) left of column 40, box B (z 0.52 m) from 40; the network's labels put the boundary
    2 px too far right (inside the default 2 px band). Every pixel of the band is nearer in 3D to the core of its own
    surface, so the boundary moves onto the step; the contact is a depth step, so the two are never merged."""
    depth = np.full((H, W), 0.50, np.float32)
    depth[:, 40:] = 0.52
    lab = np.where(np.arange(W)[None, :] < 42, 1, 2).repeat(H, 0).astype(np.int32)
    out, scores = refine_labels(lab, np.array([0.9, 0.8]), depth, K_(), RefineParams())
    expect = np.where(np.arange(W)[None, :] < 40, 1, 2).repeat(H, 0)
    np.testing.assert_array_equal(out, expect)
    np.testing.assert_allclose(scores, [0.9, 0.8])


def test_boundary_moves_to_the_depth_step_against_background_too():
    """An object (z 0.45) on a background plane (z 0.60); the label mask is too small on every side:
    the band pixels that lie on the object's surface join it, background band pixels stay background
    (the mask is 1 px too small on every side, inside the 2 px band)."""
    depth = np.full((H, W), 0.60, np.float32)
    depth[20:40, 30:50] = 0.45
    lab = np.zeros((H, W), np.int32)
    lab[21:39, 31:49] = 1
    edge = depth_edges(depth, 0.01, 0.02)
    out = snap_boundaries(lab, depth, K_(), edge, band_px=2, radius_px=5, max_dist=0.03)
    expect = np.zeros((H, W), np.int32)
    expect[20:40, 30:50] = 1
    np.testing.assert_array_equal(out, expect)


def test_flying_pixel_sliver_between_object_and_background_is_rejected():
    """A 1-px-wide column of mixed depth (halfway between an object at 0.45 m and the background at 0.60 m)
    that the network made an instance of its own: all its pixels are depth-edge pixels, so no core
    anchors it, its pixels go to the 3D-nearest neighbour surface within max_snap_dist or, if none is that
    close, it stays alone and is dropped for being made of edge pixels only."""
    depth = np.full((H, W), 0.60, np.float32)
    depth[:, :30] = 0.45
    depth[:, 30] = 0.525                       # 7.5 cm from both surfaces: farther than max_snap_dist
    lab = np.zeros((H, W), np.int32)
    lab[:, :30] = 1
    lab[:, 30] = 2
    out, scores = refine_labels(lab, np.array([0.9, 0.7]), depth, K_(), RefineParams())
    assert out.max() == 1 and len(scores) == 1
    np.testing.assert_array_equal(out[:, :30], 1)
    assert (out[:, 30] == 0).all()


def test_convexity_criterion_by_hand():
    up, front = np.array([0.0, 0, 1]), np.array([1.0, 0, 0])
    # a box's top face (centre (0,0,1)) and front face (centre (1,0,0)): (n_a - n_b).(c_a - c_b) = 2 > 0
    assert locally_convex(np.array([0.0, 0, 1]), up, np.array([1.0, 0, 0]), front, 10.0)
    # a box standing on another: the lower box's top face right of it (0.75,0,0) and the upper box's side
    # face (0.5,0,0.25): (up - front).((0.25,0,-0.25)) = -0.5 < 0: concave, two objects
    assert not locally_convex(np.array([0.75, 0, 0]), up, np.array([0.5, 0, 0.25]), front, 10.0)
    # nearly coplanar patches (5 degrees apart) always count as one smooth surface
    tilt = np.array([np.sin(np.radians(5)), 0, np.cos(np.radians(5))])
    assert locally_convex(np.array([0.0, 0, 0]), up, np.array([0.1, 0, 0]), tilt, 10.0)


def _roof(sign: float):
    """Two planar faces meeting along column 40 at a ridge (sign +1: towards the camera = convex, like a
    box edge) or a valley (sign -1: concave, like two objects leaning together). Depth is continuous."""
    u = np.arange(W)[None, :].repeat(H, 0).astype(np.float32)
    return (0.5 - sign * 0.002 * (20 - np.abs(u - 40))).astype(np.float32)


def test_fragments_across_a_convex_edge_merge_and_across_a_concave_crease_do_not():
    lab = np.where(np.arange(W)[None, :] < 40, 1, 2).repeat(H, 0).astype(np.int32)
    same = np.array([[0.0, 0.0, 0.5], [0.0, 0.0, 0.5]])
    p = RefineParams(band_px=0)
    root = merge_fragments(lab, _roof(+1.0), K_(), p, same)
    assert root[1] == root[2] == 1
    root = merge_fragments(lab, _roof(-1.0), K_(), p, same)
    assert list(root) == [0, 1, 2]


def test_fragments_with_equal_predicted_centroids_merge_but_distant_centroids_keep_them_apart():
    """Two halves of a convex roof (ridge at column 40): depth-continuous and convex. Predicted centroids
    at the union's centroid -> one instance with the better score. Each half's predicted centroid at its
    own measured centroid (two objects the network saw as such) -> the one-object error is the sum of the
    squared half-offsets, the two-object error 0: kept apart."""
    from instseg_ros.core.geometry import backproject

    depth = _roof(+1.0)
    lab = np.where(np.arange(W)[None, :] < 40, 1, 2).repeat(H, 0).astype(np.int32)
    pts = backproject(depth, K_())
    own = np.array([pts[lab == 1].mean(0), pts[lab == 2].mean(0)])
    union = np.repeat(pts.reshape(-1, 3).mean(0)[None], 2, 0)
    p = RefineParams(band_px=0, merge_coplanar=False)
    out, sc = refine_labels(lab, np.array([0.6, 0.8]), depth, K_(), p, union)
    np.testing.assert_array_equal(out, 1)
    np.testing.assert_allclose(sc, [0.8])
    out, sc = refine_labels(lab, np.array([0.6, 0.8]), depth, K_(), p, own)
    np.testing.assert_array_equal(out, np.where(lab == 1, 2, 1))   # ordered by score: the 0.8 one is id 1
    np.testing.assert_allclose(sc, [0.8, 0.6])


def test_one_plane_cut_in_two_merges_even_when_the_centroids_disagree_but_a_roof_does_not():
    """merge_coplanar (off by default): a flat surface (z 0.5 m) cut in two joins whatever the network's
    centroids say (and stays two without the option); the
    roof's halves (normals 2 * atan(0.002 * 500 / 0.5 ...) apart: not one plane) need the centroid test."""
    from instseg_ros.core.geometry import backproject

    lab = np.where(np.arange(W)[None, :] < 40, 1, 2).repeat(H, 0).astype(np.int32)
    flat = np.full((H, W), 0.5, np.float32)
    pts = backproject(flat, K_())
    own = np.array([pts[lab == 1].mean(0), pts[lab == 2].mean(0)])
    p = RefineParams(band_px=0, merge_coplanar=True)
    out, _ = refine_labels(lab, np.array([0.6, 0.8]), flat, K_(), p, own)
    assert refine_labels(lab, np.array([0.6, 0.8]), flat, K_(), RefineParams(band_px=0), own)[0].max() == 2
    np.testing.assert_array_equal(out, 1)
    roof = _roof(+1.0)
    pts = backproject(roof, K_())
    own = np.array([pts[lab == 1].mean(0), pts[lab == 2].mean(0)])
    out, _ = refine_labels(lab, np.array([0.6, 0.8]), roof, K_(), p, own)
    assert out.max() == 2


def test_min_extent_drops_objects_smaller_than_the_metric_size():
    depth = np.full((H, W), 0.5, np.float32)
    lab = np.zeros((H, W), np.int32)
    lab[10:40, 10:40] = 1        # 30 px at 0.5 m / 500 px = 3 cm: 4 sigma = 4 * 3/sqrt(12) cm = 3.46 cm
    lab[50:54, 60:64] = 2        # 4 px = 4 mm: 4 sigma = 4.6 mm
    p = RefineParams(band_px=0, merge=False, min_extent_m=0.01)
    out, sc = refine_labels(lab, np.array([0.5, 0.9]), depth, K_(), p)
    assert len(sc) == 1 and (out == 1).sum() == 900 and out[52, 62] == 0


def test_low_score_instances_are_dropped_unless_joined_to_a_confident_one():
    """The roof of the test above, scores 0.2 and 0.8, min_score 0.35 (the default). Centroids agreeing: the
    halves join, the union keeps the best score (0.8 >= 0.35) and stays whole. Centroids apart: the 0.2 half
    stands alone and is dropped (its pixels become background), the 0.8 half is kept as id 1. min_score 0:
    both kept."""
    from instseg_ros.core.geometry import backproject

    depth = _roof(+1.0)
    lab = np.where(np.arange(W)[None, :] < 40, 1, 2).repeat(H, 0).astype(np.int32)
    pts = backproject(depth, K_())
    own = np.array([pts[lab == 1].mean(0), pts[lab == 2].mean(0)])
    union = np.repeat(pts.reshape(-1, 3).mean(0)[None], 2, 0)
    p = RefineParams(band_px=0)
    assert p.min_score == 0.35
    out, sc = refine_labels(lab, np.array([0.2, 0.8]), depth, K_(), p, union)
    np.testing.assert_array_equal(out, 1)
    np.testing.assert_allclose(sc, [0.8])
    out, sc = refine_labels(lab, np.array([0.2, 0.8]), depth, K_(), p, own)
    np.testing.assert_array_equal(out, np.where(lab == 2, 1, 0))
    np.testing.assert_allclose(sc, [0.8])
    out, sc = refine_labels(lab, np.array([0.2, 0.8]), depth, K_(), RefineParams(band_px=0, min_score=0.0), own)
    np.testing.assert_array_equal(out, np.where(lab == 2, 1, 2))
    np.testing.assert_allclose(sc, [0.8, 0.2])


def test_disabled_passes_labels_through_and_params_are_validated():
    lab = np.zeros((H, W), np.int32)
    lab[5:9, 5:9] = 1
    out, sc = refine_labels(lab, np.array([0.3]), np.full((H, W), 0.5, np.float32), K_(), RefineParams(enabled=False))
    np.testing.assert_array_equal(out, lab)
    for bad in ({"step_abs": 0.0}, {"band_px": 3, "snap_radius_px": 6}, {"merge_evidence_ratio": 0.0},
                {"max_edge_share": 0.0}, {"max_snap_dist": float("nan")}, {"merge_min_contact": 0},
                {"min_score": 1.5}, {"min_score": -0.1}, {"min_score": float("inf")}):
        with pytest.raises(ValueError):
            RefineParams(**bad)
