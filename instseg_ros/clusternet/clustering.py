"""Two-stage clustering of ClusterNet predictions (paper §III-B, Fig. 3), vectorised torch (CPU or GPU).

Stage 1, sphere seeding: the unassigned foreground pixel with the highest centroid probability η̂ is the
seed; every unassigned foreground pixel whose ξ̂ lies inside the sphere of radius B̂(seed) around ξ̂(seed)
joins its cluster; repeat until every foreground pixel is assigned. The seeding runs ``block`` seeds per
host synchronisation (each seed is a handful of tensor ops over the remaining pixels), and the set of
remaining pixels is compacted at each synchronisation.
Stage 2, one GMM iteration: each cluster (of at least ``min_size`` pixels) becomes a Gaussian with the
cluster's mean and covariance of ξ̂ and weight N_k / N; every foreground pixel moves to the component
of highest posterior.
Score of an instance: mean foreground probability of its pixels x share of its pixels whose ξ̂ lies
within B̂(seed) of the cluster mean (a compact, confident cluster scores high).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

#: Elements of the (pixels x clusters x dims) buffer evaluated at once in the GMM step.
GMM_CHUNK_ELEMENTS = 1 << 24


@dataclass
class ClusterParams:
    """Clustering parameters.

    Attributes:
        fg_threshold: foreground probability above which a pixel is clustered.
        min_size: pixels (at network resolution); smaller clusters are dropped (their pixels go to
            the GMM's other components, or to background after it).
        min_score: instances scoring below are dropped.
        min_radius, max_radius: metres, clamp of the seed's B̂.
        max_instances: at most this many seeds.
        gmm: run the GMM refinement iteration. gmm_reg: m^2 added to each covariance's diagonal.
        seed_stride: seed on every n-th pixel in u and v only (the GMM step then labels all
            foreground pixels; needs gmm=True when > 1).
        block: seeds per host synchronisation.
        radius_multiplier: B̂ is scaled by this before clamping (1 = the paper's sphere; tuned on
            validation frames for short-trained models whose B̂ is still too small or large).
    """

    fg_threshold: float = 0.5
    min_size: int = 20
    min_score: float = 0.05
    min_radius: float = 0.003
    max_radius: float = 0.1
    max_instances: int = 200
    gmm: bool = True
    gmm_reg: float = 1e-6
    seed_stride: int = 1
    block: int = 8
    radius_multiplier: float = 1.0

    def __post_init__(self) -> None:
        if self.seed_stride < 1 or self.block < 1 or self.max_instances < 1:
            raise ValueError("seed_stride, block and max_instances must be >= 1")
        if self.seed_stride > 1 and not self.gmm:
            raise ValueError("seed_stride > 1 needs gmm=True (the GMM step labels the skipped pixels)")
        if not 0 < self.min_radius <= self.max_radius:
            raise ValueError("need 0 < min_radius <= max_radius")


def sphere_seeding(xi: torch.Tensor, eta: torch.Tensor, radius: torch.Tensor, *, min_radius: float,
                   max_radius: float, max_instances: int, block: int = 8
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stage 1 on P points.

    Args:
        xi: (P, D) features. eta: (P,) seed priority (centroid probability). radius: (P,) metres.
    Returns:
        assign (P,) int64 cluster index 0..K-1, -1 if left unassigned (only when max_instances ran out);
        seeds (K,) int64 point index of each cluster's seed; seed_radius (K,) clamped radius, metres.
        Clusters are numbered in seeding order; every cluster is non-empty.
    """
    p = xi.shape[0]
    dev = xi.device
    assign = torch.full((p,), -1, dtype=torch.long, device=dev)
    if p == 0:
        return assign, torch.zeros(0, dtype=torch.long, device=dev), torch.zeros(0, device=dev)
    r_all = radius.clamp(min_radius, max_radius)
    remaining = torch.arange(p, device=dev)             # indices of the points still in play
    seeds, seed_r = [], []
    k = 0
    while k < max_instances and remaining.numel():
        x, pr = xi[remaining], eta[remaining].clone()
        sub = torch.full((remaining.numel(),), -1, dtype=torch.long, device=dev)
        n = min(block, max_instances - k)
        x = x - x.mean(0)                                  # centred: |x|^2 - 2 x.c + |c|^2 stays accurate
        sq = (x * x).sum(1)
        for j in range(n):
            s = torch.argmax(pr)
            r = r_all[remaining[s]]
            d2 = sq - 2.0 * (x @ x[s]) + sq[s]
            new = (sub < 0) & (d2 <= r * r)
            new[s] = sub[s] < 0                           # a seed always joins its own cluster
            sub = torch.where(new, torch.full_like(sub, k + j), sub)
            pr = torch.where(new, torch.full_like(pr, -math.inf), pr)
            seeds.append(remaining[s])
            seed_r.append(r)
        assign[remaining] = sub
        k += n
        remaining = remaining[sub < 0]                     # the one host synchronisation per block
    if not seeds:
        return assign, torch.zeros(0, dtype=torch.long, device=dev), torch.zeros(0, device=dev)
    seeds_t = torch.stack(seeds)
    seed_r_t = torch.stack(seed_r)
    # seeds drawn after every point was assigned produced empty clusters: drop them and renumber
    counts = torch.bincount(assign[assign >= 0], minlength=len(seeds_t))
    keep = counts > 0
    remap = torch.cumsum(keep.long(), 0) - 1
    assign = torch.where(assign >= 0, remap[assign.clamp_min(0)], assign)
    return assign, seeds_t[keep], seed_r_t[keep]


def cluster_stats(xi: torch.Tensor, assign: torch.Tensor, k: int, reg: float
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-cluster count (K,), mean (K, D) and covariance (K, D, D) (1/N_k, + reg I) of hard assignments
    (assign in 0..K-1, -1 ignored)."""
    d = xi.shape[1]
    m = assign >= 0
    a, x = assign[m], xi[m]
    cnt = torch.zeros(k, device=xi.device, dtype=xi.dtype).index_add_(0, a, torch.ones_like(a, dtype=xi.dtype))
    mean = torch.zeros(k, d, device=xi.device, dtype=xi.dtype).index_add_(0, a, x) / cnt.clamp_min(1)[:, None]
    diff = x - mean[a]
    outer = (diff[:, :, None] * diff[:, None, :]).reshape(-1, d * d)
    cov = torch.zeros(k, d * d, device=xi.device, dtype=xi.dtype).index_add_(0, a, outer)
    cov = cov.view(k, d, d) / cnt.clamp_min(1)[:, None, None]
    cov = cov + reg * torch.eye(d, device=xi.device, dtype=xi.dtype)
    return cnt, mean, cov


def gmm_iteration(xi: torch.Tensor, assign: torch.Tensor, k: int, reg: float) -> torch.Tensor:
    """Stage 2: hard reassignment of every point to the Gaussian component of highest posterior.

    Args:
        xi: (P, D). assign: (P,) initial clusters 0..K-1 (-1 = not used to fit). k: K.
    Returns:
        (P,) int64 in 0..K-1 (all points assigned); (P,) of -1 when K = 0.
    """
    p, d = xi.shape
    if k == 0 or p == 0:
        return torch.full((p,), -1, dtype=torch.long, device=xi.device)
    x64 = xi.double()                                      # moments of ~1 m values with ~1e-5 m^2 spread
    cnt, mean, cov = cluster_stats(x64, assign, k, reg)
    chol = torch.linalg.cholesky(cov)                      # (K, D, D)
    logdet = 2 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(1)
    logw = torch.log(cnt.clamp_min(1) / cnt.sum())
    const = logw - 0.5 * logdet                            # (K,) the shared -D/2 log 2π drops out
    eye = torch.eye(d, dtype=chol.dtype, device=chol.device).expand(k, d, d)
    # z = L^-1 (x - mu): the statistics need float64, the per-pixel residuals are small and fit float32
    linv = torch.linalg.solve_triangular(chol, eye, upper=False).to(xi.dtype)
    mean32 = mean.to(xi.dtype)
    const = const.to(xi.dtype)
    out = torch.empty(p, dtype=torch.long, device=xi.device)
    step = max(1, GMM_CHUNK_ELEMENTS // max(1, k * d))
    for i in range(0, p, step):
        diff = xi[i:i + step, None, :] - mean32[None]       # (c, K, D)
        z = torch.einsum("kij,pkj->pki", linv, diff)
        ll = const[None] - 0.5 * (z * z).sum(-1)
        out[i:i + step] = ll.argmax(1)
    return out


def cluster_pixels(xi: torch.Tensor, eta: torch.Tensor, radius: torch.Tensor, fg_prob: torch.Tensor,
                   params: ClusterParams | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster one image's predictions.

    Args:
        xi: (D, H, W) ξ̂, metres. eta: (H, W) centroid probability. radius: (H, W) B̂, metres.
        fg_prob: (H, W) foreground probability.
    Returns:
        labels (H, W) int64: 0 = background, 1..N = instance, numbered by decreasing score;
        scores (N,) float32 in [0, 1].
    """
    params = params or ClusterParams()
    d, h, w = xi.shape
    if eta.shape != (h, w) or radius.shape != (h, w) or fg_prob.shape != (h, w):
        raise ValueError(f"eta {tuple(eta.shape)}, radius {tuple(radius.shape)}, fg_prob "
                         f"{tuple(fg_prob.shape)} must all be (H, W) = {(h, w)}")
    dev = xi.device
    labels = torch.zeros(h * w, dtype=torch.long, device=dev)
    fg_idx = torch.nonzero((fg_prob > params.fg_threshold).reshape(-1)).squeeze(1)
    if fg_idx.numel() == 0:
        return labels.view(h, w), torch.zeros(0, device=dev)
    x = xi.reshape(d, -1).t()[fg_idx].float()
    e = eta.reshape(-1)[fg_idx].float()
    r = radius.reshape(-1)[fg_idx].float() * params.radius_multiplier
    fgp = fg_prob.reshape(-1)[fg_idx].float()
    if params.seed_stride > 1:
        s = params.seed_stride
        v, u = fg_idx // w, fg_idx % w
        sel = torch.nonzero((v % s == 0) & (u % s == 0)).squeeze(1)
    else:
        sel = torch.arange(len(fg_idx), device=dev)
    a_sel, seeds, seed_r = sphere_seeding(x[sel], e[sel], r[sel], min_radius=params.min_radius,
                                          max_radius=params.max_radius, max_instances=params.max_instances,
                                          block=params.block)
    assign = torch.full((len(fg_idx),), -1, dtype=torch.long, device=dev)
    assign[sel] = a_sel
    k = len(seeds)
    if params.gmm and k:
        cnt = torch.bincount(a_sel[a_sel >= 0], minlength=k)
        big = cnt >= max(1, params.min_size // (params.seed_stride ** 2))
        if not bool(big.any()):
            big = cnt == cnt.max()                          # keep the largest rather than nothing
        remap = torch.cumsum(big.long(), 0) - 1
        fit = torch.where(assign >= 0, torch.where(big[assign.clamp_min(0)], remap[assign.clamp_min(0)],
                                                   torch.full_like(assign, -1)), assign)
        seed_r = seed_r[big]
        k = int(big.sum())
        assign = gmm_iteration(x, fit, k, params.gmm_reg)
    # per-cluster size, mean, compactness and score
    valid = assign >= 0
    a = assign[valid]
    cnt = torch.bincount(a, minlength=k).float()
    mean = torch.zeros(k, d, device=dev).index_add_(0, a, x[valid]) / cnt.clamp_min(1)[:, None]
    inside = (((x[valid] - mean[a]) ** 2).sum(1) <= seed_r[a] ** 2).float()
    comp = torch.zeros(k, device=dev).index_add_(0, a, inside) / cnt.clamp_min(1)
    conf = torch.zeros(k, device=dev).index_add_(0, a, fgp[valid]) / cnt.clamp_min(1)
    score = conf * comp
    keep = (cnt >= params.min_size) & (score >= params.min_score)
    order = torch.argsort(torch.where(keep, score, torch.full_like(score, -1.0)), descending=True)
    n_keep = int(keep.sum())
    rank = torch.zeros(k, dtype=torch.long, device=dev)
    rank[order[:n_keep]] = torch.arange(1, n_keep + 1, device=dev)
    lab_fg = torch.zeros(len(fg_idx), dtype=torch.long, device=dev)
    lab_fg[valid] = rank[a]
    labels[fg_idx] = lab_fg
    return labels.view(h, w), score[order[:n_keep]]
