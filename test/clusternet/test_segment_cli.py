"""`instseg segment` writes the label PNG, the overlay and the objects JSON; intrinsics formats parse."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from instseg_ros.clusternet.checkpoint import save_checkpoint
from instseg_ros.clusternet.config import ModelConfig
from instseg_ros.clusternet.model import ClusterNet
from instseg_ros.clusternet.segment_cli import main, read_intrinsics


def test_read_intrinsics_formats(tmp_path):
    K = np.array([[600.0, 0, 320], [0, 601.0, 240], [0, 0, 1]])
    for i, d in enumerate([{"K": K.tolist()}, {"k": K.reshape(-1).tolist()},
                           {"fx": 600.0, "fy": 601.0, "cx": 320, "cy": 240},
                           {"fx": 600.0, "fy": 601.0, "x_offset": 320, "y_offset": 240, "img_width": 640}]):
        p = tmp_path / f"k{i}.json"
        p.write_text(json.dumps(d))
        np.testing.assert_allclose(read_intrinsics(str(p)), K)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="no intrinsics"):
        read_intrinsics(str(tmp_path / "bad.json"))


def test_segment_writes_outputs(tmp_path, make_scene):
    f = make_scene(np.random.default_rng(2), 60, 80, 3)
    Image.fromarray(f["rgb"]).save(tmp_path / "c.png")
    Image.fromarray(np.round(f["depth"] * 1000).astype(np.uint16)).save(tmp_path / "d.png")
    (tmp_path / "k.json").write_text(json.dumps({"K": f["K"].tolist()}))
    torch.manual_seed(0)
    cfg = ModelConfig(base_width=8, c1_channels=8, aspp_channels=8, decoder_channels=8,
                      depth_widths=(8, 8, 8, 8), input_height=48, input_width=64)
    save_checkpoint(str(tmp_path / "m.pt"), cfg, ClusterNet(cfg).state_dict(), {"steps": 0})
    out = tmp_path / "out"
    assert main(["--rgb", str(tmp_path / "c.png"), "--depth", str(tmp_path / "d.png"), "--intrinsics",
                 str(tmp_path / "k.json"), "--out", str(out), "--checkpoint", str(tmp_path / "m.pt"),
                 "--device", "cpu", "--fg-threshold", "0.0", "--min-size", "1"]) == 0
    lab = np.asarray(Image.open(out / "c.labels.png"))
    assert lab.shape == (60, 80)
    assert np.asarray(Image.open(out / "c.overlay.png")).shape == (60, 80, 3)
    objs = json.loads((out / "c.objects.json").read_text())["objects"]
    assert sorted(o["id"] for o in objs) == sorted(int(v) for v in np.unique(lab) if v > 0)
    for o in objs:
        m = lab == o["id"]
        assert o["num_points"] == int((m & (f["depth"] > 0)).sum())
        assert np.shape(o["covariance_m2"]) == (3, 3)
