"""OccuSeg losses eq. (3)-(10) against values worked out by hand."""
import math

import pytest
import torch

from instseg_ros.occuseg.loss import covariance_loss, feature_losses, occupancy_loss, occuseg_loss, spatial_loss
from instseg_ros.occuseg.model import HeadOutputs

T = torch.tensor


def test_spatial_loss_eq3():
    # instance 1: voxels at x=0 and x=2, centre x=1, zero offsets -> errors 1, 1 -> mean 1
    # instance 2: one voxel at the origin, offset (3, 4, 0) -> error 5; background voxel ignored
    pos = T([[0, 0, 0], [2, 0, 0], [0, 0, 0], [9, 9, 9.]])
    off = T([[0, 0, 0], [0, 0, 0], [3, 4, 0], [7, 7, 7.]])
    ins = T([1, 1, 2, 0])
    assert spatial_loss(off, pos, ins).item() == pytest.approx((1 + 5) / 2)


def test_feature_losses_eq5_to_7():
    # instance 1: s = (0,0), (1,0) -> u = (0.5, 0), ||u - s|| = 0.5 -> [0.5 - 0.1]^2 = 0.16
    # instance 2: s = (1.5, 0) -> u = (1.5, 0), variance 0.  L_var = (0.16 + 0) / 2 = 0.08
    # ||u1 - u2|| = 1 -> [2 * 1.5 - 1]^2 = 4, one pair, / (C (C - 1)) = / 2 -> L_dist = 2
    # L_reg = (0.5 + 1.5) / 2 = 1
    emb = T([[0, 0], [1, 0], [1.5, 0], [5, 5.]])
    ins = T([1, 1, 2, 0])
    f = feature_losses(emb, ins)
    assert f["var"].item() == pytest.approx(0.08)
    assert f["dist"].item() == pytest.approx(2.0)
    assert f["reg"].item() == pytest.approx(1.0)
    # centres farther than 2 delta_d apart: no distance penalty
    assert feature_losses(T([[0, 0], [0, 0], [3.5, 0], [0, 0.]]), ins)["dist"].item() == 0.0


def test_covariance_loss_eq8_eq9():
    # one instance {0, 1}; voxel 2 background. u_c = 0, e_c = 0, sigma_c = mean((1,1), (1,3)) = (1, 2).
    # p_0 = p_1 = exp(0) = 1 (clamped to 1 - 1e-6); voxel 2: ||s - u|| = 1, ||mu + d - e|| = 1
    # -> p_2 = exp(-(1/1)^2 - (1/2)^2) = exp(-1.25), y_2 = 0 -> -log(1 - exp(-1.25)).
    emb = T([[0.], [0.], [1.]])
    pos = T([[1, 0, 0], [-1, 0, 0], [0, 1, 0.]])
    off = T([[-1, 0, 0], [1, 0, 0], [0, 0, 0.]])
    sig = T([[1, 1], [1, 3], [7, 7.]])
    ins = T([1, 1, 0])
    expect = (-2 * math.log(1 - 1e-6) - math.log(1 - math.exp(-1.25))) / 3
    assert covariance_loss(emb, off, sig, pos, ins).item() == pytest.approx(expect, rel=1e-5)


def test_occupancy_loss_eq10():
    # instance 1 has 2 voxels: o = log 2 +- 0.5 -> mean error 0.5; instance 2 (1 voxel): |1 - log 1| = 1
    occ = T([math.log(2) + 0.5, math.log(2) - 0.5, 1.0, 3.0])
    ins = T([1, 1, 2, 0])
    assert occupancy_loss(occ, ins).item() == pytest.approx(0.75)


def test_joint_loss_is_sum_of_terms_and_backpropagates():
    torch.manual_seed(0)
    V = 12
    out = HeadOutputs(semantic=torch.randn(V, 3, requires_grad=True), embedding=torch.randn(V, 4, requires_grad=True),
                      offset=torch.randn(V, 3, requires_grad=True), sigma=torch.rand(V, 2) + 0.5,
                      occupancy=torch.randn(V, requires_grad=True))
    pos = torch.randn(V, 3)
    ins = T([1] * 4 + [2] * 4 + [0] * 4)
    sem = T([1] * 4 + [2] * 4 + [0] * 4)
    terms = occuseg_loss(out, pos, sem, ins)
    manual = (terms["semantic"] + terms["spatial"] + terms["feature_var"] + terms["feature_dist"]
              + terms["feature_reg"] + terms["covariance"] + terms["occupancy"])
    assert terms["loss"].item() == pytest.approx(manual.item(), rel=1e-6)
    terms["loss"].backward()
    assert out.offset.grad.abs().sum() > 0 and out.occupancy.grad.abs().sum() > 0


def test_scene_without_instances_gives_zero_instance_terms():
    V = 5
    out = HeadOutputs(semantic=torch.zeros(V, 2), embedding=torch.ones(V, 3), offset=torch.ones(V, 3),
                      sigma=torch.ones(V, 2), occupancy=torch.ones(V))
    terms = occuseg_loss(out, torch.zeros(V, 3), torch.zeros(V, dtype=torch.long), torch.zeros(V, dtype=torch.long))
    for k in ("spatial", "feature_var", "feature_dist", "feature_reg", "covariance", "occupancy"):
        assert terms[k].item() == 0.0
    assert terms["semantic"].item() == pytest.approx(math.log(2))
