"""Depth noise statistics and shape families / split disjointness."""
from __future__ import annotations

import numpy as np
import pytest

from instseg_ros.data.noise import DepthNoiseConfig, apply_depth_noise, stereo_shadow
from instseg_ros.data.shapes import (
    FAMILY_WEIGHTS,
    HOLLOW_KINDS,
    THIN_KINDS,
    _split_bucket,
    sample_shape,
    shape_split,
)

K = np.array([[600.0, 0, 160], [0, 600.0, 120], [0, 0, 1]])


def test_noise_std_grows_with_distance_and_is_mm_quantised():
    rng = np.random.default_rng(0)
    cfg = DepthNoiseConfig(speckle_prob=0.0, blob_frac=0.0, hard_object_prob=0.0, corr_frac=0.3,
                           shadow=False)  # no left-border band either
    stds = []
    for z in (0.5, 1.0, 2.0):
        gt = np.full((240, 320), z, np.float32)
        d = apply_depth_noise(gt, K, rng, cfg)
        assert (d > 0).all()  # flat plane: no edges, no dropout configured
        np.testing.assert_allclose(d * 1000, np.round(d * 1000), atol=1e-3)
        stds.append(float((d - gt).std()))
    # stereo model: sigma_z = z^2 sigma_d / (f b) = z^2 * 0.08 / 30 -> 0.67 mm, 2.7 mm, 10.7 mm
    assert stds[0] < stds[1] < stds[2]
    assert stds[2] / stds[1] == pytest.approx(4.0, rel=0.35)
    assert stds[2] == pytest.approx(4.0 * 0.08 / 30.0, rel=0.35)


def test_shadow_left_of_nearer_object_and_invalid_stays_zero():
    gt = np.full((40, 200), 1.0, np.float32)
    gt[:, 150:170] = 0.5  # a near block in front of a 1 m wall
    gt[:, :5] = 0.0       # no surface
    sh = stereo_shadow(gt, fx=600.0, baseline=0.05)
    # the wall at 1 m lands 600*0.05/1 = 30 px further left in the second imager: columns 0-29 fall off its
    # left border (29 - 30 < -0.5 <= 30 - 30); background pixels left of the block are hidden within the
    # disparity difference 600*0.05*(1/0.5-1/1) = 30 px: the block's left edge lands at 150 - 60 = 90, wall
    # pixel u at u - 30, hidden when 90 < u - 30 - 0.5, i.e. u >= 121
    assert sh[:, 5:30].all() and not sh[:, 30:121].any() and sh[:, 121:150].all() and not sh[:, 150:].any()
    assert not sh[:, :5].any()  # no surface there: invalid anyway, not a shadow
    d = apply_depth_noise(gt, K, np.random.default_rng(1), DepthNoiseConfig())
    assert (d[:, :30] == 0).all() and (d[:, 125:148] == 0).all()


def test_noise_rejects_bad_input():
    with pytest.raises(ValueError):
        apply_depth_noise(np.zeros((2, 2, 2), np.float32), K, np.random.default_rng(0))


@pytest.mark.parametrize("family", list(FAMILY_WEIGHTS))
def test_families_have_sane_meshes(family):
    rng = np.random.default_rng(3)
    for _ in range(12):
        s = sample_shape(rng, "train", family)
        assert s.family == family
        assert 0.015 <= s.extent <= 0.26
        assert s.triangles.min() >= 0 and s.triangles.max() < len(s.vertices)
        np.testing.assert_allclose(np.linalg.norm(s.normals, axis=1), 1.0, atol=1e-6)
        assert shape_split(s) == "train"
        _assert_wound_outward(s.vertices, s.triangles, s.params, s.normals)


def _assert_wound_outward(v, f, what, normals=None):
    """Counter-clockwise seen from outside (the rasteriser culls back faces): after welding equal positions,
    no directed edge is used twice (neighbouring triangles agree), the enclosed signed volume is > 0, and in
    every connected piece most winding normals agree with the vertex normals (creases of smooth-shaded
    lathes may disagree slightly; a reversed piece disagrees everywhere)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    _, weld = np.unique(np.round(v / 1e-7).astype(np.int64), axis=0, return_inverse=True)
    ff = weld.reshape(-1)[f]
    ok = (ff[:, 0] != ff[:, 1]) & (ff[:, 1] != ff[:, 2]) & (ff[:, 0] != ff[:, 2])
    edges = np.concatenate([ff[ok][:, [0, 1]], ff[ok][:, [1, 2]], ff[ok][:, [2, 0]]])
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert counts.max() == 1, what
    vol = np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6
    assert vol > 0, what
    if normals is not None:
        n = weld.max() + 1
        g = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
        _, comp = connected_components(g, directed=False)
        fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
        agree = np.einsum("ij,ij->i", fn, normals[f].mean(1)) > 0
        for c in np.unique(comp[ff[:, 0]]):
            assert agree[comp[ff[:, 0]] == c].mean() > 0.8, what


def test_background_meshes_are_wound_outward():
    from instseg_ros.data.shapes import box_mesh, lathe_mesh

    _assert_wound_outward(*box_mesh(np.array([0.3, 0.1, 0.02]))[:2], "box")
    _assert_wound_outward(*lathe_mesh(np.array([0.1, 0.1]), np.array([0.0, 0.5]), 24, True, True)[:2], "lathe")


def test_splits_use_disjoint_shape_parameters():
    rng = np.random.default_rng(0)
    buckets = {sp: {_split_bucket(s.family, s.params) for s in (sample_shape(rng, sp) for _ in range(60))}
               for sp in ("train", "val", "test")}
    assert buckets["train"] <= set(range(8)) and buckets["val"] == {8} and buckets["test"] == {9}
    with pytest.raises(ValueError):
        sample_shape(rng, "holdout")


def test_foreground_fattening_spills_near_depth_at_most_fatten_px():
    gt = np.full((60, 120), 1.0, np.float32)
    gt[20:40, 50:70] = 0.5
    cfg = DepthNoiseConfig(sigma_disp=0.0, flying_prob=0.0, edge_hole_prob=0.0, speckle_prob=0.0, blob_frac=0.0,
                           hard_object_prob=0.0, shadow=False, fatten_px=2)
    d = apply_depth_noise(gt, K, np.random.default_rng(3), cfg)
    near = np.abs(d - 0.5) < 0.01
    spilled = near & (gt == 1.0)
    assert spilled.sum() > 20  # the block looks bigger in depth ...
    ys, xs = np.nonzero(spilled)
    # ... by at most 2 px (square window: Chebyshev distance to the block)
    dist = np.maximum(np.maximum(20 - ys, ys - 39).clip(0), np.maximum(50 - xs, xs - 69).clip(0))
    assert dist.max() <= 2 and dist.min() >= 1
    assert (np.abs(d[gt == 1.0][~spilled[gt == 1.0]] - 1.0) < 0.01).all()
    cfg.fatten_px = 0
    d0 = apply_depth_noise(gt, K, np.random.default_rng(3), cfg)
    assert not (np.abs(d0 - 0.5) < 0.01)[gt == 1.0].any()


def test_size_range_sets_the_largest_dimension():
    rng = np.random.default_rng(5)
    for _ in range(5):  # boxes: the largest side is the drawn size; cylinders: height or diameter
        assert 0.12 <= max(sample_shape(rng, "train", "box", size_range=(0.12, 0.2)).params["dims"]) <= 0.2
        assert 0.12 - 1e-9 <= sample_shape(rng, "train", "cylinder", size_range=(0.12, 0.2)).extent <= 0.2 + 1e-9
        assert sample_shape(rng, "train", "irregular", size_range=(0.12, 0.2)).extent <= 0.2 * 1.2
    with pytest.raises(ValueError, match="size_range"):
        sample_shape(rng, "train", size_range=(0.3, 0.1))


def test_collision_hull_is_a_small_subset_spanning_the_shape():
    from instseg_ros.data.physics import hull_points

    s = sample_shape(np.random.default_rng(1), "train", "ellipsoid")
    h = hull_points(s.vertices, 48)
    assert len(s.vertices) > 48 and 8 <= len(h) <= 48
    # every kept point is a vertex of the shape, and the kept set spans the shape's extent
    assert (np.abs(s.vertices[None] - h[:, None]).sum(2).min(1) < 1e-12).all()
    np.testing.assert_allclose(h.max(0) - h.min(0), s.vertices.max(0) - s.vertices.min(0), rtol=0.1)


def test_mesh_builders_match_per_quad_loops():
    """The array-built triangle lists of lathes, spheres and tori against a per-quad loop (the previous code)."""
    from instseg_ros.data.shapes import lathe_mesh, sphere_mesh, torus_arc_mesh, torus_mesh

    def quads(rows, cols, wrap_rows, pattern):
        F = []
        for i in range(rows):
            for j in range(cols):
                a, b = i * cols + j, i * cols + (j + 1) % cols
                c, d = ((i + 1) % wrap_rows) * cols + j, ((i + 1) % wrap_rows) * cols + (j + 1) % cols
                F += pattern(i, a, b, c, d)
        return np.array(F, np.int32)

    # lathe side (no degenerate rows): rows n - 1 over seg columns, (a, b, d), (a, d, c)
    _, f, _ = lathe_mesh(np.array([0.1, 0.12, 0.05]), np.array([0.0, 0.1, 0.2]), 12, False, False)
    np.testing.assert_array_equal(f, quads(2, 12, 99, lambda i, a, b, c, d: [(a, b, d), (a, d, c)]))
    # sphere: poles keep one triangle per quad
    _, f, _ = sphere_mesh(0.1, 0.1, 0.1, 5, 8)
    ref = quads(5, 8, 99, lambda i, a, b, c, d: ([(a, c, b)] if i > 0 else []) + ([(b, c, d)] if i < 4 else []))
    np.testing.assert_array_equal(f, ref)
    # torus (u index i over n_u, v index j over n_v): a = i n_v + j, b = next u, c = next v
    _, f, _ = torus_mesh(0.05, 0.01, 6, 4)
    ref = []
    for i in range(6):
        for j in range(4):
            a, b = i * 4 + j, ((i + 1) % 6) * 4 + j
            c, d = i * 4 + (j + 1) % 4, ((i + 1) % 6) * 4 + (j + 1) % 4
            ref += [(a, b, d), (a, d, c)]
    np.testing.assert_array_equal(f, np.array(ref))
    # capped handle: closed and wound outward
    v, f, n = torus_arc_mesh(0.03, 0.006, -np.pi / 2, np.pi / 2, caps=True)
    _assert_wound_outward(v, f, "capped arc", n)


def _draw_kind(family: str, kind: str, multipart: float, seed: int = 5):
    rng = np.random.default_rng(seed)
    for _ in range(400):
        s = sample_shape(rng, "train", family, multipart=multipart)
        if s.params["kind"] == kind:
            return s
    raise AssertionError(f"no {kind} in 400 draws")


def _union_centroid(v: np.ndarray, f: np.ndarray, n: int = 1_500_000) -> np.ndarray:
    """Centroid of the union of the closed pieces of a mesh: the mean of the uniform random points in its bounding
    box that lie inside (unbiased, unlike a grid, for pieces as thin as a 2 mm blade), inside-ness from Open3D's
    ray-parity occupancy per piece (overlapping pieces would cancel each other's parity if tested together)."""
    import open3d as o3d
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    _, weld = np.unique(np.round(v / 1e-7).astype(np.int64), axis=0, return_inverse=True)
    ff = weld.reshape(-1)[f]
    nv = weld.max() + 1
    e = np.concatenate([ff[:, [0, 1]], ff[:, [1, 2]]])
    _, comp = connected_components(coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(nv, nv)), directed=False)
    lo, hi = v.min(0), v.max(0)
    g = np.random.default_rng(0).uniform(lo, hi, size=(n, 3)).astype(np.float32)
    inside = np.zeros(len(g), bool)
    for c in np.unique(comp[ff[:, 0]]):
        tri = f[comp[ff[:, 0]] == c]
        sc = o3d.t.geometry.RaycastingScene()
        sc.add_triangles(o3d.core.Tensor(v.astype(np.float32)), o3d.core.Tensor(tri.astype(np.uint32)))
        inside |= sc.compute_occupancy(o3d.core.Tensor(g), nsamples=3).numpy() > 0.5
    return g[inside].astype(np.float64).mean(0)


@pytest.mark.parametrize("family, kind", [("thin", k) for k in THIN_KINDS] + [("hollow", k) for k in HOLLOW_KINDS])
def test_thin_and_hollow_kinds_are_closed_centred_and_sized(family, kind):
    for mp in (0.0, 1.0):
        s = _draw_kind(family, kind, mp)
        assert s.family == family and shape_split(s) == "train"
        assert 0.015 <= s.extent <= 0.26
        np.testing.assert_allclose(np.linalg.norm(s.normals, axis=1), 1.0, atol=1e-6)
        _assert_wound_outward(s.vertices, s.triangles, s.params, s.normals)
        assert s.n_parts == (1 if mp == 0.0 else len(s.part_roles)) and s.part_roles[:1] in ((), ("body",), ("grip",))
    ext = np.sort(s.vertices.max(0) - s.vertices.min(0))
    if family == "thin":  # long and narrow: the longest side at least 4x the middle one (2x to 3.5x for the
        # kinds whose rings, jaws or bowl widen one end)
        assert ext[2] >= {"clamp": 2.0, "scissors": 2.0, "spoon": 3.5}.get(kind, 4.0) * ext[1]
    else:  # a container: its opening (+z, body frame) leads to a floor well below the rim
        top = s.vertices[:, 2].max()
        centre_floor = s.vertices[np.linalg.norm(s.vertices[:, :2], axis=1) < 0.3 * ext[0] / 2][:, 2]
        assert centre_floor.size and (top - centre_floor).min() > 0.5 * (top - s.vertices[:, 2].min())
    # the body origin is the centre of mass pybullet assumes: within 1.5 % of the size of the solid's
    # centroid (the reference counts overlapping pieces once, the builder twice)
    c = _union_centroid(s.vertices, s.triangles)
    assert np.linalg.norm(c) <= 0.015 * s.extent, (kind, c)


def test_default_mix_never_draws_the_new_families_and_weights_are_checked():
    rng = np.random.default_rng(2)
    assert {sample_shape(rng, "train").family for _ in range(150)} <= set(FAMILY_WEIGHTS)
    assert "thin" not in FAMILY_WEIGHTS and "hollow" not in FAMILY_WEIGHTS
    fams = [sample_shape(rng, "train", weights={"thin": 1.0, "hollow": 1.0}).family for _ in range(40)]
    assert set(fams) == {"thin", "hollow"}
    for bad in ({"thin": -1.0}, {"nope": 1.0}, {"thin": 0.0}):
        with pytest.raises(ValueError, match="weights"):
            sample_shape(rng, "train", weights=bad)
