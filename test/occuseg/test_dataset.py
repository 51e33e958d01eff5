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
