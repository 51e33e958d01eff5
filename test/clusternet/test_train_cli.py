"""`instseg train clusternet` on a tiny on-disk split: checkpoints, resume, export, loss plot."""
import torch
import yaml

from instseg_ros.clusternet.checkpoint import load_checkpoint
from instseg_ros.clusternet.train import main


def test_train_resume_and_export(tmp_path, train_rig):
    write_split, model = train_rig
    write_split(tmp_path / "data", 3, seed=0)
    cfg = {"data": str(tmp_path / "data"), "out_dir": str(tmp_path / "run"), "steps": 2, "batch_size": 2,
           "threads": 1, "device": "cpu", "log_every": 1, "checkpoint_every": 1, "model": model}
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


def test_cosine_lr_by_hand():
    from instseg_ros.clusternet.config import train_config_from_dict
    from instseg_ros.train.engine import lr_at

    cfg = train_config_from_dict({"lr": 1e-3, "lr_min": 1e-4, "steps": 110, "lr_schedule": "cosine"})
    # half a cosine from step 10 (run start) to 110: cos(0) = 1, cos(pi/2) = 0, cos(pi) = -1
    assert abs(lr_at(cfg, 10, 10) - 1e-3) < 1e-15
    assert abs(lr_at(cfg, 60, 10) - (1e-4 + 0.5 * 9e-4)) < 1e-15
    assert abs(lr_at(cfg, 35, 10) - (1e-4 + 0.5 * 9e-4 * (1 + 2 ** -0.5))) < 1e-15
    assert abs(lr_at(cfg, 110, 10) - 1e-4) < 1e-15 and abs(lr_at(cfg, 500, 10) - 1e-4) < 1e-15
    const = train_config_from_dict({"lr": 1e-3, "steps": 110})
    assert lr_at(const, 60, 10) == 1e-3
    for bad in ({"lr_schedule": "step"}, {"lr": 1e-3, "lr_min": 2e-3}):
        try:
            train_config_from_dict(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} accepted")


def test_init_from_keeps_weights_and_step_with_fresh_optimizer(tmp_path, train_rig):
    write_split, model = train_rig
    write_split(tmp_path / "data", 2, seed=1)
    base = {"data": str(tmp_path / "data"), "batch_size": 2, "threads": 1, "device": "cpu", "log_every": 1,
            "checkpoint_every": 1, "model": model}
    a = tmp_path / "a.yaml"
    a.write_text(yaml.safe_dump({**base, "out_dir": str(tmp_path / "a"), "steps": 2}))
    assert main(["--config", str(a)]) == 0
    src = str(tmp_path / "a" / "last.pt")
    b = tmp_path / "b.yaml"
    b.write_text(yaml.safe_dump({**base, "out_dir": str(tmp_path / "b"), "steps": 2, "lr": 1e-3,
                                 "lr_schedule": "cosine", "lr_min": 1e-4}))
    # steps must go beyond the loaded step count
    try:
        main(["--config", str(b), "--init-from", src])
    except ValueError as e:
        assert "step 2" in str(e)
    else:
        raise AssertionError("init_from at its own step count accepted")
    # zero-lr fine-tune: the weights must come through unchanged (Adam moves nothing at lr 0)
    assert main(["--config", str(b), "--init-from", src, "--steps", "3", "--lr", "0"]) == 0
    ck_a, ck_b = load_checkpoint(src), load_checkpoint(str(tmp_path / "b" / "last.pt"))
    for k, v in ck_a["model"].items():
        if v.is_floating_point() and "running" not in k:
            assert torch.equal(v, ck_b["model"][k]), k
    assert ck_b["meta"]["steps"] == 3 and ck_b["meta"]["run_start_step"] == 2 and ck_b["meta"]["init_from"] == src
    states = ck_b["optimizer"]["state"].values()
    assert states and all(float(s["step"]) == 1 for s in states)  # fresh Adam: one update, not three
    assert ck_b["meta"]["history"][-1]["step"] == 3 and ck_b["meta"]["history"][-1]["lr"] == 0.0
    # another input resolution is a fine-tune, not a different network
    r = tmp_path / "r.yaml"
    r.write_text(yaml.safe_dump({**base, "out_dir": str(tmp_path / "r"), "steps": 3,
                                 "model": {**model, "input_height": 48, "input_width": 64}}))
    assert main(["--config", str(r), "--init-from", src]) == 0
    assert load_checkpoint(str(tmp_path / "r" / "last.pt"))["model_config"].input_height == 48
    # a different architecture is refused with both configs named
    c = tmp_path / "c.yaml"
    c.write_text(yaml.safe_dump({**base, "out_dir": str(tmp_path / "c"), "steps": 5,
                                 "model": {**model, "base_width": 16}}))
    try:
        main(["--config", str(c), "--init-from", src])
    except ValueError as e:
        assert "differs" in str(e)
    else:
        raise AssertionError("mismatched init_from accepted")


def test_sigterm_saves_a_checkpoint(tmp_path, train_rig, sigterm_training):
    import json

    write_split, model = train_rig
    write_split(tmp_path / "data", 2, seed=3)
    cfg = {"data": str(tmp_path / "data"), "out_dir": str(tmp_path / "run"), "steps": 100000, "batch_size": 1,
           "threads": 1, "device": "cpu", "log_every": 1, "checkpoint_every": 100000, "model": model}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    returncode, out, err = sigterm_training("clusternet", path)
    assert returncode == 0, err[-3000:]
    ck = load_checkpoint(str(tmp_path / "run" / "last.pt"))
    steps = ck["meta"]["steps"]
    assert 2 <= steps < 100000 and json.loads(out.strip().splitlines()[-1])["steps"] == steps
    assert [h["step"] for h in ck["meta"]["history"]] == list(range(1, steps + 1))
    assert "optimizer" in ck
