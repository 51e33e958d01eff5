"""The numba (CPU) and torch (GPU) clusterings against a plain numpy transcription of §III-B.

The reference below seeds one sphere at a time over all pixels with whole-array numpy ops (no chunks,
boxes or compaction), fits each Gaussian with numpy's mean / matrix product / cholesky / inv, and ranks
with Python's stable sort. It shares with the implementations only the arithmetic spelled out in
clustering.py's docstring (float32 per-pixel terms summed left to right, float64 per-cluster moments),
so labels must agree exactly and scores to float32 rounding of float64 sums.
"""
import numpy as np
import pytest
import torch

from instseg_ros.clusternet import clustering
from instseg_ros.clusternet.clustering import ClusterParams, cluster_pixels

F32 = np.float32


def _sq_dist(a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(n, D) float32 points, (D,) float32 centre -> float32 Σ_j (a_j - c_j)², summed left to right."""
    out = np.zeros(len(a), F32)
    for j in range(a.shape[1]):
        dj = a[:, j] - c[j]
        out = out + dj * dj
    return out


def reference_seeding(x: np.ndarray, e: np.ndarray, r: np.ndarray, max_instances: int):
    """x (P, D), e (P,), r (P,) clamped radius, float32 -> assign (P,) (-1 = none), seed indices."""
    assign = np.full(len(x), -1, np.int64)
    seeds = []
    while len(seeds) < max_instances and (assign < 0).any():
        free = assign < 0
        s = int(np.argmax(np.where(free, e, -np.inf)))          # first maximum among the unassigned
        assign[free & (_sq_dist(x, x[s]) <= r[s] * r[s])] = len(seeds)
        seeds.append(s)
    return assign, np.array(seeds, np.int64)


def reference_cluster(xi, eta, radius, fg, p: ClusterParams):
    """labels (H, W) int64 and scores (N,) float32, one cluster at a time."""
    xi, eta, radius, fg = (np.asarray(t, F32) for t in (xi, eta, radius, fg))
    d, h, w = xi.shape
    fg_idx = np.flatnonzero(fg.reshape(-1) > F32(p.fg_threshold))
    x = xi.reshape(d, -1)[:, fg_idx].T.copy()
    e = eta.reshape(-1)[fg_idx]
    r = np.clip(radius.reshape(-1)[fg_idx] * F32(p.radius_multiplier), F32(p.min_radius), F32(p.max_radius))
    fgp = fg.reshape(-1)[fg_idx]
    s = p.seed_stride
    sel = np.flatnonzero(((fg_idx // w) % s == 0) & ((fg_idx % w) % s == 0))
    a_sel, seeds = reference_seeding(x[sel], e[sel], r[sel], p.max_instances)
    assign = np.full(len(x), -1, np.int64)
    assign[sel] = a_sel
    seed_r = r[sel][seeds]
    k = len(seeds)
    if p.gmm and k:
        cnt = np.array([(a_sel == c).sum() for c in range(k)])
        big = cnt >= max(1, p.min_size // s ** 2)
        if not big.any():
            big = cnt == cnt.max()
        fit = np.full(len(x), -1, np.int64)
        for new, old in enumerate(np.flatnonzero(big)):
            fit[assign == old] = new
        seed_r = seed_r[big]
        k = int(big.sum())
        total = float((fit >= 0).sum())
        ll = np.empty((len(x), k), F32)
        for c in range(k):
            pts = x[fit == c].astype(np.float64)
            mean = pts.mean(0)
            cov = (pts - mean).T @ (pts - mean) / len(pts) + p.gmm_reg * np.eye(d)
            chol = np.linalg.cholesky(cov)
            linv = np.tril(np.linalg.inv(chol)).astype(F32)
            const = F32(np.log(len(pts) / total) - np.log(np.diag(chol)).sum())
            diff = x - mean.astype(F32)
            q = np.zeros(len(x), F32)
            for i in range(d):
                z = linv[i, 0] * diff[:, 0]
                for j in range(1, i + 1):
                    z = z + linv[i, j] * diff[:, j]
                q = q + z * z
            ll[:, c] = const - F32(0.5) * q
        assign = np.argmax(ll, 1) if len(x) else assign
    cnt = np.zeros(k)
    score = np.zeros(k, F32)
    for c in range(k):
        m = assign == c
        n = max(int(m.sum()), 1)
        cnt[c] = m.sum()
        mean = (x[m].astype(np.float64).sum(0) / n).astype(F32)
        inside = int((_sq_dist(x[m], mean) <= seed_r[c] * seed_r[c]).sum())
        sc = fgp[m].astype(np.float64).sum() / n * (inside / n)
        if p.score_centroid and m.any():
            sc = sc * float(e[m].max())                           # the cluster's highest centroid probability
        score[c] = F32(sc)
    kept = [c for c in range(k) if cnt[c] >= p.min_size and score[c] >= F32(p.min_score)]
    kept = sorted(kept, key=lambda c: -score[c])                 # stable: ties stay in seeding order
    rank = np.zeros(k + 1, np.int64)
    rank[np.array(kept, np.int64) + 1] = np.arange(1, len(kept) + 1)
    labels = np.zeros(h * w, np.int64)
    labels[fg_idx] = rank[assign + 1]
    return labels.reshape(h, w), score[kept]


def _blobs(rng, n, h, w, *, scatter=False, spread=(0.002, 0.02), box=0.4, soft_fg=False, centres=None):
    """n feature clusters with centres (n, 3) or random in a `box`-metre cube (so spheres may overlap),
    per-pixel radius and η random; pixels in image blocks, or scattered at random (wide chunk boxes)."""
    gt = np.zeros(h * w, np.int64)
    if scatter:
        gt[:] = rng.integers(0, n + 1, h * w)
    else:
        cols = int(np.ceil(np.sqrt(max(n, 1))))
        bh, bw = h // cols, w // cols
        g2 = gt.reshape(h, w)
        for k in range(n):
            r0, c0 = (k // cols) * bh, (k % cols) * bw
            g2[r0 + 1:r0 + bh - 1, c0 + 1:c0 + bw - 1] = k + 1
    if centres is None:
        centres = rng.uniform(0, box, size=(n, 3)) + np.array([0, 0, 0.8])
    centres = np.concatenate([np.zeros((1, 3)), centres])
    sig = rng.uniform(*spread, size=n + 1)
    xi = (centres[gt] + rng.normal(size=(h * w, 3)) * sig[gt][:, None]).T.reshape(3, h, w)
    eta = rng.uniform(0, 1, (h, w))
    radius = rng.uniform(0.01, 0.06, (h, w))
    fg = (gt > 0).astype(float).reshape(h, w)
    if soft_fg:
        fg = np.clip(fg * rng.uniform(0.45, 1.0, (h, w)) + (1 - fg) * rng.uniform(0, 0.55, (h, w)), 0, 1)
    return [torch.from_numpy(np.ascontiguousarray(a, dtype=F32)) for a in (xi, eta, radius, fg)]


def _check_all_agree(t, params):
    ref_l, ref_s = reference_cluster(*[a.numpy() for a in t], params)
    nb_l, nb_s = cluster_pixels(*t, params, backend="numba")
    th_l, th_s = cluster_pixels(*t, params, backend="torch")
    np.testing.assert_array_equal(nb_l.numpy(), ref_l)
    np.testing.assert_allclose(nb_s.numpy(), ref_s, rtol=1e-6, atol=0)
    assert nb_l.dtype == th_l.dtype == torch.int64 and nb_s.dtype == th_s.dtype == torch.float32
    assert torch.equal(nb_l, th_l) and torch.equal(nb_s, th_s)
    return ref_l, ref_s


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("scatter", [False, True])
def test_random_blobs_all_agree(seed, scatter):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 12))
    t = _blobs(rng, n, 48, 64, scatter=scatter, soft_fg=bool(seed % 2))
    params = ClusterParams(min_size=int(rng.integers(1, 30)), min_score=float(rng.uniform(0, 0.5)),
                           radius_multiplier=float(rng.choice([1.0, 1.7])), fg_threshold=0.5,
                           gmm=bool(seed != 1))
    labels, scores = _check_all_agree(t, params)
    assert len(scores) >= 1                                        # the case is not trivially empty


@pytest.mark.parametrize("params", [
    ClusterParams(min_size=5, seed_stride=2),
    ClusterParams(min_size=5, max_instances=3, gmm=False),       # seeds run out: the rest is background
    ClusterParams(min_size=5, max_instances=3, gmm=True),        # ... or goes to the 3 components
    ClusterParams(min_size=400, min_score=0.0),                  # min_size drops most clusters
    ClusterParams(min_size=1, min_score=0.9),                    # min_score drops the diffuse ones
    ClusterParams(min_size=5, fg_threshold=0.3, max_radius=0.02, gmm_reg=1e-5),
])
def test_parameters_all_agree(params):
    rng = np.random.default_rng(7)
    t = _blobs(rng, 9, 60, 60, spread=(0.002, 0.03), soft_fg=True)
    _check_all_agree(t, params)


def test_touching_empty_single_and_many():
    rng = np.random.default_rng(3)
    # touching spheres: two clusters 0.1 m apart whose 0.05 m balls meet, uniform radius 0.05
    h, w = 40, 40
    gt = np.zeros((h, w), np.int64)
    gt[:, :20], gt[:, 20:] = 1, 2
    c = np.array([[0, 0, 0], [0, 0, 1.0], [0.1, 0, 1.0]])
    dirs = rng.normal(size=(h, w, 3))
    dirs *= rng.uniform(0, 0.049, (h, w, 1)) / np.linalg.norm(dirs, axis=2, keepdims=True)
    xi = (c[gt] + dirs).transpose(2, 0, 1)
    t = [torch.from_numpy(np.ascontiguousarray(a, dtype=F32)) for a in
         (xi, rng.uniform(0, 1, (h, w)), np.full((h, w), 0.05), np.ones((h, w)))]
    for gmm in (False, True):
        _check_all_agree(t, ClusterParams(min_size=5, gmm=gmm))
    # empty foreground
    z = torch.zeros(12, 12)
    labels, scores = _check_all_agree([torch.zeros(3, 12, 12), z, z + 0.05, z], ClusterParams())
    assert (labels == 0).all() and len(scores) == 0
    # one object; then 35 objects on a 6x6 grid 0.2 m apart in feature space
    labels, scores = _check_all_agree(_blobs(rng, 1, 20, 20, box=0.0), ClusterParams(min_size=5))
    assert len(scores) == 1
    grid = [(0.2 * i, 0.2 * j, 1.0) for i in range(6) for j in range(6)][:35]
    t = _blobs(rng, 35, 120, 120, spread=(0.002, 0.01), centres=np.array(grid))
    t[2][:] = 0.08                                                 # spheres hold their whole cluster
    labels, scores = _check_all_agree(t, ClusterParams(min_size=5))
    assert len(scores) == 35


@pytest.mark.parametrize("chunk", [1, 3, 64, 1 << 20])
def test_seed_kernel_chunking_is_exact(chunk):
    """The bounding-box pruning of the CPU seeding skips nothing: any chunk size gives the plain loop's
    result, including points exactly on a sphere (d² == r² joins) and scattered, overlapping clusters."""
    rng = np.random.default_rng(11)
    x = (rng.normal(size=(700, 3)) * 0.05 + rng.integers(0, 4, (700, 1)) * 0.06).astype(F32)
    e = rng.uniform(0, 1, 700).astype(F32)
    e[rng.integers(0, 700, 50)] = 0.5                              # ties: lowest index wins
    r = rng.uniform(0.01, 0.08, 700).astype(F32)
    # points exactly on the sphere of the first seed (dyadic values: every difference and square is exact)
    # and just outside it, spread over other chunks, along each axis
    s0 = int(np.argmax(e))
    x[s0] = np.round(x[s0] * 1024) / 1024
    r[s0] = 1 / 32
    on, off = [i for i in range(5, 700, 97) if i != s0][:7], [i for i in range(50, 700, 97) if i != s0][:7]
    for j, (i, o) in enumerate(zip(on, off)):
        sign = 1 if j % 2 else -1
        x[i], x[o] = x[s0], x[s0]
        x[i, j % 3] = x[s0, j % 3] + sign * r[s0]
        x[o, j % 3] = x[s0, j % 3] + sign * (r[s0] + F32(2 ** -20))
    assert (_sq_dist(x[on], x[s0]) == r[s0] * r[s0]).all() and (_sq_dist(x[off], x[s0]) > r[s0] * r[s0]).all()
    ref_a, ref_s = reference_seeding(x, e, r, 1000)
    assert ref_s[0] == s0 and (ref_a[on] == 0).all() and (ref_a[off] != 0).all()
    a, s = clustering._nb_seed(np.ascontiguousarray(x.T), e, r, 1000, chunk)
    np.testing.assert_array_equal(a, ref_a)
    np.testing.assert_array_equal(s, ref_s)
    a, s = clustering._nb_seed(np.ascontiguousarray(x.T), e, r, 7, chunk)   # max_instances runs out
    ref_a, ref_s = reference_seeding(x, e, r, 7)
    np.testing.assert_array_equal(a, ref_a)
    np.testing.assert_array_equal(s, ref_s)


def test_bench_frame_matches_reference():
    """The benchmark's 20-object frame at a small resolution: all three agree and find the 20 objects."""
    from instseg_ros.clusternet.bench import ideal_predictions, synthetic_frame

    _, d, K, lab = synthetic_frame(120, 160, 20, seed=1)
    t = list(ideal_predictions(lab, d, K, noise=0.003))
    labels, scores = _check_all_agree(t, ClusterParams())
    assert len(scores) == 20


def test_bad_input_raises():
    t = _blobs(np.random.default_rng(0), 2, 16, 16)
    t[0][0, 3, 3] = float("nan")
    t[3][3, 3] = 1.0
    for backend in ("numba", "torch"):
        with pytest.raises(ValueError, match="NaN"):
            cluster_pixels(*t, backend=backend)
    with pytest.raises(ValueError, match="backend"):
        cluster_pixels(*t, backend="cuda")
    with pytest.raises(ValueError, match=r"\(D, H, W\)"):
        cluster_pixels(t[0][0], *t[1:])
    with pytest.raises(ValueError, match="gmm_reg"):
        ClusterParams(gmm_reg=-1.0)
    # a cluster of identical features with gmm_reg = 0 has no Gaussian
    t = _blobs(np.random.default_rng(0), 2, 16, 16, spread=(0.0, 0.0))
    for backend in ("numba", "torch"):
        with pytest.raises(RuntimeError, match="gmm_reg"):
            cluster_pixels(*t, ClusterParams(gmm_reg=0.0, min_size=1), backend=backend)


def test_gmm_kernels_break_ties_to_the_earliest_component():
    """Hand-made components: 2 duplicates 0 (same Gaussian, same weight), 1 sits 0.125 m along x with the
    same covariance. A point at x = 0.0625 is equally likely under 0, 1 and 2 -> component 0; points
    nearer 0 (or 2) go to 0, points nearer 1 to 1. Dyadic values keep every product exact."""
    mean = np.array([[0, 0, 1], [0.125, 0, 1], [0, 0, 1]], F32)
    linv = np.broadcast_to(np.diag([16.0, 16.0, 16.0]).astype(F32), (3, 3, 3)).copy()   # σ = 1/16 m
    const = np.full(3, -2.0, F32)
    pts = np.array([[0.0625, 0, 1], [0.0625, 0.5, 1], [0.01, 0, 1], [0.1, 0, 1], [0.25, -0.125, 0.75],
                    [-1.0, 0, 1]], F32)
    expected = [0, 0, 0, 1, 1, 0]
    nb = clustering._nb_gmm_assign(np.ascontiguousarray(pts.T), mean, linv, const)
    th = clustering._gmm_assign_torch(torch.from_numpy(pts), torch.from_numpy(mean), torch.from_numpy(linv),
                                      torch.from_numpy(const))
    assert nb.tolist() == th.tolist() == expected
    # a far-away point whose log-likelihoods all underflow to -inf also goes to the first component
    far = np.array([[1e19, 1e19, 1e19]], F32)
    assert clustering._nb_gmm_assign(np.ascontiguousarray(far.T), mean, linv, const).tolist() == [0]
    assert clustering._gmm_assign_torch(torch.from_numpy(far), torch.from_numpy(mean), torch.from_numpy(linv),
                                        torch.from_numpy(const)).tolist() == [0]


def test_nine_channel_features_and_torch_block_sizes_agree():
    """The "c+cov" feature (D = 9) goes through the generic kernels; the torch seeding's block size only
    changes how often it synchronises, not the result."""
    rng = np.random.default_rng(5)
    t = _blobs(rng, 6, 40, 40, spread=(0.002, 0.01))
    extra = np.repeat(t[0].numpy()[:2], 3, axis=0) * F32(0.5)     # 6 more channels tied to the clusters
    t[0] = torch.from_numpy(np.concatenate([t[0].numpy(), extra]))
    for gmm in (False, True):
        _check_all_agree(t, ClusterParams(min_size=5, gmm=gmm))
    base = cluster_pixels(*t, ClusterParams(min_size=5), backend="torch")
    for block in (1, 3, 200):
        other = cluster_pixels(*t, ClusterParams(min_size=5, block=block), backend="torch")
        assert torch.equal(base[0], other[0]) and torch.equal(base[1], other[1])


def test_bench_clustering_figures_compare_with_the_reference_in_process():
    from instseg_ros.clusternet.bench import clustering_figures

    row = clustering_figures(60, 80, 4, torch.device("cpu"), repeats=1)
    assert row["clustering_backend"] == "numba" and row["clustering_4obj_found"] == 4
    assert row["clustering_same_as_reference"] is True
    assert row["clustering_speedup_vs_reference"] == pytest.approx(
        row["clustering_reference_torch_cpu_ms"] / row["clustering_4obj_ms"], rel=0.05, abs=0.05)
