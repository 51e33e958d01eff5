"""Rendered depth, labels and occlusion scores against an independent analytic ray/box intersection."""
from __future__ import annotations

import numpy as np
import pytest

from instseg_ros.data import render
from instseg_ros.data.scene import SceneConfig, SceneState, frame_instances, look_at
from instseg_ros.data.shapes import make_box_shape

W, H = 96, 72
K = np.array([[80.0, 0, 47.3], [0, 80.0, 35.8], [0, 0, 1]])


def _rz(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _pose(R, t):
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def _slab(o, d, R, t, half):
    """Ray parameter of the first hit of rays (o, d) with the box (R, t, half extents); inf = miss."""
    ol = (o - t) @ R
    dl = d @ R
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-half - ol) / dl
        t2 = (half - ol) / dl
    tn = np.nanmax(np.minimum(t1, t2), axis=1)
    tf = np.nanmin(np.maximum(t1, t2), axis=1)
    hit = (tn <= tf) & (tf > 0)
    return np.where(hit, np.maximum(tn, 0), np.inf)


def _two_box_scene():
    mat = render.Material(np.array([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]))
    # B: big low box; A: smaller box lying on top of B's corner, rotated
    boxes = [  # (instance, dims, R, t)
        (1, np.array([0.10, 0.06, 0.08]), _rz(0.4), np.array([0.03, 0.02, 0.09])),
        (2, np.array([0.16, 0.12, 0.05]), _rz(-0.2), np.array([0.0, 0.0, 0.025])),
    ]
    meshes, shapes, poses = [], [], []
    for iid, dims, R, t in boxes:
        s = make_box_shape(dims)
        T = _pose(R, t)
        meshes.append(render.posed_mesh(s, T, iid, mat))
        shapes.append(s)
        poses.append(T)
    table = make_box_shape([1.0, 1.0, 0.02])
    meshes.append(render.posed_mesh(table, _pose(np.eye(3), np.array([0, 0, -0.01])), 0, mat))
    st = SceneState(meshes, shapes, poses, "table", np.zeros((2, 2)), np.zeros((2, 3)), {})
    return st, boxes


@pytest.mark.parametrize("method", ["embree", "raster"])
@pytest.mark.parametrize("eye", [(0.25, -0.2, 0.45), (0.02, 0.01, 0.5), (-0.3, 0.1, 0.25)])
def test_depth_and_labels_match_analytic_ray_box(eye, method):
    st, boxes = _two_box_scene()
    scene = render.Scene(st.meshes)
    T = look_at(np.array(eye), np.array([0.0, 0.0, 0.03]), roll_deg=7.0)
    if method == "raster" and eye[2] < 0.3:  # this view has table corners behind the camera: clipping is used
        pc = (scene.all_vertices - T[:3, 3]) @ T[:3, :3]
        assert (pc[:, 2] < 0).any() and (pc[:, 2] > 0).any()
    buf = render.cast(scene, K, T, W, H, method)
    o, d = render.camera_rays(K, T, W, H)
    o, d = o.astype(np.float64), d.astype(np.float64)
    hits = [_slab(o, d, R, t, dims / 2) for _, dims, R, t in boxes]
    hits.append(_slab(o, d, np.eye(3), np.array([0, 0, -0.01]), np.array([0.5, 0.5, 0.01])))
    hits = np.stack(hits, 1)
    first = np.argmin(hits, 1)
    t_ref = hits[np.arange(len(first)), first]
    ids = np.array([1, 2, 0])[first]
    ids[~np.isfinite(t_ref)] = 0
    lab = buf["instance"].reshape(-1)
    z = buf["depth"].reshape(-1)
    # away from silhouette edges (rays within 1e-6 of an edge may go either way) labels agree exactly
    sorted_h = np.sort(hits, 1)
    with np.errstate(invalid="ignore"):
        clear = (sorted_h[:, 1] - sorted_h[:, 0] > 1e-4) | ~np.isfinite(sorted_h[:, 1])
    assert (lab[clear] == ids[clear]).mean() > 0.995
    assert (lab == 1).sum() > 100 and (lab == 2).sum() > 100
    # every labelled pixel's depth = the ray's hit distance on *that* box (camera z = ray parameter)
    for k, (iid, _dims, _R, _t) in enumerate(boxes):
        m = lab == iid
        np.testing.assert_allclose(z[m], hits[m, k], atol=2e-5)


def test_occlusion_scores_on_two_boxes():
    st, boxes = _two_box_scene()
    scene = render.Scene(st.meshes)
    T = look_at(np.array([0.05, -0.3, 0.4]), np.array([0.0, 0.0, 0.03]))
    buf = render.cast(scene, K, T, W, H)
    labels = buf["instance"]
    insts = {i["id"]: i for i in frame_instances(scene, st, labels, K, T, W, H)}
    o, d = render.camera_rays(K, T, W, H)
    o, d = o.astype(np.float64), d.astype(np.float64)
    hA = _slab(o, d, boxes[0][2], boxes[0][3], boxes[0][1] / 2)
    hB = _slab(o, d, boxes[1][2], boxes[1][3], boxes[1][1] / 2)
    amodal_B = np.isfinite(hB).sum()
    visible_B = (np.isfinite(hB) & ~(hA < hB)).sum()
    amodal_A = np.isfinite(hA).sum()
    assert visible_B < amodal_B  # the hand-built scene really occludes B
    assert abs(insts[2]["amodal_px"] - amodal_B) <= 3
    assert abs(insts[2]["visible_px"] - visible_B) <= 3
    assert insts[2]["occlusion"] == pytest.approx(visible_B / amodal_B, abs=0.01)
    assert abs(insts[1]["amodal_px"] - amodal_A) <= 3
    assert insts[1]["occlusion"] == pytest.approx(1.0, abs=0.01)  # A lies on top: not occluded
    for inst in insts.values():
        ys, xs = np.nonzero(labels == inst["id"])
        assert inst["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def test_box_covered_by_another_has_zero_visibility():
    mat = render.Material(np.full((2, 3), 0.5))
    big = make_box_shape([0.2, 0.2, 0.02])
    small = make_box_shape([0.04, 0.04, 0.01])
    meshes = [render.posed_mesh(small, _pose(np.eye(3), np.array([0, 0, 0.005])), 1, mat),
              render.posed_mesh(big, _pose(np.eye(3), np.array([0, 0, 0.05])), 2, mat)]
    st = SceneState(meshes, [small, big], [np.eye(4), np.eye(4)], "table", np.zeros((2, 2)), np.zeros((2, 3)), {})
    scene = render.Scene(meshes)
    T = look_at(np.array([0.0, 0.0, 0.5]), np.zeros(3))
    buf = render.cast(scene, K, T, W, H)
    insts = {i["id"]: i for i in frame_instances(scene, st, buf["instance"], K, T, W, H)}
    assert insts[1]["visible_px"] == 0 and insts[1]["occlusion"] == 0.0
    # top-down at 0.5 m: the 0.04 m box top at 0.49 m spans 80 * 0.04 / 0.49 = 6.5 px -> about 42.6 px
    assert insts[1]["amodal_px"] == pytest.approx((80 * 0.04 / 0.49) ** 2, rel=0.25)


@pytest.mark.parametrize("index", [0, 1])
def test_rasterised_amodal_matches_exhaustive_ray_listing(index):
    """The fast silhouette rasteriser against listing every ray/object intersection on generated piles."""
    from dataclasses import replace

    from instseg_ros.data.scene import build_scene, rng_for, sample_camera, sample_intrinsics

    cfg = replace(SceneConfig(), width=160, height=120, max_objects=12, min_objects=6)
    rng = rng_for("val", 11, index)
    st = build_scene(rng, "val", cfg)
    scene = render.Scene(st.meshes)
    for _ in range(2):
        Kc = sample_intrinsics(rng, cfg.width, cfg.height)
        T = sample_camera(rng, st, cfg)
        labels = render.cast(scene, Kc, T, cfg.width, cfg.height)["instance"]
        fast = render.amodal_counts(scene, Kc, T, cfg.width, cfg.height, labels)
        ref = render.amodal_counts_raycast(scene, Kc, T, cfg.width, cfg.height)
        assert len(ref) >= 3 and set(fast) >= set(ref)
        for iid, a in ref.items():
            # silhouette-edge pixel centres may go either way; interiors agree
            assert abs(fast[iid] - a) <= max(2, 0.02 * a), (iid, fast[iid], a)
            assert fast[iid] >= (labels == iid).sum()
        assert sum(fast.values()) == pytest.approx(sum(ref.values()), rel=0.01)


def test_kernels_match_numpy_references():
    from instseg_ros.data import _kernels

    T = look_at(np.array([0.3, -0.2, 0.5]), np.zeros(3), roll_deg=12.0)
    rays = _kernels.make_rays(K[0, 0], K[1, 1], K[0, 2], K[1, 2], T[:3, :3].copy(), T[:3, 3].copy(), W, H)
    o, d = render.camera_rays(K, T, W, H)
    np.testing.assert_allclose(rays[:, :3], o, atol=1e-6)
    np.testing.assert_allclose(rays[:, 3:], d, atol=1e-6)
    # gamma through the lookup table vs the power law: within one output level
    rng = np.random.default_rng(0)
    img = np.concatenate([rng.random((8, 8, 3)), rng.random((8, 8, 3)) * 1e-3, rng.random((8, 8, 3)) * 3],
                         0).astype(np.float32)
    out = _kernels.develop(img, np.ones(1, np.float32), np.ones(3, np.float32), np.float32(0.0),
                           _kernels.gamma_lut(1 / 2.2), np.float32(1.0), np.float32(0.0), np.float32(0.0),
                           np.uint64(0), np.zeros(3, np.float32))
    ref = np.clip(img.astype(np.float64) ** (1 / 2.2), 0, 1) * 255 + 0.5
    assert np.abs(out.astype(np.int64) - np.floor(ref)).max() <= 1
    # bounding boxes per label id
    lab = np.zeros((9, 11), np.int32)
    lab[2:5, 3:4] = 1
    lab[8, 10] = 2
    np.testing.assert_array_equal(_kernels.label_bboxes(lab, 4), [[0, 0, 11, 9], [3, 2, 1, 3], [10, 8, 1, 1],
                                                                  [0, 0, 0, 0]])


def test_raster_primary_visibility_equals_embree_on_generated_scenes():
    from dataclasses import replace

    from instseg_ros.data.scene import build_scene, rng_for, sample_camera, sample_intrinsics

    cfg = replace(SceneConfig(), width=200, height=150, max_objects=15)
    for index in range(3):
        rng = rng_for("test", 4, index)
        st = build_scene(rng, "test", cfg)
        scene = render.Scene(st.meshes)
        Kc = sample_intrinsics(rng, cfg.width, cfg.height)
        T = sample_camera(rng, st, cfg)
        a = render.cast(scene, Kc, T, cfg.width, cfg.height, "embree")
        b = render.cast(scene, Kc, T, cfg.width, cfg.height, "raster")
        same = a["geom"] == b["geom"]
        assert same.mean() > 0.999 and (a["instance"] == b["instance"]).mean() > 0.999
        hit = same & (a["depth"] > 0)
        np.testing.assert_allclose(b["depth"][hit], a["depth"][hit], atol=5e-5)
        np.testing.assert_allclose(b["normal"][hit], a["normal"][hit], atol=2e-3)
        assert (b["depth"][b["geom"] < 0] == 0).all()
    with pytest.raises(ValueError, match="method"):
        render.cast(scene, Kc, T, cfg.width, cfg.height, "opengl")


def test_fused_camera_development_matches_scipy_reference():
    from scipy.ndimage import gaussian_filter

    from instseg_ros.data import _kernels

    rng = np.random.default_rng(2)
    lin = (rng.random((30, 41, 3)) ** 2).astype(np.float32)
    lut = _kernels.gamma_lut(1 / 2.2)
    gain = np.array([1.1, 0.9, 1.3], np.float32)
    sigma = 0.8
    out = _kernels.develop(lin, render.gaussian_taps(sigma), gain, np.float32(0.0), lut, np.float32(0.8),
                           np.float32(0.0), np.float32(0.0), np.uint64(5), np.zeros(3, np.float32))
    ref = gaussian_filter(lin.astype(np.float64), sigma=(sigma, sigma, 0), mode="nearest", truncate=3.0) * gain
    ref = np.clip(ref, 0, None) ** (1 / 2.2)
    g = ref.mean(2, keepdims=True)
    ref = np.clip(g + (ref - g) * 0.8, 0, 1) * 255 + 0.5
    assert np.abs(out.astype(np.int64) - np.floor(ref)).max() <= 1


def test_block_shadow_rays_agree_with_per_pixel_shadow_rays():
    import open3d.core as o3c

    from instseg_ros.data import _kernels

    st, _ = _two_box_scene()
    scene = render.Scene(st.meshes)
    T = look_at(np.array([0.3, -0.25, 0.5]), np.array([0.0, 0.0, 0.03]))
    Wb, Hb = 160, 120
    Kb = np.array([[130.0, 0, 80], [0, 130.0, 60], [0, 0, 1]])
    buf = render.cast(scene, Kb, T, Wb, Hb, "raster")
    key = np.array([0.5, 0.3, 0.81], np.float32)
    key /= np.linalg.norm(key)
    geom, n, p = buf["geom"].reshape(-1), buf["normal"].reshape(-1, 3), buf["point"].reshape(-1, 3)
    rays, ray_of = _kernels.shadow_rays(geom, n, p, key, Hb, Wb)
    lit = (geom >= 0) & (n @ key > 0)
    assert ((ray_of >= 0) == lit).all() and len(rays) < 0.5 * lit.sum()  # about a quarter of the rays
    occ = scene.rc.test_occlusions(o3c.Tensor(rays), tnear=1e-4, tfar=10.0, nthreads=1).numpy()
    vis = _kernels.scatter_visibility(ray_of, occ, np.float32(0.3))
    # reference: one ray per lit pixel
    idx = np.nonzero(lit)[0]
    ref_rays = np.concatenate([p[idx] + n[idx] * 2e-3, np.broadcast_to(key, (len(idx), 3))], 1).astype(np.float32)
    ref_occ = scene.rc.test_occlusions(o3c.Tensor(ref_rays), tnear=1e-4, tfar=10.0, nthreads=1).numpy()
    ref = np.ones(len(geom), np.float32)
    ref[idx[ref_occ]] = 0.3
    assert ref_occ.sum() > 200  # the boxes cast shadows on the table in this view
    assert (vis == ref).mean() > 0.99


def test_counter_based_noise_is_unit_white_noise():
    from instseg_ros.data import _kernels

    a = _kernels.hash_normals(np.uint64(12345), 200_000).astype(np.float64)
    assert np.array_equal(a, _kernels.hash_normals(np.uint64(12345), 200_000))  # a function of (seed, index)
    b = _kernels.hash_normals(np.uint64(12346), 200_000).astype(np.float64)
    assert abs(a.mean()) < 0.01 and abs(a.std() - 1.0) < 0.01
    # sum of four uniforms (Irwin-Hall, n = 4): excess kurtosis -6 / (5 n) = -0.3, support +-sqrt(12)
    kurt = ((a - a.mean()) ** 4).mean() / a.var() ** 2 - 3.0
    assert abs(kurt + 0.3) < 0.05 and np.abs(a).max() <= np.sqrt(12.0) + 1e-6
    assert abs(np.corrcoef(a[1:], a[:-1])[0, 1]) < 0.01 and abs(np.corrcoef(a, b)[0, 1]) < 0.01
    # Irwin-Hall CDF at 0 and at one standard deviation: F(2 + 1 / sqrt(3)) = 1 - (t^4 - 4 (t - 1)^4) / 24 with
    # t = 2 - 1 / sqrt(3) (symmetry, the piece of F on [1, 2]) = 0.8346 (a Gaussian's would be 0.8413)
    t = 2 - 1 / np.sqrt(3)
    assert abs((a < 0).mean() - 0.5) < 0.005 and abs((a < 1).mean() - (1 - (t ** 4 - 4 * (t - 1) ** 4) / 24)) < 0.003


def test_sensor_noise_of_the_development_has_its_amplitudes_and_block_structure():
    from instseg_ros.data import _kernels

    H, W = 120, 160
    lin = np.full((H, W, 3), 0.5 ** 2.2, np.float32)  # mid grey after gamma: no clipping
    lut = _kernels.gamma_lut(1 / 2.2)
    args = (np.ones(1, np.float32), np.ones(3, np.float32), np.float32(0.0), lut, np.float32(1.0))
    lum, chroma = 0.02, 0.012
    clean = _kernels.develop(lin, *args, np.float32(0), np.float32(0), np.uint64(3), np.zeros(3, np.float32))
    noisy = _kernels.develop(lin, *args, np.float32(lum), np.float32(chroma), np.uint64(3), np.zeros(3, np.float32))
    other = _kernels.develop(lin, *args, np.float32(lum), np.float32(chroma), np.uint64(4), np.zeros(3, np.float32))
    assert not np.array_equal(noisy, other)
    n = (noisy.astype(np.float64) - clean) / 255.0
    total = np.sqrt(lum ** 2 + chroma ** 2)
    assert abs(n.mean()) < 0.002 and n.std() == pytest.approx(total, rel=0.05)
    # luminance noise is shared by the channels of a pixel, chroma noise by the 2x2 pixels of a block
    r = lambda p, q: np.corrcoef(p.ravel(), q.ravel())[0, 1]  # noqa: E731
    assert r(n[..., 0], n[..., 1]) == pytest.approx(lum ** 2 / total ** 2, abs=0.04)
    same_block = r(n[:, 0::2, 0], n[:, 1::2, 0])
    other_block = r(n[:, 1:-1:2, 0], n[:, 2::2, 0])
    assert same_block == pytest.approx(chroma ** 2 / total ** 2, abs=0.04) and abs(other_block) < 0.04


def test_shadow_penumbra_box_filter_matches_scipy():
    from scipy.ndimage import uniform_filter

    from instseg_ros.data import _kernels

    rng = np.random.default_rng(6)
    img = (rng.random((37, 53)) < 0.3).astype(np.float32) * 0.7 + 0.3
    for size in (1, 3, 5, 11, 61):  # 61: wider than the image is tall (clamped reads on both sides)
        ref = uniform_filter(uniform_filter(img.astype(np.float64), size, mode="nearest"), size, mode="nearest")
        np.testing.assert_allclose(_kernels.box_blur_twice(img, size), ref, atol=1e-5)
