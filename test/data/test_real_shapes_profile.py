"""The "real_shapes" scene profile (issue #15): thin and hollow objects in scenes, rimmed bins, robot-like arcs,
every object's instance id in every output; the default profile unchanged."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from instseg_ros.data.io import FAMILIES
from instseg_ros.data.physics import Support, drop
from instseg_ros.data.scene import (
    PROFILES,
    SceneConfig,
    build_scene,
    generate_sequence,
    profile_config,
    rng_for,
    sequence_poses,
)
from instseg_ros.data.shapes import sample_shape

SMALL = dict(width=160, height=120)


def test_profiles_default_is_the_plain_config_and_unknown_names_fail():
    assert profile_config("default") == SceneConfig()
    rs = profile_config("real_shapes")
    assert rs.family_weights["thin"] > 0 and rs.family_weights["hollow"] > 0 and rs.bin_palette == "wide"
    assert set(PROFILES) == {"default", "real_shapes"}
    with pytest.raises(ValueError, match="profile"):
        profile_config("nope")
    for bad in (dict(bin_palette="pink"), dict(bin_rim_prob=1.5), dict(seq_elevation=(70.0, 30.0)),
                dict(seq_distance=(0.0, 0.5))):
        with pytest.raises(ValueError):
            replace(SceneConfig(), **bad)


@pytest.mark.parametrize("kind", ["knife", "fork", "marker", "scissors"])
def test_thin_objects_dropped_on_a_table_come_to_rest_lying_flat(kind):
    rng = np.random.default_rng(4)
    while True:
        s = sample_shape(rng, "train", "thin")
        if s.params["kind"] == kind:
            break
    table = [(np.array([0.0, 0.0, -0.01]), np.array([0.5, 0.5, 0.01]))]
    (P,), _ = drop([s], Support(table), np.array([[-0.05, -0.05], [0.05, 0.05]]), np.random.default_rng(1))
    v = s.vertices @ P[:3, :3].T + P[:3, 3]
    ext = np.sort(s.vertices.max(0) - s.vertices.min(0))
    # at rest on the table (z = 0), no higher than its two smaller body extents allow (lying, not standing)
    assert abs(v[:, 2].min()) < 0.003
    assert v[:, 2].max() - v[:, 2].min() <= ext[1] + 0.003 < ext[2]


def test_rimmed_bin_has_a_flange_at_the_top_of_its_walls():
    def flanges(st):
        """Background slabs under 2 cm thick whose top is 5-30 cm over the bin floor (z = 0): only a rim is."""
        bg = st.meshes[sum(1 for m in st.meshes if m.instance > 0):]
        return [m for m in bg if np.ptp(m.vertices[:, 2]) < 0.02 and 0.05 < m.vertices[:, 2].max() < 0.3]

    cfg = replace(profile_config("real_shapes"), bin_rim_prob=1.0)
    for seed in range(3):
        rimmed = build_scene(rng_for("train", seed, 0), "train", cfg, n_objects=2, kind="bin")
        plain = build_scene(rng_for("train", seed, 0), "train", replace(cfg, bin_rim_prob=0.0), n_objects=2,
                            kind="bin")
        assert not flanges(plain)
        f = flanges(rimmed)
        assert len(f) == 4
        # the four run around the walls, outside the floor
        floor_half = np.abs(np.concatenate([m.vertices[:, :2] for m in f])).max(0)
        assert all(np.abs(m.vertices[:, :2]).max(0).max() >= floor_half.min() for m in f)


def test_sequence_arcs_stay_in_the_profile_ranges():
    cfg = profile_config("real_shapes")
    st = build_scene(rng_for("train", 1, 0), "train", replace(cfg, **SMALL), n_objects=3)
    for seed in range(5):
        poses = sequence_poses(np.random.default_rng(seed), st, 8, cfg.seq_elevation, cfg.seq_distance)
        centre = np.mean([T[:3, 3] for T in st.poses], axis=0)
        for T in poses:
            eye = T[:3, 3]
            d = np.linalg.norm(eye - centre)
            el = np.degrees(np.arcsin((eye[2] - centre[2] * 0.5) / max(d, 1e-9)))
            assert 0.45 - 0.06 <= d <= 0.9 + 0.06 and 30 - 6 <= el <= 70 + 6


def test_every_object_of_a_real_shapes_sequence_keeps_its_id_in_every_output():
    cfg = replace(profile_config("real_shapes"), family_weights={"thin": 1.0, "hollow": 1.0}, **SMALL)
    seq = generate_sequence("train", 2, 0, cfg, 3, (0.005,))
    fam = {int(k): v for k, v in seq["meta"]["families"].items()}
    assert set(fam.values()) <= {FAMILIES.index("thin") + 1, FAMILIES.index("hollow") + 1}
    coords, inst, sem = seq["gt_voxels"][0.005]
    seen = set()
    for view in seq["views"]:
        ids = {int(i) for i in np.unique(view["labels"]) if i > 0}
        listed = {d["id"]: d for d in view["instances"]}
        assert ids <= set(fam)
        for i in ids:  # the label image, the instance list and its family agree
            assert listed[i]["visible_px"] == int((view["labels"] == i).sum())
            assert listed[i]["family_id"] == fam[i]
        seen |= {i for i in ids if (view["labels"] == i).sum() >= 20}
    assert seen, "no object visible"
    vox_ids = set(np.unique(inst[inst > 0]).tolist())
    assert seen <= vox_ids <= set(fam)
    for i in vox_ids:  # a voxel's semantic class is its object's family
        assert set(np.unique(sem[inst == i]).tolist()) == {fam[i]}
