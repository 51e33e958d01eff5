"""Instance ids that stay the same across repeated segmentations of a growing map.

Each segmentation run numbers its instances 1..N afresh. :class:`InstanceIdTracker` matches the
new instances to the previous run's by voxel overlap (IoU over voxel grid cells) and hands out the
previous id to the best match above a threshold; unmatched instances get ids never used before.
It also counts, per id, the runs it was found in (``hits``) and the time since its first run
(``age_s``); map instances are ``confirmed`` from their first run (the map fuses many frames, so
an instance is not a one-frame fragment). Pure numpy, no ROS.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from instseg_ros.core.instances import Instances

#: Voxel indices are packed into one int64 key with 21 bits per axis (offset to be non-negative).
_BITS = 21
_OFFSET = 1 << (_BITS - 1)


def voxel_keys(coords: np.ndarray) -> np.ndarray:
    """int (V, 3) voxel indices -> int64 (V,) unique keys; ValueError outside +-2^20 voxels."""
    c = np.asarray(coords, np.int64).reshape(-1, 3)
    if c.size and (c.min() < -_OFFSET or c.max() >= _OFFSET):
        raise ValueError(f"voxel indices must lie in [-{_OFFSET}, {_OFFSET}), got [{c.min()}, {c.max()}]")
    c = c + _OFFSET
    return (c[:, 0] << (2 * _BITS)) | (c[:, 1] << _BITS) | c[:, 2]


def overlap_iou(keys_a: np.ndarray, labels_a: np.ndarray, ids_a: np.ndarray,
                keys_b: np.ndarray, labels_b: np.ndarray, ids_b: np.ndarray) -> np.ndarray:
    """IoU (len(ids_a), len(ids_b)) between instances of two labelled voxel sets.

    keys_*: int64 (V,) unique voxel keys; labels_*: int (V,) instance id per voxel (0 = background);
    ids_*: the instance ids to report, in row / column order. IoU = shared voxels / union of voxels.
    """
    ids_a = np.asarray(ids_a, np.int64)
    ids_b = np.asarray(ids_b, np.int64)
    la_all, lb_all = np.asarray(labels_a, np.int64), np.asarray(labels_b, np.int64)
    size_a = np.array([(la_all == i).sum() for i in ids_a], np.float64)
    size_b = np.array([(lb_all == i).sum() for i in ids_b], np.float64)
    _, pa, pb = np.intersect1d(keys_a, keys_b, assume_unique=True, return_indices=True)

    def rows(labels, ids):  # label -> row index, -1 for background / unlisted ids
        lut = np.full(int(max(labels.max(initial=0), ids.max(initial=0))) + 1, -1, np.int64)
        lut[ids] = np.arange(len(ids))
        return lut[labels]

    ra, rb = rows(la_all[pa], ids_a), rows(lb_all[pb], ids_b)
    ok = (ra >= 0) & (rb >= 0)
    nb = max(len(ids_b), 1)
    inter = np.bincount(ra[ok] * nb + rb[ok], minlength=len(ids_a) * nb)[: len(ids_a) * nb]
    inter = inter.reshape(len(ids_a), nb)[:, : len(ids_b)].astype(np.float64)
    union = size_a[:, None] + size_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


class InstanceIdTracker:
    """Assigns stable ids to the instances of successive segmentations of one map.

    Args:
        iou_threshold: a new instance takes the id of the previous instance it overlaps most if
            their voxel IoU is at least this (one-to-one, greedy by decreasing IoU).
    """

    def __init__(self, iou_threshold: float = 0.3) -> None:
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        self.iou_threshold = float(iou_threshold)
        self.reset()

    def reset(self) -> None:
        """Forget the previous segmentation; ids restart at 1."""
        self._keys = np.zeros(0, np.int64)
        self._labels = np.zeros(0, np.int32)
        self._ids = np.zeros(0, np.int32)
        self._hits: dict[int, int] = {}
        self._first_ns: dict[int, int] = {}
        self.next_id = 1

    def assign(self, coords: np.ndarray, instances: Instances, stamp_ns: int | None = None) -> Instances:
        """Relabel ``instances`` (per-voxel labels aligned with ``coords`` (V, 3) voxel indices) with
        stable ids, remember them for the next call, and return the relabelled Instances, with
        ``hits`` = runs the id was found in (this one included), ``age_s`` = seconds from the id's
        first run to ``stamp_ns`` (the map's newest frame stamp, ns; 0 when None) and
        ``confirmed`` = True."""
        keys = voxel_keys(coords)
        labels = np.asarray(instances.labels, np.int32).reshape(-1)
        if labels.shape[0] != keys.shape[0]:
            raise ValueError(f"instances.labels ({labels.shape[0]}) must align with coords ({keys.shape[0]})")
        new_ids = np.asarray(instances.ids, np.int32)
        iou = overlap_iou(keys, labels, new_ids, self._keys, self._labels, self._ids)
        stable = np.zeros(len(new_ids), np.int32)
        taken_new, taken_old = set(), set()
        if iou.size:
            for flat in np.argsort(-iou, axis=None, kind="stable"):
                a, b = np.unravel_index(flat, iou.shape)
                if iou[a, b] < self.iou_threshold:
                    break
                if a in taken_new or b in taken_old:
                    continue
                stable[a] = self._ids[b]
                taken_new.add(a)
                taken_old.add(b)
        for a in range(len(new_ids)):
            if a not in taken_new:
                stable[a] = self.next_id
                self.next_id += 1
        lut = np.zeros(int(max(new_ids.max(initial=0), labels.max(initial=0))) + 1, np.int32)
        lut[new_ids] = stable
        relabelled = lut[labels]
        self._keys, self._labels, self._ids = keys, relabelled, stable.copy()
        self.next_id = max(self.next_id, int(stable.max(initial=0)) + 1)
        now = 0 if stamp_ns is None else int(stamp_ns)
        for i in stable.tolist():
            self._hits[i] = self._hits.get(i, 0) + 1
            self._first_ns.setdefault(i, now)
        hits = np.array([self._hits[i] for i in stable.tolist()], np.int64)
        age = np.array([(now - self._first_ns[i]) * 1e-9 for i in stable.tolist()], np.float32)
        return dataclasses.replace(instances, labels=relabelled, ids=stable, hits=hits, age_s=age,
                                   confirmed=np.ones(len(stable), bool))
