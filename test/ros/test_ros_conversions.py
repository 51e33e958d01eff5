"""numpy <-> message conversions against hand-built messages (bytes written with struct by hand)."""
from __future__ import annotations

import struct

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from instseg_ros.core.geometry import moments
from instseg_ros.core.instances import Instances
from instseg_ros.core.palette import instance_color
from instseg_ros.ros.conversions import (
    CLOUD_DTYPE,
    array_to_image,
    camera_info_to_intrinsics,
    image_to_array,
    image_to_depth,
    image_to_rgb,
    instances_to_markers,
    instances_to_msg,
    intrinsics_to_camera_info,
    labeled_cloud_to_msg,
    msg_to_instances,
    msg_to_labeled_cloud,
    ns_to_stamp,
    stamp_to_ns,
)


def make_image(encoding, h, w, step, data: bytes, big=False) -> Image:
    m = Image()
    m.height, m.width, m.step, m.encoding, m.is_bigendian = h, w, step, encoding, int(big)
    m.data = data
    return m


def data_view(msg) -> np.ndarray:
    return np.frombuffer(msg.data, np.uint8)


# --- images: hand-built -------------------------------------------------------------------------

def test_rgb8_with_step_padding():
    # 2 rows x 2 px, step 8 = 6 bytes of pixels + 2 padding bytes (0xEE) per row
    data = bytes([1, 2, 3, 4, 5, 6, 0xEE, 0xEE, 7, 8, 9, 10, 11, 12, 0xEE, 0xEE])
    m = make_image("rgb8", 2, 2, 8, data)
    a = image_to_array(m)
    assert a.shape == (2, 2, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, [[[1, 2, 3], [4, 5, 6]], [[7, 8, 9], [10, 11, 12]]])
    assert np.shares_memory(a, data_view(m))  # padded rows: still a strided view
    np.testing.assert_array_equal(image_to_rgb(m), a)
    c = image_to_array(m, copy=True)
    assert not np.shares_memory(c, data_view(m))


@pytest.mark.parametrize("encoding, pixel, rgb", [
    ("bgr8", [30, 20, 10], [10, 20, 30]),
    ("rgba8", [10, 20, 30, 255], [10, 20, 30]),
    ("bgra8", [30, 20, 10, 255], [10, 20, 30]),
    ("mono8", [77], [77, 77, 77]),
])
def test_colour_encodings_to_rgb(encoding, pixel, rgb):
    c = len(pixel)
    step = 3 * c + 1  # one padding byte per row
    row = bytes(pixel * 3) + b"\x00"
    m = make_image(encoding, 2, 3, step, row * 2)
    raw = image_to_array(m)
    assert raw.shape == ((2, 3) if c == 1 else (2, 3, c))
    np.testing.assert_array_equal(raw.reshape(2, 3, c)[1, 2], pixel)
    out = image_to_rgb(m)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], rgb)
    np.testing.assert_array_equal(out[1, 2], rgb)


def test_16uc1_little_endian_mm_to_metres():
    vals = [1000, 2, 65535, 0]
    m = make_image("16UC1", 2, 2, 4, struct.pack("<4H", *vals))
    np.testing.assert_array_equal(image_to_array(m, metres=False), [[1000, 2], [65535, 0]])
    assert np.shares_memory(image_to_array(m, metres=False), data_view(m))
    d = image_to_array(m)
    assert d.dtype == np.float32
    np.testing.assert_allclose(d, [[1.0, 0.002], [65.535, 0.0]], rtol=1e-6)
    np.testing.assert_array_equal(image_to_depth(m), d)


def test_16uc1_big_endian_and_odd_step_padding():
    # width 2, step 5 (one padding byte: rows start at odd offsets -> unaligned), big endian
    row0 = struct.pack(">2H", 1000, 258) + b"\xff"
    row1 = struct.pack(">2H", 1, 40000) + b"\xff"
    m = make_image("16UC1", 2, 2, 5, row0 + row1, big=True)
    np.testing.assert_array_equal(image_to_array(m, metres=False), [[1000, 258], [1, 40000]])
    np.testing.assert_allclose(image_to_array(m), [[1.0, 0.258], [0.001, 40.0]], rtol=1e-6)


def test_32fc1_both_byte_orders():
    vals = [1.5, float("nan"), 0.25, 3.0]
    for fmt, big in (("<4f", False), (">4f", True)):
        m = make_image("32FC1", 2, 2, 8, struct.pack(fmt, *vals), big=big)
        d = image_to_array(m)
        assert d.dtype == np.float32 and d.dtype.isnative
        np.testing.assert_array_equal(d, np.array([[1.5, np.nan], [0.25, 3.0]], np.float32))
        assert np.shares_memory(d, data_view(m)) == (not big)  # zero-copy only in native order


def test_32fc1_row_padding():
    m = make_image("32FC1", 2, 1, 8, struct.pack("<f4x", 2.0) + struct.pack("<f4x", 4.0))
    np.testing.assert_array_equal(image_to_array(m), [[2.0], [4.0]])


@pytest.mark.parametrize("kwargs, match", [
    (dict(encoding="rgb8", h=480, w=640, step=1920, data=bytes(100)), r"Image.data length 100 != height\*step 921600"),
    (dict(encoding="rgb8", h=2, w=2, step=5, data=bytes(10)), r"Image.step 5 < width\*bytes_per_pixel 6"),
    (dict(encoding="yuv422", h=2, w=2, step=4, data=bytes(8)), r"Image.encoding 'yuv422'"),
    (dict(encoding="16UC1", h=0, w=2, step=4, data=b""), r"Image.height/width"),
    (dict(encoding="32FC1", h=2, w=2, step=8, data=bytes(15)), r"Image.data length 15 != height\*step 16"),
])
def test_bad_images_raise_naming_the_field(kwargs, match):
    m = make_image(kwargs["encoding"], kwargs["h"], kwargs["w"], kwargs["step"], kwargs["data"])
    with pytest.raises(ValueError, match=match):
        image_to_array(m)


def test_depth_and_colour_helpers_reject_the_other_kind():
    with pytest.raises(ValueError, match="not a depth encoding"):
        image_to_depth(make_image("rgb8", 1, 1, 3, bytes(3)))
    with pytest.raises(ValueError, match="is depth"):
        image_to_rgb(make_image("16UC1", 1, 1, 2, bytes(2)))


# --- images: array -> message and round trips ----------------------------------------------------

@pytest.mark.parametrize("encoding, shape, dtype", [
    ("rgb8", (5, 7, 3), np.uint8), ("bgr8", (5, 7, 3), np.uint8), ("rgba8", (5, 7, 4), np.uint8),
    ("bgra8", (5, 7, 4), np.uint8), ("mono8", (5, 7), np.uint8), ("16UC1", (5, 7), np.uint16),
    ("32FC1", (5, 7), np.float32),
])
def test_round_trip_every_encoding(encoding, shape, dtype):
    rng = np.random.default_rng(7)
    a = (rng.uniform(0, 10, shape).astype(dtype) if dtype == np.float32
         else rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True))
    h = Header(frame_id="cam", stamp=ns_to_stamp(1_500_000_123))
    m = array_to_image(a, encoding, h)
    itemsize = np.dtype(dtype).itemsize
    channels = 1 if len(shape) == 2 else shape[2]
    assert (m.height, m.width, m.step, m.is_bigendian) == (5, 7, 7 * channels * itemsize, 0)
    assert m.header.frame_id == "cam" and stamp_to_ns(m.header.stamp) == 1_500_000_123
    assert len(m.data) == 5 * m.step
    back = image_to_array(m, metres=False)
    np.testing.assert_array_equal(back, a)
    assert np.shares_memory(back, data_view(m))


def test_16uc1_from_metres_rounds_to_mm_and_marks_invalid_zero():
    d = np.array([[1.0004, 0.0016], [np.nan, -1.0]], np.float32)
    m = array_to_image(d, "16UC1")
    np.testing.assert_array_equal(image_to_array(m, metres=False), [[1000, 2], [0, 0]])
    with pytest.raises(ValueError, match="exceeds the 16UC1 range"):
        array_to_image(np.array([[70.0]]), "16UC1")


@pytest.mark.parametrize("arr, encoding, match", [
    (np.zeros((4, 4), np.uint8), "rgb8", r"shape \(H, W, 3\)"),
    (np.zeros((4, 4, 3), np.float32), "rgb8", "must be uint8"),
    (np.zeros((4, 4), np.int32), "32FC1", "floating point"),
    (np.zeros((4, 4), np.uint8), "nv12", "encoding 'nv12'"),
    (np.full((2, 2), 70000, np.int64), "16UC1", r"\[0, 65535\]"),
])
def test_array_to_image_rejects_bad_input(arr, encoding, match):
    with pytest.raises(ValueError, match=match):
        array_to_image(arr, encoding)


# --- CameraInfo ----------------------------------------------------------------------------------

def make_info(k=(600.0, 0, 320.0, 0, 610.0, 240.0, 0, 0, 1.0), d=(0.1, -0.2, 0, 0, 0.01), model="plumb_bob",
              w=640, h=480) -> CameraInfo:
    m = CameraInfo()
    m.width, m.height, m.distortion_model = w, h, model
    m.k = [float(v) for v in k]
    m.d = [float(v) for v in d]
    return m


def test_camera_info_to_intrinsics():
    intr = camera_info_to_intrinsics(make_info())
    np.testing.assert_array_equal(intr.K, [[600, 0, 320], [0, 610, 240], [0, 0, 1]])
    assert (intr.width, intr.height, intr.distortion_model) == (640, 480, "plumb_bob")
    np.testing.assert_array_equal(intr.D, [0.1, -0.2, 0, 0, 0.01])
    back = camera_info_to_intrinsics(intrinsics_to_camera_info(intr.K, 640, 480))
    np.testing.assert_array_equal(back.K, intr.K)
    np.testing.assert_array_equal(back.D, np.zeros(5))


@pytest.mark.parametrize("info, match", [
    (make_info(k=(0.0, 0, 320, 0, 610, 240, 0, 0, 1)), "CameraInfo.k has a zero or negative focal length"),
    (make_info(k=(600, 0, float("nan"), 0, 610, 240, 0, 0, 1)), "CameraInfo.k contains NaN"),
    (make_info(k=(600, 0, 320, 0, 610, 240, 0, 1, 1)), r"CameraInfo.k last row"),
    (make_info(w=0), "CameraInfo.width/height"),
    (make_info(d=(0.1, 0.2, 0.3)), "CameraInfo.d has 3 values, distortion_model 'plumb_bob' needs 5"),
    (make_info(d=(0.1, float("inf"), 0, 0, 0)), "CameraInfo.d contains NaN"),
])
def test_bad_camera_info_raises(info, match):
    with pytest.raises(ValueError, match=match):
        camera_info_to_intrinsics(info)


def test_camera_info_without_distortion_is_accepted():
    intr = camera_info_to_intrinsics(make_info(d=(), model=""))
    assert intr.D.shape == (0,) and intr.distortion_model == ""


# --- PointCloud2 ---------------------------------------------------------------------------------

def reference_cloud_bytes(points, colors, labels) -> bytes:
    """Slow reference: one struct.pack per point, rgb = 0x00RRGGBB as uint32 bits."""
    out = bytearray()
    for p, c, lab in zip(points, colors, labels):
        rgb = (int(c[0]) << 16) | (int(c[1]) << 8) | int(c[2])
        out += struct.pack("<fffII", float(p[0]), float(p[1]), float(p[2]), rgb, int(lab))
    return bytes(out)


def test_labeled_cloud_matches_struct_pack_reference():
    rng = np.random.default_rng(3)
    n = 257
    pts = rng.normal(size=(n, 3)).astype(np.float32)
    cols = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    labs = rng.integers(0, 1 << 20, n).astype(np.int32)
    m = labeled_cloud_to_msg(pts, cols, labs, Header(frame_id="map"))
    assert bytes(m.data) == reference_cloud_bytes(pts, cols, labs)
    assert [(f.name, f.offset, f.datatype, f.count) for f in m.fields] == [
        ("x", 0, PointField.FLOAT32, 1), ("y", 4, PointField.FLOAT32, 1), ("z", 8, PointField.FLOAT32, 1),
        ("rgb", 12, PointField.FLOAT32, 1), ("label", 16, PointField.UINT32, 1)]
    assert (m.height, m.width, m.point_step, m.row_step, m.is_bigendian, m.is_dense) == (1, n, 20, 20 * n, False, True)
    assert m.header.frame_id == "map"


def test_rgb_field_is_float32_reinterpretation_of_0x00rrggbb():
    m = labeled_cloud_to_msg(np.zeros((1, 3), np.float32), np.array([[0x12, 0x34, 0x56]], np.uint8), [9])
    rgb_as_float = struct.unpack_from("<f", bytes(m.data), 12)[0]
    assert struct.unpack("<I", struct.pack("<f", rgb_as_float))[0] == 0x123456


def test_cloud_round_trip_and_non_dense():
    rng = np.random.default_rng(4)
    pts = rng.normal(size=(100, 3)).astype(np.float32)
    pts[5, 1] = np.nan
    cols = rng.integers(0, 256, (100, 3), dtype=np.uint8)
    labs = rng.integers(0, 5, 100)
    m = labeled_cloud_to_msg(pts, cols, labs)
    assert m.is_dense is False
    back = msg_to_labeled_cloud(m)
    np.testing.assert_array_equal(back.points, pts)
    np.testing.assert_array_equal(back.colors, cols)
    np.testing.assert_array_equal(back.labels, labs.astype(np.uint32))
    assert (back.height, back.width) == (1, 100)
    empty = msg_to_labeled_cloud(labeled_cloud_to_msg(np.zeros((0, 3), np.float32)))
    assert empty.points.shape == (0, 3)


def hand_built_cloud(big: bool) -> PointCloud2:
    """2 x 2 organised cloud, point_step 32, fields in another order, rows padded by 8 bytes."""
    e = ">" if big else "<"
    fields = [PointField(name="label", offset=0, datatype=PointField.UINT16, count=1),
              PointField(name="x", offset=8, datatype=PointField.FLOAT32, count=1),
              PointField(name="y", offset=12, datatype=PointField.FLOAT32, count=1),
              PointField(name="z", offset=16, datatype=PointField.FLOAT32, count=1),
              PointField(name="rgb", offset=24, datatype=PointField.UINT32, count=1)]
    pts = [(1.0, 2.0, 3.0, 0xFF0000, 7), (4.0, 5.0, 6.0, 0x00FF00, 8),
           (-1.0, -2.0, -3.0, 0x0000FF, 0), (0.5, 0.25, 0.125, 0x102030, 65535)]
    rows = []
    for r in range(2):
        row = b""
        for x, y, z, rgb, lab in pts[2 * r: 2 * r + 2]:
            row += struct.pack(e + "H6xfff4xI4x", lab, x, y, z, rgb)
        rows.append(row + b"\xaa" * 8)
    m = PointCloud2()
    m.height, m.width, m.fields, m.is_bigendian = 2, 2, fields, big
    m.point_step, m.row_step = 32, 72
    m.data = b"".join(rows)
    return m


@pytest.mark.parametrize("big", [False, True])
def test_read_hand_built_cloud_with_padding_and_byte_order(big):
    m = hand_built_cloud(big)
    c = msg_to_labeled_cloud(m)
    np.testing.assert_array_equal(c.points, [[1, 2, 3], [4, 5, 6], [-1, -2, -3], [0.5, 0.25, 0.125]])
    np.testing.assert_array_equal(c.colors, [[255, 0, 0], [0, 255, 0], [0, 0, 255], [0x10, 0x20, 0x30]])
    np.testing.assert_array_equal(c.labels, [7, 8, 0, 65535])
    assert (c.height, c.width) == (2, 2)


def test_bad_clouds_raise_naming_the_field():
    m = hand_built_cloud(False)
    m.data = bytes(m.data)[:-1]
    with pytest.raises(ValueError, match=r"PointCloud2.data length 143 != height\*row_step 144"):
        msg_to_labeled_cloud(m)
    m = hand_built_cloud(False)
    m.row_step = 60
    with pytest.raises(ValueError, match=r"PointCloud2.row_step 60 < width\*point_step 64"):
        msg_to_labeled_cloud(m)
    m = hand_built_cloud(False)
    m.fields = [f for f in m.fields if f.name != "y"]
    with pytest.raises(ValueError, match="no 'y' field"):
        msg_to_labeled_cloud(m)
    m = hand_built_cloud(False)
    m.fields[4].offset = 30
    with pytest.raises(ValueError, match=r"fields\['rgb'\].*beyond point_step 32"):
        msg_to_labeled_cloud(m)
    m = hand_built_cloud(False)
    m.fields[0].datatype = 42
    with pytest.raises(ValueError, match=r"fields\['label'\].datatype 42"):
        msg_to_labeled_cloud(m)


def test_labeled_cloud_rejects_bad_arrays():
    with pytest.raises(ValueError, match=r"points must have shape \(N, 3\)"):
        labeled_cloud_to_msg(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="colors must have shape"):
        labeled_cloud_to_msg(np.zeros((4, 3)), np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match="colors must be uint8"):
        labeled_cloud_to_msg(np.zeros((4, 3)), np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="labels must be >= 0"):
        labeled_cloud_to_msg(np.zeros((2, 3)), labels=np.array([1, -1]))


def test_cloud_dtype_is_20_bytes_xyz_rgb_label():
    assert CLOUD_DTYPE.itemsize == 20
    assert [CLOUD_DTYPE.fields[n][1] for n in ("x", "y", "z", "rgb", "label")] == [0, 4, 8, 12, 16]


# --- Instances -> markers / ObjectInstanceArray ---------------------------------------------------

def two_instances() -> Instances:
    # id 4: cov diag(4, 1, 9) cm^2 -> axes (z, x, y), sigmas (3, 2, 1) cm, q = (-1/2, -1/2, -1/2, 1/2).
    # id 9: isotropic 1 cm^2 (any orientation), sigma 1 cm.
    return Instances(labels=np.zeros((2, 2), np.int32), ids=[4, 9],
                     centroids=[[0.1, 0.2, 0.8], [-0.3, 0.0, 1.2]],
                     covariances=[np.diag([4e-4, 1e-4, 9e-4]), np.eye(3) * 1e-4],
                     scores=[0.9, 0.5], num_points=[120, 40], class_ids=[0, 2], occupancy=[0, 33])


def test_markers_deleteall_first_then_ellipsoid_and_text_per_instance():
    h = Header(frame_id="camera_color_optical_frame", stamp=ns_to_stamp(42))
    ma = instances_to_markers(two_instances(), h, ns="objs")
    ms = ma.markers
    assert [(m.action, m.ns) for m in ms[:2]] == [(Marker.DELETEALL, "objs"), (Marker.DELETEALL, "objs/ids")]
    assert len(ms) == 2 + 2 * 2 and all(m.action == Marker.ADD for m in ms[2:])
    ell = [m for m in ms[2:] if m.type == Marker.SPHERE]
    txt = [m for m in ms[2:] if m.type == Marker.TEXT_VIEW_FACING]
    assert [m.id for m in ell] == [4, 9] and [m.id for m in txt] == [4, 9]
    assert [m.text for m in txt] == ["4", "9"]
    assert all(m.header.frame_id == "camera_color_optical_frame" and stamp_to_ns(m.header.stamp) == 42 for m in ms)
    e = ell[0]
    assert e.ns == "objs" and txt[0].ns == "objs/ids"
    q = [e.pose.orientation.x, e.pose.orientation.y, e.pose.orientation.z, e.pose.orientation.w]
    np.testing.assert_allclose(q, [-0.5, -0.5, -0.5, 0.5], atol=1e-12)
    # scale = 2 * 2 sigma along (z, x, y) = 4 * (0.03, 0.02, 0.01)
    np.testing.assert_allclose([e.scale.x, e.scale.y, e.scale.z], [0.12, 0.08, 0.04], rtol=1e-9)
    np.testing.assert_allclose([e.pose.position.x, e.pose.position.y, e.pose.position.z], [0.1, 0.2, 0.8])
    np.testing.assert_allclose([ell[1].scale.x, ell[1].scale.y, ell[1].scale.z], [0.04] * 3, rtol=1e-9)
    # stable colours: same id -> same colour in another call, different ids -> different colours
    again = instances_to_markers(two_instances().select(np.array([False, True])), h).markers
    assert [again[2].color.r, again[2].color.g, again[2].color.b] == [ell[1].color.r, ell[1].color.g, ell[1].color.b]
    assert instance_color(4) != instance_color(9)


def test_markers_for_no_instances_only_clear():
    ms = instances_to_markers(Instances.empty((4, 4)), Header(frame_id="f")).markers
    assert len(ms) == 2 and all(m.action == Marker.DELETEALL for m in ms)


def test_bad_covariance_raises():
    inst = two_instances()
    inst.covariances[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"Instances.covariances\[1\] \(id 9\) contains NaN"):
        instances_to_markers(inst, Header())
    inst = two_instances()
    inst.covariances[0] = np.diag([1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="not positive semi-definite"):
        instances_to_msg(inst, Header())
    inst = two_instances()
    inst.centroids[0, 2] = np.inf
    with pytest.raises(ValueError, match=r"Instances.centroids\[0\]"):
        instances_to_msg(inst, Header())


def test_object_instance_array_from_points_gives_true_oriented_box(rotated_grid_box):
    # A 0.3 x 0.2 x 0.1 grid box rotated 30 deg about z at (1, 2, 3); label 5. Plus 10 far
    # background points (label 0) and invalid (0, 0, 0) points labelled 5, which must be ignored.
    box, c, C, pts, labels = rotated_grid_box
    inst = Instances(labels=labels, ids=[5], centroids=[c], covariances=[C], scores=[0.7], num_points=[len(box)],
                     class_ids=[3], occupancy=[12.5])
    h = Header(frame_id="map", stamp=ns_to_stamp(7_000_000_001))
    msg = instances_to_msg(inst, h, points=pts)
    assert msg.header.frame_id == "map" and stamp_to_ns(msg.header.stamp) == 7_000_000_001
    (o,) = msg.instances
    assert (o.id, o.num_points, o.class_id) == (5, len(box), 3)
    assert o.score == pytest.approx(0.7) and o.occupancy == pytest.approx(12.5)
    np.testing.assert_allclose([o.extent.x, o.extent.y, o.extent.z], [0.3, 0.2, 0.1], atol=1e-9)
    np.testing.assert_allclose([o.pose.position.x, o.pose.position.y, o.pose.position.z], [1, 2, 3], atol=1e-12)
    np.testing.assert_allclose([o.centroid.x, o.centroid.y, o.centroid.z], [1, 2, 3], atol=1e-12)
    np.testing.assert_allclose(np.asarray(o.covariance).reshape(3, 3), C)
    # orientation: Rz(30) (largest axis x' = (cos30, sin30, 0) has a positive largest component)
    np.testing.assert_allclose([o.pose.orientation.x, o.pose.orientation.y, o.pose.orientation.z, o.pose.orientation.w],
                               [0, 0, np.sin(np.radians(15)), np.cos(np.radians(15))], atol=1e-9)


def test_object_instance_array_from_image_points_and_without_points():
    # image layout: labels (H, W), points (H, W, 3); instance 2 spans x in [0, 0.4] on a row
    h, w = 3, 5
    labels = np.zeros((h, w), np.int32)
    labels[1, :] = 2
    pts = np.zeros((h, w, 3), np.float32)
    pts[1, :, 0] = np.linspace(0, 0.4, w)
    pts[1, :, 2] = 1.0
    c, C = moments(pts[1])
    inst = Instances(labels=labels, ids=[2], centroids=[c], covariances=[C], scores=[1], num_points=[w])
    o = instances_to_msg(inst, Header(), points=pts).instances[0]
    np.testing.assert_allclose([o.extent.x, o.extent.y, o.extent.z], [0.4, 0.0, 0.0], atol=1e-7)
    # without points: the +-2 sigma ellipsoid, 4 * sqrt(var_x); var_x of 5 evenly spaced = 0.02
    o2 = instances_to_msg(inst, Header()).instances[0]
    np.testing.assert_allclose(o2.extent.x, 4 * np.sqrt(0.02), rtol=1e-6)


def test_track_fields_default_and_round_trip():
    inst = two_instances()
    # an Instances without track history: one observation, no age, not a confirmed track
    o = instances_to_msg(inst, Header()).instances[0]
    assert (o.hits, o.age, o.confirmed) == (1, 0.0, False)
    inst.hits, inst.age_s, inst.confirmed = np.array([7, 2]), np.array([1.25, 0.5], np.float32), np.array([True, False])
    msg = instances_to_msg(inst, Header())
    assert [(o.hits, o.age, o.confirmed) for o in msg.instances] == [(7, 1.25, True), (2, 0.5, False)]
    back, _, _ = msg_to_instances(msg)
    assert back.hits.tolist() == [7, 2] and back.age_s.tolist() == [1.25, 0.5] and back.confirmed.tolist() == [True,
                                                                                                                False]


def test_msg_to_instances_round_trip():
    inst = two_instances()
    msg = instances_to_msg(inst, Header(frame_id="f"))
    back, rots, ext = msg_to_instances(msg)
    np.testing.assert_array_equal(back.ids, inst.ids)
    np.testing.assert_allclose(back.centroids, inst.centroids)
    np.testing.assert_allclose(back.covariances, inst.covariances)
    np.testing.assert_allclose(back.scores, inst.scores)
    np.testing.assert_array_equal(back.num_points, inst.num_points)
    np.testing.assert_array_equal(back.class_ids, inst.class_ids)
    np.testing.assert_allclose(back.occupancy, inst.occupancy)
    np.testing.assert_allclose(rots[0], [[0, 1, 0], [0, 0, 1], [1, 0, 0]], atol=1e-12)
    np.testing.assert_allclose(ext[0], [0.12, 0.08, 0.04], rtol=1e-9)
