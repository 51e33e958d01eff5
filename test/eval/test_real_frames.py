"""Real labelled folders (instseg_ros.eval.real_frames) and their scoring: constructed frames whose metrics
follow by hand."""
import json

import numpy as np
import pytest
from PIL import Image

from instseg_ros.eval import clusternet_eval
from instseg_ros.eval.coco import unseen_object_metrics
from instseg_ros.eval.real_frames import is_labelled_folder, load_labelled_folder

H, W = 60, 80


def _write(folder, stem, depth_mm, label):
    Image.fromarray(np.full((H, W, 3), 120, np.uint8)).save(folder / f"{stem}_rgb.png")
    Image.fromarray(depth_mm.astype(np.uint16)).save(folder / f"{stem}_depth_mm.png")
    Image.fromarray(label.astype(np.uint8)).save(folder / f"{stem}_label.png")


def _scene():
    """A table (label 1, 800 mm) with two boxes (labels 2 and 3, 650 / 700 mm); a cropped strip (label 0,
    depth 0) at the top and a depth hole inside box 2."""
    depth = np.full((H, W), 800, np.int32)
    label = np.ones((H, W), np.int32)
    depth[:5] = 0
    label[:5] = 0
    depth[20:40, 10:30] = 650
    label[20:40, 10:30] = 2
    depth[25:45, 50:70] = 700
    label[25:45, 50:70] = 3
    depth[22:24, 12:14] = 0
    return depth, label


def test_folder_loads_with_the_readme_convention(tmp_path):
    depth, label = _scene()
    _write(tmp_path, "learn1", depth, label)
    _write(tmp_path, "learn10", depth, label)
    _write(tmp_path, "learn2", depth, label)
    (tmp_path / "intrinsics.json").write_text(json.dumps({"fx": 500, "fy": 500, "cx": 39.5, "cy": 29.5}))
    assert is_labelled_folder(tmp_path) and not is_labelled_folder(tmp_path / "nothing")
    frames = load_labelled_folder(tmp_path)
    assert [f["id"] for f in frames] == ["learn1", "learn2", "learn10"]       # natural order
    f = frames[0]
    assert f["depth"].dtype == np.float32 and f["depth"][30, 20] == pytest.approx(0.65)
    # objects 2, 3 -> 1, 2; table and cropped pixels -> 0; scored = valid depth and labelled
    assert set(np.unique(f["labels"])) == {0, 1, 2}
    assert f["valid"].sum() == H * W - 5 * W - 4
    assert f["labels"][22, 12] == 0 and not f["valid"][22, 12]
    np.testing.assert_array_equal(f["K"], [[500, 0, 39.5], [0, 500, 29.5], [0, 0, 1]])
    (tmp_path / "intrinsics.json").write_text(json.dumps({"fx": 500}))
    with pytest.raises(ValueError, match="fy"):
        load_labelled_folder(tmp_path)


def test_four_neighbour_boundaries_by_hand():
    """A 4x4 square (rows 2-5, columns 2-5) predicted one column too far right. The 4-neighbour boundary of a
    4x4 square is its ring of 12 pixels. With tolerance 0, predicted ring pixels on the true ring: rows 2 and
    5 at columns 3-5 (6); the predicted ring's side columns 3 and 6 (rows 3-4) lie inside / outside the true
    square -> 6 of 12; the same count the other way -> P = R = 1/2. Overlap: 12 shared pixels of 16 + 16
    -> F = 0.75."""
    gt = np.zeros((8, 8), np.int32)
    gt[2:6, 2:6] = 1
    pred = np.zeros((8, 8), np.int32)
    pred[2:6, 3:7] = 1
    m = unseen_object_metrics(gt, pred, boundary_tol=0, boundary_connectivity=4)
    assert m["boundary_P"] == pytest.approx(6 / 12) and m["boundary_R"] == pytest.approx(6 / 12)
    assert m["overlap_F"] == pytest.approx(12 / 16)
    # with 1 px tolerance every boundary pixel lies within one 4-step of the other's boundary
    assert unseen_object_metrics(gt, pred, boundary_tol=1, boundary_connectivity=4)["boundary_F"] == 1.0
    with pytest.raises(ValueError):
        unseen_object_metrics(gt, pred, boundary_connectivity=6)


def test_evaluate_cli_on_a_real_folder_scores_the_baseline_and_writes_overlays(tmp_path):
    depth, label = _scene()
    d = tmp_path / "real"
    d.mkdir()
    for i in range(2):
        _write(d, f"learn{i}", depth, label)
    (d / "intrinsics.json").write_text(json.dumps({"fx": 500, "fy": 500, "cx": 39.5, "cy": 29.5}))
    out = tmp_path / "out"
    assert clusternet_eval.main(["--data", str(d), "--baseline-only", "--out", str(out)]) == 0
    res = json.loads((out / "clusternet_eval.json").read_text())
    assert res["real_folder"] and res["frames"] == 2 and res["objects"] == 4
    bl = res["baseline"]
    # two boxes standing 10-15 cm proud of the only plane: plane removal + DBSCAN finds exactly them
    assert bl["instances_per_object"] == pytest.approx(1.0)
    assert bl["overlap_F"] > 95 and bl["obj_F>=0.75"] == 100.0
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["learn0.png", "learn1.png"]
    assert Image.open(out / "overlays" / "learn0.png").size == (3 * W, H)
