"""`instseg evaluate clusternet` end to end on a tiny on-disk split (random tiny model + the baseline)."""
import json

import numpy as np
import torch

from instseg_ros.clusternet.checkpoint import load_checkpoint, save_checkpoint
from instseg_ros.clusternet.config import ModelConfig
from instseg_ros.clusternet.model import ClusterNet
from instseg_ros.data.io import write_frame
from instseg_ros.eval import clusternet_eval


def _write_split(root, split, n, seed):
    rng = np.random.default_rng(seed)
    h, w = 60, 80
    K = np.array([[600.0, 0, 39.5], [0, 600.0, 29.5], [0, 0, 1]])   # narrow view: ~2 mm between sampled points
    for i in range(n):
        depth = np.full((h, w), 0.8, np.float32)
        labels = np.zeros((h, w), np.int32)
        for k, (y, x) in enumerate([(int(rng.integers(2, 10)), int(rng.integers(2, 15))),
                                    (int(rng.integers(32, 38)), int(rng.integers(45, 55)))], start=1):
            labels[y:y + 20, x:x + 20] = k
            depth[y:y + 20, x:x + 20] = 0.7 - 0.05 * k
        rgb = np.where(labels[..., None] > 0, 200, 90).astype(np.uint8).repeat(3, 2)
        inst = [{"id": k, "family": "box", "family_id": 1, "visible_px": int((labels == k).sum()),
                 "amodal_px": 400, "occlusion": float((labels == k).sum() / 400), "bbox": [0, 0, 1, 1]}
                for k in (1, 2)]
        write_frame(root / split / "frames", f"{i:03d}", rgb=rgb, depth=depth, depth_gt=depth, labels=labels,
                    K=K, T_world_camera=np.eye(4), instances=inst)


def test_evaluate_cli_writes_json_and_plot(tmp_path, monkeypatch):
    _write_split(tmp_path / "d", "test", 2, 0)
    _write_split(tmp_path / "d", "val", 2, 1)
    torch.manual_seed(0)
    cfg = ModelConfig(base_width=8, c1_channels=8, aspp_channels=8, decoder_channels=8,
                      depth_widths=(8, 8, 8, 8), input_height=48, input_width=64)
    ck = tmp_path / "m.pt"
    save_checkpoint(str(ck), cfg, ClusterNet(cfg).state_dict(), {"steps": 0})
    monkeypatch.setattr(clusternet_eval, "TUNE_GRID", {"radius_multiplier": (1.0, 2.0)})
    out = tmp_path / "out"
    rc = clusternet_eval.main(["--data", str(tmp_path / "d"), "--checkpoint", str(ck), "--out", str(out),
                               "--device", "cpu", "--tune-split", "val", "--save-params", "--resolution", "32", "48"])
    assert rc == 0
    res = json.loads((out / "clusternet_eval.json").read_text())
    assert res["frames"] == 2 and res["objects"] == 4
    for method in ("clusternet", "baseline"):
        for k in ("AP", "AP50", "AR100", "AR_HO", "AR_MO", "AR_LO", "overlap_F", "boundary_F", "obj_F>=0.75"):
            assert k in res[method]
    assert len(res["tuning"]["table"]) == 2
    assert res["cluster_params"]["radius_multiplier"] in (1.0, 2.0)
    assert load_checkpoint(str(ck))["meta"]["cluster_params"] == res["cluster_params"]
    # the resolution the parameters were tuned at travels with them and is what from_checkpoint uses
    assert res["resolution"] == [32, 48] and load_checkpoint(str(ck))["meta"]["resolution"] == [32, 48]
    from instseg_ros.clusternet.predictor import ClusterNetPredictor

    assert ClusterNetPredictor.from_checkpoint(str(ck), device="cpu").resolution == (32, 48)
    assert ClusterNetPredictor.from_checkpoint(str(ck), device="cpu", resolution=(48, 64)).resolution == (48, 64)
    bad = tmp_path / "bad.pt"
    save_checkpoint(str(bad), cfg, ClusterNet(cfg).state_dict(), {"steps": 0, "resolution": [32]})
    try:
        ClusterNetPredictor.from_checkpoint(str(bad), device="cpu")
    except ValueError as e:
        assert "resolution" in str(e)
    else:
        raise AssertionError("a malformed meta resolution was accepted")
    # the depth-only baseline separates the two raised squares on a flat floor perfectly
    assert res["baseline"]["AP50"] > 90
    assert (out / "clusternet_eval.png").stat().st_size > 10_000
