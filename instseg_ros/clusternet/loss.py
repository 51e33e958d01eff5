"""Object-centric training loss of ClusterNet (paper §III-D, eq. 3-5).

    L = λ_s L_s + λ_cen L_cen + L_p + λ_var L_var + λ_vio L_vio

- L_s: cross entropy of the foreground/background mask over all pixels.
- L_cen: cross entropy of the centroid-candidate map η, ground-truth foreground pixels only.
- L_p = λ_p (λ_xi mean_fg ||ξ̂ - ξ||² + λ_B mean_fg (B̂ - B)²), ground-truth foreground only.
- L_var (eq. 4) = Σ_k 1/N_k Σ_{uv ∈ O_k} ||ξ̂_uv - mean_k(ξ̂)||_2.
- L_vio (eq. 5) = Σ_k 1/N_k Σ_{uv ∈ O_k} 1{||ξ̂_uv - ξ_k||_2 > λ_v B_k} ||ξ̂_uv - ξ_k||_2.
  The paper writes eq. 5 without the 1/N_k; we normalise per object like eq. 4 so that the term does
  not grow with the image resolution (with 76,800 pixels per frame the raw sum dwarfs every other term).
The object sums are per image; batch terms are the mean over images. Norms use sqrt(x + EPS) so that the
gradient stays finite at 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import LossConfig

EPS = 1e-10  # m^2, inside the square roots of L_var and L_vio


def _object_index(instance: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Dense per-batch object index of each pixel: image b's object k -> b * (K + 1) + k (0 = none)."""
    b = instance.shape[0]
    kmax = int(instance.max().item()) if instance.numel() else 0
    offs = torch.arange(b, device=instance.device).view(b, *([1] * (instance.dim() - 1))) * (kmax + 1)
    return instance.long() + offs, b * (kmax + 1)


def variance_violation(xi_hat: torch.Tensor, xi_gt: torch.Tensor, radius_gt: torch.Tensor,
                       instance: torch.Tensor, lam_v: float) -> tuple[torch.Tensor, torch.Tensor]:
    """L_var and L_vio for a batch (each the mean over images of the per-image sum over objects).

    Args:
        xi_hat: (B, D, H, W) predicted features. xi_gt: (B, D, H, W) target features.
        radius_gt: (B, H, W) target radius B, metres. instance: (B, H, W) int, dense object index per
            image (1..N_b), 0 = background (excluded). lam_v: λ_v.
    """
    bsz, d = xi_hat.shape[:2]
    gidx, n_slots = _object_index(instance)
    fg = instance > 0
    x = xi_hat.permute(0, 2, 3, 1)[fg]                 # (P, D)
    g = xi_gt.permute(0, 2, 3, 1)[fg]
    r = radius_gt[fg]
    idx = gidx[fg]
    zero = xi_hat.sum() * 0.0
    if idx.numel() == 0:
        return zero, zero
    cnt = torch.zeros(n_slots, device=x.device, dtype=x.dtype).index_add_(0, idx, torch.ones_like(r))
    mean = torch.zeros(n_slots, d, device=x.device, dtype=x.dtype).index_add_(0, idx, x) / cnt.clamp_min(1)[:, None]
    dev = torch.sqrt(((x - mean[idx]) ** 2).sum(1) + EPS)
    err = torch.sqrt(((x - g) ** 2).sum(1) + EPS)
    vio = torch.where(err > lam_v * r, err, torch.zeros_like(err))
    w = 1.0 / cnt[idx]
    l_var = (dev * w).sum() / bsz
    l_vio = (vio * w).sum() / bsz
    return l_var, l_vio


def clusternet_loss(pred: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], cfg: LossConfig,
                    lam_var: float, lam_vio: float) -> dict[str, torch.Tensor]:
    """Loss terms of eq. (3).

    Args:
        pred: network outputs ("xi" (B, D, H, W), "centroid_logits" (B, 2, H, W), "mask_logits"
            (B, 2, H, W), "radius" (B, 1, H, W)).
        targets: "xi" (B, 9, H, W) metres, "centroid" (B, H, W) 0/1, "radius" (B, H, W) metres,
            "foreground" (B, H, W) bool, "instance" (B, H, W) int dense object index.
        cfg: weights. lam_var, lam_vio: the current (scheduled) λ_var, λ_vio.
    Returns:
        dict with the unweighted terms "L_s", "L_cen", "L_xi", "L_B", "L_var", "L_vio" and "loss" (eq. 3).
    """
    xi_hat = pred["xi"]
    d = xi_hat.shape[1]
    fg = targets["foreground"].bool()
    xi_gt = targets["xi"][:, :d]
    l_s = F.cross_entropy(pred["mask_logits"], fg.long())
    zero = xi_hat.sum() * 0.0
    if fg.any():
        cen_logits = pred["centroid_logits"].permute(0, 2, 3, 1)[fg]
        l_cen = F.cross_entropy(cen_logits, targets["centroid"][fg].long())
        l_xi = ((xi_hat - xi_gt) ** 2).sum(1)[fg].mean()
        l_b = ((pred["radius"][:, 0] - targets["radius"]) ** 2)[fg].mean()
    else:
        l_cen = l_xi = l_b = zero
    l_var, l_vio = variance_violation(xi_hat, xi_gt, targets["radius"], targets["instance"] * fg, cfg.lam_v)
    total = (cfg.lam_s * l_s + cfg.lam_cen * l_cen + cfg.lam_p * (cfg.lam_xi * l_xi + cfg.lam_b * l_b)
             + lam_var * l_var + lam_vio * l_vio)
    return {"loss": total, "L_s": l_s, "L_cen": l_cen, "L_xi": l_xi, "L_B": l_b, "L_var": l_var, "L_vio": l_vio}
