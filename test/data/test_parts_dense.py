"""Multi-part objects (one instance, several materials) and dense tabletops."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from instseg_ros.data import render
from instseg_ros.data.scene import (
    DENSE_CLEARANCE,
    SceneConfig,
    SceneState,
    _pack,
    build_scene,
    footprints_overlap,
    frame_instances,
    look_at,
    object_materials,
    rng_for,
    sample_camera,
    voxel_ground_truth,
)
from instseg_ros.data.shapes import (
    FAMILY_WEIGHTS,
    Part,
    Shape,
    _merge_parts,
    _transform,
    box_mesh,
    make_box_shape,
    sample_shape,
    shape_split,
)

W, H = 96, 72
K = np.array([[80.0, 0, 47.3], [0, 80.0, 35.8], [0, 0, 1]])
RED = render.Material(np.array([[0.8, 0.05, 0.05], [0.8, 0.05, 0.05]]), specular=0.0)
BLUE = render.Material(np.array([[0.05, 0.05, 0.8], [0.05, 0.05, 0.8]]), specular=0.0)
GREY = render.Material(np.array([[0.4, 0.4, 0.4], [0.4, 0.4, 0.4]]))

# object 1: a body box (half 5 x 4 x 3 cm) under a lid box (half 5.3 x 4.3 x 1.2 cm) of another colour, 2 mm
# overlap; its body frame origin sits at world (0, 0, 0.04), so the body spans z 0..0.06 and the lid 0.058..0.082
BODY = (np.array([0.05, 0.04, 0.03]), np.array([0.0, 0.0, -0.01]))
LID = (np.array([0.053, 0.043, 0.012]), np.array([0.0, 0.0, 0.03]))
OBJ1_T = np.array([0.0, 0.0, 0.04])
# object 2: a plain box beside it (half 3 x 3 x 5 cm at (0.09, 0.02, 0.05)), partly in front in the views below
BOX2 = (np.array([0.03, 0.03, 0.05]), np.array([0.09, 0.02, 0.05]))


def _slab(o, d, t, half):
    """Ray parameter of the first hit of rays (o, d) with the axis-aligned box (centre t, half extents); inf = miss."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (t - half - o) / d
        t2 = (t + half - o) / d
    tn = np.nanmax(np.minimum(t1, t2), axis=1)
    tf = np.nanmin(np.maximum(t1, t2), axis=1)
    return np.where((tn <= tf) & (tf > 0), np.maximum(tn, 0), np.inf)


def _two_part_shape() -> Shape:
    v, f, n, tp = _merge_parts([_transform(box_mesh(h), np.eye(3), c) for h, c in (BODY, LID)], [0, 1])
    return Shape("box", v, f, n, [Part("box", np.array([0.053, 0.043, 0.042]))], {"dims": [0.106, 0.086, 0.084]},
                 tri_part=tp, part_roles=("body", "lid"))


def _scene():
    s1 = _two_part_shape()
    T1 = np.eye(4)
    T1[:3, 3] = OBJ1_T
    s2 = make_box_shape(2 * BOX2[0])
    T2 = np.eye(4)
    T2[:3, 3] = BOX2[1]
    meshes = render.object_meshes(s1, T1, 1, [RED, BLUE]) + render.object_meshes(s2, T2, 2, [GREY])
    table = make_box_shape([1.0, 1.0, 0.02])
    Tt = np.eye(4)
    Tt[2, 3] = -0.01
    meshes.append(render.posed_mesh(table, Tt, 0, GREY))
    return SceneState(meshes, [s1, s2], [T1, T2], "table", np.zeros((2, 2)), np.zeros((2, 3)), {})


def _analytic(T):
    """Per ray: first-hit parameter on body, lid, box 2, table (world boxes)."""
    o, d = render.camera_rays(K, T, W, H)
    o, d = o.astype(np.float64), d.astype(np.float64)
    boxes = [(BODY[0], BODY[1] + OBJ1_T), (LID[0], LID[1] + OBJ1_T), BOX2, (np.array([0.5, 0.5, 0.01]),
                                                                            np.array([0, 0, -0.01]))]
    return np.stack([_slab(o, d, c, h) for h, c in boxes], 1)


@pytest.mark.parametrize("method", ["raster", "embree"])
@pytest.mark.parametrize("eye", [(0.3, -0.25, 0.35), (-0.05, -0.3, 0.25)])
def test_object_of_two_coloured_parts_is_one_instance(method, eye):
    from instseg_ros.clusternet.targets import compute_targets
    from instseg_ros.core.geometry import backproject
    from instseg_ros.data.generate import _coco_anns

    st = _scene()
    assert [m.instance for m in st.meshes] == [1, 1, 2, 0] and [m.part for m in st.meshes[:2]] == [0, 1]
    scene = render.Scene(st.meshes)
    T = look_at(np.array(eye), np.array([0.03, 0.0, 0.04]), roll_deg=4.0)
    buf = render.cast(scene, K, T, W, H, method)
    labels = buf["instance"].astype(np.int32)
    hits = _analytic(T)
    first = np.argmin(hits, 1)
    ref = np.array([1, 1, 2, 0])[first]
    ref[~np.isfinite(hits.min(1))] = 0
    srt = np.sort(hits, 1)
    with np.errstate(invalid="ignore"):
        clear = (srt[:, 1] - srt[:, 0] > 1e-4) | ~np.isfinite(srt[:, 1])
    lab = labels.reshape(-1)
    assert (lab[clear] == ref[clear]).mean() > 0.995
    # both parts are visible, with their own geometry (and colour) but the one label
    body_px = (first == 0) & clear & (ref == 1)
    lid_px = (first == 1) & clear & (ref == 1)
    assert body_px.sum() > 40 and lid_px.sum() > 40
    geom = buf["geom"].reshape(-1)
    assert set(geom[body_px]) == {0} and set(geom[lid_px]) == {1}
    light = render.Lighting(np.array([0.3, -0.2, 0.9]) / np.linalg.norm([0.3, -0.2, 0.9]), np.ones(3), np.array(
        [0.0, 0.0, 1.0]), np.zeros(3), np.full(3, 0.3), shadows=False)
    rgb = render.shade(scene, buf, light, T[:3, 3], np.random.default_rng(0), render.texture_bank()).reshape(-1, 3)
    assert (rgb[body_px, 0] > 3 * rgb[body_px, 2]).all() and (rgb[lid_px, 2] > 3 * rgb[lid_px, 0]).all()

    # one instance record: visible = union of the parts' pixels, amodal = union of their silhouettes (the
    # object alone: rays that hit body or lid), checked against the analytic boxes and the exhaustive ray listing
    inst = {i["id"]: i for i in frame_instances(scene, st, labels, K, T, W, H)}
    assert sorted(inst) == [1, 2]
    assert inst[1]["visible_px"] == int((labels == 1).sum())
    sil = np.isfinite(hits[:, :2]).any(1)
    assert abs(inst[1]["amodal_px"] - int(sil.sum())) <= max(3, 0.02 * sil.sum())
    ray = render.amodal_counts_raycast(scene, K, T, W, H)
    assert sorted(ray) == [1, 2] and abs(ray[1] - int(sil.sum())) <= max(3, 0.02 * sil.sum())
    assert inst[1]["occlusion"] == pytest.approx(inst[1]["visible_px"] / inst[1]["amodal_px"])

    # COCO: one annotation for the object, its mask the union of both parts
    anns = {a["instance_id"]: a for a in _coco_anns(labels, list(inst.values()))}
    assert sorted(anns) == [1, 2] and anns[1]["area"] == int((labels == 1).sum())

    # ClusterNet targets: one object whose centroid is the mean of all its (both parts') points
    depth = buf["depth"].astype(np.float32)
    tg = compute_targets(labels, depth, K)
    assert tg.ids.tolist() == [1, 2]
    pts = backproject(depth, K)[labels == 1]
    np.testing.assert_allclose(tg.features[0, :3], pts.mean(0), atol=1e-5)

    # voxel GT: the lid's and the body's voxels carry the same instance id
    fr = {"depth_gt": depth, "labels": labels, "K": K, "T_world_camera": T}
    coords, vinst, sem = voxel_ground_truth([fr], np.array([[-0.3, -0.3, -0.02], [0.3, 0.3, 0.2]]), 0.01,
                                            {1: 1, 2: 1})
    assert set(np.unique(vinst).tolist()) <= {0, 1, 2}
    obj1 = coords[vinst == 1]
    assert (obj1[:, 2] > 0.065).any() and (obj1[:, 2] < 0.05).any()  # lid and body voxels, one id


def test_object_meshes_split_triangles_by_part():
    rng = np.random.default_rng(2)
    s = next(x for x in (sample_shape(rng, "train", "irregular", multipart=1.0) for _ in range(60))
             if x.params["kind"] == "bottle")
    assert s.n_parts == 2 and s.part_roles == ("body", "cap")
    T = np.eye(4)
    T[:3, :3] = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])
    T[:3, 3] = [0.1, 0.2, 0.3]
    ms = render.object_meshes(s, T, 7, [RED, BLUE])
    assert [m.instance for m in ms] == [7, 7] and [m.part for m in ms] == [0, 1]
    assert sum(len(m.triangles) for m in ms) == len(s.triangles)
    one = render.posed_mesh(s, T, 7, RED)
    for k, m in enumerate(ms):  # same posed triangles, in the same order
        np.testing.assert_allclose(m.vertices[m.triangles], one.vertices[s.triangles[s.tri_part == k]])
        np.testing.assert_allclose(m.normals[m.triangles], one.normals[s.triangles[s.tri_part == k]])
    assert len(render.object_meshes(s, T, 7, [RED])) == 1
    with pytest.raises(ValueError, match="materials"):
        render.object_meshes(s, T, 7, [RED, BLUE, GREY])
    mrng = np.random.default_rng(0)
    dist = []
    for _ in range(40):  # the cap's colour differs clearly from the body's
        mats = object_materials(mrng, 0, np.zeros(0, bool), s)
        assert len(mats) == 2
        dist.append(np.linalg.norm(mats[1].colors[0] - mats[0].colors[0]))
    assert np.mean(np.array(dist) >= 0.08) >= 0.95
    assert len(object_materials(mrng, 0, np.zeros(0, bool), s, multipart=False)) == 1


def test_multipart_share_roles_and_splits():
    rng = np.random.default_rng(4)
    shapes = [sample_shape(rng, "train", multipart=SceneConfig().multipart_prob) for _ in range(500)]
    share = np.mean([s.n_parts > 1 for s in shapes])
    assert 0.27 <= share <= 0.45  # ~35 % by design (0.55 x the ~2/3 of kinds that have parts)
    for s in shapes:
        if s.tri_part is not None:
            assert s.tri_part.shape == (len(s.triangles),) and 2 <= s.n_parts <= 3
            assert len(s.part_roles) == s.n_parts and set(np.unique(s.tri_part)) == set(range(s.n_parts))
    assert sample_shape(rng, "train", "sphere", multipart=1.0).tri_part is None
    assert all(s.tri_part is None for s in (sample_shape(rng, "train") for _ in range(50)))  # default: none
    for split in ("val", "test"):  # held-out splits stay disjoint with parts and tools
        for s in (sample_shape(rng, split, "irregular", multipart=0.5) for _ in range(30)):
            assert shape_split(s) == split
    with pytest.raises(ValueError, match="multipart"):
        sample_shape(rng, "train", multipart=1.5)


@pytest.mark.parametrize("tool", ["drill", "spray", "hammer"])
def test_tools_are_primitive_compounds_that_rest_as_expected(tool):
    from instseg_ros.data.physics import Support, drop
    from instseg_ros.data.scene import upright_rotation

    rng = np.random.default_rng(11)
    found = []
    while len(found) < 3:
        s = sample_shape(rng, "train", "irregular", size_range=(0.12, 0.25), multipart=1.0)
        if s.params["kind"] == "tool" and s.params["tool"] == tool:
            found.append(s)
    for s in found:
        assert 2 <= s.n_parts <= 3 and s.part_roles[0] == "body"  # the chuck / nozzle may share a colour
        assert all(p.kind in ("box", "cylinder") for p in s.parts) and 3 <= len(s.parts) <= 5
        assert 0.12 - 1e-9 <= s.extent <= 0.25 + 1e-9
        # the collision primitives cover the mesh: every vertex lies inside (or on) one of them
        inside = np.zeros(len(s.vertices), bool)
        for p in s.parts:
            from instseg_ros.core.geometry import quaternion_to_rotation

            loc = (s.vertices - p.pos) @ np.asarray(quaternion_to_rotation(p.quat))
            if p.kind == "box":
                inside |= (np.abs(loc) <= p.size + 1e-6).all(1)
            else:
                inside |= (np.linalg.norm(loc[:, :2], axis=1) <= p.size[0] + 1e-6) & (
                    np.abs(loc[:, 2]) <= p.size[1] / 2 + 1e-6)
        assert inside.all()
    s = found[0]
    assert s.up_axis == (2 if tool in ("drill", "spray") else -1)
    if tool in ("drill", "spray"):  # put down upright, it keeps standing
        T = np.eye(4)
        T[:3, :3] = upright_rotation(s, np.random.default_rng(0))
        T[2, 3] = -(s.vertices @ T[:3, :3].T)[:, 2].min() + 0.002
        table = [(np.array([0.0, 0.0, -0.01]), np.array([0.5, 0.5, 0.01]))]
        (P,), _ = drop([s], Support(table), np.array([[-0.1, -0.1], [0.1, 0.1]]), np.random.default_rng(1),
                       spawn=[T])
        assert P[:3, 2] @ np.array([0, 0, 1.0]) > 0.95


def test_footprint_separating_axis_test_by_hand():
    from instseg_ros.data.scene import _edge_normals

    sq = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])
    n = _edge_normals(sq)
    np.testing.assert_allclose(np.abs(n).sum(1), 1.0)
    # unit squares 1.3 apart: their edges are 0.3 apart
    assert not footprints_overlap(sq, n, sq + [1.3, 0], n, 0.2)
    assert footprints_overlap(sq, n, sq + [1.3, 0], n, 0.4)
    assert footprints_overlap(sq, n, sq + [0.9, 0.9], n, 0.0)  # corners overlap by 0.1 x 0.1
    # a diamond |x - c| + |y - c| = 0.5 with c = 0.8 beside the square's corner (0.5, 0.5): its lower-left edge
    # x + y = 1.1 faces the corner's x + y = 1, so along (1, 1) / sqrt2 they are 0.1 / sqrt2 = 0.0707 apart,
    # while along x and y (the square's normals) their projections overlap
    dia = np.array([[0.5, 0.0], [0.0, 0.5], [-0.5, 0.0], [0.0, -0.5]])
    nd = _edge_normals(dia)
    c = np.array([0.8, 0.8])
    assert not footprints_overlap(sq, n, dia + c, nd, 0.07)
    assert footprints_overlap(sq, n, dia + c, nd, 0.072)


def test_dense_pack_is_disjoint_and_touching():
    cfg = SceneConfig()
    rng = np.random.default_rng(8)
    shapes = [sample_shape(rng, "train", size_range=cfg.arranged_sizes, multipart=0.5) for _ in range(14)]
    poses, region, centre, radius = _pack(rng, shapes, 0.0, cfg)
    from instseg_ros.data.scene import _edge_normals, _hull2d

    feet = []
    for s, T in zip(shapes, poses):
        v = s.vertices @ T[:3, :3].T + T[:3, 3]
        assert v[:, 2].min() == pytest.approx(0.004)  # put down 4 mm above the table
        f = _hull2d(v[:, :2])
        feet.append((f, _edge_normals(f)))
    allp = np.concatenate([f for f, _ in feet])
    np.testing.assert_allclose(region, [allp.min(0), allp.max(0)], atol=1e-9)
    assert radius == pytest.approx(np.linalg.norm(allp - centre, axis=1).max())
    for i, (fi, ni) in enumerate(feet):
        others = [j for j in range(len(feet)) if j != i]
        assert not any(footprints_overlap(fi, ni, *feet[j], 0.0) for j in others)
        if i > 0:  # each object stopped against the cluster: within its gap (<= 3 cm) + 1 mm of a neighbour
            assert any(footprints_overlap(fi, ni, *feet[j], cfg.dense_gap[1] + 0.001) for j in others)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_dense_tabletop_scene_and_camera(index):
    cfg = replace(SceneConfig(), dense_prob=1.0, bin_prob=0.0)
    rng = rng_for("train", 21, index)
    st = build_scene(rng, "train", cfg)
    assert st.kind == "table" and st.info["dense"] and 8 <= st.info["n_dropped"] <= 20
    assert st.info["n_objects"] == st.info["n_dropped"]  # the table is sized around the cluster: none falls off
    pos = np.array([T[:3, 3] for T in st.poses])
    rad = np.array([s.extent / 2 for s in st.shapes])
    for _ in range(5):
        T = sample_camera(rng, st, cfg)
        eye, fwd = T[:3, 3], T[:3, 2]
        # the optical axis passes within 0.1 m (x, y) of the cluster centre, 0-6 cm above the table
        tgt_t = -eye[2] / fwd[2]  # distance along the axis to the table plane (>= the distance to the target)
        assert tgt_t >= 0.35 and np.linalg.norm(eye[:2] + tgt_t * fwd[:2] - st.info["dense_centre"]) < 0.2
        el = np.degrees(np.arcsin(-fwd[2]))
        assert 29.9 <= el <= 70.1
        assert (np.linalg.norm(pos - eye, axis=1) - rad).min() >= DENSE_CLEARANCE - 0.03
    cfg0 = replace(cfg, dense_prob=0.0)
    assert not build_scene(rng_for("train", 21, index), "train", cfg0).info["dense"]


def test_tools_are_a_kind_of_the_irregular_family():
    from instseg_ros.data.io import FAMILIES

    rng = np.random.default_rng(9)
    tools = [s for s in (sample_shape(rng, "train", "irregular") for _ in range(80)) if s.params["kind"] == "tool"]
    assert 4 <= len(tools) <= 24  # 15 % of irregular shapes
    assert all(s.family_id == FAMILIES.index("irregular") + 1 for s in tools)
    # the default mix draws the first nine families only; thin and hollow were appended after them, so the
    # class ids of data written before stay valid
    assert set(FAMILY_WEIGHTS) | {"thin", "hollow"} == set(FAMILIES) and FAMILIES[-2:] == ("thin", "hollow")


def test_footprint_kernel_matches_numpy_separating_axis_test():
    from instseg_ros.data import _kernels
    from instseg_ros.data.scene import _edge_normals, _hull2d

    rng = np.random.default_rng(3)
    agree = n_hit = 0
    for _ in range(300):
        a = _hull2d(rng.normal(size=(8, 2)) * rng.uniform(0.02, 0.1, 2))
        b = _hull2d(rng.normal(size=(8, 2)) * rng.uniform(0.02, 0.1, 2))
        na, nb = _edge_normals(a), _edge_normals(b)
        p, q = rng.uniform(-0.15, 0.15, 2), rng.uniform(-0.05, 0.05, 2)
        gap = float(rng.uniform(0, 0.03))
        ref = footprints_overlap(a + p, na, b + q, nb, gap)
        got = _kernels.footprint_hits(a, na, p[0], p[1], b + q, nb, np.array([0, len(b)], np.int64), q[None],
                                      np.array([np.linalg.norm(b, axis=1).max()]),
                                      float(np.linalg.norm(a, axis=1).max()), gap)
        agree += got == ref
        n_hit += ref
    assert agree == 300 and 30 < n_hit < 270


def test_amodal_silhouettes_from_front_faces_equal_all_faces():
    """Object meshes (parts, tools, capped mug handles included) are closed and wound outward, so rasterising
    only their camera-facing triangles gives exactly the silhouettes of all triangles."""
    from instseg_ros.data import _kernels
    from instseg_ros.data.scene import sample_intrinsics

    cfg = replace(SceneConfig(), width=160, height=120, multipart_prob=1.0, bin_prob=0.3)
    n_views = 0
    for index in range(4):
        rng = rng_for("val", 17, index)
        st = build_scene(rng, "val", cfg)
        scene = render.Scene(st.meshes)
        for _ in range(3):
            Kc = sample_intrinsics(rng, cfg.width, cfg.height)
            T = sample_camera(rng, st, cfg)
            T_cw = np.linalg.inv(T)
            pc = scene.obj_vertices @ T_cw[:3, :3].T + T_cw[:3, 3]
            if (pc[:, 2] <= 1e-3).any():
                continue
            uv = np.stack([Kc[0, 0] * pc[:, 0] / pc[:, 2] + Kc[0, 2], Kc[1, 1] * pc[:, 1] / pc[:, 2] + Kc[1, 2]], 1)
            n = len(scene.obj_instances)
            args = (uv, scene.obj_tris, scene.obj_tri_obj, n, np.zeros(0, np.int64), np.zeros(n + 1, np.int64),
                    cfg.height, cfg.width)
            np.testing.assert_array_equal(_kernels.amodal_raster(*args), _kernels.amodal_raster(*args, pc))
            n_views += 1
    assert n_views >= 8


def test_cli_dense_and_multipart_options(tmp_path):
    import json

    from instseg_ros.data import generate, io

    argv = ["--split", "val", "--scenes", "4", "--views-per-scene", "1", "--out", str(tmp_path), "--seed", "3",
            "--workers", "1", "--width", "160", "--height", "120", "--max-objects", "10", "--no-progress",
            "--dense-prob", "1", "--multipart-prob", "1"]
    assert generate.main(argv) == 0
    kinds = []
    for p in io.list_frames(tmp_path, "val"):
        with open(p + ".json") as f:
            meta = json.load(f)
        kinds.append((meta["kind"], meta["dense"]))
        assert meta["dense"] == (meta["kind"] == "table")  # every table scene is dense, bins never
    assert len(kinds) == 4 and ("table", True) in kinds
    with pytest.raises(ValueError, match="dense-prob"):
        generate.main(argv[:-4] + ["--dense-prob", "1.5"])
