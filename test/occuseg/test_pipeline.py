"""End to end on a tiny constructed sequence: fuse + label transfer, train a few steps (checkpoint,
loss curve, resume), load with weights_only, segment a TsdfMap, evaluate with ablations."""
import json

import numpy as np
import pytest
import yaml

from instseg_ros.core.instances import Instances
from instseg_ros.data import io
from instseg_ros.data.mesh_render import box_mesh, intrinsics, look_at, render
from instseg_ros.mapping import TsdfConfig, TsdfMap
from instseg_ros.occuseg import MapSegmenter
from instseg_ros.occuseg.dataset import build_scene, transfer_labels

W, H = 160, 120
VOX = 0.01


def _write_sequence(seq_dir, seed):
    rng = np.random.default_rng(seed)
    table = box_mesh((0, 0, -0.01), (0.5, 0.5, 0.02), (120, 120, 120))
    b1 = box_mesh((-0.06 + rng.uniform(-0.01, 0.01), 0, 0.04), (0.08, 0.1, 0.08), (200, 40, 40))
    b2 = box_mesh((0.08, 0.02, 0.03), (0.06, 0.06, 0.06), (40, 40, 200))
    K = intrinsics(W, H)
    pts, labs = [], []
    for k, a in enumerate(np.linspace(0, 2 * np.pi, 6, endpoint=False)):
        T = look_at((0.4 * np.cos(a), 0.4 * np.sin(a), 0.4), (0, 0, 0.02))
        d, rgb, ids = render([table, b1, b2], K, T, W, H)
        labels = np.maximum(ids - 1, 0)
        io.write_frame(seq_dir / "views", f"{k:03d}", rgb=rgb, depth=d, depth_gt=d, labels=labels, K=K,
                       T_world_camera=T, instances=[])
        from instseg_ros.core.geometry import backproject
        P = backproject(d, K).reshape(-1, 3)
        ok = d.reshape(-1) > 0
        pts.append(P[ok] @ T[:3, :3].T + T[:3, 3])
        labs.append(labels.reshape(-1)[ok])
    P, L = np.concatenate(pts), np.concatenate(labs)
    cells, first = np.unique(np.floor(P / VOX).astype(int), axis=0, return_index=True)
    io.write_gt_voxels(seq_dir, (cells + 0.5) * VOX, L[first], np.where(L[first] > 0, 1, 0), VOX)
    (seq_dir / "sequence.json").write_text("{}")   # the generator writes it last: the sequence is complete


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("occuseg_data")
    for split, n in (("train", 2), ("val", 1)):
        for i in range(n):
            _write_sequence(root / "sequences" / split / f"{i:05d}", seed=i + (10 if split == "val" else 0))
    return root


def test_label_transfer_nearest_voxel():
    gt = {"coords": np.array([[0, 0, 0], [1, 0, 0.]]), "instance": np.array([3, 4]), "semantic": np.array([1, 2])}
    sem, ins = transfer_labels(np.array([[0.1, 0, 0], [0.8, 0, 0], [5, 5, 5.]]), gt, max_dist=0.5)
    assert ins.tolist() == [3, 4, 0] and sem.tolist() == [1, 2, -1]


def test_build_scene_labels_the_boxes(dataset):
    s = build_scene(str(dataset / "sequences" / "train" / "00000"), TsdfConfig(voxel_size=VOX))
    ids, counts = np.unique(s.instance, return_counts=True)
    assert ids.tolist() == [0, 1, 2] and counts[1:].min() > 50
    assert (s.semantic == -1).mean() < 0.05
    # the red box's voxels are red
    assert (s.sv.colors[s.instance == 1, 0] > 150).mean() > 0.9


def test_train_resume_segment_evaluate(dataset, tmp_path):
    from instseg_ros.eval import occuseg_eval
    from instseg_ros.occuseg import train

    cfg = {"data": str(dataset), "voxel_size": VOX, "out_dir": str(tmp_path / "run"), "steps": 4,
           "checkpoint_every": 2, "export": str(tmp_path / "occuseg_tiny.pt"),
           "model": {"num_classes": 2, "channels": [8, 16], "embed_dim": 4, "spatial_scale": 0.05}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert train.main(["--config", str(path)]) == 0
    hist = json.load(open(tmp_path / "run" / "history.json"))
    assert [h["step"] for h in hist] == [1, 2, 3, 4]
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000
    assert train.main(["--config", str(path), "--resume", "--steps", "6"]) == 0
    hist = json.load(open(tmp_path / "run" / "history.json"))
    assert [h["step"] for h in hist] == [1, 2, 3, 4, 5, 6]

    seg = MapSegmenter.from_checkpoint(str(tmp_path / "occuseg_tiny.pt"), device="cpu")
    seq = io.load_sequence(dataset / "sequences" / "val" / "00000")
    m = TsdfMap(TsdfConfig(voxel_size=VOX))
    for v in seq["views"]:
        m.integrate(v["depth"], v["rgb"], v["K"], v["T_world_camera"])
    inst = seg.predict(m)
    assert isinstance(inst, Instances)
    sv = m.surface_voxels()
    assert inst.labels.shape == (len(sv),) and inst.points.shape == (len(sv), 3)
    assert set(np.unique(inst.labels)) <= {0, *inst.ids.tolist()}
    for k, i in enumerate(inst.ids):
        assert inst.num_points[k] == (inst.labels == i).sum()
        np.testing.assert_allclose(inst.centroids[k], sv.points[inst.labels == i].mean(0), atol=1e-5)
    assert set(seg.last_timings) == {"network", "supervoxels", "clustering"}
    assert all(v >= 0 for v in seg.last_timings.values())

    out = tmp_path / "eval"
    assert occuseg_eval.main(["--checkpoint", str(tmp_path / "occuseg_tiny.pt"), "--data", str(dataset),
                              "--split", "val", "--out-dir", str(out), "--min-gt-voxels", "20"]) == 0
    summary = json.load(open(out / "occuseg_eval.json"))
    assert set(summary["results"]) == {"full", "no_occupancy", "no_feature", "no_spatial"}
    assert summary["gt_instances"] == 2
    for r in summary["results"].values():
        assert 0 <= r["class_agnostic"]["AP25"] <= 100
    assert (out / "occuseg_eval.png").exists()


def test_prepare_scenes_skips_sequences_still_being_written(dataset, tmp_path):
    import shutil

    from instseg_ros.occuseg.dataset import prepare_scenes

    root = tmp_path / "root"
    shutil.copytree(dataset / "sequences" / "train", root / "sequences" / "train")
    (root / "sequences" / "train" / "00001" / "sequence.json").unlink()
    paths = prepare_scenes(str(root), "train", TsdfConfig(voxel_size=VOX), str(tmp_path / "cache"))
    assert [p.split("/")[-1].split("_")[0] for p in paths] == ["00000"]
    assert sorted(p.name for p in (tmp_path / "cache" / "train").iterdir()) == [paths[0].split("/")[-1]]


def test_init_from_starts_at_the_given_weights(dataset, tmp_path):
    import torch

    from instseg_ros.occuseg import train
    from instseg_ros.occuseg.checkpoint import load_checkpoint, save_checkpoint
    from instseg_ros.occuseg.config import NetConfig
    from instseg_ros.occuseg.model import OccuSegNet

    net = {"num_classes": 2, "channels": [8, 16], "embed_dim": 4, "spatial_scale": 0.05}
    torch.manual_seed(123)
    init = OccuSegNet(NetConfig(num_classes=2, channels=(8, 16), embed_dim=4))
    save_checkpoint(str(tmp_path / "init.pt"), init, VOX)
    # lr 0 (given on the command line over the file's 0.01): Adam leaves the weights where they started,
    # so the exported parameters must equal the init ones (batch-norm running statistics do move)
    cfg = {"data": str(dataset), "voxel_size": VOX, "out_dir": str(tmp_path / "run"), "steps": 1,
           "lr": 0.01, "export": str(tmp_path / "out.pt"), "init_from": str(tmp_path / "init.pt"), "model": net}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert train.main(["--config", str(path), "--lr", "0", "--seed", "5"]) == 0
    got = load_checkpoint(str(tmp_path / "out.pt"))["model"]
    params = dict(init.named_parameters())
    assert len(params) > 10
    for k, v in params.items():
        assert torch.equal(got[k], v.detach()), k
    # weights only: the fine-tune starts at step 0 with a fresh optimizer (one Adam step per parameter)
    run = load_checkpoint(str(tmp_path / "run" / "last.pt"))
    assert run["meta"]["steps"] == 1 and run["meta"]["init_from"] == str(tmp_path / "init.pt")
    assert all(float(s["step"]) == 1 for s in run["optimizer"]["state"].values())
    cfg["model"] = dict(net, embed_dim=6)
    cfg["out_dir"] = str(tmp_path / "run2")
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match="differs from the training config"):
        train.main(["--config", str(path)])


def test_checkpoint_rejects_foreign_files(tmp_path):
    import torch
    p = tmp_path / "x.pt"
    torch.save({"model": {}}, p)
    with pytest.raises(RuntimeError, match="not an OccuSeg checkpoint"):
        MapSegmenter.from_checkpoint(str(p), device="cpu")


def test_inference_config_travels_with_the_checkpoint(tmp_path):
    import torch

    from instseg_ros.occuseg.checkpoint import save_checkpoint, set_inference_config
    from instseg_ros.occuseg.clustering import ClusterConfig
    from instseg_ros.occuseg.config import NetConfig
    from instseg_ros.occuseg.model import OccuSegNet
    from instseg_ros.occuseg.supervoxels import SupervoxelConfig

    save_checkpoint(str(tmp_path / "a.pt"), OccuSegNet(NetConfig(num_classes=2, channels=(8, 16))), VOX)
    seg = MapSegmenter.from_checkpoint(str(tmp_path / "a.pt"), device="cpu")
    assert seg.config.cluster == ClusterConfig() and seg.config.supervoxel == SupervoxelConfig()
    set_inference_config(str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), cluster={"t0": 0.2},
                         supervoxel={"k": 0.4, "min_size": 12, "radius": 2.0})
    seg = MapSegmenter.from_checkpoint(str(tmp_path / "b.pt"), device="cpu")
    assert seg.config.cluster == ClusterConfig(t0=0.2)
    assert seg.config.supervoxel == SupervoxelConfig(k=0.4, min_size=12, radius=2.0)
    assert seg.config.voxel_size == VOX
    with pytest.raises(ValueError, match="fields of ClusterConfig"):
        set_inference_config(str(tmp_path / "a.pt"), str(tmp_path / "c.pt"), cluster={"tzero": 0.2})
    ck = torch.load(tmp_path / "b.pt", weights_only=True)
    ck["cluster"] = {"tzero": 0.2}
    torch.save(ck, tmp_path / "d.pt")
    with pytest.raises(ValueError, match="set_inference_config"):
        MapSegmenter.from_checkpoint(str(tmp_path / "d.pt"), device="cpu")


def test_sigterm_saves_a_loadable_checkpoint(dataset, tmp_path, sigterm_training):
    from instseg_ros.occuseg.checkpoint import load_checkpoint

    cfg = {"data": str(dataset), "voxel_size": VOX, "out_dir": str(tmp_path / "run"), "steps": 100000,
           "checkpoint_every": 100000, "model": {"num_classes": 2, "channels": [8, 16], "embed_dim": 4}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    returncode, out, err = sigterm_training("occuseg", path)
    assert returncode == 0, err[-3000:]
    assert "SIGTERM: stopping after this step" in err
    ck = load_checkpoint(str(tmp_path / "run" / "last.pt"))
    steps = ck["meta"]["steps"]
    assert 2 <= steps < 100000 and json.loads(out.strip().splitlines()[-1])["steps"] == steps
    assert [h["step"] for h in json.load(open(tmp_path / "run" / "history.json"))] == list(range(1, steps + 1))
    MapSegmenter.from_checkpoint(str(tmp_path / "run" / "last.pt"), device="cpu")


@pytest.mark.slow
def test_torchrun_two_ranks_train_occuseg(dataset, tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    from instseg_ros.occuseg.checkpoint import load_checkpoint

    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    if not os.path.exists(torchrun):
        pytest.skip("torchrun not installed")
    data = tmp_path / "data"          # a fresh copy: both ranks start with an empty fused-map cache
    shutil.copytree(dataset / "sequences", data / "sequences")
    cfg = {"data": str(data), "voxel_size": VOX, "out_dir": str(tmp_path / "run"), "steps": 3,
           "checkpoint_every": 1, "model": {"num_classes": 2, "channels": [8, 16], "embed_dim": 4}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "instseg_ros.cli", "train",
                           "occuseg", "--config", str(path)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    ck = load_checkpoint(str(tmp_path / "run" / "last.pt"))
    assert ck["meta"]["world_size"] == 2 and ck["meta"]["steps"] == 3 and len(ck["meta"]["history"]) == 3
    assert sorted(p.name for p in (data / "cache" / "train").iterdir()) == ["00000_10mm_s2.npz", "00001_10mm_s2.npz"]
    MapSegmenter.from_checkpoint(str(tmp_path / "run" / "last.pt"), device="cpu")
