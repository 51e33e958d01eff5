"""`instseg train clusternet` under torchrun with two processes: the DDP path (gloo on CPU; NCCL on GPUs)
really runs end to end, the ranks draw disjoint samples of each epoch, and rank 0 writes the checkpoint."""
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from instseg_ros.clusternet.checkpoint import load_checkpoint
from instseg_ros.clusternet.train import EpochShuffle


def test_epoch_shuffle_gives_each_rank_a_disjoint_share_of_every_epoch():
    n = 10
    seen = []
    for rank in (0, 1):
        it = iter(EpochShuffle(n, seed=3, rank=rank, world=2))
        seen.append([next(it) for _ in range(n // 2)])
    assert sorted(seen[0] + seen[1]) == list(range(n))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "torchrun")), reason="torchrun not installed")
def test_torchrun_two_ranks_train_and_checkpoint(tmp_path, train_rig):
    write_split, model = train_rig
    write_split(tmp_path / "data", 4, seed=2)
    cfg = {"data": str(tmp_path / "data"), "out_dir": str(tmp_path / "run"), "steps": 3, "batch_size": 1,
           "threads": 1, "device": "cpu", "log_every": 1, "checkpoint_every": 1, "model": model}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "instseg_ros.cli", "train",
                           "clusternet", "--config", str(path)], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    ck = load_checkpoint(str(tmp_path / "run" / "last.pt"))
    assert ck["meta"]["world_size"] == 2 and ck["meta"]["steps"] == 3
    assert ck["meta"]["data"]["samples_seen"] == 3 * 1 * 2   # steps x batch x ranks
    for v in ck["model"].values():
        assert torch.isfinite(v.float()).all()
