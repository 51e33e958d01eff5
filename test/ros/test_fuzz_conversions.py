"""Property-based fuzzing (hypothesis) of every message -> array conversion the nodes run on their
inputs, and of camera_info / pose validation.

The property: any message either converts to arrays of the documented shape and dtype, with no NaN
or inf the message did not carry (depth, intrinsics and poses: none at all), or raises ValueError
with a reason. Never another exception type. Messages are built field by field from the wire types
(uint32 sizes, arbitrary bytes, encodings and field layouts both valid and not, float values
including NaN, inf and extremes), so most examples sit on the boundary between valid and invalid.
Several thousand examples in all, in a few seconds.
"""
from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instseg_ros.ros.conversions import (
    DEPTH_ENCODINGS,
    IMAGE_ENCODINGS,
    POINTFIELD_DTYPES,
    camera_info_to_intrinsics,
    image_to_array,
    image_to_depth,
    image_to_rgb,
    msg_to_labeled_cloud,
)
from instseg_ros.ros.node_common import FrameError, frame_to_arrays, pose_from_xyz_quat

FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

UINT32 = st.integers(0, 2**32 - 1)
SMALL = st.integers(0, 6)
POSITIVE = st.integers(1, 6)
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)
ENCODINGS = st.sampled_from(sorted(IMAGE_ENCODINGS) + ["", "yuv422", "8UC3", "16SC1", "RGB8", "64FC1"])


@st.composite
def images(draw, encoding=ENCODINGS, consistent=None):
    """sensor_msgs/Image: half with a consistent layout (any valid encoding, size, row padding, byte
    order and content: it must convert), half with any field broken (it must raise ValueError)."""
    from sensor_msgs.msg import Image

    ok = draw(st.booleans()) if consistent is None else consistent
    msg = Image()
    valid = [e for e in sorted(IMAGE_ENCODINGS) if e in DEPTH_ENCODINGS or encoding is ENCODINGS]
    msg.encoding = draw(st.sampled_from(valid) if ok else encoding)
    msg.height = draw(POSITIVE if ok else st.one_of(SMALL, UINT32))
    msg.width = draw(POSITIVE if ok else st.one_of(SMALL, UINT32))
    msg.is_bigendian = draw(st.integers(0, 1))
    bpp = IMAGE_ENCODINGS[msg.encoding][0].itemsize * IMAGE_ENCODINGS[msg.encoding][1] \
        if msg.encoding in IMAGE_ENCODINGS else 1
    natural = min(msg.width, 64) * bpp + draw(st.integers(0, 3))
    msg.step = natural if ok else draw(st.one_of(st.just(natural), UINT32, st.integers(0, 64)))
    n = min(msg.height, 8) * msg.step if msg.height * msg.step < 4096 else draw(st.integers(0, 64))
    if not ok:
        n += draw(st.sampled_from([0, 1, -1]))
    msg.data = draw(st.binary(min_size=max(n, 0), max_size=max(n, 0)))
    return msg, ok and msg.height * msg.step == len(msg.data)


def _check_rgb(msg, rgb):
    assert rgb.dtype == np.uint8 and rgb.shape == (msg.height, msg.width, 3)


def _check_depth(msg, d):
    assert d.dtype == np.float32 and d.shape == (msg.height, msg.width)
    assert np.isfinite(d).all() and (d >= 0).all(), "NaN / inf / negative depth leaked"


@FUZZ
@given(images())
def test_any_image_converts_or_raises_valueerror(example):
    msg, consistent = example
    is_depth = msg.encoding in DEPTH_ENCODINGS
    try:
        arr = image_to_array(msg, metres=False)
    except ValueError as e:
        assert str(e) and not consistent, e
    else:
        assert arr.shape[:2] == (msg.height, msg.width)
    try:
        rgb = image_to_rgb(msg)
    except ValueError as e:
        assert str(e) and not (consistent and not is_depth), e
    else:
        _check_rgb(msg, rgb)
    try:
        d = image_to_depth(msg)
    except ValueError as e:
        assert str(e) and not (consistent and is_depth), e
    else:
        _check_depth(msg, d)


@FUZZ
@given(images(encoding=st.sampled_from(DEPTH_ENCODINGS), consistent=True),
       st.lists(st.sampled_from([np.nan, np.inf, -np.inf, -1.0, 0.0, 1e-30, 3.4e38]), max_size=4))
def test_depth_images_never_yield_nan_inf_or_negative_values(example, specials):
    msg, _ = example
    # plant special float32 values at the start of rows of a consistent 32FC1 image
    if msg.encoding == "32FC1" and specials and msg.height * msg.step == len(msg.data) and 0 < msg.height:
        data = bytearray(msg.data)
        fmt = ">f" if msg.is_bigendian else "<f"
        for r, v in enumerate(specials[:msg.height]):
            if msg.step >= 4 and msg.width >= 1:
                struct.pack_into(fmt, data, r * msg.step, v)
        msg.data = bytes(data)
    _check_depth(msg, image_to_depth(msg))


@st.composite
def camera_infos(draw):
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo()
    info.width = draw(st.one_of(SMALL, UINT32))
    info.height = draw(st.one_of(SMALL, UINT32))
    good = [draw(st.floats(1.0, 2000.0)), 0.0, draw(st.floats(-10, 1000)), 0.0, draw(st.floats(1.0, 2000.0)),
            draw(st.floats(-10, 1000)), 0.0, 0.0, 1.0]
    k = draw(st.one_of(st.just(good), st.lists(ANY_FLOAT, min_size=9, max_size=9)))
    for i in draw(st.lists(st.integers(0, 8), max_size=3)):
        k[i] = draw(ANY_FLOAT)
    info.k = [float(v) for v in k]
    info.distortion_model = draw(st.sampled_from(["", "plumb_bob", "rational_polynomial", "equidistant", "weird"]))
    info.d = [float(v) for v in draw(st.lists(st.one_of(st.floats(-1, 1), ANY_FLOAT), max_size=9))]
    return info


@FUZZ
@given(camera_infos())
def test_any_camera_info_gives_valid_intrinsics_or_valueerror(info):
    try:
        intr = camera_info_to_intrinsics(info)
    except ValueError as e:
        assert "CameraInfo" in str(e)
        return
    K = intr.K
    assert K.shape == (3, 3) and np.isfinite(K).all() and np.isfinite(intr.D).all()
    assert K[0, 0] > 0 and K[1, 1] > 0 and np.allclose(K[2], [0, 0, 1])
    assert intr.width > 0 and intr.height > 0


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 5), st.integers(1, 5), st.sampled_from(["rgb8", "bgr8", "mono8", "16UC1", "yuv422"]),
       st.sampled_from(["16UC1", "32FC1", "rgb8"]), camera_infos(),
       st.lists(st.sampled_from([np.nan, np.inf, -np.inf, -2.0, 0.0, 0.5, 7.0]), min_size=1, max_size=25),
       st.booleans())
def test_any_frame_gives_consistent_finite_arrays_or_a_frame_error(h, w, cenc, denc, info, depth_values, resize):
    """frame_to_arrays, the nodes' whole input conversion: FrameError or rgb / depth / K that agree."""
    from instseg_ros.ros.conversions import array_to_image

    rgb = np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3)
    color = array_to_image(rgb if cenc in ("rgb8", "bgr8") else rgb[..., 0].copy(),
                           cenc if cenc != "yuv422" else "mono8")
    if cenc == "16UC1":
        color = array_to_image(rgb[..., 0].astype(np.uint16), "16UC1")
    if cenc == "yuv422":
        color.encoding = "yuv422"
    vals = np.resize(np.asarray(depth_values, np.float32), (h, w))
    if denc == "16UC1":
        depth = array_to_image(np.nan_to_num(np.clip(vals, 0, 60), nan=0, posinf=0), "16UC1")
    elif denc == "32FC1":
        depth = array_to_image(vals, "32FC1")
    else:
        depth = array_to_image(rgb, "rgb8")
    if resize:
        info.width, info.height = w, h
    try:
        out_rgb, out_d, K = frame_to_arrays(color, depth, info)
    except FrameError as e:
        assert str(e)
        return
    assert out_rgb.shape == (h, w, 3) and out_rgb.dtype == np.uint8
    assert out_d.shape == (h, w) and out_d.dtype == np.float32
    assert np.isfinite(out_d).all() and (out_d >= 0).all() and (out_d > 0).any()
    assert np.isfinite(K).all() and K[0, 0] > 0 and K[1, 1] > 0


FIELD_NAMES = st.sampled_from(["x", "y", "z", "rgb", "rgba", "label", "intensity", ""])


@st.composite
def clouds(draw):
    """PointCloud2: half in the usual layout (x y z + one more field, any datatypes, row padding,
    byte order and content: it must convert), half with any layout at all."""
    from sensor_msgs.msg import PointCloud2, PointField

    ok = draw(st.booleans())
    n_fields = draw(st.integers(0, 6))
    fields = []
    for _ in range(n_fields):
        f = PointField()
        f.name = draw(FIELD_NAMES)
        f.datatype = draw(st.one_of(st.sampled_from(sorted(POINTFIELD_DTYPES)), st.integers(0, 255)))
        f.offset = draw(st.integers(0, 40))
        f.count = draw(st.sampled_from([1, 1, 1, 0, 2]))
        fields.append(f)
    if ok:
        fields = []
        for i, name in enumerate("xyz"):
            f = PointField()
            f.name, f.offset, f.count = name, 4 * i, 1
            f.datatype = draw(st.sampled_from([PointField.FLOAT32, PointField.FLOAT32, PointField.FLOAT64,
                                               PointField.INT16]))
            fields.append(f)
        for f in fields:
            f.offset = 8 * "xyz".index(f.name)
        extra = PointField()
        extra.offset, extra.count = 24, 1
        extra.name, extra.datatype = draw(st.sampled_from([
            ("rgb", PointField.FLOAT32), ("rgb", PointField.UINT32), ("label", PointField.UINT32),
            ("label", PointField.UINT8), ("label", PointField.INT16), ("intensity", PointField.FLOAT64)]))
        fields.append(extra)
    msg = PointCloud2()
    msg.fields = fields
    msg.height = draw(st.integers(1, 3) if ok else st.one_of(st.integers(0, 3), UINT32))
    msg.width = draw(st.integers(1, 4) if ok else st.one_of(st.integers(0, 4), UINT32))
    msg.point_step = 32 if ok else draw(st.one_of(st.just(32), st.integers(0, 48), UINT32))
    padded = min(msg.width, 16) * msg.point_step + draw(st.sampled_from([0, 4]))
    msg.row_step = padded if ok else draw(st.one_of(st.just(padded), st.integers(0, 200), UINT32))
    msg.is_bigendian = draw(st.booleans())
    size = min(msg.height, 3) * msg.row_step if msg.height * msg.row_step < 4096 else draw(st.integers(0, 64))
    if not ok:
        size += draw(st.sampled_from([0, 1, -1]))
    msg.data = draw(st.binary(min_size=max(size, 0), max_size=max(size, 0)))
    return msg, ok


def _decode_field(msg, name):
    """Field ``name`` of every point, read with struct (an independent decoder), as float64."""
    f = next(f for f in msg.fields if f.name == name)
    code = {1: "b", 2: "B", 3: "h", 4: "H", 5: "i", 6: "I", 7: "f", 8: "d"}[f.datatype]
    fmt = (">" if msg.is_bigendian else "<") + code
    data = bytes(msg.data)
    return np.array([struct.unpack_from(fmt, data, r * msg.row_step + c * msg.point_step + f.offset)[0]
                     for r in range(msg.height) for c in range(msg.width)], np.float64)


@FUZZ
@given(clouds())
def test_any_pointcloud_converts_or_raises_valueerror_and_creates_no_nan(example):
    msg, usual = example
    try:
        out = msg_to_labeled_cloud(msg)
    except ValueError as e:
        # the usual layout fails only for float64 coordinates beyond the float32 range
        assert str(e) and (not usual or "float32 range" in str(e)), e
        return
    n = msg.height * msg.width
    assert out.points.shape == (n, 3) and out.points.dtype == np.float32
    assert out.colors is None or (out.colors.shape == (n, 3) and out.colors.dtype == np.uint8)
    assert out.labels is None or (out.labels.shape == (n,) and out.labels.dtype == np.uint32)
    for k, axis in enumerate("xyz"):
        ref = _decode_field(msg, axis)
        # non-finite output only where the message itself carries a non-finite value, and the
        # values are the message's own (rounded to float32)
        assert (np.isfinite(out.points[:, k]) | ~np.isfinite(ref)).all()
        finite = np.isfinite(ref)
        np.testing.assert_array_equal(out.points[finite, k], ref[finite].astype(np.float32))


@FUZZ
@given(st.lists(ANY_FLOAT, min_size=3, max_size=3),
       st.one_of(st.lists(ANY_FLOAT, min_size=4, max_size=4), st.lists(st.floats(-1.2, 1.2), min_size=4, max_size=4)),
       st.floats(1e-6, 0.5), st.floats(0.1, 1e5))
def test_any_pose_is_a_rigid_transform_inside_the_bound_or_a_frame_error(p, q, tol, bound):
    try:
        T = pose_from_xyz_quat(p, q, quaternion_tolerance=tol, world_bound=bound)
    except FrameError as e:
        assert "pose" in str(e)
        return
    assert abs(math.sqrt(sum(v * v for v in q)) - 1.0) <= tol
    assert np.isfinite(T).all() and np.abs(T[:3, 3]).max() <= bound
    R = T[:3, :3]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_array_equal(T[3], [0, 0, 0, 1])
