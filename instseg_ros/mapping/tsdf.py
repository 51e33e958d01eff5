"""TSDF fusion of posed RGB-D frames into an Open3D ``VoxelBlockGrid`` and surface-voxel extraction.

Frames: depth in the camera optical frame (x right, y down, z forward, metres); ``T_world_camera``
maps camera points to the world (map) frame. Everything returned is in the world frame, metres.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from instseg_ros.core.geometry import validate_intrinsics, validate_pose

_log = logging.getLogger("instseg_ros.mapping")

#: Voxels per block edge in the VoxelBlockGrid (8^3 voxels per block).
BLOCK_RESOLUTION = 8
#: Largest |voxel index| the segmentation side can address (instance-id tracking packs 21 bits
#: per axis, see :func:`~instseg_ros.mapping.stable_ids.voxel_keys`).
VOXEL_INDEX_LIMIT = 1 << 20


@dataclass
class TsdfConfig:
    """TSDF map settings.

    voxel_size: metres (0.005 for bins, 0.02 as in the OccuSeg paper for rooms).
    trunc_voxels: truncation distance in voxels (Open3D ``trunc_voxel_multiplier``). 2 keeps box
        edges sharp (4 bulges corners by ~1.5 voxels, measured on rendered boxes); raise it for noisier depth.
    depth_max: metres; farther depth is ignored.
    max_blocks: block budget (each block is 8^3 voxels); new blocks beyond it are not allocated,
        so memory stays bounded (tsdf + weight + colour = 20 bytes per voxel, ~10 kB per block).
    workspace_min / workspace_max: optional world-frame AABB (metres); depth whose back-projected
        point falls outside it is dropped before integration.
    weight_threshold: extraction keeps surface points whose accumulated weight exceeds this
        (one frame adds weight 1).
    device: "auto" | "cpu" | "cuda"; CUDA only when both torch and Open3D have it.
    world_bound: metres; a frame whose camera centre has a world coordinate beyond +-world_bound is
        refused, so every integrated voxel lies within world_bound + depth_max + truncation of the
        origin. That box must fit in +-:data:`VOXEL_INDEX_LIMIT` voxels (checked here), so whatever
        the map accepted can be segmented. None = the largest bound the voxel index range allows.
    """

    voxel_size: float = 0.005
    trunc_voxels: float = 2.0
    depth_max: float = 3.0
    max_blocks: int = 40000
    workspace_min: tuple[float, float, float] | None = None
    workspace_max: tuple[float, float, float] | None = None
    weight_threshold: float = 0.5
    device: str = "auto"
    world_bound: float | None = None

    def __post_init__(self) -> None:
        if not self.voxel_size > 0:
            raise ValueError(f"voxel_size must be > 0 m, got {self.voxel_size}")
        if not self.trunc_voxels > 0:
            raise ValueError(f"trunc_voxels must be > 0, got {self.trunc_voxels}")
        if not self.depth_max > 0:
            raise ValueError(f"depth_max must be > 0 m, got {self.depth_max}")
        if int(self.max_blocks) < 1:
            raise ValueError(f"max_blocks must be >= 1, got {self.max_blocks}")
        if (self.workspace_min is None) != (self.workspace_max is None):
            raise ValueError("workspace_min and workspace_max must be given together")
        if self.workspace_min is not None:
            lo, hi = np.asarray(self.workspace_min, float), np.asarray(self.workspace_max, float)
            if lo.shape != (3,) or hi.shape != (3,) or not (hi > lo).all():
                raise ValueError(f"workspace box must be 3-vectors with max > min, got {lo} / {hi}")
        reach = self.max_world_bound()
        if self.world_bound is not None:
            if not 0 < self.world_bound <= reach:
                raise ValueError(
                    f"world_bound must be in (0, {reach:.1f}] m: beyond that, depth up to depth_max={self.depth_max} m "
                    f"would create voxel indices outside +-{VOXEL_INDEX_LIMIT} at voxel_size={self.voxel_size} m; "
                    f"lower world_bound or raise voxel_size, got {self.world_bound}")

    def max_world_bound(self) -> float:
        """Largest camera-centre bound (m) whose integrated voxels stay inside the voxel index range
        (one block of margin for the block-aligned allocation around the truncation band)."""
        margin = self.depth_max + (self.trunc_voxels + BLOCK_RESOLUTION) * self.voxel_size
        return (VOXEL_INDEX_LIMIT - 1) * self.voxel_size - margin

    @property
    def effective_world_bound(self) -> float:
        """``world_bound``, or :meth:`max_world_bound` when it is None (m)."""
        return self.max_world_bound() if self.world_bound is None else float(self.world_bound)


@dataclass
class SurfaceVoxels:
    """Surface voxels of a TSDF map: one entry per occupied grid cell, the OccuSeg input.

    coords: int32 (V, 3) integer voxel indices, floor(position / voxel_size), world frame (x, y, z).
    points: float32 (V, 3) mean of the extracted iso-surface points inside each voxel, metres, world.
    colors: uint8 (V, 3) RGB.
    normals: float32 (V, 3) unit normals (TSDF gradient, pointing to free space).
    voxel_size: metres.
    extra: optional per-voxel arrays by name, each with V rows in the same order (e.g. ground truth).
    """

    coords: np.ndarray
    points: np.ndarray
    colors: np.ndarray
    normals: np.ndarray
    voxel_size: float
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.coords)

    def select(self, mask: np.ndarray) -> SurfaceVoxels:
        """The voxels ``mask`` picks, every per-voxel field filtered alike, ``extra`` included.

        Args: mask: bool (V,), or integer indices into the V voxels (their order is kept).
        Raises: ValueError for a bool mask of another length, or an ``extra`` entry without V rows.
        """
        keep = np.asarray(mask)
        if keep.dtype == bool and keep.shape != (len(self),):
            raise ValueError(f"a bool mask must have shape ({len(self)},), got {keep.shape}")
        extra = {}
        for name, value in self.extra.items():
            value = np.asarray(value)
            if value.ndim == 0 or len(value) != len(self):
                raise ValueError(f"extra[{name!r}] has shape {value.shape}, not one row per voxel ({len(self)})")
            extra[name] = value[keep]
        return SurfaceVoxels(self.coords[keep], self.points[keep], self.colors[keep], self.normals[keep],
                             self.voxel_size, extra)


def _o3d_device(device: str, log=_log):
    import open3d as o3d

    if device in ("cpu", "CPU", "CPU:0"):
        return o3d.core.Device("CPU:0")
    from instseg_ros.core.device import resolve_device

    dev = resolve_device("auto" if device in (None, "", "auto") else device)
    if dev.type == "cuda":
        if o3d.core.cuda.is_available():
            return o3d.core.Device(f"CUDA:{dev.index or 0}")
        if device not in (None, "", "auto"):
            raise RuntimeError("CUDA requested for the TSDF map but this Open3D build has no CUDA; use 'cpu'")
        log.info("torch sees CUDA but Open3D has no CUDA: TSDF map on CPU:0")
    return o3d.core.Device("CPU:0")


#: cells (fraction of a voxel) by which :func:`snap_to_voxels` lifts a point before flooring it. Open3D puts
#: every iso-surface point on the edge between two voxel samples, so two of its coordinates are exact multiples
#: of the voxel size; in float32 about half of those land a hair below the multiple, and a plain floor then moves
#: the point into the neighbouring cell: two points share one cell and the cell they should fill stays empty.
#: From one noise-free view of a plane that lost a third of its cells and split the sheet into 273 26-connected
#: pieces (11.0k instead of 7.7k cells with the lift, one piece). 1e-3 cells is 5 um at 5 mm voxels: far above
#: float32 rounding within +-1 km, far below anything a depth camera resolves.
SNAP_LIFT_CELLS = 1e-3
#: version of the surface-voxel extraction, part of the names of cached fused maps (bumped when the same
#: TSDF gives other surface voxels: 2 = :data:`SNAP_LIFT_CELLS`)
SURFACE_VERSION = 2


def snap_to_voxels(points: np.ndarray, colors: np.ndarray, normals: np.ndarray,
                   voxel_size: float) -> SurfaceVoxels:
    """Group points by the grid cell floor(p / voxel_size + :data:`SNAP_LIFT_CELLS`) and average them per cell.

    Args: points float (P, 3) m; colors float (P, 3) in [0, 1] or uint8; normals float (P, 3).
    Returns: :class:`SurfaceVoxels`, cells sorted by (x, y, z) index.
    """
    points = np.asarray(points, np.float64).reshape(-1, 3)
    if len(points) == 0:
        z3 = np.zeros((0, 3))
        return SurfaceVoxels(z3.astype(np.int32), z3.astype(np.float32), z3.astype(np.uint8),
                             z3.astype(np.float32), float(voxel_size))
    colors = np.asarray(colors)
    colors = colors.astype(np.float64) / (255.0 if colors.dtype == np.uint8 else 1.0)
    normals = np.asarray(normals, np.float64).reshape(-1, 3)
    cells = np.floor(points / voxel_size + SNAP_LIFT_CELLS).astype(np.int64)
    uniq, inv, counts = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    n = len(uniq)

    def mean(a):
        out = np.zeros((n, a.shape[1]))
        np.add.at(out, inv, a)
        return out / counts[:, None]

    nrm = mean(normals)
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-9)
    col = np.clip(np.round(mean(colors) * 255.0), 0, 255).astype(np.uint8)
    return SurfaceVoxels(uniq.astype(np.int32), mean(points).astype(np.float32), col,
                         nrm.astype(np.float32), float(voxel_size))


class TsdfMap:
    """A TSDF + colour voxel map (Open3D ``t.geometry.VoxelBlockGrid``) fused from posed RGB-D frames.

    ``logger``: where the map's messages go (anything with ``info`` / ``warning`` methods taking one
    string, e.g. a ROS node's logger); default the ``instseg_ros.mapping`` Python logger.
    """

    def __init__(self, config: TsdfConfig | None = None, logger=None, **overrides) -> None:
        import open3d as o3d

        if config is None:
            config = TsdfConfig(**overrides)
        elif overrides:
            raise ValueError("pass either a TsdfConfig or keyword overrides, not both")
        self.config = config
        self._log = logger if logger is not None else _log
        self.device = _o3d_device(config.device, self._log)
        self._o3d = o3d
        self.frames_integrated = 0
        self.blocks_dropped = 0
        #: True when the last :meth:`integrate` had blocks refused by the budget.
        self.last_budget_limited = False
        self._budget_warned = False
        self._new_grid()

    def _new_grid(self) -> None:
        o3c = self._o3d.core
        self._vbg = self._o3d.t.geometry.VoxelBlockGrid(
            attr_names=("tsdf", "weight", "color"),
            attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
            attr_channels=((1), (1), (3)),
            voxel_size=float(self.config.voxel_size),
            block_resolution=BLOCK_RESOLUTION,
            block_count=int(min(self.config.max_blocks, 10000)),
            device=self.device,
        )

    def reset(self) -> None:
        """Drop everything integrated so far."""
        self._new_grid()
        self.frames_integrated = 0
        self.blocks_dropped = 0
        self.last_budget_limited = False
        self._budget_warned = False

    @property
    def voxel_size(self) -> float:
        return float(self.config.voxel_size)

    @property
    def num_blocks(self) -> int:
        """Allocated 8^3-voxel blocks."""
        return int(self._vbg.hashmap().size())

    def integrate(self, depth_m: np.ndarray, rgb: np.ndarray, K: np.ndarray,
                  T_world_camera: np.ndarray) -> int:
        """Fuse one frame.

        Args:
            depth_m: float32 (H, W) metres, 0 / NaN = invalid.
            rgb: uint8 (H, W, 3) RGB, aligned to depth.
            K: (3, 3) pinhole intrinsics of the depth/colour camera.
            T_world_camera: (4, 4) rigid camera -> world transform.
        Returns:
            Number of depth pixels integrated (after the workspace crop and depth_max).
        Raises:
            ValueError: bad shapes, non-rigid or non-finite pose, a camera centre outside the world
                bound (:attr:`TsdfConfig.world_bound`), bad K, or no valid depth at all.
        """
        o3c = self._o3d.core
        K = validate_intrinsics(K)
        T = validate_pose(T_world_camera, "T_world_camera")
        bound = self.config.effective_world_bound
        if np.abs(T[:3, 3]).max() > bound:
            raise ValueError(f"camera position {T[:3, 3].tolist()} m lies outside the world bound +-{bound:g} m")
        self.last_budget_limited = False
        depth = np.asarray(depth_m)
        if depth.ndim != 2:
            raise ValueError(f"depth_m must be (H, W) metres, got shape {depth.shape}")
        rgb = np.asarray(rgb)
        if rgb.shape != depth.shape + (3,) or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be uint8 {depth.shape + (3,)}, got {rgb.dtype} {rgb.shape}")
        depth = np.nan_to_num(depth.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        depth[depth < 0] = 0.0
        valid = depth > 0
        if not valid.any():
            raise ValueError("depth_m has no valid (> 0, finite) pixel")
        cfg = self.config
        if cfg.workspace_min is not None:
            valid &= self._inside_workspace(depth, K, T)
            depth = np.where(valid, depth, np.float32(0.0)).astype(np.float32)
        valid &= depth <= cfg.depth_max
        n_valid = int(valid.sum())
        if n_valid == 0:
            return 0
        di = self._o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(depth)).to(self.device))
        ci = self._o3d.t.geometry.Image(
            o3c.Tensor(np.ascontiguousarray(rgb, dtype=np.float32) / np.float32(255.0)).to(self.device))
        Kt = o3c.Tensor(K, dtype=o3c.float64)
        Et = o3c.Tensor(np.linalg.inv(T), dtype=o3c.float64)   # extrinsic = T_camera_world
        blocks = self._vbg.compute_unique_block_coordinates(
            di, Kt, Et, 1.0, float(cfg.depth_max), float(cfg.trunc_voxels))
        blocks = self._apply_budget(blocks)
        if blocks.shape[0] == 0:
            return 0
        self._vbg.integrate(blocks, di, ci, Kt, Et, 1.0, float(cfg.depth_max), float(cfg.trunc_voxels))
        self.frames_integrated += 1
        return n_valid

    def _inside_workspace(self, depth: np.ndarray, K: np.ndarray, T: np.ndarray) -> np.ndarray:
        from instseg_ros.core.geometry import backproject

        pts = backproject(depth, K).reshape(-1, 3)
        pw = pts @ T[:3, :3].T.astype(np.float32) + T[:3, 3].astype(np.float32)
        lo = np.asarray(self.config.workspace_min, np.float32)
        hi = np.asarray(self.config.workspace_max, np.float32)
        return ((pw >= lo) & (pw <= hi)).all(axis=1).reshape(depth.shape)

    def _apply_budget(self, blocks):
        """Keep existing blocks and only as many new ones as the block budget allows."""
        hm = self._vbg.hashmap()
        used = int(hm.size())
        _, found = hm.find(blocks)
        found = found.cpu().numpy().astype(bool)
        n_new = int((~found).sum())
        room = int(self.config.max_blocks) - used
        if n_new <= room:
            return blocks
        keep = found.copy()
        if room > 0:
            keep[np.flatnonzero(~found)[:room]] = True
        self.blocks_dropped += n_new - max(room, 0)
        self.last_budget_limited = True
        if not self._budget_warned:  # once per map: the count goes on in blocks_dropped
            self._budget_warned = True
            self._log.warning(f"TSDF block budget {self.config.max_blocks} reached: {n_new - max(room, 0)} new "
                              f"blocks not allocated; parts of the scene outside the allocated blocks are not "
                              f"integrated (raise max_blocks or crop the workspace)")
        idx = self._o3d.core.Tensor(np.flatnonzero(keep).astype(np.int64), device=blocks.device)
        return blocks[idx]

    def extract_points(self, weight_threshold: float | None = None):
        """Iso-surface points: (positions float32 (P, 3) m, colors float32 (P, 3) [0, 1], normals (P, 3))."""
        th = self.config.weight_threshold if weight_threshold is None else float(weight_threshold)
        if self.num_blocks == 0:
            z = np.zeros((0, 3), np.float32)
            return z, z.copy(), z.copy()
        pc = self._vbg.extract_point_cloud(th)
        pos = pc.point.positions.cpu().numpy()
        if len(pos) == 0:
            z = np.zeros((0, 3), np.float32)
            return z, z.copy(), z.copy()
        return pos, pc.point.colors.cpu().numpy(), pc.point.normals.cpu().numpy()

    def surface_voxels(self, weight_threshold: float | None = None) -> SurfaceVoxels:
        """Surface voxels (iso-surface points snapped to unique grid cells), the OccuSeg input."""
        return self.voxelize(*self.extract_points(weight_threshold))

    def voxelize(self, positions: np.ndarray, colors: np.ndarray, normals: np.ndarray) -> SurfaceVoxels:
        """Surface voxels of iso-surface points from :meth:`extract_points`: snapped to grid cells
        (:func:`snap_to_voxels`) and cropped to the workspace box.

        Reads only the map's fixed configuration, never the grid, so a caller may extract the points
        under its map lock and voxelize them after releasing it (the lock then covers the extraction only).
        """
        sv = snap_to_voxels(positions, colors, normals, self.voxel_size)
        if self.config.workspace_min is not None and len(sv):
            lo = np.asarray(self.config.workspace_min, np.float32)
            hi = np.asarray(self.config.workspace_max, np.float32)
            sv = sv.select(((sv.points >= lo) & (sv.points <= hi)).all(axis=1))
        return sv
