"""OccuSeg's training YAML: the loop's names shared with ClusterNet, old names refused with the new one named,
and defaults that reproduce the training behaviour from before the shared engine."""
import pytest
import yaml

from instseg_ros.occuseg.config import LossWeights, NetConfig, TrainConfig, load_train_config, train_config_from_dict


def test_nested_model_and_loss_parse():
    cfg = train_config_from_dict({"data": "d", "model": {"channels": [8, 16], "embed_dim": 4},
                                  "loss": {"occupancy": 0.0}, "checkpoint_every": 7, "max_frames": 3})
    assert cfg.model == NetConfig(channels=(8, 16), embed_dim=4) and cfg.loss == LossWeights(occupancy=0.0)
    assert cfg.checkpoint_every == 7 and cfg.max_frames == 3


def test_defaults_keep_the_previous_training_behaviour():
    cfg = TrainConfig()
    # before the engine: cosine annealing to 5 % of lr, a gradient-norm clip of 10, a record per step, CPU,
    # and no default dataset root (it used to be a path on the machine that trained the model)
    assert (cfg.lr_schedule, cfg.lr_min / cfg.lr, cfg.grad_clip, cfg.log_every) == ("cosine", 0.05, 10.0, 1)
    assert cfg.device == "cpu" and cfg.threads == 1 and cfg.data == ""


@pytest.mark.parametrize("old, new", [("data_root", "data"), ("ckpt_every", "checkpoint_every"),
                                      ("limit_scenes", "max_frames"), ("rescan_every", "refresh_frames_every"),
                                      ("net", "model")])
def test_old_keys_are_refused_naming_the_new_one(tmp_path, old, new):
    p = tmp_path / "old.yaml"
    p.write_text(yaml.safe_dump({old: {} if old == "net" else 1, "steps": 3}))
    with pytest.raises(ValueError, match=f"{p}: .*'{old}' -> '{new}'"):
        load_train_config(str(p))


def test_unknown_keys_and_bad_values_name_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({"stepz": 3}))
    with pytest.raises(ValueError, match=f"{p}: unknown TrainConfig keys: \\['stepz'\\]"):
        load_train_config(str(p))
    p.write_text(yaml.safe_dump({"lr": 1e-3, "lr_min": 1e-2}))
    with pytest.raises(ValueError, match=f"{p}: lr_min"):
        load_train_config(str(p))
    p.write_text(yaml.safe_dump({"model": {"width": 3}}))
    with pytest.raises(ValueError, match=str(p)):
        load_train_config(str(p))


def test_semantic_label_space_must_fit_the_head():
    cfg = train_config_from_dict({"data": "d", "semantic": "grasp", "model": {"num_classes": 6},
                                  "bg_recolor_prob": 0.5})
    assert cfg.semantic == "grasp" and cfg.bg_recolor_prob == 0.5
    for bad, msg in (({"semantic": "grasp"}, "num_classes 6"), ({"semantic": "colour"}, "semantic must be"),
                     ({"bg_recolor_prob": 1.5}, "bg_recolor_prob")):
        with pytest.raises(ValueError, match=msg):
            train_config_from_dict({"data": "d", **bad})
