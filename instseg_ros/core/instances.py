"""`Instances`: the one result container passed from every model to every publisher.

A set of N object instances plus the per-pixel (camera pipeline) or per-point (mapping pipeline)
label array they were cut from. Per-instance fields share their first dimension N and are
filtered together; ``labels`` refers to instances by ``ids`` (0 = background, never an id).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

#: Label value of pixels / points that belong to no instance.
BACKGROUND = 0

_PER_INSTANCE = ("ids", "centroids", "covariances", "scores", "num_points", "class_ids", "occupancy",
                 "hits", "age_s", "confirmed")


@dataclass
class Instances:
    """Segmented objects in one frame or one map.

    Attributes:
        labels: int32, shape (H, W) for an image (aligned to the colour image) or (M,) for a point
            set; value = instance id, 0 = background.
        ids: int32 (N,), unique, > 0.
        centroids: float64 (N, 3), metres, in ``frame`` (camera optical frame or map frame).
        covariances: float64 (N, 3, 3), m^2, second central moments of each object's points.
        scores: float32 (N,), confidence in [0, 1].
        num_points: int64 (N,), pixels with valid depth (camera) or surface voxels (map).
        class_ids: int32 (N,), semantic class, 0 = generic object.
        occupancy: float32 (N,), predicted voxel count (OccuSeg); 0 where not predicted.
        hits: int64 (N,), observations of this id so far (frames or segmentation runs), this one
            included; default 1 (a single observation, no track history).
        age_s: float32 (N,), seconds from the id's first observation to this one; default 0.
        confirmed: bool (N,), the id is an established track (see
            :class:`~instseg_ros.core.tracking.Tracker`); default False (no track evidence).
        points: optional float32 (M, 3) positions of the labelled points (map pipeline), metres.
        colors: optional uint8 (M, 3) RGB of those points.
    """

    labels: np.ndarray
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    centroids: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    covariances: np.ndarray = field(default_factory=lambda: np.zeros((0, 3, 3)))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    num_points: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    class_ids: np.ndarray | None = None
    occupancy: np.ndarray | None = None
    hits: np.ndarray | None = None
    age_s: np.ndarray | None = None
    confirmed: np.ndarray | None = None
    points: np.ndarray | None = None
    colors: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int32)
        self.ids = np.asarray(self.ids, dtype=np.int32).reshape(-1)
        n = len(self.ids)
        self.centroids = np.asarray(self.centroids, dtype=np.float64).reshape(n, 3)
        self.covariances = np.asarray(self.covariances, dtype=np.float64).reshape(n, 3, 3)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(n)
        self.num_points = np.asarray(self.num_points, dtype=np.int64).reshape(n)
        self.class_ids = (np.zeros(n, np.int32) if self.class_ids is None
                          else np.asarray(self.class_ids, dtype=np.int32).reshape(n))
        self.occupancy = (np.zeros(n, np.float32) if self.occupancy is None
                          else np.asarray(self.occupancy, dtype=np.float32).reshape(n))
        self.hits = (np.ones(n, np.int64) if self.hits is None
                     else np.asarray(self.hits, dtype=np.int64).reshape(n))
        self.age_s = (np.zeros(n, np.float32) if self.age_s is None
                      else np.asarray(self.age_s, dtype=np.float32).reshape(n))
        self.confirmed = (np.zeros(n, bool) if self.confirmed is None
                          else np.asarray(self.confirmed, dtype=bool).reshape(n))
        if n and (self.ids <= 0).any():
            raise ValueError("Instances.ids must be > 0 (0 is the background label)")
        if len(np.unique(self.ids)) != n:
            raise ValueError("Instances.ids must be unique")
        if self.points is not None:
            self.points = np.asarray(self.points, dtype=np.float32).reshape(-1, 3)
            if self.labels.ndim != 1 or len(self.points) != len(self.labels):
                raise ValueError("Instances.points needs per-point labels of the same length")
        if self.colors is not None:
            self.colors = np.asarray(self.colors, dtype=np.uint8).reshape(-1, 3)
            if self.points is None or len(self.colors) != len(self.points):
                raise ValueError("Instances.colors needs points of the same length")

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def empty(cls, labels_shape: tuple[int, ...]) -> Instances:
        """No objects: all-background labels of the given shape."""
        return cls(labels=np.zeros(labels_shape, np.int32))

    def select(self, keep: np.ndarray) -> Instances:
        """Instances where ``keep`` (bool mask or index array over N) holds; labels of the dropped
        instances become background. Ids are kept as they are (no renumbering)."""
        keep = np.asarray(keep)
        idx = np.flatnonzero(keep) if keep.dtype == bool else keep.astype(np.int64)
        dropped = np.setdiff1d(self.ids, self.ids[idx])
        labels = self.labels.copy()
        if len(dropped):
            labels[np.isin(labels, dropped)] = BACKGROUND
        kwargs = {f.name: getattr(self, f.name) for f in fields(self)}
        kwargs["labels"] = labels
        for name in _PER_INSTANCE:
            kwargs[name] = getattr(self, name)[idx]
        return Instances(**kwargs)

    def index_of(self, instance_id: int) -> int:
        """Row of ``instance_id`` in the per-instance arrays (KeyError if absent)."""
        hits = np.flatnonzero(self.ids == instance_id)
        if not len(hits):
            raise KeyError(f"no instance with id {instance_id}")
        return int(hits[0])
