"""Training augmentation keeps the voxel map intact: same voxels (moved rigidly), same instance sizes."""
import numpy as np

from instseg_ros.mapping.tsdf import SurfaceVoxels
from instseg_ros.occuseg.dataset import Scene, augment

VS = 0.005


def _scene(rng, n=3000):
    pts = rng.uniform(-0.2, 0.2, (n, 3)).astype(np.float32)
    pts[:, 2] = np.abs(pts[:, 2])
    cells, first = np.unique(np.floor(pts / VS).astype(np.int32), axis=0, return_index=True)
    pts = pts[first]
    nrm = rng.normal(size=pts.shape).astype(np.float32)
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    col = rng.integers(0, 256, pts.shape).astype(np.uint8)
    ins = rng.integers(0, 6, len(pts)).astype(np.int64)
    return Scene(SurfaceVoxels(cells, pts, col, nrm, VS), ins % 3, ins, "s")


def test_augment_keeps_every_voxel_and_instance_size():
    rng = np.random.default_rng(0)
    s = _scene(rng)
    seen = set()
    for _ in range(40):
        a = augment(s, rng)
        assert len(a.sv) == len(s.sv)
        np.testing.assert_array_equal(a.instance, s.instance)     # voxel i stays voxel i
        np.testing.assert_array_equal(a.semantic, s.semantic)
        # coordinates are the cells of the moved points, all distinct
        np.testing.assert_array_equal(a.sv.coords, np.floor(a.sv.points / VS).astype(np.int32))
        assert len(np.unique(a.sv.coords, axis=0)) == len(s.sv)
        # a rigid map fixing z: distances to voxel 0, heights and normal/point consistency are kept
        np.testing.assert_allclose(np.linalg.norm(a.sv.points - a.sv.points[0], axis=1),
                                   np.linalg.norm(s.sv.points - s.sv.points[0], axis=1), atol=1e-6)
        np.testing.assert_allclose(a.sv.points[:, 2], s.sv.points[:, 2], atol=1e-7)
        np.testing.assert_allclose(np.einsum("ij,ij->i", a.sv.points, a.sv.normals),
                                   np.einsum("ij,ij->i", s.sv.points, s.sv.normals), atol=1e-5)
        # which of the 8 symmetries: image of the x axis and handedness
        M = np.linalg.lstsq(s.sv.points[:, :2].astype(np.float64), a.sv.points[:, :2].astype(np.float64),
                            rcond=None)[0]
        np.testing.assert_allclose(M, np.round(M), atol=1e-5)
        seen.add(tuple(np.round(M).astype(int).ravel()))
    assert len(seen) == 8


def test_grasp_labels_follow_each_objects_family_and_kind():
    import pytest

    from instseg_ros.data.io import GRASP_CLASSES, grasp_class
    from instseg_ros.occuseg.dataset import IGNORE, grasp_labels

    # by hand: 1 = a mug of the irregular family (hollow), 2 = a box, 3 = a bottle (irregular, round),
    # 4 = a knife (thin family), 5 = an irregular blob from data written before kinds existed (other)
    meta = {"families": {"1": 9, "2": 1, "3": 9, "4": 10, "5": 9},
            "kinds": {"1": "mug", "2": "box", "3": "bottle", "4": "knife"}}
    ins = np.array([0, 1, 1, 2, 3, 4, 5, 0])
    sem = np.array([0, 9, 9, 1, 9, 10, 9, IGNORE])
    got = grasp_labels(sem, ins, meta)
    names = [GRASP_CLASSES[g] if g >= 0 else "ignore" for g in got]
    assert names == ["background", "hollow", "hollow", "box", "round", "thin", "other", "ignore"]
    assert grasp_class("cylinder") == GRASP_CLASSES.index("round") and grasp_class("hollow", "bowl") == 4
    with pytest.raises(ValueError, match="no family"):
        grasp_labels(sem, np.array([0, 7, 0, 0, 0, 0, 0, 0]), meta)
    with pytest.raises(ValueError, match="unknown shape family"):
        grasp_class("blob")


def test_background_recolouring_repaints_only_the_background_and_keeps_its_shading():
    from instseg_ros.occuseg.dataset import recolor_background

    rng = np.random.default_rng(0)
    s = _scene(rng, 2000)
    bg = s.semantic == 0
    out = recolor_background(s.sv.colors, bg, np.random.default_rng(3))
    assert (out[~bg] == s.sv.colors[~bg]).all() and (out[bg] != s.sv.colors[bg]).any()
    # one paint times each voxel's relative luminance: all repainted voxels share one chromaticity, and
    # their brightness orders as the original luminance does (up to rounding and 255 clipping)
    lum = s.sv.colors[bg].astype(float) @ [0.299, 0.587, 0.114]
    o = out[bg].astype(float)
    unclipped = (o < 255).all(1) & (o.sum(1) > 30)
    chroma = o[unclipped] / o[unclipped].sum(1, keepdims=True)
    assert np.abs(chroma - np.median(chroma, 0)).max() < 0.04
    order = np.argsort(lum[unclipped])
    assert np.corrcoef(lum[unclipped][order], o[unclipped].sum(1)[order])[0, 1] > 0.99
    # augment draws it with the given probability only; at 0 the colours are what they were before
    a = augment(s, np.random.default_rng(5))
    b = augment(s, np.random.default_rng(5), bg_recolor_prob=0.0)
    assert (a.sv.colors == b.sv.colors).all()
    c = augment(s, np.random.default_rng(5), bg_recolor_prob=1.0)
    assert (c.sv.colors[~bg] == a.sv.colors[~bg]).all() and (c.sv.colors[bg] != a.sv.colors[bg]).any()
