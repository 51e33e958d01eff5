"""instance_color / colorize / overlay against colours and blends worked out by hand."""
from __future__ import annotations

import numpy as np
import pytest

from instseg_ros.core.palette import colorize, instance_color, overlay


def test_instance_color_steps_hue_by_the_golden_ratio():
    # id 0: hue 0 -> red at s = 0.75, v = 0.95: (0.95, 0.95 * 0.25, 0.95 * 0.25)
    np.testing.assert_allclose(instance_color(0), (0.95, 0.2375, 0.2375), rtol=1e-12)
    # id 1: hue 0.618 (sector 3, f = 0.708): r = p = 0.2375, g = v * (1 - s * f), b = v
    f = 0.618033988749895 * 6 - 3
    np.testing.assert_allclose(instance_color(1), (0.2375, 0.95 * (1 - 0.75 * f), 0.95), rtol=1e-12)
    assert instance_color(4) != instance_color(9)


def test_colorize_any_shape_background_black_and_stable_per_id():
    lab = np.array([[0, 3, 3], [-1, 70001, 3]], np.int64)
    c = colorize(lab)
    assert c.shape == (2, 3, 3) and c.dtype == np.uint8
    assert c[0, 0].tolist() == [0, 0, 0] and c[1, 0].tolist() == [0, 0, 0]
    assert c[0, 1].tolist() == [round(v * 255) for v in instance_color(3)] == c[1, 2].tolist()
    assert c[1, 1].tolist() == [round(v * 255) for v in instance_color(70001)]
    # per-point labels (a cloud): the same colours
    assert colorize(lab.reshape(-1)).reshape(2, 3, 3).tolist() == c.tolist()
    with pytest.raises(ValueError, match="integer"):
        colorize(np.array([0.5]))


def test_overlay_blends_inside_blacks_boundaries_keeps_background():
    rgb = np.full((4, 4, 3), 100, np.uint8)
    lab = np.zeros((4, 4), np.int32)
    lab[1:, 1:] = 5
    out = overlay(rgb, lab, alpha=0.5)
    col = np.round(np.asarray(instance_color(5)) * 255)
    # (2, 2) is inside (left and upper neighbours are 5): 0.5 * 100 + 0.5 * colour, truncated to uint8
    assert out[2, 2].tolist() == np.floor(50 + 0.5 * col).astype(int).tolist()
    # first row / column of the object border the background: black; background untouched
    assert out[1, 1].tolist() == out[1, 3].tolist() == out[3, 1].tolist() == [0, 0, 0]
    assert out[0, 0].tolist() == out[0, 3].tolist() == [100, 100, 100]
    with pytest.raises(ValueError, match="same size"):
        overlay(rgb, lab[:3])
