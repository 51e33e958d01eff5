"""The shipped sample is complete and self-consistent."""
from __future__ import annotations

import numpy as np

from instseg_ros.data import io, sample_root


def test_sample_frames_and_sequence_load():
    root = sample_root()
    prefixes = io.list_frames(root, "train")
    assert len(prefixes) == 4
    for p in prefixes:
        fr = io.load_frame(p)
        assert fr["rgb"].shape == (480, 640, 3) and fr["labels"].max() > 0
        assert len(fr["instances"]) >= 3
        assert any(i["occlusion"] < 0.75 for i in fr["instances"])  # the sample shows occlusion
    seqs = io.list_sequences(root, "train")
    assert len(seqs) == 1
    s = io.load_sequence(seqs[0], voxel_size=0.01)
    assert len(s["views"]) == 8
    g = s["gt_voxels"]
    assert g["voxel_size"] == 0.01 and (g["instance"] > 0).sum() > 100
    assert set(np.unique(g["semantic"][g["instance"] > 0])) <= set(range(1, len(io.FAMILIES) + 1))
    ids = {i["id"] for v in s["views"] for i in v["instances"]}
    assert set(np.unique(g["instance"][g["instance"] > 0]).tolist()) <= ids
