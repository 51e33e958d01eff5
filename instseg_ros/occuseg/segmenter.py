"""`MapSegmenter`: OccuSeg inference on a TSDF map (network -> supervoxels -> occupancy-aware clustering)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from instseg_ros.core.geometry import moments
from instseg_ros.core.instances import Instances
from instseg_ros.mapping.tsdf import SurfaceVoxels, TsdfMap

from .checkpoint import build_model, load_checkpoint
from .clustering import ClusterConfig, ClusterResult, cluster_voxels
from .config import SegmenterConfig
from .model import OccuSegNet, voxel_features
from .sparse import sparse_threads
from .supervoxels import supervoxels

_log = logging.getLogger("instseg_ros.occuseg")
MS_PER_S = 1e3   #: last_timings are milliseconds, as ClusterNetPredictor's


@dataclass
class VoxelPredictions:
    """Per-voxel network outputs as numpy (V rows, input order); spatial ones in normalised units."""

    prob: np.ndarray        # float32 (V, K) softmax class probabilities
    embedding: np.ndarray   # float32 (V, E)
    centre: np.ndarray      # float32 (V, 3) mu_i + d_i
    sigma: np.ndarray       # float32 (V, 2)
    log_occ: np.ndarray     # float32 (V,)


class MapSegmenter:
    """Segment the surface voxels of a TSDF map into object instances (OccuSeg).

    :meth:`predict` returns :class:`Instances` (as ``ClusterNetPredictor.predict`` does); :meth:`predict_heads`
    runs the network only. After each :meth:`predict`, ``last_timings`` holds milliseconds of "network",
    "supervoxels" and "clustering" (:meth:`cluster` alone updates the last two).
    """

    def __init__(self, model: OccuSegNet, config: SegmenterConfig, device: str = "auto") -> None:
        from instseg_ros.core.device import resolve_device

        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        self.last_timings: dict[str, float] = {}
        #: the checkpoint's "meta" (training record: steps, data, "semantic" label space, "classes"); {} if none
        self.meta: dict = {}

    @classmethod
    def from_checkpoint(cls, path: str, device: str = "auto",
                        config: SegmenterConfig | None = None) -> MapSegmenter:
        """Load weights saved by :func:`.checkpoint.save_checkpoint` (``torch.load(weights_only=True)``).

        Clustering and supervoxel settings stored by :func:`.checkpoint.set_inference_config` (tuned for the
        model) are used unless ``config`` is given; without them the defaults (the paper's T0 = 0.5) apply.

        Raises:
            RuntimeError: ``path`` is missing, unreadable, not an OccuSeg checkpoint, or its weights do not
                fit its network config (the message names the path).
            ValueError: a stored config is invalid.
        """
        ckpt = load_checkpoint(path)
        model = build_model(ckpt, path)
        cfg = config or ckpt["segmenter_config"]
        cfg.net = ckpt["model_config"]
        seg = cls(model, cfg, device)
        seg.meta = dict(ckpt.get("meta") or {})
        return seg

    @torch.no_grad()
    def predict_heads(self, sv: SurfaceVoxels) -> VoxelPredictions:
        """Run the network on surface voxels; ValueError when there are none."""
        if len(sv) == 0:
            raise ValueError("the map has no surface voxels to segment")
        scale = self.model.cfg.spatial_scale
        feats = torch.from_numpy(voxel_features(sv.colors, sv.normals, sv.points, scale)).to(self.device)
        coords = torch.from_numpy(np.asarray(sv.coords, np.int32)).to(self.device)
        with sparse_threads(self.device):
            out = self.model(feats, coords)
        pos = torch.from_numpy(np.asarray(sv.points, np.float32) / np.float32(scale)).to(self.device)
        return VoxelPredictions(
            prob=torch.softmax(out.semantic, dim=1).cpu().numpy(), embedding=out.embedding.cpu().numpy(),
            centre=(pos + out.offset).cpu().numpy(), sigma=out.sigma.cpu().numpy(),
            log_occ=out.occupancy.cpu().numpy())

    def cluster(self, sv: SurfaceVoxels, pred: VoxelPredictions,
                cluster_cfg: ClusterConfig | None = None,
                sv_cache: tuple[np.ndarray, np.ndarray] | None = None) -> ClusterResult:
        """Supervoxels + eq. (12)-(14) clustering; ``sv_cache`` = precomputed (labels, edges)."""
        t0 = time.perf_counter()
        sv_labels, edges = sv_cache if sv_cache is not None else supervoxels(
            sv.coords, sv.normals, sv.colors, self.config.supervoxel)
        t1 = time.perf_counter()
        res = cluster_voxels(sv_labels, edges, pred.centre, pred.embedding, pred.log_occ, pred.sigma,
                             pred.prob, cluster_cfg or self.config.cluster)
        t2 = time.perf_counter()
        self.last_timings.update(supervoxels=(t1 - t0) * MS_PER_S, clustering=(t2 - t1) * MS_PER_S)
        return res

    def predict(self, tsdf_map: TsdfMap | SurfaceVoxels, cluster_cfg: ClusterConfig | None = None) -> Instances:
        """Segment a map.

        Args:
            tsdf_map: a :class:`TsdfMap` (its surface voxels are extracted) or :class:`SurfaceVoxels`.
        Returns:
            :class:`Instances` over the M surface voxels: labels int32 (M,), points float32 (M, 3) m and
            colors uint8 (M, 3) in the map (world) frame; per instance centroid / covariance of its
            voxel points (m, m^2), occupancy = predicted voxel count, class_ids = shape family,
            scores, num_points = voxel count.
        """
        sv = tsdf_map.surface_voxels() if isinstance(tsdf_map, TsdfMap) else tsdf_map
        if len(sv) == 0:
            return Instances(labels=np.zeros(0, np.int32), points=np.zeros((0, 3), np.float32),
                             colors=np.zeros((0, 3), np.uint8))
        t0 = time.perf_counter()
        pred = self.predict_heads(sv)
        self.last_timings = {"network": (time.perf_counter() - t0) * MS_PER_S}
        res = self.cluster(sv, pred, cluster_cfg)
        return instances_from_clusters(sv, res)


def instances_from_clusters(sv: SurfaceVoxels, res: ClusterResult) -> Instances:
    """Pack a :class:`ClusterResult` over surface voxels into :class:`Instances`."""
    n = len(res.num_voxels)
    cents = np.zeros((n, 3))
    covs = np.zeros((n, 3, 3))
    order = np.argsort(res.labels, kind="stable")
    bounds = np.searchsorted(res.labels[order], np.arange(1, n + 2))
    for k in range(n):
        idx = order[bounds[k]:bounds[k + 1]]
        cents[k], covs[k] = moments(sv.points[idx])
    return Instances(labels=res.labels, ids=np.arange(1, n + 1), centroids=cents, covariances=covs,
                     scores=res.scores, num_points=res.num_voxels, class_ids=res.class_ids,
                     occupancy=res.occupancy.astype(np.float32), points=sv.points, colors=sv.colors)
