"""OccuSeg losses, eq. (1)-(10) of the paper, for one scene.

Notation: V voxels; instance ids > 0 (0 = background, excluded from the instance terms);
C = number of instances; positions mu and offsets d in normalised units (see model.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import LossWeights

DELTA_V = 0.1      #: eq. (5) intra-instance hinge
DELTA_D = 1.5      #: eq. (6) inter-instance hinge (centres pushed 2 * delta_d apart)
P_EPS = 1e-6       #: clamp of p_i in the BCE of eq. (9)


def _instance_index(instance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mask of instance voxels, dense index 0..C-1 per instance voxel, counts N_c (C,))."""
    mask = instance > 0
    ids, inv, counts = torch.unique(instance[mask], return_inverse=True, return_counts=True)
    return mask, inv, counts


def _segment_mean(x: torch.Tensor, inv: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    out = torch.zeros((len(counts),) + x.shape[1:], dtype=x.dtype, device=x.device)
    out.index_add_(0, inv, x)
    return out / counts.view(-1, *([1] * (x.ndim - 1))).to(x.dtype)


def spatial_loss(offset: torch.Tensor, pos: torch.Tensor, instance: torch.Tensor) -> torch.Tensor:
    """Eq. (3): mean over instances of mean_i || d_i + mu_i - mean_c(mu) ||."""
    mask, inv, counts = _instance_index(instance)
    if len(counts) == 0:
        return offset.sum() * 0.0
    mu, d = pos[mask], offset[mask]
    centre = _segment_mean(mu, inv, counts)
    err = torch.linalg.norm(d + mu - centre[inv], dim=1)
    return (_segment_mean(err, inv, counts)).mean()


def feature_losses(emb: torch.Tensor, instance: torch.Tensor, delta_v: float = DELTA_V,
                   delta_d: float = DELTA_D) -> dict[str, torch.Tensor]:
    """Eq. (5)-(7): L_var, L_dist (pairs c_A < c_B, normalised by C(C-1)), L_reg."""
    mask, inv, counts = _instance_index(instance)
    zero = emb.sum() * 0.0
    C = len(counts)
    if C == 0:
        return {"var": zero, "dist": zero, "reg": zero}
    s = emb[mask]
    u = _segment_mean(s, inv, counts)
    var = _segment_mean(F.relu(torch.linalg.norm(u[inv] - s, dim=1) - delta_v) ** 2, inv, counts).mean()
    if C > 1:
        iu = torch.triu_indices(C, C, offset=1, device=emb.device)
        dd = torch.linalg.norm(u[iu[0]] - u[iu[1]], dim=1)
        dist = (F.relu(2 * delta_d - dd) ** 2).sum() / (C * (C - 1))
    else:
        dist = zero
    reg = torch.linalg.norm(u, dim=1).mean()
    return {"var": var, "dist": dist, "reg": reg}


def membership_probability(emb: torch.Tensor, offset: torch.Tensor, sigma: torch.Tensor,
                           pos: torch.Tensor, instance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (8) for every (instance c, voxel i): p (C, V) and the targets y (C, V) = [i in c]."""
    mask, inv, counts = _instance_index(instance)
    ids = torch.unique(instance[mask])
    u = _segment_mean(emb[mask], inv, counts)                    # (C, E)
    e = _segment_mean((pos + offset)[mask], inv, counts)         # (C, 3)
    sig = _segment_mean(sigma[mask], inv, counts)                # (C, 2)
    ds = torch.cdist(u, emb) / sig[:, :1]                        # (C, V)
    dd = torch.cdist(e, pos + offset) / sig[:, 1:2]
    p = torch.exp(-ds ** 2 - dd ** 2)
    y = (instance[None, :] == ids[:, None]).to(p.dtype)
    return p, y


def covariance_loss(emb, offset, sigma, pos, instance) -> torch.Tensor:
    """Eq. (9): (1/C) sum_c (1/N) sum_i BCE(p_i, y_i) over all N voxels of the scene."""
    if not (instance > 0).any():
        return (emb.sum() + offset.sum() + sigma.sum()) * 0.0
    p, y = membership_probability(emb, offset, sigma, pos, instance)
    p = p.clamp(P_EPS, 1 - P_EPS)
    bce = -(y * torch.log(p) + (1 - y) * torch.log(1 - p))
    return bce.mean(dim=1).mean()


def occupancy_loss(occ: torch.Tensor, instance: torch.Tensor) -> torch.Tensor:
    """Eq. (10): mean over instances of mean_i | o_i - log N_c |."""
    mask, inv, counts = _instance_index(instance)
    if len(counts) == 0:
        return occ.sum() * 0.0
    err = (occ[mask] - torch.log(counts.to(occ.dtype))[inv]).abs()
    return _segment_mean(err, inv, counts).mean()


def occuseg_loss(out, pos: torch.Tensor, semantic: torch.Tensor, instance: torch.Tensor,
                 weights: LossWeights | None = None, ignore_index: int = -1) -> dict[str, torch.Tensor]:
    """Eq. (1): L_joint = L_c + L_sp + (L_var + L_dist + L_reg) + L_cov + L_o for one scene.

    Args:
        out: :class:`~instseg_ros.occuseg.model.HeadOutputs`.
        pos: float32 (V, 3) voxel positions, normalised units.
        semantic: int64 (V,) class per voxel (0 = background; ``ignore_index`` = unlabelled).
        instance: int64 (V,) instance id per voxel (0 = background / unlabelled).
    Returns:
        dict of scalar tensors: "loss" (eq. 1, weighted) first, then each unweighted term.
    """
    w = weights or LossWeights()
    terms: dict[str, torch.Tensor] = {}
    terms["semantic"] = F.cross_entropy(out.semantic, semantic, ignore_index=ignore_index)
    terms["spatial"] = spatial_loss(out.offset, pos, instance)
    fl = feature_losses(out.embedding, instance)
    terms.update({f"feature_{k}": v for k, v in fl.items()})
    terms["covariance"] = covariance_loss(out.embedding if w.feature > 0 else out.embedding.detach() * 0,
                                          out.offset if w.spatial > 0 else out.offset.detach() * 0,
                                          out.sigma, pos, instance)
    terms["occupancy"] = occupancy_loss(out.occupancy, instance)
    total = (w.semantic * terms["semantic"] + w.spatial * terms["spatial"]
             + w.feature * (fl["var"] + fl["dist"] + fl["reg"]) + w.covariance * terms["covariance"]
             + w.occupancy * terms["occupancy"])
    return {"loss": total, **terms}
