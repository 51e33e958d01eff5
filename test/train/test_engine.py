"""The shared training engine on a toy task (a linear model whose batch is a function of the step), so that
an interrupted run can be compared with an uninterrupted one bit for bit; plus the loop settings shared
by both models' configs."""
import glob
import json
import os
import signal
from dataclasses import dataclass

import pytest
import torch

from instseg_ros.train.config import TrainLoopConfig, check_loop_config, reject_renamed_keys, require_data
from instseg_ros.train.engine import TrainTask, lr_at, run, setup

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


@dataclass
class ToyConfig(TrainLoopConfig):
    data: str = "unused"
    steps: int = 6
    lr: float = 0.05
    lr_schedule: str = "cosine"
    lr_min: float = 0.005
    checkpoint_every: int = 2
    log_every: int = 1
    device: str = "cpu"


class Toy(TrainTask):
    """y = x . (1, -2, 3) + 0.5; the batch of step s is drawn from a generator seeded with s."""

    name = "toy"

    def __init__(self, signal_at: dict[int, int] | None = None) -> None:
        self.model = torch.nn.Linear(3, 1)
        self.signal_at = signal_at or {}
        self.batches_seen: list[int] = []

    def step_loss(self, net, step):
        if step in self.signal_at:
            os.kill(os.getpid(), self.signal_at[step])
        self.batches_seen.append(step)
        g = torch.Generator().manual_seed(step)
        x = torch.randn(8, 3, generator=g)
        y = x @ torch.tensor([1.0, -2.0, 3.0]) + 0.5
        err = net(x)[:, 0] - y
        return {"loss": (err ** 2).mean(), "abs": err.abs().mean()}

    def save(self, path, meta, optimizer, train_config):
        torch.save({"model": self.model.state_dict(), "meta": meta, "optimizer": optimizer,
                    "train_config": train_config}, path)

    def load(self, path):
        return torch.load(path, weights_only=True)

    def check_init(self, ckpt, path):
        if ckpt["model"]["weight"].shape != self.model.weight.shape:
            raise ValueError(f"init_from {path}: another shape")

    def export(self, src, dst):
        ck = self.load(src)
        torch.save({"model": ck["model"], "meta": ck["meta"]}, dst)


def _train(cfg, resume=False, **kw):
    ctx = setup(cfg)          # seeds torch before the task builds its model
    task = Toy(**kw)
    return run(cfg, ctx, task, resume=resume, quiet=True), task


def test_resume_continues_step_count_history_schedule_and_optimizer(tmp_path):
    ref, _ = _train(ToyConfig(out_dir=str(tmp_path / "ref")))
    # interrupted after 4 of 6 steps (a SIGTERM during step 4), then resumed
    part, _ = _train(ToyConfig(out_dir=str(tmp_path / "run")), signal_at={3: signal.SIGTERM})
    assert part.steps == 4
    res, task = _train(ToyConfig(out_dir=str(tmp_path / "run")), resume=True)
    assert task.batches_seen == [4, 5] and res.steps == 6
    assert [h["step"] for h in res.history] == [1, 2, 3, 4, 5, 6]
    # same weights bit for bit as the run that was never interrupted: Adam's moments and step count, the lr
    # curve (cosine over the whole run) and the data position all continued
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, res.model.state_dict()[k]), k
    assert [h["lr"] for h in res.history] == [h["lr"] for h in ref.history]
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ck["meta"]["steps"] == 6 and all(float(s["step"]) == 6 for s in ck["optimizer"]["state"].values())
    assert json.load(open(tmp_path / "run" / "history.json")) == ck["meta"]["history"]
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000


def test_cosine_lr_by_hand():
    cfg = ToyConfig(lr=1e-3, lr_min=1e-4, steps=110)
    # half a cosine from step 10 (run start) to 110: cos(0) = 1, cos(pi/2) = 0, cos(pi) = -1
    assert abs(lr_at(cfg, 10, 10) - 1e-3) < 1e-15
    assert abs(lr_at(cfg, 60, 10) - (1e-4 + 0.5 * 9e-4)) < 1e-15
    assert abs(lr_at(cfg, 110, 10) - 1e-4) < 1e-15 and abs(lr_at(cfg, 500, 10) - 1e-4) < 1e-15
    assert lr_at(ToyConfig(lr=1e-3, lr_schedule="constant"), 3, 0) == 1e-3


def test_init_from_loads_weights_only(tmp_path):
    src, _ = _train(ToyConfig(out_dir=str(tmp_path / "src"), steps=3))
    # lr 0: Adam moves nothing, so the weights must come through unchanged; the optimizer starts fresh
    res, task = _train(ToyConfig(out_dir=str(tmp_path / "ft"), steps=2, lr=0.0, lr_min=0.0,
                                 init_from=str(tmp_path / "src" / "last.pt")))
    for k, v in src.model.state_dict().items():
        assert torch.equal(v, res.model.state_dict()[k]), k
    ck = torch.load(tmp_path / "ft" / "last.pt", weights_only=True)
    assert task.batches_seen == [0, 1] and [h["step"] for h in res.history] == [1, 2]   # a fine-tune starts at 0
    assert ck["meta"]["init_from"] == str(tmp_path / "src" / "last.pt")
    assert all(float(s["step"]) == 2 for s in ck["optimizer"]["state"].values())


def test_init_keeps_step_when_the_task_asks(tmp_path):
    _train(ToyConfig(out_dir=str(tmp_path / "src"), steps=3))

    class Stepped(Toy):
        init_keeps_step = True

    cfg = ToyConfig(out_dir=str(tmp_path / "ft"), steps=5, init_from=str(tmp_path / "src" / "last.pt"))
    task = Stepped()
    res = run(cfg, setup(cfg), task, quiet=True)
    assert task.batches_seen == [3, 4] and res.steps == 5 and [h["step"] for h in res.history] == [1, 2, 3, 4, 5]
    task = Stepped()
    with pytest.raises(ValueError, match="already at step 3"):
        run(ToyConfig(out_dir=str(tmp_path / "x"), steps=3, init_from=cfg.init_from), setup(cfg), task)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_a_checkpoint_and_stops(tmp_path, sig):
    before = signal.getsignal(sig)
    res, task = _train(ToyConfig(out_dir=str(tmp_path / "run"), steps=50, checkpoint_every=1000,
                                 export=str(tmp_path / "ship.pt")), signal_at={3: sig})
    assert task.batches_seen == [0, 1, 2, 3] and res.steps == 4      # the step in flight finishes
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ck["meta"]["steps"] == 4 and len(ck["meta"]["history"]) == 4
    assert "optimizer" not in torch.load(tmp_path / "ship.pt", weights_only=True)
    assert signal.getsignal(sig) == before                             # the previous handler is back


def test_gradient_clipping_is_applied_before_the_step(tmp_path):
    # Adam's first update is lr * g / (|g| + eps) per weight (m_hat = g, v_hat = g^2), i.e. ~lr for a gradient
    # far above eps = 1e-8. Clipped to a global norm of 1e-12, each |g| <= 1e-12 and the update is at most
    # lr * 1e-12 / 1e-8 = 1e-4 lr.
    lr = 0.05
    moved = {}
    for clip in (0.0, 1e-12):
        cfg = ToyConfig(out_dir=str(tmp_path / f"c{clip}"), steps=1, lr=lr, lr_schedule="constant", grad_clip=clip)
        ctx = setup(cfg)
        task = Toy()
        w0 = task.model.weight.detach().clone()
        run(cfg, ctx, task, quiet=True)
        moved[clip] = (task.model.weight.detach() - w0).abs()
    assert torch.allclose(moved[0.0], torch.full((1, 3), lr), rtol=1e-4)
    assert (moved[1e-12] <= 1e-4 * lr).all()


def test_loop_settings_are_checked():
    for bad in ({"lr_schedule": "step"}, {"lr": 1e-3, "lr_min": 2e-3}, {"checkpoint_every": 0},
                {"grad_clip": -1.0}, {"steps": -1}):
        with pytest.raises(ValueError):
            check_loop_config(ToyConfig(**bad))
    with pytest.raises(ValueError, match="data is not set"):
        require_data(TrainLoopConfig())
    with pytest.raises(ValueError, match="'ckpt_every' -> 'checkpoint_every'"):
        reject_renamed_keys({"ckpt_every": 3}, {"ckpt_every": "checkpoint_every"}, "x.yaml")


def test_shipped_training_configs_parse_with_relative_paths():
    from instseg_ros.clusternet.config import load_train_config as load_clusternet
    from instseg_ros.occuseg.config import load_train_config as load_occuseg

    files = sorted(glob.glob(os.path.join(ROOT, "config", "train", "*.yaml")))
    assert len(files) >= 5
    for f in files:
        cfg = (load_occuseg if "occuseg" in os.path.basename(f) else load_clusternet)(f)
        for path in (cfg.data, cfg.out_dir, cfg.export, cfg.init_from):
            assert not os.path.isabs(path), (f, path)
        assert cfg.data and cfg.grad_clip == 10.0


def test_both_models_share_the_loop_field_names():
    from dataclasses import fields

    from instseg_ros.clusternet.config import TrainConfig as ClusterNetTrain
    from instseg_ros.occuseg.config import TrainConfig as OccuSegTrain

    loop = {f.name for f in fields(TrainLoopConfig)}
    for cls in (ClusterNetTrain, OccuSegTrain):
        assert issubclass(cls, TrainLoopConfig) and loop <= {f.name for f in fields(cls)}
    shared = {f.name for f in fields(ClusterNetTrain)} & {f.name for f in fields(OccuSegTrain)}
    assert shared == loop | {"model", "loss"}
