"""Felzenszwalb-Huttenlocher supervoxels on constructed graphs and voxel surfaces with known segments."""
import numpy as np
import pytest

from instseg_ros.occuseg.supervoxels import SupervoxelConfig, felzenszwalb_graph, supervoxels, voxel_adjacency


def _same_partition(a, b):
    """True when labelings a and b induce the same partition."""
    pairs = np.unique(np.stack([a, b], 1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def test_fh_on_a_chain_by_hand():
    # chain 0-1-2-3-4 with weights .1 .1 5 .1, k = 1: the 5-edge exceeds Int + k/|C| of both sides
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 4]])
    w = np.array([0.1, 0.1, 5.0, 0.1])
    lab = felzenszwalb_graph(5, edges, w, k=1.0)
    assert lab.tolist() == [0, 0, 0, 1, 1]
    # min_size 3 forces the 2-vertex component into its neighbour
    assert felzenszwalb_graph(5, edges, w, k=1.0, min_size=3).tolist() == [0] * 5
    # a tiny k keeps only zero-difference... here every vertex apart (0.1 > 0.05/1)
    assert len(np.unique(felzenszwalb_graph(5, edges, w, k=0.05))) == 5


def test_fh_rejects_bad_input():
    with pytest.raises(ValueError):
        felzenszwalb_graph(3, np.array([[0, 5]]), np.array([1.0]), k=1.0)
    with pytest.raises(ValueError):
        felzenszwalb_graph(3, np.array([[0, 1]]), np.array([1.0, 2.0]), k=1.0)
    with pytest.raises(ValueError):
        felzenszwalb_graph(3, np.array([[0, 1]]), np.array([1.0]), k=0.0)


def test_voxel_adjacency_counts_26_neighbours():
    # a full 3x3x3 block: the centre voxel touches all 26 others
    c = np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3)
    e = voxel_adjacency(c)
    centre = int(np.flatnonzero((c == 1).all(1))[0])
    assert ((e == centre).any(1)).sum() == 26
    # brute-force reference: pairs with Chebyshev distance 1
    d = np.abs(c[:, None] - c[None]).max(-1)
    assert len(e) == (d == 1).sum() // 2
    assert (np.abs(c[e[:, 0]] - c[e[:, 1]]).max(1) == 1).all()
    with pytest.raises(ValueError):
        voxel_adjacency(np.array([[0, 0, 0], [0, 0, 0]]))


def _cube_surface(n):
    """Surface voxels of an n^3 cube with the normal (and id) of one face per voxel."""
    c = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3)
    on = (c == 0) | (c == n - 1)
    c = c[on.any(1)]
    on = on[on.any(1)]
    face = np.argmax(on, axis=1) * 2 + (c[np.arange(len(c)), np.argmax(on, axis=1)] == n - 1)
    normals = np.zeros((len(c), 3), np.float32)
    normals[np.arange(len(c)), face // 2] = np.where(face % 2 == 1, 1.0, -1.0)
    return c, normals, face


def test_cube_surface_splits_into_its_six_faces():
    coords, normals, face = _cube_surface(12)
    colors = np.full((len(coords), 3), 100, np.uint8)
    lab, edges = supervoxels(coords, normals, colors, SupervoxelConfig(k=0.4, min_size=5))
    assert len(np.unique(lab)) == 6
    assert _same_partition(lab, face)


def test_colour_boundary_on_a_plane():
    xs, ys = np.meshgrid(np.arange(20), np.arange(10), indexing="ij")
    coords = np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size, int)], 1)
    normals = np.tile([0, 0, 1.0], (len(coords), 1))
    colors = np.where((coords[:, 0] < 10)[:, None], [[220, 30, 30]], [[30, 30, 220]]).astype(np.uint8)
    lab, _ = supervoxels(coords, normals, colors, SupervoxelConfig(k=0.2, min_size=5, color_weight=1.0))
    assert _same_partition(lab, coords[:, 0] < 10)
    # colour ignored -> one segment
    lab2, _ = supervoxels(coords, normals, colors, SupervoxelConfig(k=0.2, min_size=5, color_weight=0.0))
    assert len(np.unique(lab2)) == 1


def test_half_neighbours_by_radius():
    from instseg_ros.occuseg.supervoxels import HALF_NEIGHBOURS, half_neighbours

    # integer vectors with squared length 1, 2, 3 (26-neighbourhood): 6 + 12 + 8, half of them each
    assert len(half_neighbours(np.sqrt(3))) == 13 == len(HALF_NEIGHBOURS)
    # + squared length 4: the 6 vectors (+-2, 0, 0), ... -> 16; + squared length 5: 24 more -> 28
    assert len(half_neighbours(2.0)) == 16
    assert len(half_neighbours(np.sqrt(5))) == 28
    assert len(half_neighbours(1.0)) == 3
    for r in (1.0, np.sqrt(3), 2.0, 2.5):
        h = half_neighbours(r)
        assert len(np.unique(np.concatenate([h, -h]), axis=0)) == 2 * len(h)   # no offset with its negation
    with pytest.raises(ValueError):
        half_neighbours(0.5)


@pytest.mark.parametrize("radius", [1.0, np.sqrt(2), 2.0, np.sqrt(6)])
def test_voxel_adjacency_radius_matches_brute_force(radius):
    rng = np.random.default_rng(3)
    c = np.unique(rng.integers(0, 7, size=(150, 3)), axis=0)
    e = voxel_adjacency(c, radius)
    d2 = ((c[:, None] - c[None]) ** 2).sum(-1)
    want = {(i, j) for i, j in zip(*np.nonzero((d2 > 0) & (d2 <= radius ** 2 + 1e-9))) if i < j}
    got = {(min(a, b), max(a, b)) for a, b in e.tolist()}
    assert len(got) == len(e) and got == want


def test_radius_two_bridges_a_one_cell_hole():
    # a 20 x 10 plane with the column x = 10 missing: two 26-connected halves, one cell apart
    xs, ys = np.meshgrid(np.arange(21), np.arange(10), indexing="ij")
    coords = np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size, int)], 1)
    coords = coords[coords[:, 0] != 10]
    normals = np.tile([0, 0, 1.0], (len(coords), 1))
    colors = np.full((len(coords), 3), 90, np.uint8)
    lab, edges = supervoxels(coords, normals, colors, SupervoxelConfig(k=0.2, min_size=5))
    assert _same_partition(lab, coords[:, 0] < 10)
    # every cross-gap edge of the radius-2 graph joins (9, y) and (11, y): 10 of them
    lab2, edges2 = supervoxels(coords, normals, colors, SupervoxelConfig(k=0.2, min_size=5, radius=2.0))
    assert len(np.unique(lab2)) == 1
    cross = edges2[(coords[edges2[:, 0], 0] < 10) != (coords[edges2[:, 1], 0] < 10)]
    assert len(cross) == 10 and (np.abs(coords[cross[:, 0]] - coords[cross[:, 1]]).sum(1) == 2).all()
    assert len(edges2) == len(voxel_adjacency(coords, 2.0)) > len(edges)
