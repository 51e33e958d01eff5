"""Generator end to end at small resolution: determinism, COCO validity, layout round trip, voxel GT."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from instseg_ros.data import generate, io
from instseg_ros.data.scene import SceneConfig, generate_scene_frames, generate_sequence

# End-to-end generator runs (scenes, physics, rendering, COCO writing): `-m "not slow"` skips them.
pytestmark = pytest.mark.slow

SMALL = replace(SceneConfig(), width=160, height=120, views_per_scene=2, max_objects=8)


def _small_K_ok(fr):
    K = fr["K"]
    assert 0.55 * 160 < K[0, 0] < 1.05 * 160 and abs(K[0, 2] - 80) < 3 and abs(K[1, 2] - 60) < 3


def test_same_seed_same_frames_other_seed_differs():
    a = generate_scene_frames("train", 5, 3, SMALL)
    b = generate_scene_frames("train", 5, 3, SMALL)
    c = generate_scene_frames("train", 6, 3, SMALL)
    for fa, fb in zip(a, b):
        for key in ("rgb", "depth", "depth_gt", "labels", "K", "T_world_camera"):
            np.testing.assert_array_equal(fa[key], fb[key])
        assert fa["instances"] == fb["instances"]
    assert not np.array_equal(a[0]["depth_gt"], c[0]["depth_gt"])
    _small_K_ok(a[0])


def test_frame_contents_are_consistent():
    for fr in generate_scene_frames("val", 1, 0, SMALL):
        lab, dgt, d = fr["labels"], fr["depth_gt"], fr["depth"]
        assert lab.dtype == np.int32 and dgt.dtype == np.float32 and fr["rgb"].dtype == np.uint8
        assert ((lab > 0) <= (dgt > 0)).all()  # every labelled pixel has a surface
        assert np.allclose(d * 1000, np.round(d * 1000), atol=1e-3)  # mm quantised
        valid = d > 0
        assert 0.5 < valid.mean() < 1.0  # noisy but mostly valid
        # noise is small relative to depth where valid and not at an edge (flying pixels excluded)
        rel = np.abs(d[valid] - dgt[valid]) / dgt[valid]
        assert np.median(rel) < 0.03  # 160 px wide: fx ~150 px, so the stereo noise is 4x a 640 px frame
        for inst in fr["instances"]:
            v = int((lab == inst["id"]).sum())
            assert inst["visible_px"] == v
            assert inst["amodal_px"] >= v and 0.0 <= inst["occlusion"] <= 1.0
            if inst["amodal_px"]:
                assert inst["occlusion"] == pytest.approx(v / inst["amodal_px"])
        ids = {i["id"] for i in fr["instances"]}
        assert set(np.unique(lab[lab > 0]).tolist()) <= ids


def test_cli_writes_valid_coco_and_resumes(tmp_path):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    argv = ["--split", "test", "--scenes", "3", "--views-per-scene", "1", "--shard-size", "2", "--out",
            str(tmp_path), "--seed", "2", "--workers", "1", "--width", "160", "--height", "120", "--max-objects",
            "6", "--no-progress", "--preview"]
    assert generate.main(argv) == 0
    coco = COCO(str(tmp_path / "test" / "annotations.json"))
    assert len(coco.imgs) == 3 and coco.getCatIds() == [1]
    prefixes = io.list_frames(tmp_path, "test")
    assert len(prefixes) == 3
    n_anns = 0
    for img in coco.imgs.values():
        assert img["file_name"].startswith("frames/") and (tmp_path / "test" / img["file_name"]).exists()
        fr = io.load_frame(tmp_path / "test" / img["file_name"].replace(".rgb.png", ""))
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]])):
            m = mask_utils.decode(ann["segmentation"]).astype(bool)
            gt = fr["labels"] == ann["instance_id"]
            assert ann["area"] == int(gt.sum()) == int(m.sum())
            np.testing.assert_array_equal(m, gt)
            assert ann["iscrowd"] == 0 and "occlusion" in ann
            n_anns += 1
    assert n_anns > 0
    assert (tmp_path / "test" / "preview.png").exists()
    # resume: a second run finds both shards done and changes nothing
    before = {p: (tmp_path / "test" / "frames" / p).stat().st_mtime_ns
              for p in sorted(x.name for x in (tmp_path / "test" / "frames").iterdir())}
    assert generate.main(argv[:-1]) == 0
    after = {p: (tmp_path / "test" / "frames" / p).stat().st_mtime_ns for p in before}
    assert before == after


def test_io_round_trip_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 5, (12, 16))
    dgt = rng.uniform(0.3, 2.0, (12, 16)).astype(np.float32)
    d = np.round(dgt * 1000) / 1000
    pre = io.write_frame(tmp_path / "train" / "frames", "f1", rgb=rng.integers(0, 255, (12, 16, 3), dtype=np.uint8),
                         depth=d, depth_gt=dgt, labels=lab, K=np.eye(3), T_world_camera=np.eye(4), instances=[])
    fr = io.load_frame(pre)
    np.testing.assert_array_equal(fr["labels"], lab)
    np.testing.assert_allclose(fr["depth"], d, atol=1e-6)
    np.testing.assert_allclose(fr["depth_gt"], dgt, atol=0.5e-4 + 1e-7)
    assert fr["id"] == "f1" and io.list_frames(tmp_path, "train") == [pre]
    with pytest.raises(ValueError, match="split directory"):
        io.list_frames(tmp_path, "val")
    with pytest.raises(ValueError, match="depth_gt"):
        io.write_frame(tmp_path, "f2", rgb=np.zeros((2, 2, 3), np.uint8), depth=np.zeros((2, 2)),
                       depth_gt=np.full((2, 2), 7.0), labels=np.zeros((2, 2), int), K=np.eye(3),
                       T_world_camera=np.eye(4), instances=[])
    with pytest.raises(ValueError, match="labels"):
        io.write_frame(tmp_path, "f3", rgb=np.zeros((2, 2, 3), np.uint8), depth=np.zeros((2, 2)),
                       depth_gt=np.zeros((2, 2)), labels=np.zeros((3, 2), int), K=np.eye(3),
                       T_world_camera=np.eye(4), instances=[])
    (tmp_path / "train" / "frames" / "f1.depth.png").unlink()
    with pytest.raises(ValueError, match="missing file"):
        io.load_frame(pre)


def test_voxel_ground_truth_agrees_with_views(tmp_path):
    cfg = replace(SMALL, max_objects=10)
    seq = generate_sequence("train", 0, 0, cfg, n_views=4, voxel_sizes=(0.01,))
    coords, inst, sem = seq["gt_voxels"][0.01]
    assert len(coords) > 100 and (inst > 0).sum() > 20
    fam = {int(k): v for k, v in seq["meta"]["families"].items()}
    assert all(sem[i] == fam[int(inst[i])] for i in np.nonzero(inst)[0])
    assert (sem[inst == 0] == 0).all()
    # project object voxel centres into each view: where the view's surface passes through the voxel,
    # the view's label is the voxel's label for the large majority (voxel boundaries between objects differ)
    agree = total = 0
    for fr in seq["views"]:
        T_cw = np.linalg.inv(fr["T_world_camera"])
        pc = coords @ T_cw[:3, :3].T + T_cw[:3, 3]
        K = fr["K"]
        u = np.round(K[0, 0] * pc[:, 0] / pc[:, 2] + K[0, 2]).astype(int)
        v = np.round(K[1, 1] * pc[:, 1] / pc[:, 2] + K[1, 2]).astype(int)
        ok = (pc[:, 2] > 0) & (u >= 0) & (u < cfg.width) & (v >= 0) & (v < cfg.height)
        idx = np.nonzero(ok)[0]
        zs = fr["depth_gt"][v[idx], u[idx]]
        near = np.abs(zs - pc[idx, 2]) < 0.003
        idx = idx[near]
        agree += int((fr["labels"][v[idx], u[idx]] == inst[idx]).sum())
        total += len(idx)
    assert total > 100 and agree / total > 0.9
    # written and read back through io
    from instseg_ros.data.generate import _run_sequence

    _run_sequence((str(tmp_path), "train", 0, 0, cfg, 2, (0.02,)))
    s = io.load_sequence(io.list_sequences(tmp_path, "train")[0])
    assert len(s["views"]) == 2 and s["gt_voxels"]["voxel_size"] == pytest.approx(0.02)
    with open(tmp_path / "sequences" / "train" / "00000" / "sequence.json") as f:
        assert json.load(f)["n_views"] == 2
    with pytest.raises(ValueError, match="no voxel GT"):
        io.load_sequence(io.list_sequences(tmp_path, "train")[0], voxel_size=0.005)


def test_fast_png_writer_round_trips_through_pillow():
    import io as _io

    from PIL import Image

    rng = np.random.default_rng(4)
    for arr in (rng.integers(0, 256, (7, 5, 3), dtype=np.uint8), rng.integers(0, 65536, (6, 9), dtype=np.uint16),
                np.full((3, 4), 65535, np.uint16), np.zeros((2, 1, 3), np.uint8)):
        for strategy, engine in ((0, "zlib"), (2, "zlib"), (3, "zlib"), (0, "isal")):  # zlib default / Huffman
            with Image.open(_io.BytesIO(io._png_bytes(arr, strategy, engine))) as im:  # only / RLE; ISA-L
                back = np.asarray(im)
            np.testing.assert_array_equal(back.astype(np.int64), arr.astype(np.int64))
    with pytest.raises(ValueError, match="PNG writer"):
        io._png_bytes(np.zeros((2, 2), np.int32), 0)
    with pytest.raises(ValueError, match="engine"):
        io._png_bytes(np.zeros((2, 2), np.uint16), 0, "lz4")
