"""One-view maps of labelled frames (instseg_ros.eval.oneview_maps) on rendered scenes whose geometry is known."""
import json

import numpy as np
import pytest

from instseg_ros.core.geometry import backproject
from instseg_ros.data.mesh_render import box_mesh, intrinsics, look_at, render
from instseg_ros.eval.oneview_maps import support_plane_pose, voxel_labels
from instseg_ros.mapping.tsdf import TsdfConfig, TsdfMap

W, H = 320, 240
K = intrinsics(W, H)
TABLE_TOP = 0.71            # world z of the table top (m)
BOXES = [([0.04, 0.03, TABLE_TOP + 0.03], [0.08, 0.06, 0.06]), ([-0.08, -0.05, TABLE_TOP + 0.04], [0.05, 0.1, 0.08])]
EYE = np.array([0.3, 0.1, TABLE_TOP + 0.45])


def _frame():
    meshes = [box_mesh([0, 0, TABLE_TOP - 0.01], [0.8, 0.6, 0.02], (150, 150, 150))]
    meshes += [box_mesh(c, s, (200, 50 + 60 * k, 40)) for k, (c, s) in enumerate(BOXES)]
    T = look_at(EYE, [0, 0, TABLE_TOP])
    depth, rgb, ids = render(meshes, K, T, W, H)
    return depth, rgb, ids.astype(np.int64), T   # ids: 1 table, 2.. boxes = the label PNG convention


def test_support_plane_pose_puts_the_table_at_z0_under_the_camera():
    depth, _, ids, T_true = _frame()
    T = support_plane_pose(depth, K, np.random.default_rng(0))
    assert np.linalg.det(T[:3, :3]) == pytest.approx(1.0, abs=1e-9)
    P = backproject(depth, K).reshape(-1, 3)[ids.reshape(-1) == 1]
    z = P @ T[:3, :3].T + T[:3, 3]
    assert np.abs(z[:, 2]).max() < 0.002                      # the table is the plane z = 0
    assert T[2, 3] == pytest.approx(EYE[2] - TABLE_TOP, abs=0.003)  # the camera sits 0.45 m above it
    # gravity agrees with the true world's up axis (the rendering's z)
    up_in_camera = T[2, :3]
    assert up_in_camera @ T_true[2, :3] > 0.999


def test_voxel_labels_give_each_box_its_id_and_the_table_none():
    depth, rgb, ids, _ = _frame()
    T = support_plane_pose(depth, K, np.random.default_rng(0))
    m = TsdfMap(TsdfConfig(voxel_size=0.005, device="cpu"))
    m.integrate(depth, rgb, K, T)
    sv = m.surface_voxels()
    gt = voxel_labels(sv.coords, depth, ids, K, T, 0.005)
    # the boxes' surfaces in this world frame: heights above the table
    on_table = sv.points[:, 2] < 0.002
    assert (gt[on_table] == 0).mean() > 0.97
    for k, (_, s) in enumerate(BOXES, start=1):
        top = np.abs(sv.points[:, 2] - s[2]) < 0.002
        assert top.sum() > 20 and np.bincount(gt[top]).argmax() == k
    assert set(np.unique(gt)) == {0, 1, 2}


def test_evaluate_folder_writes_scores_and_pictures(tmp_path):
    from PIL import Image

    from instseg_ros.eval.oneview_maps import evaluate_folder

    depth, rgb, ids, _ = _frame()
    folder = tmp_path / "frames"
    folder.mkdir()
    for name in ("a", "b"):
        Image.fromarray(rgb).save(folder / f"{name}_rgb.png")
        Image.fromarray(np.round(depth * 1000).astype(np.uint16)).save(folder / f"{name}_depth_mm.png")
        Image.fromarray(ids.astype(np.uint8)).save(folder / f"{name}_label.png")
    (folder / "intrinsics.json").write_text(json.dumps({"fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2]}))
    s = evaluate_folder("models/occuseg_bin5mm.pt", str(folder), str(tmp_path / "out"))
    assert s["frames"] == 2 and s["objects"] == 4 and 0 <= s["AP50"] <= 100
    assert s["objects_matched_50"] + s["objects_split"] <= 4
    assert s["map_instances_per_object"] == sum(f["predictions"] for f in s["per_frame"]) / 4
    saved = json.loads((tmp_path / "out" / "oneview_eval.json").read_text())
    assert saved["mAP"] == s["mAP"]
    png = np.asarray(Image.open(tmp_path / "out" / "a_oneview.png"))
    assert png.shape == (H, 2 * W, 3)
