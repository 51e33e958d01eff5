"""TsdfMap: fusing rendered views of known boxes, input validation, workspace crop, block budget."""
import numpy as np
import pytest

from instseg_ros.core.geometry import backproject
from instseg_ros.data.mesh_render import box_mesh, intrinsics, look_at, render
from instseg_ros.mapping import TsdfConfig, TsdfMap, snap_to_voxels
from instseg_ros.mapping.tsdf import SNAP_LIFT_CELLS

W, H = 320, 240
K = intrinsics(W, H)
BOX_C = np.array([0.0, 0.0, 0.04])
BOX_S = np.array([0.10, 0.08, 0.06])


def _views(n=8, radius=0.35, height=0.3):
    return [look_at((radius * np.cos(a), radius * np.sin(a), height), (0, 0, 0.03 * height / 0.3))
            for a in np.linspace(0, 2 * np.pi, n, endpoint=False)]


def _box_distance(p, c, s):
    """Unsigned distance of points to the surface of an axis-aligned box (reference geometry)."""
    q = np.abs(p - c) - s / 2
    outside = np.linalg.norm(np.maximum(q, 0), axis=1)
    inside = np.minimum(q.max(axis=1), 0)
    return np.abs(outside + inside)


def _face_samples(c, s, step=0.004):
    """Points on the top and four side faces of the box (the faces the cameras above can see)."""
    lo, hi = c - s / 2, c + s / 2
    pts = []

    def u(a, b):
        return np.arange(a + step / 2, b, step)

    X, Y = np.meshgrid(u(lo[0], hi[0]), u(lo[1], hi[1]), indexing="ij")
    pts.append(np.stack([X.ravel(), Y.ravel(), np.full(X.size, hi[2])], 1))
    for ax in (0, 1):
        other = 1 - ax
        A, Z = np.meshgrid(u(lo[other], hi[other]), u(lo[2] + 0.01, hi[2]), indexing="ij")
        for v in (lo[ax], hi[ax]):
            p = np.zeros((A.size, 3))
            p[:, ax] = v
            p[:, other] = A.ravel()
            p[:, 2] = Z.ravel()
            pts.append(p)
    return np.concatenate(pts)


@pytest.mark.parametrize("voxel, centre, size, radius, height", [
    (0.005, BOX_C, BOX_S, 0.35, 0.3),                                  # bin object, 5 mm
    (0.02, np.array([0, 0, 0.15]), np.array([0.5, 0.4, 0.3]), 1.5, 1.2),  # room-scale box, 2 cm
])
def test_fused_box_surface_within_one_voxel(voxel, centre, size, radius, height):
    BOX_C, BOX_S = centre, size
    box = box_mesh(BOX_C, BOX_S, (200, 40, 40))
    m = TsdfMap(TsdfConfig(voxel_size=voxel))
    for T in _views(8, radius, height):
        d, rgb, _ = render([box], K, T, W, H)
        assert m.integrate(d, rgb, K, T) == int((d > 0).sum())
    sv = m.surface_voxels()
    assert len(sv) > 50
    # accuracy: surface voxels lie within one voxel of the true surface; the few exceptions are the
    # TSDF's rounding of the box edges, still inside one voxel diagonal
    dist = _box_distance(sv.points.astype(float), BOX_C, BOX_S)
    assert np.mean(dist <= voxel) >= 0.99
    assert dist.max() <= np.sqrt(3) * voxel
    # voxel indices agree with the points they summarise (up to the snapping lift of SNAP_LIFT_CELLS)
    lo = sv.coords * voxel
    tol = SNAP_LIFT_CELLS * voxel + 1e-6
    assert ((sv.points >= lo - tol) & (sv.points <= lo + voxel + 1e-6)).all()
    assert len(np.unique(sv.coords, axis=0)) == len(sv)
    # completeness: every visible face sample has a surface voxel within one voxel
    from scipy.spatial import cKDTree
    dist, _ = cKDTree(sv.points).query(_face_samples(BOX_C, BOX_S, 0.8 * voxel))
    assert np.mean(dist <= voxel) >= 0.99
    assert dist.max() <= np.sqrt(3) * voxel
    # colours and normals: the box's colour; top-face normals point up
    assert np.abs(sv.colors.astype(int) - [200, 40, 40]).max() <= 2
    top = np.abs(sv.points[:, 2] - (BOX_C[2] + BOX_S[2] / 2)) < voxel / 2
    top &= (np.abs(sv.points[:, :2] - BOX_C[:2]) < BOX_S[:2] / 2 - 2 * voxel).all(1)
    assert top.sum() > 0 and (sv.normals[top, 2] > 0.9).all()


def test_rejects_bad_poses_and_empty_depth():
    m = TsdfMap()
    d = np.full((H, W), 0.5, np.float32)
    rgb = np.zeros((H, W, 3), np.uint8)
    T = np.eye(4)
    bad = [np.diag([2.0, 2.0, 2.0, 1.0]), np.full((4, 4), np.nan), np.eye(3)]
    skew = np.eye(4)
    skew[0, 1] = 0.3
    bad.append(skew)
    for B in bad:
        with pytest.raises(ValueError):
            m.integrate(d, rgb, K, B)
    with pytest.raises(ValueError, match="no valid"):
        m.integrate(np.zeros((H, W), np.float32), rgb, K, T)
    with pytest.raises(ValueError, match="no valid"):
        m.integrate(np.full((H, W), np.nan, np.float32), rgb, K, T)
    with pytest.raises(ValueError):
        m.integrate(d, rgb[:, :10], K, T)
    with pytest.raises(ValueError):
        m.integrate(d, rgb, np.zeros((3, 3)), T)
    assert m.frames_integrated == 0 and m.num_blocks == 0
    with pytest.raises(ValueError):
        TsdfConfig(voxel_size=0)
    with pytest.raises(ValueError):
        TsdfConfig(workspace_min=(0, 0, 0), workspace_max=(1, -1, 1))


def test_workspace_box_drops_depth_outside():
    inside = box_mesh((0, 0, 0.03), (0.06, 0.06, 0.06), (200, 40, 40))
    outside = box_mesh((0.2, 0, 0.03), (0.06, 0.06, 0.06), (40, 200, 40))
    cfg = TsdfConfig(voxel_size=0.005, workspace_min=(-0.1, -0.1, -0.01), workspace_max=(0.1, 0.1, 0.2))
    m, full = TsdfMap(cfg), TsdfMap(TsdfConfig(voxel_size=0.005))
    for T in _views(6, 0.5, 0.4):
        d, rgb, _ = render([inside, outside], K, T, W, H)
        m.integrate(d, rgb, K, T)
        full.integrate(d, rgb, K, T)
    sv, sv_full = m.surface_voxels(), full.surface_voxels()
    assert (sv_full.points[:, 0] > 0.15).sum() > 100         # the outside box is there without the crop
    assert (sv.points[:, 0] < 0.1 + 0.005).all()              # and absent with it
    assert (sv.points[:, 0] > -0.04).all() and len(sv) > 100
    assert m.num_blocks < full.num_blocks


def test_block_budget_bounds_memory():
    box = box_mesh(BOX_C, BOX_S)
    full = TsdfMap(TsdfConfig(voxel_size=0.005))
    m = TsdfMap(TsdfConfig(voxel_size=0.005, max_blocks=12))
    for T in _views(4):
        d, rgb, _ = render([box], K, T, W, H)
        m.integrate(d, rgb, K, T)
        full.integrate(d, rgb, K, T)
    assert full.num_blocks > 12
    assert m.num_blocks == 12
    assert m.blocks_dropped > 0


def test_snap_to_voxels_averages_per_cell():
    pts = np.array([[0.001, 0.001, 0.001], [0.003, 0.003, 0.003], [0.011, 0, 0]])
    col = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    nrm = np.array([[0, 0, 1.0], [0, 0, 1.0], [1.0, 0, 0]])
    sv = snap_to_voxels(pts, col, nrm, 0.005)
    assert sv.coords.tolist() == [[0, 0, 0], [2, 0, 0]]
    np.testing.assert_allclose(sv.points[0], [0.002, 0.002, 0.002], atol=1e-7)
    assert sv.colors[0].tolist() == [128, 128, 0]



def test_points_on_voxel_edges_snap_to_the_voxel_they_start_from():
    # Open3D's iso-surface points lie on the edge from voxel (x, y, z) towards +x, +y or +z: two coordinates
    # are exact multiples of the voxel size. Rounded to float32 some fall a hair below the multiple; each must
    # still land in cell (x, y, z) (by hand: 0.005 * 3 in float32 is 0.0149999997, / 0.005 = 2.99999994).
    vs = 0.005
    xs = np.arange(-40, 40)
    pts = np.stack([(xs + 0.37) * vs, xs * vs, (xs + 5) * vs], 1).astype(np.float32)
    assert (np.floor(pts.astype(np.float64) / vs)[:, 1] != xs).any()  # the plain floor does move some
    sv = snap_to_voxels(pts, np.zeros_like(pts), np.tile([0, 0, 1.0], (len(xs), 1)), vs)
    assert sorted(map(tuple, sv.coords.tolist())) == sorted((int(x), int(x), int(x) + 5) for x in xs)


def test_one_view_of_a_plane_gives_one_closed_sheet_of_surface_voxels():
    """A table top 2.3 mm over a voxel plane, one noise-free oblique view: the surface voxels are the cells the
    visible plane passes through (all in layer z = 0), one 26-connected piece; before the snapping fix a third
    of them were missing and the sheet fell into hundreds of pieces."""
    from scipy import ndimage

    K = intrinsics(320, 240)
    T = look_at([0.35, 0.0, 0.45], [0.0, 0.0, 0.0])
    depth, rgb, _ = render([box_mesh([0, 0, -0.0077], [0.6, 0.5, 0.02])], K, T, 320, 240)
    m = TsdfMap(TsdfConfig(voxel_size=0.005, device="cpu"))
    m.integrate(depth, rgb, K, T)
    sv = m.surface_voxels()
    seen = backproject(depth, K).reshape(-1, 3)
    seen = seen[seen[:, 2] > 0] @ T[:3, :3].T + T[:3, 3]
    expected = {tuple(c) for c in np.floor(seen / 0.005).astype(int)}
    got = {tuple(c) for c in sv.coords.tolist()}
    assert {c[2] for c in got} == {0}
    assert len(expected & got) >= 0.95 * len(expected) and len(got - expected) <= 0.01 * len(got)
    c = sv.coords - sv.coords.min(0)
    grid = np.zeros(c.max(0) + 1, bool)
    grid[tuple(c.T)] = True
    _, pieces = ndimage.label(grid, structure=np.ones((3, 3, 3)))
    assert pieces == 1


def test_device_selection():
    import open3d as o3d
    import torch

    assert str(TsdfMap(TsdfConfig(device="cpu")).device) == "CPU:0"
    cuda = torch.cuda.is_available() and o3d.core.cuda.is_available()
    assert str(TsdfMap(TsdfConfig(device="auto")).device) == ("CUDA:0" if cuda else "CPU:0")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError):
            TsdfMap(TsdfConfig(device="cuda"))


def test_select_filters_every_field_and_keeps_extra():
    from instseg_ros.mapping import SurfaceVoxels

    n = 5
    coords = np.arange(3 * n, dtype=np.int32).reshape(n, 3)
    sv = SurfaceVoxels(coords, coords.astype(np.float32) * 0.005, (coords * 10).astype(np.uint8),
                       np.tile(np.float32([0, 0, 1]), (n, 1)), 0.005,
                       extra={"instance": np.array([7, 7, 0, 9, 9]), "rgb_gt": np.arange(2 * n).reshape(n, 2)})
    out = sv.select(np.array([True, False, False, True, True]))
    # rows 0, 3, 4 of every field, in order
    assert out.coords.tolist() == [[0, 1, 2], [9, 10, 11], [12, 13, 14]]
    np.testing.assert_array_equal(out.points, coords[[0, 3, 4]].astype(np.float32) * 0.005)
    assert out.colors.tolist() == [[0, 10, 20], [90, 100, 110], [120, 130, 140]]
    assert out.normals.shape == (3, 3) and out.voxel_size == 0.005
    assert out.extra["instance"].tolist() == [7, 9, 9]
    assert out.extra["rgb_gt"].tolist() == [[0, 1], [6, 7], [8, 9]]
    # integer indices pick in the order given; the original is untouched
    assert sv.select(np.array([4, 1])).extra["instance"].tolist() == [9, 7]
    assert len(sv) == 5 and sv.extra["instance"].tolist() == [7, 7, 0, 9, 9]
    with pytest.raises(ValueError, match="bool mask"):
        sv.select(np.ones(4, bool))
    sv.extra["bad"] = np.zeros(4)
    with pytest.raises(ValueError, match="'bad'"):
        sv.select(np.ones(5, bool))
