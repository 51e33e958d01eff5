"""`instseg train clusternet` on a tiny on-disk split: checkpoints, resume, export, loss plot."""
import numpy as np
import torch
import yaml

from instseg_ros.clusternet.checkpoint import load_checkpoint
from instseg_ros.clusternet.train import main
from instseg_ros.data.io import write_frame


def test_train_resume_and_export(tmp_path, make_scene):
    rng = np.random.default_rng(0)
    for i in range(3):
        f = make_scene(rng, 48, 64, 2)
        write_frame(tmp_path / "data" / "train" / "frames", f"{i:04d}", rgb=f["rgb"], depth=f["depth"],
                    depth_gt=f["depth_gt"], labels=f["labels"], K=f["K"], T_world_camera=np.eye(4),
                    instances=f["instances"])
    cfg = {"data": str(tmp_path / "data"), "out_dir": str(tmp_path / "run"), "steps": 2, "batch_size": 2,
           "threads": 1, "device": "cpu", "log_every": 1, "checkpoint_every": 1,
           "model": {"base_width": 8, "c1_channels": 8, "aspp_channels": 8, "decoder_channels": 8,
                     "depth_widths": [8, 8, 8, 8], "input_height": 32, "input_width": 48}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    torch.manual_seed(0)
    assert main(["--config", str(path)]) == 0
    ck = load_checkpoint(str(tmp_path / "run" / "last.pt"))
    assert ck["meta"]["steps"] == 2 and "optimizer" in ck and len(ck["meta"]["history"]) == 2
    assert ck["meta"]["data"]["frames"] == 3
    assert (tmp_path / "run" / "loss.png").stat().st_size > 0
    exp = tmp_path / "ship.pt"
    assert main(["--config", str(path), "--resume", "--steps", "3", "--export", str(exp)]) == 0
    ck = load_checkpoint(str(tmp_path / "run" / "last.pt"))
    assert ck["meta"]["steps"] == 3 and [h["step"] for h in ck["meta"]["history"]] == [1, 2, 3]
    shipped = load_checkpoint(str(exp))
    assert "optimizer" not in shipped and shipped["meta"]["steps"] == 3
    for k, v in shipped["model"].items():
        assert torch.equal(v, ck["model"][k])
