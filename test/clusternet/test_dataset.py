"""Dataset: crops / resizes keep K consistent with the pixels; targets follow the augmented geometry."""
import numpy as np
import pytest

from instseg_ros.clusternet.config import AugmentConfig, LossConfig
from instseg_ros.clusternet.dataset import ClusterNetDataset, crop_resize, prepare_frame


def test_crop_resize_keeps_projection_consistent():
    rgb = np.zeros((48, 64, 3), np.uint8)
    K = np.array([[80.0, 0, 31.5], [0, 80.0, 23.5], [0, 0, 1]])
    box = (8, 4, 40, 28)                       # 32 x 24 crop -> 64 x 48: scale 2
    _, _, K2, _ = crop_resize(rgb, None, K, box, (48, 64))
    P = np.array([0.02, -0.03, 0.9])
    u, v = (K @ P)[:2] / P[2]
    u2, v2 = (K2 @ P)[:2] / P[2]
    assert u2 == pytest.approx((u - 8 + 0.5) * 2 - 0.5) and v2 == pytest.approx((v - 4 + 0.5) * 2 - 0.5)
    with pytest.raises(ValueError, match="outside"):
        crop_resize(rgb, None, K, (0, 0, 65, 48), (48, 64))


def test_nearest_resize_labels_and_targets_without_augmentation(rng, make_scene):
    f = make_scene(rng, 96, 128, 4)
    s = prepare_frame(f, (48, 64), "c", LossConfig(), None, rng)
    lab = f["labels"][1::2, 1::2]              # nearest sampling of a 2x downscale hits odd pixels
    assert s["rgb"].shape == (3, 48, 64) and s["depth"].shape == (1, 48, 64)
    np.testing.assert_array_equal(s["foreground"].numpy(), lab > 0)
    np.testing.assert_allclose(s["K"].numpy()[0, 0], f["K"][0, 0] / 2, rtol=1e-6)


def test_augmented_samples_are_consistent(rng, make_scene):
    f = make_scene(rng, 96, 128, 5)
    ds = ClusterNetDataset([f] * 3, (48, 64), augment=AugmentConfig(), seed=3)
    for i in range(3):
        s = ds[i]
        fg = s["foreground"].numpy()
        assert (s["centroid"].numpy()[~fg] == 0).all()
        assert (s["xi"].numpy()[:, ~fg] == 0).all() and (s["radius"].numpy()[fg] > 0).all()
        # the target centroid of each object must back-project from its own (noise-free) pixels: its z
        # lies within the object's depth range of the augmented ground truth
        inst = s["instance"].numpy()
        for k in np.unique(inst[inst > 0]):
            z = s["xi"].numpy()[2][inst == k]
            assert np.ptp(z) == 0 and 0.8 < z[0] <= 1.0
    assert not np.array_equal(ds[0]["rgb"].numpy(), ds[1]["rgb"].numpy())
    with pytest.raises(ValueError):
        ClusterNetDataset([], (48, 64))
