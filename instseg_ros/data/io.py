"""Reader and writer of the synthetic RGB-D data layout (numpy + PNG/JSON, no ROS, no torch).

Layout under a dataset ``root``::

    <root>/<split>/frames/<fid>.rgb.png        uint8 RGB (H, W, 3)
    <root>/<split>/frames/<fid>.depth.png      uint16 millimetres, RealSense-like noisy, 0 = invalid
    <root>/<split>/frames/<fid>.depth_gt.png   uint16 in units of 0.1 mm (noise-free), 0 = no surface
    <root>/<split>/frames/<fid>.label.png      uint16 visible instance id per pixel, 0 = background
    <root>/<split>/frames/<fid>.json           {"K", "width", "height", "T_world_camera", "instances"}
    <root>/<split>/annotations.json            COCO, class-agnostic category 1 "object"
    <root>/sequences/<split>/<sid>/views/<vid>.{rgb,depth,depth_gt,label}.png + <vid>.json
    <root>/sequences/<split>/<sid>/gt_voxels_<mm>mm.npz   coords float32 (V, 3) world metres,
                                                          instance int32 (V,), semantic int32 (V,),
                                                          voxel_size float (metres)

Frames are addressed by their *prefix*, the path without the ``.rgb.png`` / ``.json`` suffixes,
e.g. ``<root>/train/frames/000042``. ``T_world_camera`` maps points in the camera optical frame
(x right, y down, z forward, metres) to the world frame (z up, table / bin floor at z = 0).

Instance dicts in the frame JSON: ``id`` (int, = value in the label PNG), ``family`` (str shape
family name), ``family_id`` (int 1..F, see :data:`FAMILIES`), ``visible_px`` (int), ``amodal_px``
(int, pixels the object would cover with every other object removed), ``occlusion``
(float visible/amodal in [0, 1]; the ClusterNet paper's occlusion score), ``bbox`` ([x, y, w, h]
of the visible pixels, pixels).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

#: Shape families; the index + 1 is the semantic class id (0 = background) used in JSON and voxel GT.
FAMILIES: tuple[str, ...] = (
    "box", "cylinder", "sphere", "capsule", "cone", "torus", "ellipsoid", "convex_hull", "irregular",
    "thin", "hollow",  # appended (ids 10, 11) so that the ids of data written before stay valid
)
DEPTH_SCALE_MM = 1000.0        #: depth.png units per metre
DEPTH_GT_SCALE = 10000.0       #: depth_gt.png units per metre (0.1 mm)
SUFFIXES = (".rgb.png", ".depth.png", ".depth_gt.png", ".label.png", ".json")
_ID_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


def family_id(name: str) -> int:
    """Semantic class id (1..len(FAMILIES)) of a shape family name; ValueError if unknown."""
    try:
        return FAMILIES.index(name) + 1
    except ValueError:
        raise ValueError(f"unknown shape family {name!r}; known: {FAMILIES}") from None


#: What OccuSeg's semantic head predicts when trained with ``semantic = "grasp"``: the grasp a planner would
#: try first, from the object's shape, not its family name. 0 background (table, bin floor, walls, rims);
#: box: flat faces (suction, or a parallel grip across opposite faces); round: bodies of revolution and
#: blobs that roll (a wrap grasp across the axis); thin: long and narrow (pinch across the narrow side);
#: hollow: open containers (grip the rim; a suction cup over the opening holds nothing); other: the rest
#: (tools, compounds, irregular hulls, rings).
GRASP_CLASSES: tuple[str, ...] = ("background", "box", "round", "thin", "hollow", "other")
_GRASP_OF_FAMILY = {"box": "box", "cylinder": "round", "sphere": "round", "capsule": "round", "cone": "round",
                    "ellipsoid": "round", "torus": "other", "convex_hull": "other", "irregular": "other",
                    "thin": "thin", "hollow": "hollow"}
_GRASP_OF_KIND = {"bottle": "round", "cup": "hollow", "mug": "hollow", "bowl": "hollow", "open_box": "hollow"}


def grasp_class(family: str, kind: str | None = None) -> int:
    """Index in :data:`GRASP_CLASSES` of an object of shape ``family`` (a :data:`FAMILIES` name) and ``kind``
    (its drawn kind, e.g. "mug" in the irregular family; None when the data predate kinds: the family decides).
    ValueError for an unknown family."""
    if family not in _GRASP_OF_FAMILY:
        raise ValueError(f"unknown shape family {family!r}; known: {FAMILIES}")
    return GRASP_CLASSES.index(_GRASP_OF_KIND.get(kind or "", _GRASP_OF_FAMILY[family]))


def sample_root() -> Path:
    """Root of the small dataset shipped in the package (``instseg_ros/data/sample``, see its README)."""
    return Path(__file__).resolve().parent / "sample"


def frames_dir(root: str | os.PathLike, split: str) -> Path:
    """``<root>/<split>/frames``."""
    return Path(root) / split / "frames"


def sequences_dir(root: str | os.PathLike, split: str) -> Path:
    """``<root>/sequences/<split>``."""
    return Path(root) / "sequences" / split


def _prefixes_in(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    out = []
    for name in os.listdir(directory):
        if name.endswith(".json"):
            stem = name[: -len(".json")]
            if (directory / f"{stem}.rgb.png").exists():
                out.append(str(directory / stem))
    return sorted(out)


def list_frames(root: str | os.PathLike, split: str) -> list[str]:
    """Sorted frame path prefixes of ``<root>/<split>/frames`` (a frame counts once its JSON and RGB exist).

    ValueError if the split directory does not exist (an empty but existing split gives []).
    """
    d = Path(root) / split
    if not d.is_dir():
        raise ValueError(f"split directory {d} does not exist")
    return _prefixes_in(d / "frames")


def list_sequences(root: str | os.PathLike, split: str) -> list[str]:
    """Sorted sequence directories ``<root>/sequences/<split>/<sid>`` that contain a ``views/`` folder.

    ValueError if ``<root>/sequences/<split>`` does not exist.
    """
    d = sequences_dir(root, split)
    if not d.is_dir():
        raise ValueError(f"sequence directory {d} does not exist")
    return sorted(str(d / s) for s in os.listdir(d) if (d / s / "views").is_dir())


def _read_png(path: str, mode_check: str) -> np.ndarray:
    if not os.path.exists(path):
        raise ValueError(f"missing file {path}")
    with Image.open(path) as im:
        if mode_check == "rgb":
            if im.mode != "RGB":
                raise ValueError(f"{path}: expected an 8-bit RGB PNG, got mode {im.mode}")
            return np.asarray(im, dtype=np.uint8).copy()
        arr = np.asarray(im)
    if arr.ndim != 2 or arr.dtype not in (np.uint16, np.int32, np.uint8):
        raise ValueError(f"{path}: expected a single-channel 16-bit PNG, got {arr.dtype} {arr.shape}")
    return arr.astype(np.int64)


def load_frame(prefix: str | os.PathLike) -> dict[str, Any]:
    """Load one frame (or one view of a sequence) by its path prefix.

    Returns:
        dict with "rgb" uint8 (H, W, 3); "depth" float32 (H, W) metres, RealSense-like noisy, 0 = invalid;
        "depth_gt" float32 (H, W) metres, noise-free, 0 = no surface; "labels" int32 (H, W) visible
        instance id, 0 = background; "K" float64 (3, 3); "T_world_camera" float64 (4, 4);
        "instances" list of dicts (see module docstring); "id" str (the file stem).
    Raises:
        ValueError: a file is missing or images disagree in size with each other or with the JSON.
    """
    prefix = str(prefix)
    jpath = prefix + ".json"
    if not os.path.exists(jpath):
        raise ValueError(f"missing frame metadata {jpath}")
    with open(jpath) as f:
        meta = json.load(f)
    for key in ("K", "width", "height", "T_world_camera", "instances"):
        if key not in meta:
            raise ValueError(f"{jpath}: missing key {key!r}")
    rgb = _read_png(prefix + ".rgb.png", "rgb")
    depth = _read_png(prefix + ".depth.png", "u16").astype(np.float32) / np.float32(DEPTH_SCALE_MM)
    depth_gt = _read_png(prefix + ".depth_gt.png", "u16").astype(np.float32) / np.float32(DEPTH_GT_SCALE)
    labels = _read_png(prefix + ".label.png", "u16").astype(np.int32)
    h, w = int(meta["height"]), int(meta["width"])
    for name, arr in (("rgb", rgb), ("depth", depth), ("depth_gt", depth_gt), ("label", labels)):
        if arr.shape[:2] != (h, w):
            raise ValueError(f"{prefix}.{name}.png has size {arr.shape[:2]}, JSON says {(h, w)}")
    K = np.asarray(meta["K"], dtype=np.float64)
    T = np.asarray(meta["T_world_camera"], dtype=np.float64)
    if K.shape != (3, 3) or T.shape != (4, 4):
        raise ValueError(f"{jpath}: K must be 3x3 and T_world_camera 4x4")
    return {
        "rgb": rgb, "depth": depth, "depth_gt": depth_gt, "labels": labels, "K": K,
        "T_world_camera": T, "instances": list(meta["instances"]), "id": os.path.basename(prefix),
    }


def load_sequence(seq_dir: str | os.PathLike, voxel_size: float | None = None) -> dict[str, Any]:
    """Load a multi-view sequence directory.

    Args:
        seq_dir: ``<root>/sequences/<split>/<sid>``.
        voxel_size: metres; pick ``gt_voxels_<mm>mm.npz`` of that size. None = the smallest available.
    Returns:
        dict with "views": list of :func:`load_frame` dicts in view order; "view_prefixes": list[str];
        "gt_voxels": dict(coords float32 (V, 3) world metres, instance int32 (V,), semantic int32 (V,),
        voxel_size float metres) or None if the sequence has no voxel GT; "id": str; "meta": the
        sequence.json dict if present, else {}.
    Raises:
        ValueError: the directory has no views, or the requested voxel size is not present.
    """
    d = Path(seq_dir)
    prefixes = _prefixes_in(d / "views")
    if not prefixes:
        raise ValueError(f"sequence {d} has no views")
    gt = None
    files = sorted(d.glob("gt_voxels_*mm.npz"))
    sizes = {}
    for p in files:
        m = re.match(r"gt_voxels_([0-9.]+)mm\.npz$", p.name)
        if m:
            sizes[float(m.group(1))] = p
    if voxel_size is not None:
        mm = round(float(voxel_size) * 1000.0, 6)
        match = [p for s, p in sizes.items() if abs(s - mm) < 1e-6]
        if not match:
            raise ValueError(f"sequence {d} has no voxel GT at {mm} mm (available: {sorted(sizes)} mm)")
        gt = load_gt_voxels(match[0])
    elif sizes:
        gt = load_gt_voxels(sizes[min(sizes)])
    meta = {}
    if (d / "sequence.json").exists():
        with open(d / "sequence.json") as f:
            meta = json.load(f)
    return {"views": [load_frame(p) for p in prefixes], "view_prefixes": prefixes, "gt_voxels": gt,
            "id": d.name, "meta": meta}


def load_gt_voxels(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``gt_voxels_<mm>mm.npz``; see :func:`load_sequence` for the fields."""
    with np.load(path) as z:
        out = {"coords": z["coords"].astype(np.float32), "instance": z["instance"].astype(np.int32),
               "semantic": z["semantic"].astype(np.int32), "voxel_size": float(z["voxel_size"])}
    n = len(out["coords"])
    if out["coords"].shape != (n, 3) or out["instance"].shape != (n,) or out["semantic"].shape != (n,):
        raise ValueError(f"{path}: inconsistent voxel array shapes")
    return out


# ----------------------------------------------------------------------------------------------- writers

def _check_id(fid: str) -> None:
    if not _ID_RE.match(fid):
        raise ValueError(f"frame id {fid!r} must match {_ID_RE.pattern}")


try:  # ISA-L deflate (the ``isal`` wheel): 2-4x faster than zlib level 1, files about as small
    from isal import isal_zlib as _isal_zlib
except ImportError:  # pragma: no cover - the wheel is in requirements.txt; zlib is the fallback
    _isal_zlib = None


def _deflate(data: bytes, strategy: int, engine: str = "auto") -> bytes:
    """zlib stream of ``data``: ISA-L level 1 when ``engine`` is "isal" (or "auto" and the wheel is there),
    else zlib level 1 with ``strategy`` (Huffman-only / RLE / default, chosen per content)."""
    import zlib

    if engine not in ("auto", "isal", "zlib"):
        raise ValueError(f"engine must be 'auto', 'isal' or 'zlib', got {engine!r}")
    if engine == "isal" and _isal_zlib is None:
        raise RuntimeError("the isal wheel is not installed: pip install isal (see requirements.txt)")
    if engine != "zlib" and _isal_zlib is not None:
        return _isal_zlib.compress(data, 1)
    comp = zlib.compressobj(1, zlib.DEFLATED, 15, 8, strategy)
    return comp.compress(data) + comp.flush()


def _png_bytes(arr: np.ndarray, strategy: int, engine: str = "auto") -> bytes:
    """Encode uint8 (H, W, 3) RGB or uint16 (H, W) grey as a PNG with the "Sub" row filter and a fast deflate.

    Pillow tries filters per row and is 2-3x slower at the same level; the Sub filter followed by a fast deflate
    (:func:`_deflate`: ISA-L level 1, or zlib level 1 with an RLE / Huffman-only strategy) gives files as small
    as Pillow's level 1 on noisy rendered images.
    """
    import struct
    import zlib

    h, w = arr.shape[:2]
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3:
        bpp, bit_depth, color_type = 3, 8, 2
        raw = np.ascontiguousarray(arr).reshape(h, w * 3)
    elif arr.dtype == np.uint16 and arr.ndim == 2:
        bpp, bit_depth, color_type = 2, 16, 0
        raw = np.ascontiguousarray(arr.astype(">u2")).view(np.uint8).reshape(h, w * 2)
    else:
        raise ValueError(f"PNG writer takes uint8 (H, W, 3) or uint16 (H, W), got {arr.dtype} {arr.shape}")
    filt = np.empty((h, raw.shape[1] + 1), np.uint8)
    filt[:, 0] = 1  # filter type Sub: byte minus the byte one pixel to the left (mod 256)
    filt[:, 1:1 + bpp] = raw[:, :bpp]
    np.subtract(raw[:, bpp:], raw[:, :-bpp], out=filt[:, 1 + bpp:])
    data = _deflate(filt.tobytes(), strategy, engine)

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def write_frame(directory: str | os.PathLike, fid: str, *, rgb: np.ndarray, depth: np.ndarray,
                depth_gt: np.ndarray, labels: np.ndarray, K: np.ndarray, T_world_camera: np.ndarray,
                instances: list[dict[str, Any]], extra: dict[str, Any] | None = None,
                compress_level: int = 1) -> str:
    """Write one frame's four PNGs and JSON into ``directory``; returns the prefix.

    Args:
        rgb: uint8 (H, W, 3). depth: float32 (H, W) metres, 0 = invalid (stored as uint16 mm, rounded;
        values above 65.535 m raise). depth_gt: float32 (H, W) metres (stored in 0.1 mm units, so at most
        6.5535 m). labels: int (H, W) instance ids in [0, 65535]. K (3, 3), T_world_camera (4, 4).
        instances: list of dicts (JSON-serialisable). extra: more JSON keys (e.g. "scene", "seed").
        compress_level: PNG zlib level 0-9 (1 = fast own encoder, ISA-L, see :func:`_png_bytes`; others through
            Pillow, 9 = small files for shipped samples).
    The PNGs are written to temporary names and renamed, the JSON last, so a frame whose JSON exists is
    complete (what resumable generation relies on).
    """
    _check_id(fid)
    rgb = np.asarray(rgb)
    h, w = rgb.shape[:2]
    if rgb.dtype != np.uint8 or rgb.shape != (h, w, 3):
        raise ValueError(f"rgb must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    for name, arr in (("depth", depth), ("depth_gt", depth_gt), ("labels", labels)):
        if np.asarray(arr).shape != (h, w):
            raise ValueError(f"{name} must be ({h}, {w}), got {np.asarray(arr).shape}")
    d = np.nan_to_num(np.asarray(depth, dtype=np.float64), nan=0.0)
    dg = np.nan_to_num(np.asarray(depth_gt, dtype=np.float64), nan=0.0)
    if d.min() < 0 or d.max() * DEPTH_SCALE_MM > 65535:
        raise ValueError("depth out of the uint16-mm range [0, 65.535] m")
    if dg.min() < 0 or dg.max() * DEPTH_GT_SCALE > 65535:
        raise ValueError("depth_gt out of the uint16 0.1-mm range [0, 6.5535] m")
    lab = np.asarray(labels)
    if lab.min() < 0 or lab.max() > 65535:
        raise ValueError("labels must be in [0, 65535]")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    prefix = out / fid
    import zlib

    arrs = {  # (array, zlib strategy of the fast writer's fallback, chosen per content for speed at equal size)
        ".rgb.png": (np.ascontiguousarray(rgb), zlib.Z_HUFFMAN_ONLY),  # noisy: matches find little
        ".depth.png": (np.round(d * DEPTH_SCALE_MM).astype(np.uint16), zlib.Z_HUFFMAN_ONLY),
        ".depth_gt.png": (np.round(dg * DEPTH_GT_SCALE).astype(np.uint16), zlib.Z_DEFAULT_STRATEGY),
        ".label.png": (lab.astype(np.uint16), zlib.Z_RLE),
    }
    for suf, (arr, strategy) in arrs.items():
        tmp = f"{prefix}{suf}.tmp"
        if int(compress_level) == 1:
            with open(tmp, "wb") as f:
                f.write(_png_bytes(arr, strategy))
        else:
            Image.fromarray(arr, "RGB" if arr.ndim == 3 else None).save(tmp, format="PNG",
                                                                         compress_level=int(compress_level))
        os.replace(tmp, f"{prefix}{suf}")
    meta = {"K": np.asarray(K, dtype=float).tolist(), "width": int(w), "height": int(h),
            "T_world_camera": np.asarray(T_world_camera, dtype=float).tolist(), "instances": instances}
    if extra:
        meta.update(extra)
    tmp = f"{prefix}.json.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(meta))  # dumps: the C encoder (dump streams through the Python one)
    os.replace(tmp, f"{prefix}.json")
    return str(prefix)


def write_gt_voxels(seq_dir: str | os.PathLike, coords: np.ndarray, instance: np.ndarray,
                    semantic: np.ndarray, voxel_size: float) -> str:
    """Write ``<seq_dir>/gt_voxels_<mm>mm.npz`` (coords float32 (V, 3) world m, instance/semantic int32)."""
    coords = np.asarray(coords, dtype=np.float32).reshape(-1, 3)
    instance = np.asarray(instance, dtype=np.int32).reshape(-1)
    semantic = np.asarray(semantic, dtype=np.int32).reshape(-1)
    if not (len(coords) == len(instance) == len(semantic)):
        raise ValueError("coords, instance and semantic must have the same length")
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
    mm = voxel_size * 1000.0
    tag = f"{int(round(mm))}" if abs(mm - round(mm)) < 1e-6 else f"{mm:g}"
    path = Path(seq_dir) / f"gt_voxels_{tag}mm.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path) + ".tmp.npz"
    np.savez_compressed(tmp, coords=coords, instance=instance, semantic=semantic,
                        voxel_size=np.float64(voxel_size))
    os.replace(tmp, path)
    return str(path)


def coco_from_frames(root: str | os.PathLike, split: str) -> dict[str, Any]:
    """Build the class-agnostic COCO dict of a split from its frames' label PNGs and JSONs.

    image ``file_name`` = ``frames/<fid>.rgb.png``; annotation ``segmentation`` = compressed RLE
    (pycocotools ``mask.encode``, counts as str), ``area`` = visible pixel count, ``bbox`` [x, y, w, h],
    ``iscrowd`` 0, plus ``instance_id`` and ``occlusion``. Image / annotation ids count from 1.
    """
    from pycocotools import mask as mask_utils

    images, anns = [], []
    for img_id, prefix in enumerate(list_frames(root, split), start=1):
        with open(prefix + ".json") as f:
            meta = json.load(f)
        labels = _read_png(prefix + ".label.png", "u16").astype(np.int32)
        fid = os.path.basename(prefix)
        images.append({"id": img_id, "file_name": f"frames/{fid}.rgb.png", "width": int(meta["width"]),
                       "height": int(meta["height"])})
        for inst in meta["instances"]:
            m = labels == int(inst["id"])
            area = int(m.sum())
            if area == 0:
                continue
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            bbox = [float(v) for v in mask_utils.toBbox(rle)]
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": 1, "segmentation": rle,
                         "area": area, "bbox": bbox, "iscrowd": 0, "instance_id": int(inst["id"]),
                         "occlusion": float(inst["occlusion"])})
    return {"info": {"description": f"instseg_ros synthetic {split}"}, "images": images,
            "annotations": anns, "categories": [{"id": 1, "name": "object", "supercategory": "object"}]}


def write_coco(root: str | os.PathLike, split: str) -> str:
    """Write ``<root>/<split>/annotations.json`` from the split's frames; returns its path."""
    coco = coco_from_frames(root, split)
    path = Path(root) / split / "annotations.json"
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(coco))  # dumps: the C encoder (dump streams through the Python one)
    os.replace(tmp, path)
    return str(path)
