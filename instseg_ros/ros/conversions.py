"""numpy <-> ROS 2 message conversions (the project's own cv_bridge / sensor_msgs_py equivalent).

cv_bridge and sensor_msgs_py are not installable outside a ROS distribution, so this module converts
with numpy directly:

* ``sensor_msgs/Image`` <-> ndarray for rgb8, bgr8, rgba8, bgra8, mono8, 16UC1 (depth in mm or
  label ids) and 32FC1 (depth in m), honouring ``step`` row padding and ``is_bigendian``.
  Reading returns a zero-copy view of ``msg.data`` whenever the layout allows it (native byte
  order, and for depth the raw dtype); the view shares memory with the message.
* ``sensor_msgs/CameraInfo`` -> :class:`Intrinsics` (K, size, distortion model) with validation.
* Labeled ``sensor_msgs/PointCloud2`` (x y z float32, rgb float32-packed, label uint32), built as
  one numpy structured array and read back through the message's own field offsets.
* ``visualization_msgs/MarkerArray`` and ``instseg_ros/ObjectInstanceArray`` from an
  :class:`~instseg_ros.core.Instances` (the geometry itself, principal axes and oriented extents, is
  computed in :mod:`instseg_ros.core.instance_geometry`).

Bad input raises ValueError naming the message field (e.g. "Image.data length 100 !=
height*step 921600"). All geometry is in the frame of the header passed in (camera optical frame
for the camera pipeline, map frame for the mapping pipeline), metres.
"""
from __future__ import annotations

import array
import sys
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from instseg_ros.core.geometry import quaternion_to_rotation
from instseg_ros.core.instance_geometry import N_SIGMA, covariance_to_pose, oriented_extents, validated_covariances
from instseg_ros.core.instances import Instances
from instseg_ros.core.palette import instance_color
from instseg_ros.msg import ObjectInstance, ObjectInstanceArray

_NATIVE_BIGENDIAN = sys.byteorder == "big"

# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------

#: encoding -> (element dtype, channels). Depth: 16UC1 = millimetres (also instance-id images),
#: 32FC1 = metres (REP 118).
IMAGE_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}

#: Encodings that carry depth; :func:`image_to_array` converts them to float32 metres by default.
DEPTH_ENCODINGS = ("16UC1", "32FC1")

#: Metres per unit of a 16UC1 depth image (RealSense / REP 118: millimetres).
DEPTH_16UC1_SCALE = 0.001


def _encoding_info(encoding: str, where: str) -> tuple[np.dtype, int]:
    try:
        return IMAGE_ENCODINGS[encoding]
    except KeyError:
        raise ValueError(f"{where} {encoding!r} is not supported; expected one of "
                         f"{sorted(IMAGE_ENCODINGS)}") from None


def image_to_array(msg: Image, metres: bool = True, copy: bool = False) -> np.ndarray:
    """sensor_msgs/Image -> ndarray in the message's own channel order.

    Args:
        msg: an Image with one of :data:`IMAGE_ENCODINGS`.
        metres: for 16UC1 / 32FC1: True returns float32 (H, W) depth in metres (16UC1 is
            millimetres * 0.001, 0 stays 0 = invalid; 32FC1 is returned as is, NaN = invalid);
            False returns the raw values (uint16 / float32), e.g. for 16UC1 instance-id images.
        copy: return an array that owns its memory instead of a view of ``msg.data``.
    Returns:
        uint8 (H, W, 3|4) for rgb8/bgr8/rgba8/bgra8 (channel order as in the encoding),
        uint8 (H, W) for mono8, float32 (H, W) metres or the raw uint16/float32 (H, W) for depth.
        Without ``copy`` the array is a view of ``msg.data`` when the byte order is native (and,
        for depth, when no scaling is needed): writing to it writes to the message.
    Raises:
        ValueError: unknown encoding, zero size, ``step`` shorter than a row, or
            ``len(data) != height * step``.
    """
    dtype, channels = _encoding_info(msg.encoding, "Image.encoding")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ValueError(f"Image.height/width must be > 0, got {h}x{w}")
    row_bytes = w * channels * dtype.itemsize
    if step < row_bytes:
        raise ValueError(f"Image.step {step} < width*bytes_per_pixel {row_bytes} ({msg.encoding}, width {w})")
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size != h * step:
        raise ValueError(f"Image.data length {buf.size} != height*step {h * step}")
    rows = buf.reshape(h, step)[:, :row_bytes]
    big = bool(msg.is_bigendian) and dtype.itemsize > 1
    wire = dtype.newbyteorder(">" if big else "<") if dtype.itemsize > 1 else dtype
    # .view re-types the contiguous last axis whatever the row stride; an odd step (16UC1) gives
    # an unaligned view, which numpy reads correctly.
    arr = rows.view(wire).reshape((h, w) if channels == 1 else (h, w, channels))
    if not wire.isnative:
        arr = arr.astype(dtype)  # byte swap (copy)
    if metres and msg.encoding == "16UC1":
        # a correctly rounded division: millimetres become the float32 nearest to the metre value, the
        # same number a 32FC1 image of that depth carries (a product with float32(0.001) differs in the last
        # bit for 59 % of the values, enough to flip ties in the label refinement's nearest-pixel search)
        return arr.astype(np.float32) / np.float32(1.0 / DEPTH_16UC1_SCALE)
    if copy and np.shares_memory(arr, buf):
        arr = arr.copy()
    return arr


def image_to_rgb(msg: Image, copy: bool = False) -> np.ndarray:
    """Colour Image (rgb8, bgr8, rgba8, bgra8, mono8) -> uint8 (H, W, 3) RGB.

    rgb8 without padding is a zero-copy view (unless ``copy``); the other encodings are reordered
    (copy). ValueError for depth encodings.
    """
    if msg.encoding in DEPTH_ENCODINGS:
        raise ValueError(f"Image.encoding {msg.encoding!r} is depth, not colour")
    arr = image_to_array(msg, copy=copy)
    enc = msg.encoding
    if enc == "rgb8":
        return arr
    if enc == "bgr8":
        return arr[..., ::-1].copy()
    if enc == "rgba8":
        return arr[..., :3].copy()
    if enc == "bgra8":
        return arr[..., 2::-1].copy()
    return np.repeat(arr[..., None], 3, axis=2)  # mono8


def image_to_depth(msg: Image, copy: bool = False) -> np.ndarray:
    """Depth Image (16UC1 mm or 32FC1 m) -> float32 (H, W) metres, finite and >= 0; 0 = invalid.

    32FC1 NaN / +-inf / negative values (invalid by REP 118 or nonsense) become 0, in a copy; a
    32FC1 image without them is returned as a view (unless ``copy``) like :func:`image_to_array`.
    """
    if msg.encoding not in DEPTH_ENCODINGS:
        raise ValueError(f"Image.encoding {msg.encoding!r} is not a depth encoding {DEPTH_ENCODINGS}")
    d = image_to_array(msg, metres=True, copy=copy)
    if msg.encoding == "32FC1":
        good = np.isfinite(d) & (d >= 0)
        if not good.all():
            d = np.where(good, d, np.float32(0.0)).astype(np.float32, copy=False)
    return d


def _uint8_buffer(nbytes: int) -> tuple[array.array, np.ndarray]:
    """A new array.array('B') of ``nbytes`` (what rosidl stores for ``uint8[]``) and a writable
    numpy uint8 view of it: payloads are written straight into the buffer the message keeps."""
    buf = array.array("B", b"\0") * int(nbytes)
    return buf, np.frombuffer(buf, dtype=np.uint8)


def _set_uint8_data(msg, arr: np.ndarray) -> None:
    """Fill a ``uint8[] data`` field from an ndarray (one copy into an array.array)."""
    a = np.ascontiguousarray(arr)
    buf, view = _uint8_buffer(a.nbytes)
    view[:] = a.reshape(-1).view(np.uint8)
    # The generated setter stores array.array('B', value): an array.array is copied with one
    # memcpy, where an ndarray would be iterated element by element.
    msg.data = buf


def array_to_image(arr: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """ndarray -> sensor_msgs/Image (native byte order, step = width * bytes per pixel).

    Args:
        arr: uint8 (H, W, 3) for rgb8/bgr8, (H, W, 4) for rgba8/bgra8 (channel order = the
            encoding's), uint8 (H, W) for mono8; for 16UC1 either uint16 (H, W) raw values (mm,
            or label ids) or float (H, W) metres (rounded to mm; NaN/inf/<= 0 -> 0 = invalid);
            float (H, W) metres for 32FC1.
        encoding: one of :data:`IMAGE_ENCODINGS`.
        header: copied into the message (stamp + frame of the source data).
    Raises:
        ValueError: unknown encoding, wrong shape/dtype for it, or 16UC1 depth beyond 65.535 m.
    """
    dtype, channels = _encoding_info(encoding, "encoding")
    a = np.asarray(arr)
    want_ndim = 2 if channels == 1 else 3
    if a.ndim != want_ndim or (channels > 1 and a.shape[2] != channels):
        raise ValueError(f"array for {encoding} must have shape (H, W{'' if channels == 1 else f', {channels}'})"
                         f", got {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"array for {encoding} is empty, shape {a.shape}")
    if encoding == "16UC1" and np.issubdtype(a.dtype, np.floating):
        mm = np.where(np.isfinite(a) & (a > 0), a, 0.0) / DEPTH_16UC1_SCALE
        if mm.max(initial=0.0) > np.iinfo(np.uint16).max:
            raise ValueError(f"depth {float(a[np.isfinite(a)].max())} m exceeds the 16UC1 range (65.535 m)")
        a = np.rint(mm).astype(np.uint16)
    elif encoding == "32FC1":
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"array for 32FC1 must be floating point metres, got {a.dtype}")
        a = a.astype(np.float32, copy=False)
    elif a.dtype != dtype:
        if encoding == "16UC1" and np.issubdtype(a.dtype, np.integer):
            if a.size and (a.min() < 0 or a.max() > np.iinfo(np.uint16).max):
                raise ValueError(f"values for 16UC1 must be in [0, 65535], got [{a.min()}, {a.max()}]")
            a = a.astype(np.uint16)
        else:
            raise ValueError(f"array for {encoding} must be {dtype}, got {a.dtype}")
    a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("="))
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(a.shape[0]), int(a.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(_NATIVE_BIGENDIAN)
    msg.step = int(a.shape[1] * channels * dtype.itemsize)
    _set_uint8_data(msg, a)
    return msg


# ----------------------------------------------------------------------------------------------
# CameraInfo
# ----------------------------------------------------------------------------------------------

#: Number of distortion coefficients per model (an empty D is also accepted: no distortion).
DISTORTION_LENGTHS = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of one camera (sensor_msgs/CameraInfo without the rectification part).

    Attributes:
        K: float64 (3, 3) [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], pixels.
        width, height: image size, pixels.
        distortion_model: e.g. "plumb_bob" ("" when the driver leaves it empty).
        D: float64 (n,) distortion coefficients of that model (may be empty).
    """

    K: np.ndarray
    width: int
    height: int
    distortion_model: str
    D: np.ndarray


def camera_info_to_intrinsics(msg: CameraInfo) -> Intrinsics:
    """CameraInfo -> :class:`Intrinsics`.

    Raises:
        ValueError naming the field: CameraInfo.width/height <= 0, CameraInfo.k not 9 finite
        values, zero/negative focal length, last row of k != [0, 0, 1], CameraInfo.d not finite
        or of the wrong length for CameraInfo.distortion_model.
    """
    w, h = int(msg.width), int(msg.height)
    if w <= 0 or h <= 0:
        raise ValueError(f"CameraInfo.width/height must be > 0, got {w}x{h}")
    k = np.asarray(msg.k, dtype=np.float64).reshape(-1)
    if k.size != 9:
        raise ValueError(f"CameraInfo.k must have 9 values, got {k.size}")
    if not np.isfinite(k).all():
        raise ValueError(f"CameraInfo.k contains NaN/inf: {k.tolist()}")
    K = k.reshape(3, 3)
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"CameraInfo.k has a zero or negative focal length (fx={K[0, 0]}, fy={K[1, 1]})")
    if not np.allclose(K[2], [0.0, 0.0, 1.0]):
        raise ValueError(f"CameraInfo.k last row must be [0, 0, 1], got {K[2].tolist()}")
    d = np.asarray(msg.d, dtype=np.float64).reshape(-1)
    if not np.isfinite(d).all():
        raise ValueError(f"CameraInfo.d contains NaN/inf: {d.tolist()}")
    model = str(msg.distortion_model)
    expected = DISTORTION_LENGTHS.get(model)
    if d.size and expected is not None and d.size != expected:
        raise ValueError(f"CameraInfo.d has {d.size} values, distortion_model {model!r} needs {expected}")
    return Intrinsics(K=K.copy(), width=w, height=h, distortion_model=model, D=d.copy())


def intrinsics_to_camera_info(K: np.ndarray, width: int, height: int, header: Header | None = None,
                              distortion_model: str = "plumb_bob", D: np.ndarray | None = None) -> CameraInfo:
    """Pinhole K (3, 3) -> CameraInfo with identity R, P = [K | 0] and ``D`` (default: 5 zeros)."""
    from instseg_ros.core.geometry import validate_intrinsics

    K = validate_intrinsics(K)
    msg = CameraInfo()
    if header is not None:
        msg.header = header
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = distortion_model
    n = DISTORTION_LENGTHS.get(distortion_model, 0)
    msg.d = [float(v) for v in (np.zeros(n) if D is None else np.asarray(D, np.float64).reshape(-1))]
    msg.k = K.reshape(-1).astype(np.float64)
    msg.r = np.eye(3).reshape(-1)
    P = np.zeros((3, 4))
    P[:, :3] = K
    msg.p = P.reshape(-1)
    return msg


# ----------------------------------------------------------------------------------------------
# Labeled PointCloud2
# ----------------------------------------------------------------------------------------------

#: Layout of the clouds this package publishes: x y z rgb label, 20 bytes per point. rgb is the ROS
#: convention: uint32 0x00RRGGBB whose bits are stored as a float32 (what RViz's RGB8 transformer
#: reads).
CLOUD_DTYPE = np.dtype({
    "names": ["x", "y", "z", "rgb", "label"],
    "formats": ["<f4", "<f4", "<f4", "<u4", "<u4"],
    "offsets": [0, 4, 8, 12, 16],
    "itemsize": 20,
})
_CLOUD_FIELDS = (("x", 0, PointField.FLOAT32), ("y", 4, PointField.FLOAT32), ("z", 8, PointField.FLOAT32),
                 ("rgb", 12, PointField.FLOAT32), ("label", 16, PointField.UINT32))

#: PointField datatype -> numpy dtype (little endian; swapped for big-endian messages).
POINTFIELD_DTYPES = {
    PointField.INT8: np.dtype("i1"), PointField.UINT8: np.dtype("u1"),
    PointField.INT16: np.dtype("<i2"), PointField.UINT16: np.dtype("<u2"),
    PointField.INT32: np.dtype("<i4"), PointField.UINT32: np.dtype("<u4"),
    PointField.FLOAT32: np.dtype("<f4"), PointField.FLOAT64: np.dtype("<f8"),
}


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """uint8 (N, 3) RGB -> uint32 (N,) 0x00RRGGBB (view it as float32 for the ``rgb`` field)."""
    c = np.asarray(colors)
    if c.ndim != 2 or c.shape[1] != 3:
        raise ValueError(f"colors must have shape (N, 3), got {c.shape}")
    c = c.astype(np.uint32)
    return (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]


def unpack_rgb(rgb: np.ndarray) -> np.ndarray:
    """uint32 (or float32-bit-cast) (N,) 0x00RRGGBB -> uint8 (N, 3) RGB."""
    v = np.asarray(rgb)
    v = v.view(np.uint32) if v.dtype.kind == "f" and v.dtype.itemsize == 4 else v.astype(np.uint32)
    out = np.empty((v.shape[0], 3), np.uint8)
    out[:, 0] = (v >> 16) & 0xFF
    out[:, 1] = (v >> 8) & 0xFF
    out[:, 2] = v & 0xFF
    return out


def labeled_cloud_to_msg(points: np.ndarray, colors: np.ndarray | None = None, labels: np.ndarray | None = None,
                         header: Header | None = None) -> PointCloud2:
    """Points (+ colours, labels) -> unorganised PointCloud2 with fields x y z rgb label.

    Args:
        points: float (N, 3) metres in ``header.frame_id``.
        colors: uint8 (N, 3) RGB, or None (black).
        labels: integer (N,) instance ids >= 0 (0 = background), or None (all 0).
        header: stamp + frame of the points.
    Returns:
        PointCloud2, height 1, width N, point_step 20 (:data:`CLOUD_DTYPE`), little endian,
        is_dense = all points finite. The payload is one structured array, filled field by field
        inside the byte buffer the message stores.
    Raises:
        ValueError: wrong shapes, negative or > uint32 labels.
    """
    p = np.asarray(points)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {p.shape}")
    n = p.shape[0]
    # The structured array lives in the message's own (zero-initialised) buffer type: filled once,
    # no tobytes(); fields left out (colors/labels None) stay 0.
    buf, raw = _uint8_buffer(n * CLOUD_DTYPE.itemsize)
    cloud = raw.view(CLOUD_DTYPE)
    cloud["x"] = p[:, 0]
    cloud["y"] = p[:, 1]
    cloud["z"] = p[:, 2]
    if colors is not None:
        c = np.asarray(colors)
        if c.shape != (n, 3):
            raise ValueError(f"colors must have shape ({n}, 3) like points, got {c.shape}")
        if c.dtype != np.uint8:
            raise ValueError(f"colors must be uint8 RGB, got {c.dtype}")
        # rgb is little-endian uint32 0x00RRGGBB, i.e. bytes B, G, R, 0 at offsets 12..15: copy the
        # three colour bytes into place (3x faster than shifting and or-ing uint32 columns); byte 15
        # stays 0 from the zero-initialised buffer.
        by_point = raw.reshape(n, CLOUD_DTYPE.itemsize)
        rgb_at = CLOUD_DTYPE.fields["rgb"][1]
        by_point[:, rgb_at] = c[:, 2]
        by_point[:, rgb_at + 1] = c[:, 1]
        by_point[:, rgb_at + 2] = c[:, 0]
    if labels is not None:
        lab = np.asarray(labels).reshape(-1)
        if lab.shape[0] != n:
            raise ValueError(f"labels must have shape ({n},) like points, got {np.asarray(labels).shape}")
        if not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(f"labels must be integer instance ids, got {lab.dtype}")
        if lab.dtype.kind == "i" and n and lab.min() < 0:
            raise ValueError("labels must be >= 0 (0 = background)")
        if lab.dtype.itemsize > 4 and n and lab.max() > np.iinfo(np.uint32).max:
            raise ValueError(f"labels must fit in uint32, got max {lab.max()}")
        cloud["label"] = lab
    msg = PointCloud2()
    if header is not None:
        msg.header = header
    msg.height, msg.width = 1, n
    msg.fields = [PointField(name=name, offset=off, datatype=dt, count=1) for name, off, dt in _CLOUD_FIELDS]
    msg.is_bigendian = False
    msg.point_step = CLOUD_DTYPE.itemsize
    msg.row_step = CLOUD_DTYPE.itemsize * n
    msg.is_dense = bool(np.isfinite(p).all())
    msg.data = buf
    return msg


@dataclass
class CloudArrays:
    """A PointCloud2 read back into arrays (N = height * width points, row-major).

    Attributes:
        points: float32 (N, 3) x y z, metres, in the message's frame.
        colors: uint8 (N, 3) RGB from an ``rgb`` or ``rgba`` field, else None.
        labels: uint32 (N,) from a ``label`` field (any integer datatype, cast), else None.
        height, width: the cloud's organisation (height 1 = unorganised).
    """

    points: np.ndarray
    colors: np.ndarray | None
    labels: np.ndarray | None
    height: int
    width: int


def cloud_structured(msg: PointCloud2) -> np.ndarray:
    """PointCloud2 -> structured array (height*width,) with one field per PointField.

    The dtype is built from the message's own ``fields`` (offsets, datatypes), ``point_step`` and
    ``is_bigendian``; rows are cut at ``row_step`` (padding allowed). A view of ``msg.data`` when
    rows are unpadded. ValueError for inconsistent sizes, unknown datatypes, count != 1 or fields
    beyond point_step.
    """
    h, w = int(msg.height), int(msg.width)
    step, row_step = int(msg.point_step), int(msg.row_step)
    names, formats, offsets = [], [], []
    for f in msg.fields:
        if f.datatype not in POINTFIELD_DTYPES:
            raise ValueError(f"PointCloud2.fields[{f.name!r}].datatype {f.datatype} is unknown")
        if f.count != 1:
            raise ValueError(f"PointCloud2.fields[{f.name!r}].count {f.count} != 1 is not supported")
        dt = POINTFIELD_DTYPES[f.datatype]
        if msg.is_bigendian:
            dt = dt.newbyteorder(">")
        if f.offset + dt.itemsize > step:
            raise ValueError(f"PointCloud2.fields[{f.name!r}] (offset {f.offset}, {dt.itemsize} bytes) "
                             f"extends beyond point_step {step}")
        names.append(f.name)
        formats.append(dt)
        offsets.append(int(f.offset))
    if len(set(names)) != len(names):
        raise ValueError(f"PointCloud2.fields has duplicate names {names}")
    if h < 0 or w < 0 or step <= 0:
        raise ValueError(f"PointCloud2 height/width/point_step invalid: {h}, {w}, {step}")
    if row_step < w * step:
        raise ValueError(f"PointCloud2.row_step {row_step} < width*point_step {w * step}")
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size != h * row_step:
        raise ValueError(f"PointCloud2.data length {buf.size} != height*row_step {h * row_step}")
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": step})
    if h * w == 0:
        return np.zeros(0, dtype=dtype)
    rows = buf.reshape(h, row_step)[:, : w * step]
    if row_step != w * step:
        rows = np.ascontiguousarray(rows)
    return rows.reshape(-1).view(dtype)


def msg_to_labeled_cloud(msg: PointCloud2) -> CloudArrays:
    """PointCloud2 with x, y, z (+ optional rgb/rgba, label) -> :class:`CloudArrays`.

    Works with any field order, padding and byte order (fields located by name); the rgb field may
    be FLOAT32 (ROS convention) or UINT32. ValueError if x, y or z is missing or holds float64
    values beyond the float32 range. Non-finite coordinates (invalid points of an organised cloud)
    are passed through as they are; the conversion itself never creates one.
    """
    s = cloud_structured(msg)
    names = s.dtype.names or ()
    for axis in "xyz":
        if axis not in names:
            raise ValueError(f"PointCloud2.fields has no {axis!r} field (fields: {list(names)})")
    points = np.empty((s.shape[0], 3), np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        for k, axis in enumerate("xyz"):
            points[:, k] = s[axis]
            if s[axis].dtype.itemsize == 8 and s[axis].dtype.kind == "f":
                # float64 coordinates beyond the float32 range would turn into inf here
                src = s[axis]
                if (np.isfinite(src) & ~np.isfinite(points[:, k])).any():
                    raise ValueError(f"PointCloud2.fields[{axis!r}] holds values beyond the float32 range")
    colors = None
    for cname in ("rgb", "rgba"):
        if cname in names:
            raw = s[cname]
            if raw.dtype.itemsize != 4:
                raise ValueError(f"PointCloud2.fields[{cname!r}] must be 4 bytes, got {raw.dtype}")
            colors = unpack_rgb(raw.astype(raw.dtype.newbyteorder("=")).view(np.uint32))
            break
    labels = None
    if "label" in names:
        raw = s["label"]
        if raw.dtype.kind not in "iu":
            raise ValueError(f"PointCloud2.fields['label'] must be an integer type, got {raw.dtype}")
        labels = raw.astype(np.uint32)
    return CloudArrays(points=points, colors=colors, labels=labels, height=int(msg.height), width=int(msg.width))


# ----------------------------------------------------------------------------------------------
# Instances -> MarkerArray / ObjectInstanceArray
# ----------------------------------------------------------------------------------------------

#: Namespace suffix of the id text markers.
TEXT_NS_SUFFIX = "/ids"

#: Smallest marker dimension (m): RViz does not draw zero-size ellipsoids (flat objects, 1 point).
MIN_MARKER_SCALE = 1e-3


def _pose(centroid: np.ndarray, q: np.ndarray) -> Pose:
    return Pose(position=Point(x=float(centroid[0]), y=float(centroid[1]), z=float(centroid[2])),
                orientation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))


def instances_to_markers(instances: Instances, header: Header, ns: str = "instances",
                         n_sigma: float = N_SIGMA, text_size: float = 0.03, alpha: float = 0.6) -> MarkerArray:
    """Instances -> MarkerArray for RViz.

    Layout: first DELETEALL markers for ``ns`` and ``ns + "/ids"`` (clear the previous frame's
    objects), then per instance an
    ellipsoid (SPHERE, namespace ``ns``, marker id = instance id) at the centroid, oriented by the
    covariance's principal axes, with scale = 2 * ``n_sigma`` * sqrt(eigenvalue) per axis (the
    full diameter of the ``n_sigma`` ellipsoid: +-2 sigma by default, see
    :data:`~instseg_ros.core.instance_geometry.N_SIGMA`; at
    least :data:`MIN_MARKER_SCALE`), and a TEXT_VIEW_FACING marker (namespace ``ns + "/ids"``,
    same id) with the instance id at the centroid. Colours come from
    :func:`~instseg_ros.core.palette.instance_color`, so
    an id keeps its colour across frames. Frame and stamp: ``header``.
    Raises ValueError for non-finite, asymmetric or indefinite covariances.
    """
    cov = validated_covariances(instances)
    out = MarkerArray()
    markers = []
    # One DELETEALL per namespace used: some RViz versions clear only the marker's namespace on
    # DELETEALL, others everything; both ways the previous frame's objects are gone.
    for space in (ns, ns + TEXT_NS_SUFFIX):
        clear = Marker()
        clear.header = header
        clear.ns = space
        clear.action = Marker.DELETEALL
        markers.append(clear)
    for i in range(len(instances)):
        iid = int(instances.ids[i])
        c = instances.centroids[i]
        _, q, sig = covariance_to_pose(c, cov[i])
        scale = np.maximum(2.0 * n_sigma * sig, MIN_MARKER_SCALE)
        r, g, b = instance_color(iid)
        ell = Marker()
        ell.header = header
        ell.ns = ns
        ell.id = iid
        ell.type = Marker.SPHERE
        ell.action = Marker.ADD
        ell.pose = _pose(c, q)
        ell.scale = Vector3(x=float(scale[0]), y=float(scale[1]), z=float(scale[2]))
        ell.color = ColorRGBA(r=float(r), g=float(g), b=float(b), a=float(alpha))
        ell.lifetime = Duration(sec=0, nanosec=0)
        txt = Marker()
        txt.header = header
        txt.ns = ns + TEXT_NS_SUFFIX
        txt.id = iid
        txt.type = Marker.TEXT_VIEW_FACING
        txt.action = Marker.ADD
        txt.pose = _pose(c, (0.0, 0.0, 0.0, 1.0))
        txt.scale = Vector3(x=0.0, y=0.0, z=float(text_size))  # only z (text height, m) is used
        txt.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        txt.text = str(iid)
        markers += [ell, txt]
    out.markers = markers
    return out


def instances_to_msg(instances: Instances, header: Header, points: np.ndarray | None = None,
                     labels: np.ndarray | None = None) -> ObjectInstanceArray:
    """Instances -> ObjectInstanceArray (one ObjectInstance per instance, in the order of ``ids``).

    pose.position = centroid, pose.orientation = right-handed principal axes of the covariance
    (x = largest variance); covariance = row-major 3x3 (m^2); extent = oriented bounding box size
    along the pose axes from :func:`~instseg_ros.core.instance_geometry.oriented_extents` (true box
    when points are available, else the +-2 sigma estimate). ``header`` is copied (stamp + frame of the source data).
    hits / age / confirmed come from ``instances.hits`` / ``age_s`` / ``confirmed`` (the
    :class:`~instseg_ros.core.tracking.Tracker`'s, or a mapping node's id matching).
    """
    cov = validated_covariances(instances)
    ext = oriented_extents(instances, points, labels)
    out = ObjectInstanceArray()
    out.header = header
    objs = []
    for i in range(len(instances)):
        c = instances.centroids[i]
        _, q, _ = covariance_to_pose(c, cov[i])
        o = ObjectInstance()
        o.id = int(instances.ids[i])
        o.score = float(instances.scores[i])
        o.num_points = int(instances.num_points[i])
        o.centroid = Point(x=float(c[0]), y=float(c[1]), z=float(c[2]))
        o.covariance = cov[i].reshape(-1).astype(np.float64)
        o.pose = _pose(c, q)
        o.extent = Vector3(x=float(ext[i, 0]), y=float(ext[i, 1]), z=float(ext[i, 2]))
        o.class_id = int(instances.class_ids[i])
        o.occupancy = float(instances.occupancy[i])
        o.hits = int(instances.hits[i])
        o.age = float(instances.age_s[i])
        o.confirmed = bool(instances.confirmed[i])
        objs.append(o)
    out.instances = objs
    return out


def msg_to_instances(msg: ObjectInstanceArray) -> tuple[Instances, np.ndarray, np.ndarray]:
    """ObjectInstanceArray -> (Instances without labels, rotations (N, 3, 3), extents (N, 3)).

    The Instances carry ids, centroids, covariances, scores, num_points, class_ids, occupancy,
    hits, age_s and confirmed;
    ``labels`` is empty (0,) because the message has none. rotations come from pose.orientation.
    """
    objs = list(msg.instances)
    n = len(objs)
    inst = Instances(
        labels=np.zeros(0, np.int32),
        ids=np.array([o.id for o in objs], np.int64),
        centroids=np.array([[o.centroid.x, o.centroid.y, o.centroid.z] for o in objs]).reshape(n, 3),
        covariances=np.array([np.asarray(o.covariance, np.float64) for o in objs]).reshape(n, 3, 3),
        scores=np.array([o.score for o in objs], np.float32),
        num_points=np.array([o.num_points for o in objs], np.int64),
        class_ids=np.array([o.class_id for o in objs], np.int32),
        occupancy=np.array([o.occupancy for o in objs], np.float32),
        hits=np.array([o.hits for o in objs], np.int64),
        age_s=np.array([o.age for o in objs], np.float32),
        confirmed=np.array([o.confirmed for o in objs], bool),
    )
    rots = np.array([quaternion_to_rotation([o.pose.orientation.x, o.pose.orientation.y,
                                             o.pose.orientation.z, o.pose.orientation.w])
                     for o in objs]).reshape(n, 3, 3)
    ext = np.array([[o.extent.x, o.extent.y, o.extent.z] for o in objs]).reshape(n, 3)
    return inst, rots, ext


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time (anything with ``sec`` / ``nanosec``) -> integer nanoseconds.

    The package's one stamp reader: the nodes (through :func:`~instseg_ros.ros.sync.stamp_of`), the
    replay player, the demo and the benches all key messages by this number."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int):
    """Integer nanoseconds -> builtin_interfaces/Time."""
    from builtin_interfaces.msg import Time

    ns = int(ns)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
