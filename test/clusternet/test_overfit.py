"""End to end: a tiny ClusterNet trained by the real trainer overfits 4 hand-built frames to COCO AP > 0.9."""
import numpy as np
import pytest
import torch

from instseg_ros.clusternet.clustering import ClusterParams
from instseg_ros.clusternet.config import AugmentConfig, LossConfig, ModelConfig, TrainConfig
from instseg_ros.clusternet.predictor import ClusterNetPredictor
from instseg_ros.clusternet.train import train
from instseg_ros.eval.coco import coco_dataset, coco_metrics, dt_results, gt_annotations

H, W = 120, 160
STEPS = 120


@pytest.mark.slow
def test_tiny_model_overfits_four_frames(tmp_path, make_scene):
    torch.set_num_threads(1)
    rng = np.random.default_rng(7)
    frames = [make_scene(rng, H, W, 3, table_z=0.6) for _ in range(4)]
    model = ModelConfig(base_width=8, c1_channels=16, aspp_channels=16, decoder_channels=32,
                        depth_widths=(8, 8, 16, 16), input_height=H, input_width=W)
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), steps=STEPS, batch_size=4, lr=3e-3, model=model,
                      loss=LossConfig(late_step=STEPS // 2, var_vio_late=10.0),
                      augment=AugmentConfig(enabled=False), checkpoint_every=10 ** 6, log_every=25,
                      device="cpu", threads=1)
    res = train(cfg, frames=frames, quiet=True)
    assert res.steps == STEPS and (tmp_path / "run" / "last.pt").exists() and (tmp_path / "run" / "loss.png").exists()
    hist = res.history
    assert hist[-1]["loss"] < hist[0]["loss"]
    pred = ClusterNetPredictor.from_checkpoint(str(tmp_path / "run" / "last.pt"), device="cpu",
                                               params=ClusterParams(min_size=10))
    images, anns, dts = [], [], []
    for i, f in enumerate(frames, start=1):
        inst = pred.predict(f["rgb"], f["depth"], f["K"])
        images.append({"id": i, "width": W, "height": H})
        anns += gt_annotations(i, f["labels"], start_id=len(anns) + 1)
        dts += dt_results(i, inst.labels, inst.ids, inst.scores)
    m = coco_metrics(coco_dataset(images, anns), dts)
    print({k: round(v, 1) for k, v in m.items()}, "final loss terms", hist[-1])
    assert m["AP"] > 90.0, m
