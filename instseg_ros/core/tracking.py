"""Multi-object tracking of segmented instances across frames: ids that stay with their object.

A segmenter numbers its instances afresh in every frame. :class:`Tracker` associates each frame's
instances with the tracks of the previous frames and hands back, per instance, a track id that
stays with the same physical object, plus what a consumer needs to trust it (hits, age, confirmed).

Association (one frame, T live tracks x N instances):

* Frame. With a camera pose (``camera_to_world``, T_world_camera 4x4) every instance's centroid and
  covariance are first moved to the world (map) frame, so a moving camera over static objects gives
  static tracks. Without a pose the camera frame is used and objects and camera are assumed to move
  little between frames (the gate below bounds how little).
* Distance. Track and instance are two Gaussians, N(c_t, C_t + n^2 I) and N(c, C + n^2 I) with the
  covariances = second moments of the objects' points and n = ``position_noise_m``; their
  Bhattacharyya distance (unitless)

      D_B = 1/8 d^T S^-1 d + 1/2 ln(det S / sqrt(det(C_t + n^2 I) det(C + n^2 I))),
      d = c - c_t, S = (C_t + C + 2 n^2 I) / 2,

  has a position term (a Mahalanobis distance: a large object tolerates a larger centroid shift,
  e.g. a moving camera seeing another part of its surface, than a small one) and a shape term that
  grows when the spreads differ, so a whole object and a fragment of it at the same place are kept
  apart (a Mahalanobis distance alone, with summed covariances, calls them compatible). The noise
  term keeps flat or tiny objects (near-singular covariances) comparable. For equal shapes
  D_B = m^2 / 8 with m the Mahalanobis distance in one object's spread: the default gate 1.5 is a
  shift of 3.5 standard deviations.
* Gate. A pair is allowed only if D_B <= ``gate_bhattacharyya`` and the centroid distance |d| (m) is
  at most ``gate_distance_m``.
* Cost of an allowed pair = (1 - w) * D_B / gate_bhattacharyya + w * (1 - overlap), with
  w = ``overlap_weight`` and the overlap in [0, 1]:

  - camera frame: mask IoU between the instance and the track's mask in the previous processed
    frame (label images of the same shape; 0 for a track not seen in that frame). Consecutive
    frames of a slowly moving camera share most pixels, and masks separate touching objects that
    have nearby centroids.
  - world frame: point-count ratio min(n_track, n) / max(n_track, n). Pixel masks of two views
    from different poses do not overlap pixel by pixel, so IoU would punish the very motion the
    pose compensates; how many points an object shows changes slowly with the viewpoint and tells
    a whole object from a fragment at the same place.

* Assignment: the optimal one-to-one assignment (Hungarian algorithm,
  :func:`scipy.optimize.linear_sum_assignment`) over the cost matrix extended by one "unassigned"
  option per track and per instance, each costing :data:`UNASSIGNED_COST` (half the largest pair
  cost). Pairs outside the gate are never assigned; any allowed pair beats leaving both unassigned,
  but one good pair plus two unassigned beats two poor pairs (a plain assignment would maximise the
  number of pairs first, and a split object would drag a whole object's track onto a fragment).

Track life:

* An unassigned instance starts a tentative track (hits = 1). A track is confirmed once it was
  observed in ``min_hits`` consecutive processed frames (a one-frame fragment never is); a tentative
  track that misses a frame is deleted. Once confirmed, a track stays confirmed and survives
  frames without observation until it was unseen for more than ``max_age_s`` seconds (stamp time):
  an object briefly occluded or missed by the segmenter comes back with its id. A track observed in
  the previous processed frame always takes part in the next association, however late that frame
  comes: a segmenter slower than ``max_age_s`` per frame (a CPU, dropped frames) still tracks,
  instead of deleting every track between two frames.
* Matched tracks smooth their centroid and covariance exponentially (``smoothing`` = weight of the
  new observation); the reported instance keeps its own measured centroid.
* Ids are positive integers, never reused (until :meth:`Tracker.reset`). With ``id_on_confirm`` a
  track gets its id when it is confirmed (tentative tracks have id 0 and are not meant to be
  published), so ids count established objects, not fragments, and grow slowly.

Pure numpy / scipy, no ROS.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from instseg_ros.core.instances import BACKGROUND, Instances

#: Cost of a pair outside the gate (never assigned; a finite value keeps the assignment feasible).
_INFEASIBLE = 1e6
#: Cost of leaving a track or an instance unassigned; pair costs lie in [0, 1].
UNASSIGNED_COST = 0.5
#: Label images are compared on every IOU_STRIDE-th pixel in both directions: an IoU estimate
#: good to a few percent for objects of more than a few dozen pixels, at a quarter of the cost.
IOU_STRIDE = 2
#: Nanoseconds per second.
_NS = 1_000_000_000


@dataclass
class TrackerConfig:
    """Parameters of :class:`Tracker` (see the module docstring for how they act).

    Attributes:
        min_hits: consecutive observations (processed frames) that confirm a track; 1 = every
            instance is confirmed at once (no fragment filtering).
        max_age_s: a confirmed track that missed a processed frame is deleted once unseen for longer
            than this (s, stamp time).
        gate_bhattacharyya: largest Bhattacharyya distance (unitless) between the track's and the
            instance's Gaussians of an assignable pair (1.5 = a 3.5-sigma shift for equal shapes).
        gate_distance_m: largest centroid distance of an assignable pair (m), whatever the
            covariances (keeps large objects from swallowing their neighbours).
        position_noise_m: isotropic centroid uncertainty added to both covariances (m):
            segmentation jitter, pose error and object / camera motion between frames.
        overlap_weight: weight in [0, 1] of the overlap term (mask IoU in the camera frame,
            point-count ratio in the world frame) against the Mahalanobis term in the cost.
        smoothing: weight in (0, 1] of a new observation in the track's smoothed centroid and
            covariance (1 = no smoothing).
        id_on_confirm: give a track its id when it is confirmed (True) or when it starts (False:
            needed when unconfirmed tracks are published too).
    """

    min_hits: int = 2
    max_age_s: float = 1.0
    gate_bhattacharyya: float = 1.5
    gate_distance_m: float = 0.08
    position_noise_m: float = 0.01
    overlap_weight: float = 0.3
    smoothing: float = 0.5
    id_on_confirm: bool = True

    def __post_init__(self) -> None:
        if int(self.min_hits) < 1:
            raise ValueError(f"min_hits must be >= 1, got {self.min_hits}")
        if not self.max_age_s >= 0:
            raise ValueError(f"max_age_s must be >= 0 seconds, got {self.max_age_s}")
        if not self.gate_bhattacharyya > 0:
            raise ValueError(f"gate_bhattacharyya must be > 0, got {self.gate_bhattacharyya}")
        if not self.gate_distance_m > 0:
            raise ValueError(f"gate_distance_m must be > 0 metres, got {self.gate_distance_m}")
        if not self.position_noise_m >= 0:
            raise ValueError(f"position_noise_m must be >= 0 metres, got {self.position_noise_m}")
        if not 0.0 <= self.overlap_weight <= 1.0:
            raise ValueError(f"overlap_weight must be in [0, 1], got {self.overlap_weight}")
        if not 0.0 < self.smoothing <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1], got {self.smoothing}")


@dataclass
class Track:
    """One tracked object.

    Attributes:
        key: internal unique number (>= 1), also for tentative tracks.
        id: public id (>= 1), never reused; 0 while tentative with ``id_on_confirm``.
        first_seen_ns, last_seen_ns: stamps (ns) of the first and the latest observation.
        hits: observations so far (processed frames in which the track was assigned).
        misses: consecutive processed frames without an observation (0 when seen in the latest).
        confirmed: observed in ``min_hits`` consecutive frames at some point.
        centroid: float64 (3,) smoothed centroid, metres, in the tracking frame (world with a
            pose, else camera).
        covariance: float64 (3, 3) smoothed covariance, m^2, same frame.
        num_points: smoothed point count (unitless).
    """

    key: int
    id: int
    first_seen_ns: int
    last_seen_ns: int
    hits: int
    misses: int
    confirmed: bool
    centroid: np.ndarray
    covariance: np.ndarray
    num_points: float

    def age_s(self, stamp_ns: int) -> float:
        """Seconds from the first observation to ``stamp_ns``."""
        return (int(stamp_ns) - self.first_seen_ns) / _NS


@dataclass
class TrackUpdate:
    """Result of :meth:`Tracker.update` for one frame's N instances (rows in the instances' order).

    Attributes:
        track_ids: int64 (N,) public track id per instance; 0 = tentative track without an id yet.
        hits: int64 (N,) observations of that track, this frame included.
        age_s: float32 (N,) seconds since the track's first observation.
        confirmed: bool (N,) the track is confirmed.
        tracks: the live tracks after this frame (copies), including unobserved confirmed ones.
        frame: "world" or "camera": the frame of the tracks' centroids / covariances.
    """

    track_ids: np.ndarray
    hits: np.ndarray
    age_s: np.ndarray
    confirmed: np.ndarray
    tracks: list[Track] = field(default_factory=list)
    frame: str = "camera"


def transform_moments(centroids: np.ndarray, covariances: np.ndarray,
                      T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroids (N, 3) and covariances (N, 3, 3) from a frame to another with the rigid T (4, 4):
    c' = R c + t, C' = R C R^T (metres, m^2)."""
    R, t = T[:3, :3], T[:3, 3]
    return centroids @ R.T + t, np.einsum("ij,njk,lk->nil", R, covariances, R)


def bhattacharyya(c_a: np.ndarray, C_a: np.ndarray, c_b: np.ndarray, C_b: np.ndarray,
                  noise_m: float = 0.0) -> np.ndarray:
    """Bhattacharyya distance (len(c_a), len(c_b)) between Gaussians N(c_a, C_a + noise^2 I) and
    N(c_b, C_b + noise^2 I): centroids (N, 3) m, covariances (N, 3, 3) m^2 (formula in the module
    docstring; 0 for identical Gaussians, unitless)."""
    eye = np.eye(3)
    # a tiny ridge keeps single-point instances (zero covariance) with noise 0 finite
    A = np.asarray(C_a, np.float64)[:, None] + (noise_m ** 2 + 1e-12) * eye
    B = np.asarray(C_b, np.float64)[None, :] + (noise_m ** 2 + 1e-12) * eye
    S = 0.5 * (A + B)
    d = np.asarray(c_b, np.float64)[None, :, :] - np.asarray(c_a, np.float64)[:, None, :]
    position = np.einsum("abi,abi->ab", d, np.linalg.solve(S, d[..., None])[..., 0]) / 8.0
    shape = 0.5 * (np.linalg.slogdet(S)[1] - 0.5 * (np.linalg.slogdet(A)[1] + np.linalg.slogdet(B)[1]))
    return np.maximum(position, 0.0) + np.maximum(shape, 0.0)


def mask_iou(labels_a: np.ndarray, keys_a: np.ndarray, labels_b: np.ndarray, keys_b: np.ndarray) -> np.ndarray:
    """IoU (len(keys_a), len(keys_b)) between the regions of two label arrays of the same shape.

    labels_*: int arrays (any shape, equal), value = region key, 0 = none; keys_*: the keys to
    report, in row / column order (keys absent from the labels give IoU 0).
    """
    a = np.asarray(labels_a).reshape(-1).astype(np.int64)
    b = np.asarray(labels_b).reshape(-1).astype(np.int64)
    ka, kb = np.asarray(keys_a, np.int64), np.asarray(keys_b, np.int64)
    na, nb = len(ka), len(kb)
    if not na or not nb:
        return np.zeros((na, nb))

    def rows(lab, keys):  # key -> row, -1 for background and unlisted keys
        lut = np.full(int(max(lab.max(initial=0), keys.max(initial=0))) + 1, -1, np.int64)
        lut[keys] = np.arange(len(keys))
        return lut[np.clip(lab, 0, None)]

    ra, rb = rows(a, ka), rows(b, kb)
    size_a = np.bincount(ra[ra >= 0], minlength=na)
    size_b = np.bincount(rb[rb >= 0], minlength=nb)
    both = (ra >= 0) & (rb >= 0)
    inter = np.bincount(ra[both] * nb + rb[both], minlength=na * nb).reshape(na, nb).astype(np.float64)
    union = size_a[:, None] + size_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


class Tracker:
    """Associates each frame's instances with persistent tracks (see the module docstring).

    Call :meth:`update` once per processed frame, in stamp order, always with a pose or always
    without (a change raises ValueError; :meth:`reset` starts over).
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self.reset()

    def reset(self) -> None:
        """Forget every track; ids restart at 1."""
        self._tracks: list[Track] = []
        self._next_key = 1
        self._next_id = 1
        self._last_stamp_ns: int | None = None
        self._frame: str | None = None
        self._prev_labels: np.ndarray | None = None  # last frame's labels, value = track key

    def restart(self) -> None:
        """Forget every track but keep counting ids: for a clock that went back (a recording played in a
        loop, a driver restart), after which :meth:`update` would refuse the earlier stamps; ids handed
        out before are never reused."""
        next_id = self._next_id
        self.reset()
        self._next_id = next_id

    @property
    def last_stamp_ns(self) -> int | None:
        """Stamp (ns) of the last :meth:`update`, None before the first."""
        return self._last_stamp_ns

    @property
    def tracks(self) -> list[Track]:
        """Live tracks (copies), in creation order."""
        return [dataclasses.replace(t) for t in self._tracks]

    def _new_id(self) -> int:
        i = self._next_id
        self._next_id += 1
        return i

    def update(self, instances: Instances, stamp_ns: int, camera_to_world: np.ndarray | None = None) -> TrackUpdate:
        """Associate one frame's instances with the tracks and update them.

        Args:
            instances: the frame's instances (centroids (N, 3) m and covariances (N, 3, 3) m^2 in
                the camera frame; ``labels`` used for the mask overlap in the camera frame).
            stamp_ns: the frame's stamp (ns); must be later than the previous call's.
            camera_to_world: T_world_camera (4, 4) rigid transform of this frame, or None to track in
                the camera frame.
        Returns:
            :class:`TrackUpdate` with one row per instance.
        Raises:
            ValueError: stamp not later than the previous one, a pose given in some frames and not
                in others, or a pose that is not a finite 4x4 matrix.
        """
        cfg = self.config
        stamp_ns = int(stamp_ns)
        if self._last_stamp_ns is not None and stamp_ns <= self._last_stamp_ns:
            raise ValueError(f"stamp {stamp_ns} ns is not later than the previous frame's ({self._last_stamp_ns} ns)")
        frame = "camera" if camera_to_world is None else "world"
        if self._frame is not None and frame != self._frame:
            raise ValueError(f"this tracker works in the {self._frame} frame and got a frame "
                             f"{'with' if frame == 'world' else 'without'} a camera pose; reset() it first")
        cent, cov = instances.centroids, instances.covariances
        if camera_to_world is not None:
            T = np.asarray(camera_to_world, np.float64)
            if T.shape != (4, 4) or not np.isfinite(T).all():
                raise ValueError(f"camera_to_world must be a finite 4x4 matrix, got shape {T.shape}")
            cent, cov = transform_moments(cent, cov, T)
        self._frame = frame
        self._last_stamp_ns = stamp_ns

        # tracks that missed a processed frame and are unseen for longer than max_age_s are gone
        # before this frame is associated (those seen in the previous frame stay candidates)
        max_age_ns = cfg.max_age_s * _NS
        self._tracks = [t for t in self._tracks if t.misses == 0 or stamp_ns - t.last_seen_ns <= max_age_ns]

        rows, cols = self._associate(instances, cent, cov, frame)
        n = len(instances)
        det_track: list[Track | None] = [None] * n
        matched = set()
        for r, c in zip(rows, cols):
            t = self._tracks[r]
            a = cfg.smoothing
            t.centroid = (1 - a) * t.centroid + a * cent[c]
            t.covariance = (1 - a) * t.covariance + a * cov[c]
            t.num_points = (1 - a) * t.num_points + a * float(instances.num_points[c])
            t.hits += 1
            t.misses = 0
            t.last_seen_ns = stamp_ns
            det_track[c] = t
            matched.add(t.key)
        survivors = []
        for t in self._tracks:
            if t.key in matched:
                if not t.confirmed and t.hits >= cfg.min_hits:
                    t.confirmed = True
                    if t.id == 0:
                        t.id = self._new_id()
                survivors.append(t)
            elif t.confirmed:
                t.misses += 1
                survivors.append(t)
            # a tentative track that misses a frame was a fragment: dropped
        for c in range(n):
            if det_track[c] is None:
                confirmed = cfg.min_hits <= 1
                t = Track(key=self._next_key, id=self._new_id() if (confirmed or not cfg.id_on_confirm) else 0,
                          first_seen_ns=stamp_ns, last_seen_ns=stamp_ns, hits=1, misses=0, confirmed=confirmed,
                          centroid=cent[c].copy(), covariance=cov[c].copy(),
                          num_points=float(instances.num_points[c]))
                self._next_key += 1
                survivors.append(t)
                det_track[c] = t
        self._tracks = survivors

        if frame == "camera":  # the frame's labels with track keys, for the next frame's mask overlap
            lab = _iou_view(instances.labels)
            lut = np.zeros(int(max(lab.max(initial=0), instances.ids.max(initial=0))) + 1, np.int64)
            for c in range(n):
                lut[instances.ids[c]] = det_track[c].key
            self._prev_labels = lut[np.clip(lab, 0, None)]

        return TrackUpdate(
            track_ids=np.array([t.id for t in det_track], np.int64),
            hits=np.array([t.hits for t in det_track], np.int64),
            age_s=np.array([t.age_s(stamp_ns) for t in det_track], np.float32),
            confirmed=np.array([t.confirmed for t in det_track], bool),
            tracks=self.tracks, frame=frame)

    def _associate(self, instances: Instances, cent: np.ndarray, cov: np.ndarray,
                   frame: str) -> tuple[np.ndarray, np.ndarray]:
        """Optimal gated assignment: (track rows, instance columns) of the assigned pairs."""
        cfg = self.config
        nt, nd = len(self._tracks), len(instances)
        if not nt or not nd:
            return np.zeros(0, int), np.zeros(0, int)
        tc = np.stack([t.centroid for t in self._tracks])
        tC = np.stack([t.covariance for t in self._tracks])
        dist_b = bhattacharyya(tc, tC, cent, cov, cfg.position_noise_m)
        dist = np.linalg.norm(cent[None, :, :] - tc[:, None, :], axis=2)
        allowed = (dist_b <= cfg.gate_bhattacharyya) & (dist <= cfg.gate_distance_m)
        if frame == "camera":
            prev = self._prev_labels
            lab = _iou_view(instances.labels)
            if prev is not None and prev.shape == lab.shape:
                overlap = mask_iou(prev, [t.key for t in self._tracks], lab, instances.ids)
            else:
                overlap = np.zeros((nt, nd))
        else:
            tn = np.array([t.num_points for t in self._tracks], np.float64)[:, None]
            dn = instances.num_points.astype(np.float64)[None, :]
            with np.errstate(invalid="ignore", divide="ignore"):
                overlap = np.where(np.maximum(tn, dn) > 0, np.minimum(tn, dn) / np.maximum(tn, dn), 0.0)
        w = cfg.overlap_weight
        cost = (1 - w) * dist_b / cfg.gate_bhattacharyya + w * (1.0 - overlap)
        full = np.full((nt + nd, nd + nt), _INFEASIBLE)
        full[:nt, :nd] = np.where(allowed, cost, _INFEASIBLE)
        full[np.arange(nt), nd + np.arange(nt)] = UNASSIGNED_COST      # track i unassigned
        full[nt + np.arange(nd), np.arange(nd)] = UNASSIGNED_COST      # instance j unassigned
        full[nt:, nd:] = 0.0                                           # dummy with dummy
        rows, cols = linear_sum_assignment(full)
        ok = (rows < nt) & (cols < nd)
        rows, cols = rows[ok], cols[ok]
        ok = allowed[rows, cols]
        return rows[ok], cols[ok]


def _iou_view(labels: np.ndarray) -> np.ndarray:
    """The pixels of a label image (H, W) the mask overlap is computed on; per-point labels as is."""
    lab = np.asarray(labels)
    return lab[::IOU_STRIDE, ::IOU_STRIDE] if lab.ndim == 2 else lab


def tracked_instances(instances: Instances, update: TrackUpdate, keep_unconfirmed: bool = False) -> Instances:
    """The frame's instances renumbered with their track ids, with hits / age_s / confirmed set.

    Instances without a public id (tentative with ``id_on_confirm``) are always dropped, and
    unconfirmed ones too unless ``keep_unconfirmed``; dropped instances become background in
    ``labels``. The remaining labels carry the track ids.
    """
    n = len(instances)
    if len(update.track_ids) != n:
        raise ValueError(f"the update has {len(update.track_ids)} rows for {n} instances")
    keep = update.track_ids > 0
    if not keep_unconfirmed:
        keep &= update.confirmed
    idx = np.flatnonzero(keep)
    lab = instances.labels  # int32, 0 = background, else an instance id
    if lab.size and lab.min() < BACKGROUND:
        raise ValueError("Instances.labels must be >= 0 (0 = background)")
    lut = np.zeros(int(max(lab.max(initial=0), instances.ids.max(initial=0))) + 1, np.int32)
    lut[instances.ids[idx]] = update.track_ids[idx]
    labels = np.take(lut, lab)
    kwargs = {f.name: getattr(instances, f.name) for f in dataclasses.fields(instances)}
    for name in ("centroids", "covariances", "scores", "num_points", "class_ids", "occupancy"):
        kwargs[name] = getattr(instances, name)[idx]
    kwargs.update(labels=labels, ids=update.track_ids[idx], hits=update.hits[idx], age_s=update.age_s[idx],
                  confirmed=update.confirmed[idx])
    return Instances(**kwargs)
