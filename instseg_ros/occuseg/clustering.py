"""Occupancy-aware clustering of supervoxels, OccuSeg §3.2, eq. (12)-(14).

Per supervoxel v_i (voxel set Omega_i) the per-voxel predictions are averaged: D_i = mean(mu + d)
(eq. 12), S_i = mean(s), sigma_i = mean(b), O_i = exp(mean(o)) (the predicted voxel count, as in
eq. 11). Adjacent foreground supervoxels are joined by edges with weight (eq. 14)

    w_ij = exp(-(||S_i - S_j|| / sigma_s)^2 - (||D_i - D_j|| / sigma_d)^2) / max(r, 0.5)

where sigma_s, sigma_d, r belong to the virtual supervoxel v_i U v_j. The highest-weight edge is
merged while w > T0 = 0.5, re-weighting the merged vertex's edges after every merge; survivors with
0.3 < r < 2 are instances.
Optionally (``ClusterConfig.voxel_bg_max``, not in the paper) an instance's voxels that the semantic head
itself calls background are then returned as background.

On the occupancy ratio: the paper prints eq. (13) as r = O / |Omega| but explains it as "r > 1
indicates that there are too many voxels in v_i", and divides w by max(r, 0.5) "to punish
over-segmented instances and encourage partial instances to be merged". Only r = |Omega| / O has
that meaning (a merge that overshoots the predicted size gets r > 1 and a smaller weight; a partial
instance has r < 1 and up to twice the weight), so this module uses r = |Omega| / O.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

T0 = 0.5            #: merge threshold on w_ij
R_FLOOR = 0.5       #: max(r, 0.5) in eq. (14)
R_MIN, R_MAX = 0.3, 2.0   #: instance acceptance 0.3 < r < 2


@dataclass
class ClusterConfig:
    """Clustering switches and thresholds (Table 6 ablations: use_occupancy / use_feature / use_spatial).

    use_occupancy=False sets r = 1 in eq. (14) and skips the 0.3 < r < 2 filter (paper's w/o occupancy).
    min_voxels: survivors with fewer voxels are dropped as noise.
    voxel_bg_max: after the merging, an instance voxel whose own background probability exceeds this is
        returned as background (the foreground decision of the merging is per supervoxel, and supervoxels
        at an object's foot also hold table / bin-wall voxels). The instance's count, occupancy, ratio,
        class and score then describe the voxels it keeps. 1.0 (default) = off, as in the paper.
    """

    t0: float = T0
    r_min: float = R_MIN
    r_max: float = R_MAX
    use_occupancy: bool = True
    use_feature: bool = True
    use_spatial: bool = True
    min_voxels: int = 10
    voxel_bg_max: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.voxel_bg_max <= 1.0:
            raise ValueError(f"voxel_bg_max is a probability in [0, 1], got {self.voxel_bg_max}")


@dataclass
class SupervoxelStats:
    """Per-supervoxel sums over its voxels (S supervoxels).

    n int64 (S,); centre (S, 3) sum of mu + d; emb (S, E) sum of s; log_occ (S,) sum of o;
    sigma (S, 2) sum of (sigma_s, sigma_d); prob (S, K) sum of class probabilities.
    """

    n: np.ndarray
    centre: np.ndarray
    emb: np.ndarray
    log_occ: np.ndarray
    sigma: np.ndarray
    prob: np.ndarray

    @classmethod
    def from_voxels(cls, sv: np.ndarray, centre, emb, log_occ, sigma, prob) -> SupervoxelStats:
        """Sum per-voxel arrays (V, ...) over supervoxel labels ``sv`` int (V,) in 0..S-1."""
        sv = np.asarray(sv, np.int64)
        S = int(sv.max()) + 1 if len(sv) else 0

        def seg_sum(a):
            a = np.asarray(a, np.float64)
            a2 = a.reshape(len(a), -1)
            out = np.zeros((S, a2.shape[1]))
            for col in range(a2.shape[1]):
                out[:, col] = np.bincount(sv, weights=a2[:, col], minlength=S)
            return out.reshape((S,) + a.shape[1:])

        return cls(n=np.bincount(sv, minlength=S).astype(np.int64), centre=seg_sum(centre), emb=seg_sum(emb),
                   log_occ=seg_sum(log_occ), sigma=seg_sum(sigma), prob=seg_sum(prob))


def merge_weights(st: SupervoxelStats, i, j, cfg: ClusterConfig) -> np.ndarray:
    """Eq. (14) for vertex pairs (i, j) (int arrays of equal length); returns float64 weights."""
    i = np.atleast_1d(np.asarray(i, np.int64))
    j = np.atleast_1d(np.asarray(j, np.int64))
    ni, nj = st.n[i].astype(np.float64), st.n[j].astype(np.float64)
    n = ni + nj
    sig = (st.sigma[i] + st.sigma[j]) / n[:, None]
    expo = np.zeros(len(i))
    if cfg.use_feature:
        ds = np.linalg.norm(st.emb[i] / ni[:, None] - st.emb[j] / nj[:, None], axis=1)
        expo += (ds / sig[:, 0]) ** 2
    if cfg.use_spatial:
        dd = np.linalg.norm(st.centre[i] / ni[:, None] - st.centre[j] / nj[:, None], axis=1)
        expo += (dd / sig[:, 1]) ** 2
    if cfg.use_occupancy:
        r = n / np.exp((st.log_occ[i] + st.log_occ[j]) / n)
    else:
        r = np.ones(len(i))
    return np.exp(-expo) / np.maximum(r, R_FLOOR)


def occupancy_ratio(st: SupervoxelStats, idx) -> np.ndarray:
    """r = |Omega| / O with O = exp(mean o), for vertices ``idx``."""
    idx = np.asarray(idx, np.int64)
    n = st.n[idx].astype(np.float64)
    return n / np.exp(st.log_occ[idx] / n)


def merge_graph(st: SupervoxelStats, edges: np.ndarray, cfg: ClusterConfig | None = None) -> np.ndarray:
    """Greedy highest-weight-first merging of a supervoxel graph. ``st`` is updated in place.

    Args:
        st: per-vertex sums (S vertices).
        edges: int (M, 2) undirected vertex pairs.
    Returns:
        int64 (S,) representative vertex of each vertex after merging.
    """
    cfg = cfg or ClusterConfig()
    S = len(st.n)
    parent = np.arange(S)
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    edges = edges[edges[:, 0] != edges[:, 1]]
    if len(edges) == 0:
        return parent
    edges = np.unique(np.sort(edges, axis=1), axis=0)
    adj: list[set[int]] = [set() for _ in range(S)]
    for a, b in edges:
        adj[a].add(int(b))
        adj[b].add(int(a))
    version = np.zeros(S, np.int64)
    alive = np.ones(S, bool)
    w = merge_weights(st, edges[:, 0], edges[:, 1], cfg)
    heap = [(-float(wv), int(a), int(b), 0, 0) for wv, (a, b) in zip(w, edges) if wv > cfg.t0]
    heapq.heapify(heap)
    while heap:
        negw, a, b, va, vb = heapq.heappop(heap)
        if -negw <= cfg.t0:
            break
        if not (alive[a] and alive[b]) or version[a] != va or version[b] != vb:
            continue
        # merge b into a
        for arr in (st.centre, st.emb, st.log_occ, st.sigma, st.prob):
            arr[a] += arr[b]
        st.n[a] += st.n[b]
        alive[b] = False
        parent[b] = a
        version[a] += 1
        nb = (adj[a] | adj[b]) - {a, b}
        for k in adj[b]:
            adj[k].discard(b)
            if k != a:
                adj[k].add(a)
        adj[a] = nb
        adj[b] = set()
        if nb:
            ks = np.fromiter(nb, np.int64, len(nb))
            wk = merge_weights(st, np.full(len(ks), a), ks, cfg)
            for kk, wv in zip(ks, wk):
                if wv > cfg.t0:
                    heapq.heappush(heap, (-float(wv), a, int(kk), int(version[a]), int(version[kk])))
    # path-compress to final representatives
    for s in range(S):
        r = s
        while parent[r] != r:
            r = parent[r]
        parent[s] = r
    return parent


def mean_membership(labels: np.ndarray, n_inst: int, centre: np.ndarray, emb: np.ndarray, sigma: np.ndarray,
                    cfg: ClusterConfig) -> np.ndarray:
    """Per instance k (labels 1..n_inst), the mean over its voxels i of eq. (8)'s membership probability
    p_i = exp(-(||s_i - S_k|| / sigma_s)^2 - (||d_i - D_k|| / sigma_d)^2), with S_k, D_k, sigma_k the
    instance means (terms switched off by the ablations are left out)."""
    m = labels > 0
    lab = labels[m].astype(np.int64) - 1
    cnt = np.bincount(lab, minlength=n_inst).astype(np.float64)

    def mean(a):
        a = np.asarray(a, np.float64)[m]
        return np.stack([np.bincount(lab, weights=a[:, c], minlength=n_inst) for c in range(a.shape[1])], 1) \
            / np.maximum(cnt, 1)[:, None]

    sig = mean(sigma)
    expo = np.zeros(len(lab))
    if cfg.use_feature:
        e = np.asarray(emb, np.float64)[m]
        expo += (np.linalg.norm(e - mean(emb)[lab], axis=1) / sig[lab, 0]) ** 2
    if cfg.use_spatial:
        c = np.asarray(centre, np.float64)[m]
        expo += (np.linalg.norm(c - mean(centre)[lab], axis=1) / sig[lab, 1]) ** 2
    return np.bincount(lab, weights=np.exp(-expo), minlength=n_inst) / np.maximum(cnt, 1)


@dataclass
class ClusterResult:
    """labels int32 (V,) 0 = background, 1..N instance; per instance (N,): num_voxels int64,
    occupancy float64 (predicted voxel count O), ratio float64 (r = |Omega| / O, 1 if disabled),
    class_ids int32 (argmax of mean probability over foreground classes), class_prob float64,
    scores float32."""

    labels: np.ndarray
    num_voxels: np.ndarray
    occupancy: np.ndarray
    ratio: np.ndarray
    class_ids: np.ndarray
    class_prob: np.ndarray
    scores: np.ndarray


def cluster_voxels(sv_labels: np.ndarray, voxel_edges: np.ndarray, centre: np.ndarray, emb: np.ndarray,
                   log_occ: np.ndarray, sigma: np.ndarray, prob: np.ndarray,
                   cfg: ClusterConfig | None = None) -> ClusterResult:
    """Supervoxels + per-voxel predictions -> instances.

    Args:
        sv_labels: int (V,) supervoxel of each voxel, 0..S-1.
        voxel_edges: int (E, 2) voxel adjacency (defines supervoxel adjacency).
        centre: (V, 3) mu_i + d_i, normalised units. emb: (V, E) s_i. log_occ: (V,) o_i.
        sigma: (V, 2) (sigma_s, sigma_d). prob: (V, K) class probabilities, class 0 = background.
    Background supervoxels (mean background probability >= 0.5, i.e. the object classes together are
    less likely than background) take no part in the merging.
    """
    cfg = cfg or ClusterConfig()
    sv = np.asarray(sv_labels, np.int64)
    V = len(sv)
    st = SupervoxelStats.from_voxels(sv, centre, emb, log_occ, sigma, prob)
    fg = st.prob[:, 0] < 0.5 * np.maximum(st.n, 1)      # sums: mean p(background) < 0.5
    ve = np.asarray(voxel_edges, np.int64).reshape(-1, 2)
    se = np.stack([sv[ve[:, 0]], sv[ve[:, 1]]], axis=1)
    se = se[(se[:, 0] != se[:, 1]) & fg[se[:, 0]] & fg[se[:, 1]]]
    rep = merge_graph(st, se, cfg)
    roots = np.flatnonzero((rep == np.arange(len(rep))) & fg)
    n = st.n[roots].astype(np.float64)
    ratio = occupancy_ratio(st, roots) if cfg.use_occupancy else np.ones(len(roots))
    keep = n >= cfg.min_voxels
    if cfg.use_occupancy:
        keep &= (ratio > cfg.r_min) & (ratio < cfg.r_max)
    roots = roots[keep]
    inst_of_root = np.zeros(len(rep), np.int64)
    inst_of_root[roots] = np.arange(1, len(roots) + 1)
    labels = inst_of_root[rep[sv]] if V else np.zeros(0, np.int64)
    prob = np.asarray(prob)
    if cfg.voxel_bg_max < 1.0 and V:
        labels[prob[:, 0] > cfg.voxel_bg_max] = 0
        cnt = np.bincount(labels, minlength=len(roots) + 1)[1:]
        renum = np.zeros(len(roots) + 1, np.int64)
        alive = cnt >= cfg.min_voxels
        renum[1:][alive] = np.arange(1, int(alive.sum()) + 1)
        labels = renum[labels]
        roots = roots[alive]
    labels = labels.astype(np.int32)
    return _instances(labels, len(roots), centre, emb, log_occ, sigma, prob, cfg)


def _instances(labels: np.ndarray, N: int, centre, emb, log_occ, sigma, prob, cfg: ClusterConfig) -> ClusterResult:
    """Per-instance outputs of :class:`ClusterResult` from voxel labels (1..N) and per-voxel predictions."""
    m = labels > 0
    lab = labels[m].astype(np.int64) - 1
    n = np.bincount(lab, minlength=N).astype(np.float64)
    if N == 0:
        z = np.zeros(0)
        return ClusterResult(labels=labels, num_voxels=np.zeros(0, np.int64), occupancy=z, ratio=z,
                             class_ids=np.zeros(0, np.int32), class_prob=z, scores=np.zeros(0, np.float32))
    p = np.asarray(prob, np.float64)[m]
    mean_prob = np.stack([np.bincount(lab, weights=p[:, c], minlength=N) for c in range(p.shape[1])], 1) / n[:, None]
    occ = np.exp(np.bincount(lab, weights=np.asarray(log_occ, np.float64)[m], minlength=N) / n)
    ratio = n / occ if cfg.use_occupancy else np.ones(N)
    cls = (mean_prob[:, 1:].argmax(axis=1) + 1).astype(np.int32)
    cprob = mean_prob[np.arange(N), cls]
    fgprob = 1.0 - mean_prob[:, 0]
    # confidence: foreground probability, discounted by how far the size is from the predicted one and
    # by how loosely the voxels hold together (mean eq.-8 membership probability)
    scores = fgprob * (np.exp(-np.abs(np.log(ratio))) if cfg.use_occupancy else 1.0)
    scores = scores * mean_membership(labels, N, centre, emb, sigma, cfg)
    return ClusterResult(labels=labels, num_voxels=n.astype(np.int64), occupancy=occ, ratio=ratio,
                         class_ids=cls, class_prob=cprob, scores=scores.astype(np.float32))
