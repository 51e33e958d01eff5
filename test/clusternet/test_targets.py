"""Targets (eq. 1, eq. 2, centroid candidates) against moments computed by hand for boxes."""
import numpy as np
import pytest

from instseg_ros.clusternet.targets import compute_targets, object_features, radii_from_features

K = np.array([[100.0, 0, 20.0], [0, 100.0, 15.0], [0, 0, 1]])


def _uniform_var(n):
    return (n * n - 1) / 12.0


def test_fronto_parallel_rectangles_match_closed_form():
    h, w = 30, 40
    labels = np.zeros((h, w), np.int32)
    depth = np.full((h, w), 2.0, np.float32)
    labels[2:8, 3:13] = 5          # 6 rows x 10 cols at z = 1.0
    depth[2:8, 3:13] = 1.0
    labels[20:24, 30:34] = 9       # 4 x 4 at z = 1.5
    depth[20:24, 30:34] = 1.5
    t = compute_targets(labels, depth, K, feature="c+cov", centroid_fraction=0.25, max_radius=10.0)
    assert list(t.ids) == [5, 9]
    # object 5: x = (u - 20) / 100, u = 3..12 ; y = (v - 15) / 100, v = 2..7 ; z = 1
    cx, cy, cz = (np.mean(np.arange(3, 13)) - 20) / 100, (np.mean(np.arange(2, 8)) - 15) / 100, 1.0
    xx, yy = _uniform_var(10) / 100 ** 2, _uniform_var(6) / 100 ** 2
    exp5 = np.array([cx, cy, cz, cx + xx, cy + yy, cz + 0.0, cx + 0.0, cy + 0.0, cz + 0.0])
    np.testing.assert_allclose(t.features[0], exp5, rtol=0, atol=1e-7)
    s = 1.5 / 100
    cx9, cy9 = (np.mean(np.arange(30, 34)) - 20) * s, (np.mean(np.arange(20, 24)) - 15) * s
    v9 = _uniform_var(4) * s * s
    exp9 = np.array([cx9, cy9, 1.5, cx9 + v9, cy9 + v9, 1.5, cx9, cy9, 1.5])
    np.testing.assert_allclose(t.features[1], exp9, rtol=0, atol=1e-7)
    # eq. 2 with two objects: both get half their feature distance
    b = 0.5 * np.linalg.norm(exp5 - exp9)
    np.testing.assert_allclose(t.radii, [b, b], rtol=1e-6)
    assert t.radius[4, 5] == pytest.approx(b, rel=1e-6) and t.radius[0, 0] == 0
    np.testing.assert_allclose(t.xi[5, 8], exp5, atol=1e-7)
    assert (t.xi[~t.foreground] == 0).all()
    assert t.foreground.sum() == 60 + 16
    # centroid candidates: ceil(25 % of 60) = 15 and ceil(25 % of 16) = 4 pixels
    assert t.centroid[labels == 5].sum() == 15 and t.centroid[labels == 9].sum() == 4
    assert t.centroid[labels == 0].sum() == 0
    # the 4 candidates of the 4x4 square are its 4 central pixels (nearest to its 2D centroid)
    assert t.centroid[21:23, 31:33].sum() == 4


def test_centroid_feature_radius_uses_three_dims_and_lone_object_gets_max():
    f = np.array([[0.0, 0, 1, 0.01, 0, 1, 0, 0, 1], [0.3, 0.4, 1, 0.3, 0.4, 1, 0.3, 0.4, 1]])
    np.testing.assert_allclose(radii_from_features(f[:, :3], 1.0), [0.25, 0.25])
    np.testing.assert_allclose(radii_from_features(f[:1], 0.07), [0.07])
    np.testing.assert_allclose(radii_from_features(f[:, :3], 0.1), [0.1, 0.1])   # clipped
    three = np.array([[0, 0, 1.0], [0.1, 0, 1.0], [0.5, 0, 1.0]])
    np.testing.assert_allclose(radii_from_features(three, 1.0), [0.05, 0.05, 0.2])


def test_tilted_box_points_against_moments_of_backprojected_pixels():
    # a plane tilted in x: z = 1 + 0.5 x ; moments must equal numpy moments of the same points
    h, w = 20, 20
    u = np.arange(w)
    x_over_z = (u - K[0, 2]) / K[0, 0]
    z_row = 1.0 / (1 - 0.5 * x_over_z)               # solves z = 1 + 0.5 * x, x = z * x_over_z
    depth = np.tile(z_row, (h, 1)).astype(np.float32)
    labels = np.zeros((h, w), np.int32)
    labels[5:15, 2:18] = 1
    t = compute_targets(labels, depth, K)
    vv, uu = np.nonzero(labels)
    z = depth[vv, uu].astype(np.float64)
    pts = np.stack([(uu - K[0, 2]) / K[0, 0] * z, (vv - K[1, 2]) / K[1, 1] * z, z], 1)
    np.testing.assert_allclose(t.features[0], object_features(pts), atol=1e-6)
    assert t.features[0][2] + 1e-9 < t.features[0][5]  # zz > 0 for the tilted face


def test_invalid_depth_pixels_excluded_from_moments_but_labelled():
    labels = np.zeros((10, 10), np.int32)
    labels[2:6, 2:6] = 3
    depth = np.full((10, 10), 1.0, np.float32)
    depth[2:6, 2:4] = 0.0                             # left half has no depth
    t = compute_targets(labels, depth, K)
    cx = (np.mean([4, 5]) - 20) / 100
    assert t.features[0][0] == pytest.approx(cx, abs=1e-7)
    assert t.foreground[2:6, 2:6].all()
    assert (t.xi[2, 2] == t.features[0]).all()


def test_empty_and_bad_inputs():
    t = compute_targets(np.zeros((8, 8), np.int32), np.ones((8, 8), np.float32), K)
    assert len(t.ids) == 0 and not t.foreground.any() and t.centroid.sum() == 0
    with pytest.raises(ValueError, match="same"):
        compute_targets(np.zeros((8, 8), np.int32), np.ones((8, 9), np.float32), K)
    with pytest.raises(ValueError, match="centroid_fraction"):
        compute_targets(np.zeros((8, 8), np.int32), np.ones((8, 8), np.float32), K, centroid_fraction=0)
    with pytest.raises(ValueError, match="feature"):
        compute_targets(np.zeros((8, 8), np.int32), np.ones((8, 8), np.float32), K, feature="xyz")
    with pytest.raises(ValueError, match="3x3"):
        compute_targets(np.zeros((8, 8), np.int32), np.ones((8, 8), np.float32), np.eye(4))
