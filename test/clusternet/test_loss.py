"""Each loss term of eq. (3)-(5) against values computed by hand on a 1x4 image."""
import math

import pytest
import torch

from instseg_ros.clusternet.config import LossConfig
from instseg_ros.clusternet.loss import clusternet_loss


def _case():
    # pixels: 0, 1 -> object 1 ; 2 -> object 2 ; 3 -> background
    xi_hat = torch.tensor([[0.0, 0, 0], [2, 0, 0], [0, 3, 0], [7, 7, 7]]).t().reshape(1, 3, 1, 4)
    xi_gt9 = torch.zeros(1, 9, 1, 4)
    radius_gt = torch.tensor([[[2.0, 2.0, 10.0, 0.0]]])
    l3 = math.log(3.0)
    pred = {
        "xi": xi_hat,
        "mask_logits": torch.tensor([[0.0, l3], [0, l3], [0, l3], [0, 0]]).t().reshape(1, 2, 1, 4),
        "centroid_logits": torch.zeros(1, 2, 1, 4),
        "radius": torch.tensor([1.0, 2.0, 10.0, 5.0]).reshape(1, 1, 1, 4),
    }
    tgt = {"xi": xi_gt9, "radius": radius_gt, "centroid": torch.tensor([[[1.0, 0, 1, 0]]]),
           "foreground": torch.tensor([[[True, True, True, False]]]),
           "instance": torch.tensor([[[1, 1, 2, 0]]])}
    return pred, tgt


def test_each_term_by_hand():
    pred, tgt = _case()
    cfg = LossConfig()
    out = clusternet_loss(pred, tgt, cfg, lam_var=1.0, lam_vio=1.0)
    # L_s: three fg pixels with p(fg) = 3/4, one bg pixel with p(bg) = 1/2, mean over 4 pixels
    assert out["L_s"].item() == pytest.approx((3 * -math.log(0.75) + math.log(2)) / 4, rel=1e-6)
    # L_cen: zero logits on the 3 fg pixels -> ln 2 each (the bg pixel is not counted)
    assert out["L_cen"].item() == pytest.approx(math.log(2), rel=1e-6)
    # L_xi: squared errors 0, 4, 9 on fg (bg pixel's 147 ignored) -> 13 / 3
    assert out["L_xi"].item() == pytest.approx(13 / 3, rel=1e-6)
    # L_B: (1-2)^2, 0, 0 on fg -> 1 / 3
    assert out["L_B"].item() == pytest.approx(1 / 3, rel=1e-6)
    # L_var: object 1 mean (1,0,0): deviations 1, 1 -> 1 ; object 2: 0 (sqrt(eps)) -> 1
    assert out["L_var"].item() == pytest.approx(1.0, abs=1e-4)
    # L_vio: object 1 (B=2, λ_v B = 0.4): errors 0 (kept), 2 (violates) -> 2 / 2 = 1 ;
    #        object 2 (B=10, λ_v B = 2): error 3 violates -> 3 / 1 ; total 4
    assert out["L_vio"].item() == pytest.approx(4.0, rel=1e-5)
    total = (out["L_s"] + out["L_cen"] + 100 * (13 / 3 + 10 / 3) + out["L_var"] + out["L_vio"]).item()
    assert out["loss"].item() == pytest.approx(total, rel=1e-6)


def test_schedule_weights_and_lambda_v():
    pred, tgt = _case()
    cfg = LossConfig(late_step=5, var_vio_late=100.0, lam_v=0.1)
    assert cfg.weights_at(4) == (1.0, 1.0) and cfg.weights_at(5) == (100.0, 100.0)
    out = clusternet_loss(pred, tgt, cfg, *cfg.weights_at(5))
    # λ_v = 0.1: object 2's threshold becomes 1 (error 3 still violates), object 1's 0.2: same sets
    assert out["L_vio"].item() == pytest.approx(4.0, rel=1e-5)
    base = clusternet_loss(pred, tgt, cfg, 1.0, 1.0)
    assert (out["loss"] - base["loss"]).item() == pytest.approx(99 * (1.0 + 4.0), rel=1e-4)
    # a large λ_v makes object 2's error 3 < λ_v B = 5 * 10: no violation there
    out2 = clusternet_loss(pred, tgt, LossConfig(lam_v=0.5), 1.0, 1.0)
    assert out2["L_vio"].item() == pytest.approx(1.0, rel=1e-5)


def test_gradients_flow_and_empty_foreground_is_finite():
    pred, tgt = _case()
    pred["xi"].requires_grad_(True)
    clusternet_loss(pred, tgt, LossConfig(), 1.0, 1.0)["loss"].backward()
    g = pred["xi"].grad
    assert torch.isfinite(g).all() and g[..., 3].abs().sum() == 0     # background pixel gets no ξ gradient
    for k in ("foreground", "instance"):
        tgt[k] = torch.zeros_like(tgt[k])
    out = clusternet_loss(pred, tgt, LossConfig(), 1.0, 1.0)
    assert all(torch.isfinite(v) for v in out.values())
    assert out["L_var"].item() == 0 and out["L_vio"].item() == 0 and out["L_xi"].item() == 0


def test_batch_terms_are_mean_over_images():
    pred, tgt = _case()
    p2 = {k: torch.cat([v, v]) for k, v in pred.items()}
    t2 = {k: torch.cat([v, v]) for k, v in tgt.items()}
    a = clusternet_loss(pred, tgt, LossConfig(), 1.0, 1.0)
    b = clusternet_loss(p2, t2, LossConfig(), 1.0, 1.0)
    for k in a:
        assert b[k].item() == pytest.approx(a[k].item(), rel=1e-5)
