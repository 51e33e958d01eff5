"""Network shapes per ablation switch, input preparation, checkpoints and the predictor's post-processing."""
import numpy as np
import pytest
import torch

from instseg_ros.clusternet.checkpoint import build_model, load_checkpoint, save_checkpoint
from instseg_ros.clusternet.config import ModelConfig, load_train_config
from instseg_ros.clusternet.model import ClusterNet, SplitInputConv, backproject_torch, export_form, fill_depth_holes
from instseg_ros.clusternet.predictor import ClusterNetPredictor, instance_moments, scale_intrinsics
from instseg_ros.clusternet.refine import RefineParams
from instseg_ros.core.geometry import backproject

TINY = dict(base_width=8, c1_channels=16, aspp_channels=16, decoder_channels=16, depth_widths=(8, 8, 8, 8),
            input_height=48, input_width=64)


def _inputs(model, h=48, w=64, b=2):
    g = torch.Generator().manual_seed(0)
    rgb = torch.randint(0, 255, (b, 3, h, w), generator=g).to(torch.uint8)
    depth = 0.8 + 0.4 * torch.rand(b, 1, h, w, generator=g)
    K = torch.tensor([[60.0, 0, w / 2], [0, 60.0, h / 2], [0, 0, 1]]).expand(b, 3, 3)
    return model.net.prepare(rgb, depth, K)


@pytest.mark.parametrize("inputs", ["rgb", "rgb+d", "rgb+xyz", "rgb+xyz+d"])
@pytest.mark.parametrize("feature", ["c", "c+cov"])
def test_output_shapes_for_every_ablation(inputs, feature):
    torch.manual_seed(0)
    m = ClusterNet(ModelConfig(inputs=inputs, feature=feature, **TINY)).eval()
    with torch.no_grad():
        out = m(_inputs(m, 50, 70))          # not a multiple of 32 on purpose
    d = 3 if feature == "c" else 9
    assert out["xi"].shape == (2, d, 50, 70)
    assert out["centroid_logits"].shape == out["mask_logits"].shape == (2, 2, 50, 70)
    assert out["radius"].shape == (2, 1, 50, 70) and (out["radius"] > 0).all()
    assert ((out["fg_prob"] >= 0) & (out["fg_prob"] <= 1)).all()
    assert hasattr(m.net, "xyz_enc") == ("xyz" in inputs) and hasattr(m.net, "depth_enc") == inputs.endswith("+d")
    m.train()
    with pytest.raises(RuntimeError, match="targets"):
        m(_inputs(m))


@pytest.mark.parametrize("inputs", ["rgb+xyz+d", "rgb+d"])   # with and without the xyz residual input of xi_up1
def test_export_form_computes_the_same_outputs(inputs, random_bn):
    """The rewritten copy (split convolution, logit-difference heads) is the same function: in float64 it
    matches the model as trained to float64 rounding, on random BatchNorm statistics (no layer an identity)."""
    torch.manual_seed(3)
    m = ClusterNet(ModelConfig(inputs=inputs, **TINY))
    random_bn(m, 0.3, (0.4, 2.0))
    with torch.no_grad():
        m.net.xi_head.weight.normal_(0, 0.2)
        for head in (m.net.centroid_head, m.net.mask_head):
            head.weight.normal_(0, 0.5)
            head.bias.normal_(0, 1.0)
    m = m.eval().double()
    fast = export_form(m)
    assert isinstance(fast.net.xi_up1, SplitInputConv)
    assert fast.net.centroid_head.out_channels == fast.net.mask_head.out_channels == 1
    assert m.net.centroid_head.out_channels == 2          # the original is left as it was
    with torch.no_grad():
        x = {k: v.double() for k, v in _inputs(m, 50, 70).items()}
        a, b = m(x), fast(x)
    for k in ("xi", "centroid_prob", "fg_prob", "radius"):
        assert a[k].shape == b[k].shape, k
        assert torch.allclose(a[k], b[k], rtol=0, atol=1e-12), (k, (a[k] - b[k]).abs().max())
    for k in ("fg_prob", "centroid_prob"):   # probabilities neither saturated nor constant: a real check
        assert 0.05 < a[k].median() < 0.95 and a[k].std() > 1e-3, k
    assert (a["xi"] - x["xyz"]).abs().max() > 1e-3                         # the ξ offset path is exercised too


def test_residual_xi_starts_at_the_measured_point():
    m = ClusterNet(ModelConfig(feature="c+cov", **TINY)).eval()   # ξ head is zero-initialised
    depth = torch.full((1, 1, 48, 64), 1.2)
    K = torch.tensor([[[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]]])
    inp = m.net.prepare(torch.zeros(1, 3, 48, 64, dtype=torch.uint8), depth, K)
    with torch.no_grad():
        xi = m(inp)["xi"][0]
    ref = backproject(np.full((48, 64), 1.2, np.float32), K[0].numpy())
    for j in range(3):
        np.testing.assert_allclose(xi[3 * j:3 * j + 3].permute(1, 2, 0).numpy(), ref, atol=1e-6)


def test_fill_depth_holes_and_backprojection():
    d = torch.full((1, 1, 20, 20), 2.0)
    d[0, 0, 5:9, 5:9] = 0
    d[0, 0, 0, 0] = float("nan")
    filled, valid = fill_depth_holes(d, fallback=1.0)
    assert torch.allclose(filled, torch.full_like(filled, 2.0))
    assert valid.sum() == 400 - 16 - 1
    filled, _ = fill_depth_holes(torch.zeros(1, 1, 8, 8), fallback=0.7)
    assert torch.allclose(filled, torch.full_like(filled, 0.7))
    K = np.array([[50.0, 0, 9.0], [0, 40.0, 7.0], [0, 0, 1]])
    dep = np.random.default_rng(0).uniform(0.5, 2, (15, 20)).astype(np.float32)
    got = backproject_torch(torch.from_numpy(dep)[None, None], torch.from_numpy(K)[None])[0].permute(1, 2, 0)
    np.testing.assert_allclose(got.numpy(), backproject(dep, K), rtol=1e-6, atol=1e-6)


def test_checkpoint_roundtrip_and_errors(tmp_path):
    cfg = ModelConfig(**TINY)
    m = ClusterNet(cfg).eval()
    p = str(tmp_path / "c.pt")
    save_checkpoint(p, cfg, m.state_dict(), {"steps": 3})
    ck = load_checkpoint(p)
    assert ck["meta"]["steps"] == 3 and ck["model_config"] == cfg
    m2 = build_model(ck)
    inp = _inputs(m)
    with torch.no_grad():
        assert torch.equal(m(inp)["xi"], m2(inp)["xi"])
    with pytest.raises(RuntimeError, match="missing.pt"):
        load_checkpoint(str(tmp_path / "missing.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="bad.pt"):
        ClusterNetPredictor.from_checkpoint(str(bad), device="cpu")
    torch.save({"config": {"backbone": "vgg"}, "model": {}, "meta": {}}, tmp_path / "cfg.pt")
    with pytest.raises(ValueError, match="backbone"):
        load_checkpoint(str(tmp_path / "cfg.pt"))
    torch.save({"weights": 1}, tmp_path / "keys.pt")
    with pytest.raises(RuntimeError, match="not a ClusterNet checkpoint"):
        load_checkpoint(str(tmp_path / "keys.pt"))


def test_postprocess_moments_use_input_depth_and_skip_invalid():
    K = np.array([[100.0, 0, 10], [0, 100.0, 8], [0, 0, 1]])
    depth = np.full((16, 20), 1.0, np.float32)
    depth[2:6, 2:8] = 0.5
    depth[2:4, 2:8] = 0.0                              # invalid rows inside object 1
    lab = np.zeros((16, 20), np.int64)
    lab[2:6, 2:8] = 1
    lab[10:12, 10:11] = 2                              # 2 valid pixels only -> dropped (min 10)
    pts = backproject(depth, K)
    cnt, cen, cov = instance_moments(lab, pts, depth > 0, 2)
    sel = pts[4:6, 2:8].reshape(-1, 3).astype(np.float64)
    assert cnt.tolist() == [12, 2]
    np.testing.assert_allclose(cen[0], sel.mean(0), atol=1e-12)
    np.testing.assert_allclose(cov[0], np.cov(sel.T, bias=True), atol=1e-12)
    pred = ClusterNetPredictor(ClusterNet(ModelConfig(**TINY)), "cpu", refine=RefineParams(enabled=False))
    inst = pred._postprocess(lab, np.array([0.9, 0.8], np.float32), depth, K)
    assert len(inst) == 1 and inst.labels.dtype == np.int32 and (inst.labels[10:12, 10] == 0).all()
    assert inst.num_points.tolist() == [12] and (inst.labels[2:6, 2:8] == 1).all()
    np.testing.assert_allclose(inst.centroids[0], sel.mean(0), atol=1e-9)


def test_predict_contract_and_validation():
    torch.manual_seed(0)
    pred = ClusterNetPredictor(ClusterNet(ModelConfig(**TINY)), "cpu")
    rgb = np.zeros((60, 80, 3), np.uint8)
    depth = np.full((60, 80), 0.9, np.float32)
    K = np.array([[70.0, 0, 40], [0, 70.0, 30], [0, 0, 1]])
    inst = pred.predict(rgb, depth, K)
    assert inst.labels.shape == (60, 80) and inst.labels.dtype == np.int32
    assert set(pred.last_timings) == {"preprocess", "network", "clustering", "postprocess"}
    assert len(inst.ids) == len(inst.scores) == len(inst.centroids)
    with pytest.raises(ValueError, match="uint8"):
        pred.predict(rgb.astype(np.float32), depth, K)
    with pytest.raises(ValueError, match="match"):
        pred.predict(rgb, depth[:10], K)
    with pytest.raises(ValueError, match="metres"):
        pred.predict(rgb, (depth * 1000).astype(np.uint16), K)
    # K scaling: a point projects to corresponding pixel centres at both resolutions
    K2 = scale_intrinsics(K, (60, 80), (30, 40))
    P = np.array([0.1, -0.05, 1.0])
    u, v = (K @ P)[:2] / P[2]
    u2, v2 = (K2 @ P)[:2] / P[2]
    assert u2 == pytest.approx((u + 0.5) / 2 - 0.5) and v2 == pytest.approx((v + 0.5) / 2 - 0.5)


def test_shipped_configs_parse():
    import glob
    import os

    root = os.path.join(os.path.dirname(__file__), "..", "..", "config", "train")
    files = sorted(glob.glob(os.path.join(root, "clusternet_*.yaml")))
    assert files
    for f in files:
        cfg = load_train_config(f)
        assert cfg.model.feature in ("c", "c+cov")
