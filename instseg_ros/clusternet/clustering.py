"""Two-stage clustering of ClusterNet predictions (paper §III-B, Fig. 3): numba on CPU, torch on GPU.

Stage 1, sphere seeding: the unassigned foreground pixel with the highest centroid probability η̂ is the
seed (ties: the lowest pixel index); every unassigned foreground pixel whose ξ̂ lies inside the sphere of
radius B̂(seed) around ξ̂(seed) joins its cluster; repeat until every foreground pixel is assigned.
Stage 2, one GMM iteration: each cluster (of at least ``min_size`` pixels) becomes a Gaussian with the
cluster's mean and covariance of ξ̂ and weight N_k / N; every foreground pixel moves to the component
of highest posterior (ties: the earliest seeded).
Score of an instance: mean foreground probability of its pixels x share of its pixels whose ξ̂ lies
within B̂(seed) of the cluster mean (a compact, confident cluster scores high) x, with
``score_centroid``, the highest centroid probability η̂ among its pixels (a cluster that holds no
confident centroid candidate is usually a fragment or a false positive; on validation frames this factor
ranks such clusters below whole objects: +1.0 COCO AP with the same labels). Ids are numbered by
decreasing score (ties: seeding order).

Two implementations of the same arithmetic, chosen by the device of the inputs:

* CPU tensors go through single-threaded numba kernels on the foreground pixels only, with no torch op
  in between: a seed visits only the runs of pixels whose feature bounding box reaches its sphere (an
  exact pruning, see :func:`_nb_seed`), and the GMM step scores one component at a time over all
  pixels (a loop the compiler vectorises).
* Other devices (CUDA) use torch ops with no host synchronisation per object: the seeding runs ``block``
  seeds between synchronisations (a seed's cluster and the next argmax stay on the device), and the
  per-cluster statistics use index_add into a spare slot for unassigned pixels instead of boolean
  indexing. A call synchronises a constant number of times plus once per ``block`` seeds.

Both compute every pixel-level quantity in float32 with the same operation order (squared distances
as Σ_j (x_j - c_j)², Mahalanobis terms z = L⁻¹(x - μ) summed left to right, no fused multiply-add)
and every per-cluster sum in float64 in pixel order. The per-component D x D algebra (Cholesky, its
inverse, log-weights) runs in float64 in each (LAPACK through torch, written out in numba) and enters
the pixel terms only after rounding to float32. On CPU torch tensors (``backend="torch"``) the two give
the same labels and scores, bit for bit (the tests compare them, and both with a plain numpy
transcription); on
a GPU the float64 sums are accumulated in another order, which can flip a pixel lying within rounding
of a sphere or of a GMM decision boundary.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from numba import njit

#: Elements of the (pixels x clusters) buffers evaluated at once in the torch GMM step.
GMM_CHUNK_ELEMENTS = 1 << 22

BACKENDS = ("auto", "numba", "torch")

#: Consecutive foreground pixels sharing one bounding box in the CPU seeding (see :func:`_nb_seed`).
SEED_CHUNK = 64


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
        block: seeds per host synchronisation (torch/GPU path only; the result does not depend on it).
        radius_multiplier: B̂ is scaled by this before clamping (1 = the paper's sphere; tuned on
            validation frames for short-trained models whose B̂ is still too small or large).
        score_centroid: multiply each score by the cluster's highest η̂ (see the module docstring);
            False = the score without it.
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
    score_centroid: bool = True

    def __post_init__(self) -> None:
        if self.seed_stride < 1 or self.block < 1 or self.max_instances < 1:
            raise ValueError("seed_stride, block and max_instances must be >= 1")
        if self.seed_stride > 1 and not self.gmm:
            raise ValueError("seed_stride > 1 needs gmm=True (the GMM step labels the skipped pixels)")
        if not 0 < self.min_radius <= self.max_radius:
            raise ValueError("need 0 < min_radius <= max_radius")
        if not self.gmm_reg >= 0 or not self.radius_multiplier > 0:
            raise ValueError("need gmm_reg >= 0 and radius_multiplier > 0")


# ----------------------------------------------------------------------------------------------------
# numba kernels (CPU). Arrays: x (D, P) float32 feature columns of the foreground pixels, C order.
# ----------------------------------------------------------------------------------------------------

@njit(cache=True)
def _nb_gather(xi, eta, radius, fgp, thr, mult, rmin, rmax):
    """Foreground pixels of flattened maps (xi (D, N), others (N,), float32; scalars float32).

    Returns pixel index (P,) int64, ξ (D, P), η (P,), clamped radius (P,), fg probability (P,), and
    whether every gathered value is finite.
    """
    d, n = xi.shape
    p = 0
    for i in range(n):
        if fgp[i] > thr:
            p += 1
    idx = np.empty(p, np.int64)
    x = np.empty((d, p), np.float32)
    e = np.empty(p, np.float32)
    r = np.empty(p, np.float32)
    f = np.empty(p, np.float32)
    finite = True
    t = 0
    for i in range(n):
        if fgp[i] > thr:
            idx[t] = i
            for j in range(d):
                x[j, t] = xi[j, i]
                finite &= np.isfinite(xi[j, i])
            e[t] = eta[i]
            ri = radius[i] * mult
            finite &= np.isfinite(eta[i]) & np.isfinite(ri)
            r[t] = min(max(ri, rmin), rmax)
            f[t] = fgp[i]
            t += 1
    return idx, x, e, r, f, finite


@njit(cache=True)
def _nb_chunk_update(x, eta, assign, c, chunk, lo, hi, cmax, carg, alive):
    """Recompute chunk c's bounding box of ξ, count, and first highest η over its unassigned points."""
    d, p = x.shape
    n = 0
    for t in range(c * chunk, min(p, (c + 1) * chunk)):
        if assign[t] < 0:
            if n == 0 or eta[t] > cmax[c]:
                cmax[c] = eta[t]
                carg[c] = t
            for j in range(d):
                if n == 0 or x[j, t] < lo[c, j]:
                    lo[c, j] = x[j, t]
                if n == 0 or x[j, t] > hi[c, j]:
                    hi[c, j] = x[j, t]
            n += 1
    alive[c] = n


@njit(cache=True)
def _nb_seed(x, eta, r, max_instances, chunk):
    """Sphere seeding on P points (x (D, P), eta (P,), clamped radius r (P,), float32).

    Returns assign (P,) int64 (0..K-1, -1 once max_instances ran out) and seeds (K,) int64 point indices.
    The points are split into runs of ``chunk`` consecutive indices (image-row runs, so mostly one object
    each), each with the bounding box of its unassigned features and its first highest η: the next seed
    is found from the chunks' maxima, and a seed visits only the chunks whose box comes within its radius.
    The box test rounds like the point test (each |x_j - s_j| is at least the box gap in float32 too),
    so no chunk holding a point inside the sphere is skipped: the result equals the plain loop's.
    """
    d, p = x.shape
    assign = np.full(p, -1, np.int64)
    seeds = np.empty(min(max_instances, p), np.int64)
    nch = (p + chunk - 1) // chunk
    lo = np.empty((nch, d), np.float32)
    hi = np.empty((nch, d), np.float32)
    cmax = np.empty(nch, np.float32)
    carg = np.zeros(nch, np.int64)
    alive = np.zeros(nch, np.int64)
    for c in range(nch):
        _nb_chunk_update(x, eta, assign, c, chunk, lo, hi, cmax, carg, alive)
    xs = np.empty(d, np.float32)
    k = 0
    while k < max_instances:
        b = -1
        for c in range(nch):                        # first chunk holding the highest η: lowest index on ties
            if alive[c] > 0 and (b < 0 or cmax[c] > cmax[b]):
                b = c
        if b < 0:
            break
        s = carg[b]
        seeds[k] = s
        rs = r[s] * r[s]
        for j in range(d):
            xs[j] = x[j, s]
        for c in range(nch):
            if alive[c] == 0:
                continue
            g2 = np.float32(0.0)
            for j in range(d):
                gj = np.float32(0.0)
                if xs[j] < lo[c, j]:
                    gj = lo[c, j] - xs[j]
                elif xs[j] > hi[c, j]:
                    gj = xs[j] - hi[c, j]
                g2 += gj * gj
            if g2 > rs:
                continue
            hit = False
            for t in range(c * chunk, min(p, (c + 1) * chunk)):
                if assign[t] < 0:
                    d2 = np.float32(0.0)
                    for j in range(d):
                        dj = x[j, t] - xs[j]
                        d2 += dj * dj
                    if d2 <= rs:                    # the seed itself: d2 = 0
                        assign[t] = k
                        hit = True
            if hit:
                _nb_chunk_update(x, eta, assign, c, chunk, lo, hi, cmax, carg, alive)
        k += 1
    return assign, seeds[:k]


@njit(cache=True)
def _nb_cluster_stats(x, assign, k, reg):
    """Per-cluster count (K,), mean (K, D) and covariance (K, D, D) (1/N_k, + reg I), float64, summed in
    point order; assign -1 ignored."""
    d, p = x.shape
    cnt = np.zeros(k)
    mean = np.zeros((k, d))
    for t in range(p):
        a = assign[t]
        if a >= 0:
            cnt[a] += 1.0
            for j in range(d):
                mean[a, j] += np.float64(x[j, t])
    for c in range(k):
        for j in range(d):
            mean[c, j] /= max(cnt[c], 1.0)
    cov = np.zeros((k, d, d))
    diff = np.empty(d)
    for t in range(p):
        a = assign[t]
        if a >= 0:
            for j in range(d):
                diff[j] = np.float64(x[j, t]) - mean[a, j]
            for i in range(d):
                for j in range(d):
                    cov[a, i, j] += diff[i] * diff[j]
    for c in range(k):
        for i in range(d):
            for j in range(d):
                cov[c, i, j] /= max(cnt[c], 1.0)
            cov[c, i, i] += reg
    return cnt, mean, cov


@njit(cache=True)
def _nb_component_terms(cnt, mean, cov):
    """numba twin of :func:`_component_terms` (float64 Cholesky and triangular inverse written out).

    Returns float32 mean (K, D), L⁻¹ (K, D, D), const (K,), and False if a covariance is not positive
    definite."""
    k, d = mean.shape
    linv = np.zeros((k, d, d), np.float32)
    const = np.empty(k, np.float32)
    ok = True
    total = cnt.sum()
    chol = np.zeros((d, d))
    inv = np.zeros((d, d))
    for c in range(k):
        for j in range(d):
            s = cov[c, j, j]
            for m in range(j):
                s -= chol[j, m] * chol[j, m]
            if not s > 0:
                ok = False
                s = 1.0
            chol[j, j] = np.sqrt(s)
            for i in range(j + 1, d):
                s = cov[c, i, j]
                for m in range(j):
                    s -= chol[i, m] * chol[j, m]
                chol[i, j] = s / chol[j, j]
        half_logdet = 0.0
        for i in range(d):
            half_logdet += np.log(chol[i, i])
            inv[i, i] = 1.0 / chol[i, i]
            for j in range(i):
                acc = 0.0
                for m in range(j, i):
                    acc += chol[i, m] * inv[m, j]
                inv[i, j] = -acc / chol[i, i]
            for j in range(i + 1):
                linv[c, i, j] = np.float32(inv[i, j])
        const[c] = np.float32(np.log(max(cnt[c], 1.0) / total) - half_logdet)
    return mean.astype(np.float32), linv, const, ok


@njit(cache=True)
def _nb_gmm_assign(x, mean, linv, const):
    """Component of highest log posterior for each point: ll_k = const_k - 0.5 |L_k⁻¹ (x - μ_k)|², first
    maximum. x (D, P), mean (K, D), linv (K, D, D) lower triangular, const (K,), all float32."""
    d, p = x.shape
    kk = mean.shape[0]
    out = np.zeros(p, np.int64)
    best = np.full(p, -np.inf, np.float32)
    half = np.float32(0.5)
    if d == 3:                                      # the "c" feature: unrolled so the pixel loop vectorises
        x0, x1, x2 = x[0], x[1], x[2]
        for k in range(kk):
            m0, m1, m2 = mean[k, 0], mean[k, 1], mean[k, 2]
            l00, l10, l11 = linv[k, 0, 0], linv[k, 1, 0], linv[k, 1, 1]
            l20, l21, l22 = linv[k, 2, 0], linv[k, 2, 1], linv[k, 2, 2]
            c = const[k]
            for t in range(p):
                d0 = x0[t] - m0
                d1 = x1[t] - m1
                d2 = x2[t] - m2
                z0 = l00 * d0
                z1 = l10 * d0 + l11 * d1
                z2 = l20 * d0 + l21 * d1 + l22 * d2
                ll = c - half * (z0 * z0 + z1 * z1 + z2 * z2)
                if ll > best[t]:
                    best[t] = ll
                    out[t] = k
        return out
    diff = np.empty(d, np.float32)
    for k in range(kk):
        for t in range(p):
            for j in range(d):
                diff[j] = x[j, t] - mean[k, j]
            q = np.float32(0.0)
            for i in range(d):
                z = np.float32(0.0)
                for j in range(i + 1):
                    z += linv[k, i, j] * diff[j]
                q += z * z
            ll = const[k] - half * q
            if ll > best[t]:
                best[t] = ll
                out[t] = k
    return out


@njit(cache=True)
def _nb_scores(x, assign, fgp, e, seed_r, k, use_eta):
    """Per-cluster pixel count (K,) float64 and score (K,) float32 (see the module docstring)."""
    d, p = x.shape
    cnt = np.zeros(k)
    sx = np.zeros((k, d))
    sf = np.zeros(k)
    emax = np.zeros(k)
    for t in range(p):
        a = assign[t]
        if a >= 0:
            cnt[a] += 1.0
            for j in range(d):
                sx[a, j] += np.float64(x[j, t])
            sf[a] += np.float64(fgp[t])
            emax[a] = max(emax[a], np.float64(e[t]))
    mean = np.empty((k, d), np.float32)
    for c in range(k):
        for j in range(d):
            mean[c, j] = np.float32(sx[c, j] / max(cnt[c], 1.0))
    inside = np.zeros(k)
    for t in range(p):
        a = assign[t]
        if a >= 0:
            d2 = np.float32(0.0)
            for j in range(d):
                dj = x[j, t] - mean[a, j]
                d2 += dj * dj
            if d2 <= seed_r[a] * seed_r[a]:
                inside[a] += 1.0
    score = np.empty(k, np.float32)
    for c in range(k):
        n = max(cnt[c], 1.0)
        sc = (sf[c] / n) * (inside[c] / n)
        if use_eta:
            sc = sc * emax[c]
        score[c] = np.float32(sc)
    return cnt, score


# ----------------------------------------------------------------------------------------------------
# per-component algebra and ranking: torch on the inputs' device, with numpy / numba twins for the CPU
# ----------------------------------------------------------------------------------------------------

def _component_terms(cnt: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """float64 count (K,), mean (K, D), covariance (K, D, D) -> float32 mean, L⁻¹ (K, D, D) lower
    triangular (cov = L Lᵀ), log weight - ½ log det (K,), and the Cholesky info (K,) int (0 = fine),
    without synchronising."""
    k, d = mean.shape
    chol, info = torch.linalg.cholesky_ex(cov)
    logdet = 2 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(1)
    logw = torch.log(cnt.clamp_min(1) / cnt.sum())
    const = logw - 0.5 * logdet                            # the shared -D/2 log 2π drops out
    eye = torch.eye(d, dtype=chol.dtype, device=chol.device).expand(k, d, d)
    linv = torch.linalg.solve_triangular(chol, eye, upper=False)
    return mean.float(), linv.float(), const.float(), info


SINGULAR_MESSAGE = ("a cluster's feature covariance is singular (a cluster of identical features); "
                    "use ClusterParams.gmm_reg > 0")


def _raise_if_singular(info: torch.Tensor) -> None:
    if bool((info != 0).any()):
        raise RuntimeError(SINGULAR_MESSAGE)


def _rank(cnt: torch.Tensor, score: torch.Tensor, min_size: int, min_score: float
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Instance id per cluster, with slot 0 for 'unassigned' -> rank (K + 1,) int64 (0 = dropped), and
    the kept scores in id order. Stable: equal scores keep seeding order."""
    keep = (cnt >= min_size) & (score >= min_score)
    key = torch.where(keep, score, torch.full_like(score, -1.0))
    order = torch.sort(key, descending=True, stable=True).indices
    n_keep = int(keep.sum())
    rank = torch.zeros(len(score) + 1, dtype=torch.long, device=score.device)
    rank[order[:n_keep] + 1] = torch.arange(1, n_keep + 1, device=score.device)
    return rank, score[order[:n_keep]]


def _rank_np(cnt: np.ndarray, score: np.ndarray, min_size: int, min_score: float
             ) -> tuple[np.ndarray, np.ndarray]:
    """numpy twin of :func:`_rank`."""
    keep = (cnt >= min_size) & (score >= np.float32(min_score))
    key = np.where(keep, score, np.float32(-1.0))
    order = np.argsort(-key, kind="stable")
    n_keep = int(keep.sum())
    rank = np.zeros(len(score) + 1, np.int64)
    rank[order[:n_keep] + 1] = np.arange(1, n_keep + 1)
    return rank, score[order[:n_keep]]


def _big_clusters(cnt, min_size: int, stride: int):
    """Clusters (by seeding-stage pixel count) that seed a GMM component; the largest if none is big enough."""
    big = cnt >= max(1, min_size // (stride ** 2))
    if not bool(big.any()):
        big = cnt == cnt.max()                             # keep the largest rather than nothing
    return big


def _stride_selection(fg_idx: np.ndarray | torch.Tensor, w: int, stride: int):
    v, u = fg_idx // w, fg_idx % w
    return (v % stride == 0) & (u % stride == 0)


# ----------------------------------------------------------------------------------------------------
# torch implementation (device-agnostic, no per-object host synchronisation)
# ----------------------------------------------------------------------------------------------------

def _sq_dist(cols: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Σ_j (cols[j] - centre[j])², left to right in float32. cols (D, ...), centre broadcastable."""
    diff = cols - centre
    d2 = diff[0] * diff[0]
    for j in range(1, diff.shape[0]):
        d2 = d2 + diff[j] * diff[j]
    return d2


def sphere_seeding(xi: torch.Tensor, eta: torch.Tensor, radius: torch.Tensor, *, min_radius: float,
                   max_radius: float, max_instances: int, block: int = 8
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stage 1 on P points, torch (one host synchronisation per ``block`` seeds).

    Args:
        xi: (P, D) features. eta: (P,) seed priority (centroid probability). radius: (P,) metres.
    Returns:
        assign (P,) int64 cluster index 0..K-1, -1 if left unassigned (only when max_instances ran out);
        seeds (K,) int64 point index of each cluster's seed; seed_radius (K,) float32 clamped radius, metres.
        Clusters are numbered in seeding order; every cluster is non-empty.
    """
    p = xi.shape[0]
    dev = xi.device
    assign = torch.full((p,), -1, dtype=torch.long, device=dev)
    if p == 0:
        return assign, torch.zeros(0, dtype=torch.long, device=dev), torch.zeros(0, device=dev)
    r_all = radius.float().clamp(min_radius, max_radius)
    r2_all = r_all * r_all
    cols_all = xi.float().t().contiguous()                 # (D, P)
    eta_all = eta.float()
    remaining = torch.arange(p, device=dev)                # points still in play, compacted per block
    seed_pos = []
    k = 0
    while k < max_instances:
        n = min(block, max_instances - k)
        cols = cols_all.index_select(1, remaining)
        pr = eta_all.index_select(0, remaining)
        r2 = r2_all.index_select(0, remaining)
        sub = torch.full((remaining.numel(),), -1, dtype=torch.long, device=dev)
        for j in range(n):
            # once every point is taken, argmax lands on an assigned point: its cluster stays empty
            s = torch.argmax(pr).view(1)
            new = (_sq_dist(cols, cols.index_select(1, s)) <= r2.index_select(0, s)) & (sub < 0)
            sub.masked_fill_(new, k + j)
            pr.masked_fill_(new, -math.inf)
            seed_pos.append(remaining.index_select(0, s))
        assign.index_copy_(0, remaining, sub)
        k += n
        remaining = remaining[sub < 0]                     # the one host synchronisation per block
        if remaining.numel() == 0:
            break
    seeds = torch.cat(seed_pos)
    # seeds drawn after every point was assigned produced empty clusters: drop them and renumber
    counts = torch.zeros(k + 1, dtype=torch.long, device=dev).index_add_(0, assign + 1, torch.ones_like(assign))
    keep = counts[1:] > 0
    remap = torch.cat([torch.full((1,), -1, dtype=torch.long, device=dev), torch.cumsum(keep.long(), 0) - 1])
    seeds = seeds[keep]
    return remap[assign + 1], seeds, r_all[seeds]


def cluster_stats(xi: torch.Tensor, assign: torch.Tensor, k: int, reg: float
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-cluster count (K,), mean (K, D) and covariance (K, D, D) (1/N_k, + reg I) of hard assignments
    (assign in 0..K-1, -1 ignored), in xi's dtype. Unassigned points are summed into a spare slot."""
    d = xi.shape[1]
    slot = assign + 1
    z = torch.zeros(k + 1, device=xi.device, dtype=xi.dtype)
    cnt = z.index_add(0, slot, torch.ones_like(slot, dtype=xi.dtype))
    mean = torch.zeros(k + 1, d, device=xi.device, dtype=xi.dtype).index_add_(0, slot, xi)
    mean = mean / cnt.clamp_min(1)[:, None]
    diff = xi - mean[slot]
    outer = (diff[:, :, None] * diff[:, None, :]).reshape(-1, d * d)
    cov = torch.zeros(k + 1, d * d, device=xi.device, dtype=xi.dtype).index_add_(0, slot, outer)
    cov = cov.view(k + 1, d, d) / cnt.clamp_min(1)[:, None, None]
    cov = cov + reg * torch.eye(d, device=xi.device, dtype=xi.dtype)
    return cnt[1:], mean[1:], cov[1:]


def _gmm_assign_torch(xi: torch.Tensor, mean: torch.Tensor, linv: torch.Tensor, const: torch.Tensor
                      ) -> torch.Tensor:
    """Torch twin of :func:`_nb_gmm_assign`, elementwise over (pixels, K) chunks. xi (P, D) float32."""
    p, d = xi.shape
    k = mean.shape[0]
    out = torch.empty(p, dtype=torch.long, device=xi.device)
    step = max(1, GMM_CHUNK_ELEMENTS // k)
    for i in range(0, p, step):
        diff = [xi[i:i + step, j, None] - mean[None, :, j] for j in range(d)]      # D x (c, K)
        q = None
        for a in range(d):
            z = linv[None, :, a, 0] * diff[0]
            for b in range(1, a + 1):
                z = z + linv[None, :, a, b] * diff[b]
            q = z * z if q is None else q + z * z
        ll = const[None] - 0.5 * q
        out[i:i + step] = ll.argmax(1)
    return out


def gmm_iteration(xi: torch.Tensor, assign: torch.Tensor, k: int, reg: float) -> torch.Tensor:
    """Stage 2: hard reassignment of every point to the Gaussian component of highest posterior.

    Args:
        xi: (P, D). assign: (P,) initial clusters 0..K-1 (-1 = not used to fit). k: K. reg: m^2 added
            to each covariance's diagonal.
    Returns:
        (P,) int64 in 0..K-1 (all points assigned); (P,) of -1 when K = 0.
    Raises:
        RuntimeError if a component's covariance is singular (reg = 0 with a degenerate cluster).
    """
    p, d = xi.shape
    if k == 0 or p == 0:
        return torch.full((p,), -1, dtype=torch.long, device=xi.device)
    x32 = xi.float()
    cnt, mean, cov = cluster_stats(x32.double(), assign, k, reg)   # moments of ~1 m values, ~1e-5 m^2 spread
    mean32, linv, const, info = _component_terms(cnt, mean, cov)
    out = _gmm_assign_torch(x32, mean32, linv, const)
    _raise_if_singular(info)
    return out


def _cluster_torch(x: torch.Tensor, e: torch.Tensor, r: torch.Tensor, fgp: torch.Tensor,
                   sel: torch.Tensor | None, params: ClusterParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground points (x (P, D), e, r (unclamped), fgp (P,), float32) -> cluster per point (P,)
    (-1 = none), per-cluster count (K,) float64 and score (K,) float32."""
    p, d = x.shape
    dev = x.device
    if sel is None:
        a_sel, seeds, seed_r = sphere_seeding(x, e, r, min_radius=params.min_radius, max_radius=params.max_radius,
                                              max_instances=params.max_instances, block=params.block)
        assign = a_sel
    else:
        a_sel, seeds, seed_r = sphere_seeding(x[sel], e[sel], r[sel], min_radius=params.min_radius,
                                              max_radius=params.max_radius, max_instances=params.max_instances,
                                              block=params.block)
        assign = torch.full((p,), -1, dtype=torch.long, device=dev).index_copy_(0, sel, a_sel)
    k = len(seeds)
    if params.gmm and k:
        cnt = torch.zeros(k + 1, dtype=torch.long, device=dev).index_add_(0, a_sel + 1, torch.ones_like(a_sel))[1:]
        big = _big_clusters(cnt, params.min_size, params.seed_stride)
        remap = torch.cat([torch.full((1,), -1, dtype=torch.long, device=dev),
                           torch.where(big, torch.cumsum(big.long(), 0) - 1, torch.full_like(cnt, -1))])
        seed_r = seed_r[big]
        k = len(seed_r)
        assign = gmm_iteration(x, remap[assign + 1], k, params.gmm_reg)
    # per-cluster size, mean, compactness and score; slot 0 collects unassigned points
    slot = assign + 1
    x64 = x.double()
    cnt = torch.zeros(k + 1, dtype=torch.float64, device=dev).index_add_(0, slot, torch.ones_like(x64[:, 0]))
    n = cnt.clamp_min(1)
    mean = (torch.zeros(k + 1, d, dtype=torch.float64, device=dev).index_add_(0, slot, x64) / n[:, None]).float()
    r2 = torch.cat([torch.zeros(1, device=dev), seed_r * seed_r])
    inside = (_sq_dist(x.t(), mean[slot].t()) <= r2[slot]).double()
    ins = torch.zeros(k + 1, dtype=torch.float64, device=dev).index_add_(0, slot, inside)
    conf = torch.zeros(k + 1, dtype=torch.float64, device=dev).index_add_(0, slot, fgp.double())
    score = (conf / n) * (ins / n)
    if params.score_centroid:
        emax = torch.zeros(k + 1, dtype=torch.float64, device=dev).scatter_reduce_(0, slot, e.double(), "amax")
        score = score * emax
    return assign, cnt[1:], score[1:].float()


# ----------------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------------

def _cluster_numba(x: np.ndarray, e: np.ndarray, r: np.ndarray, fgp: np.ndarray, sel: np.ndarray | None,
                   params: ClusterParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """numba twin of :func:`_cluster_torch` on x (D, P) with r already clamped (no torch op: torch's
    worker threads would spin after each small op)."""
    d, p = x.shape
    if sel is None:
        assign, seeds = _nb_seed(x, e, r, params.max_instances, SEED_CHUNK)
        a_sel = assign
    else:
        a_sel, seeds_sub = _nb_seed(np.ascontiguousarray(x[:, sel]), e[sel], r[sel], params.max_instances,
                                    SEED_CHUNK)
        seeds = sel[seeds_sub]
        assign = np.full(p, -1, np.int64)
        assign[sel] = a_sel
    seed_r = r[seeds]
    k = len(seeds)
    if params.gmm and k:
        big = _big_clusters(np.bincount(a_sel[a_sel >= 0], minlength=k), params.min_size, params.seed_stride)
        remap = np.full(k + 1, -1, np.int64)
        remap[1:][big] = np.arange(int(big.sum()))
        seed_r = seed_r[big]
        k = len(seed_r)
        mean, linv, const, ok = _nb_component_terms(*_nb_cluster_stats(x, remap[assign + 1], k,
                                                                       float(params.gmm_reg)))
        if not ok:
            raise RuntimeError(SINGULAR_MESSAGE)
        assign = _nb_gmm_assign(x, mean, linv, const)
    cnt, score = _nb_scores(x, assign, fgp, e, seed_r, k, bool(params.score_centroid))
    return assign, cnt, score


def cluster_pixels(xi: torch.Tensor, eta: torch.Tensor, radius: torch.Tensor, fg_prob: torch.Tensor,
                   params: ClusterParams | None = None, *, backend: str = "auto"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster one image's predictions.

    Args:
        xi: (D, H, W) ξ̂, metres. eta: (H, W) centroid probability. radius: (H, W) B̂, metres.
        fg_prob: (H, W) foreground probability. All are used as float32.
        backend: "auto" (numba for CPU tensors, torch otherwise), "numba" (CPU tensors only) or "torch";
            both give the same result (see the module docstring).
    Returns:
        labels (H, W) int64 on xi's device: 0 = background, 1..N = instance, numbered by decreasing score;
        scores (N,) float32 in [0, 1].
    Raises:
        ValueError for mismatched shapes, an unknown backend, or NaN/inf in a foreground pixel's ξ̂, η̂ or B̂.
    """
    params = params or ClusterParams()
    if xi.dim() != 3:
        raise ValueError(f"xi must be (D, H, W), got {tuple(xi.shape)}")
    d, h, w = xi.shape
    if eta.shape != (h, w) or radius.shape != (h, w) or fg_prob.shape != (h, w):
        raise ValueError(f"eta {tuple(eta.shape)}, radius {tuple(radius.shape)}, fg_prob "
                         f"{tuple(fg_prob.shape)} must all be (H, W) = {(h, w)}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    dev = xi.device
    if backend == "auto":
        backend = "numba" if dev.type == "cpu" else "torch"
    if backend == "numba" and dev.type != "cpu":
        raise ValueError(f"backend='numba' needs CPU tensors, got {dev}; use backend='torch' or 'auto'")
    xi, eta, radius, fg_prob = (t.detach().float() for t in (xi, eta, radius, fg_prob))
    stride = params.seed_stride
    if backend == "numba":
        fg_idx, x, e, r, fgp, finite = _nb_gather(
            xi.reshape(d, -1).contiguous().numpy(), eta.reshape(-1).contiguous().numpy(),
            radius.reshape(-1).contiguous().numpy(), fg_prob.reshape(-1).contiguous().numpy(),
            np.float32(params.fg_threshold), np.float32(params.radius_multiplier),
            np.float32(params.min_radius), np.float32(params.max_radius))
        _check_finite(finite)
        sel = np.flatnonzero(_stride_selection(fg_idx, w, stride)) if stride > 1 else None
        assign, cnt, score = _cluster_numba(x, e, r, fgp, sel, params)
        rank, scores = _rank_np(cnt, score, params.min_size, params.min_score)
        labels = np.zeros(h * w, np.int64)
        labels[fg_idx] = rank[assign + 1]
        return torch.from_numpy(labels).view(h, w), torch.from_numpy(scores)
    fg_idx = torch.nonzero(fg_prob.reshape(-1) > params.fg_threshold).squeeze(1)
    x = xi.reshape(d, -1).index_select(1, fg_idx).t()
    e = eta.reshape(-1).index_select(0, fg_idx)
    r = radius.reshape(-1).index_select(0, fg_idx) * params.radius_multiplier
    fgp = fg_prob.reshape(-1).index_select(0, fg_idx)
    _check_finite(bool(torch.isfinite(x).all() & torch.isfinite(e).all() & torch.isfinite(r).all()))
    sel = torch.nonzero(_stride_selection(fg_idx, w, stride)).squeeze(1) if stride > 1 else None
    assign, cnt, score = _cluster_torch(x, e, r, fgp, sel, params)
    rank, scores = _rank(cnt, score, params.min_size, params.min_score)
    labels = torch.zeros(h * w, dtype=torch.long, device=dev).index_copy_(0, fg_idx, rank[assign + 1])
    return labels.view(h, w), scores


def warm_up() -> None:
    """Compile (or load from numba's on-disk cache) the CPU kernels on a tiny two-cluster input, so that a
    node pays the JIT once at start-up rather than on its first frame (seconds when not cached)."""
    xi = torch.zeros(3, 4, 4)
    xi[0, :, 2:] = 0.5
    xi[:, 0, 0] += 0.001
    ones = torch.ones(4, 4)
    cluster_pixels(xi, ones, ones * 0.05, ones, ClusterParams(min_size=1), backend="numba")


def _check_finite(finite: bool) -> None:
    if not finite:
        raise ValueError("NaN/inf in the network's xi, centroid or radius output at a foreground pixel; "
                         "check the checkpoint and the input frame (depth in metres, no NaN in rgb)")
