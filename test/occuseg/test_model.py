"""OccuSegNet's two modes: the loss dict (eq. 1, with the model's own term weights) in training mode,
HeadOutputs in eval mode, as ClusterNet's model."""
import numpy as np
import pytest
import torch

from instseg_ros.occuseg.config import LossWeights, NetConfig
from instseg_ros.occuseg.model import IN_CHANNELS, HeadOutputs, OccuSegNet
from instseg_ros.occuseg.sparse import sparse_threads


def _scene(n=200, seed=0):
    rng = np.random.default_rng(seed)
    flat = rng.choice(12 ** 3, n, replace=False)
    coords = torch.from_numpy(np.stack(np.unravel_index(flat, (12, 12, 12)), 1).astype(np.int32))
    feats = torch.from_numpy(rng.normal(size=(n, IN_CHANNELS)).astype(np.float32))
    ins = torch.from_numpy((coords[:, 0].numpy() // 4).astype(np.int64))     # 3 slabs: bg, 1, 2
    targets = {"pos": coords.float() / 5.0, "semantic": (ins > 0).long(), "instance": ins}
    return feats, coords, targets


def test_training_mode_returns_the_weighted_loss_dict():
    torch.manual_seed(0)
    w = LossWeights(semantic=2.0, occupancy=0.0, covariance=0.5)
    model = OccuSegNet(NetConfig(num_classes=2, channels=(8, 16), embed_dim=4), w).train()
    feats, coords, targets = _scene()
    with sparse_threads("cpu"):
        terms = model(feats, coords, targets)
    assert list(terms)[0] == "loss"
    assert set(terms) == {"loss", "semantic", "spatial", "feature_var", "feature_dist", "feature_reg",
                          "covariance", "occupancy"}
    by_hand = (2.0 * terms["semantic"] + terms["spatial"] + terms["feature_var"] + terms["feature_dist"]
               + terms["feature_reg"] + 0.5 * terms["covariance"] + 0.0 * terms["occupancy"])
    assert terms["loss"].item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert terms["occupancy"].item() > 0     # computed and reported, weighted out of the total
    with sparse_threads("cpu"):
        terms["loss"].backward()
    assert model.head_sem.weight.grad.abs().sum() > 0
    assert model.head_occ.weight.grad is None or model.head_occ.weight.grad.abs().sum() == 0


def test_eval_mode_returns_head_outputs_and_training_needs_targets():
    model = OccuSegNet(NetConfig(num_classes=3, channels=(8, 16), embed_dim=4))
    feats, coords, _ = _scene(50, seed=1)
    with pytest.raises(RuntimeError, match="needs targets"):
        model.train()(feats, coords)
    with torch.no_grad(), sparse_threads("cpu"):
        out = model.eval()(feats, coords)
    assert isinstance(out, HeadOutputs)
    assert out.semantic.shape == (50, 3) and out.embedding.shape == (50, 4) and out.offset.shape == (50, 3)
    assert out.sigma.shape == (50, 2) and (out.sigma > 0).all() and out.occupancy.shape == (50,)
