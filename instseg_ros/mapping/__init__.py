"""TSDF mapping: fuse posed RGB-D frames into a voxel map, extract its surface voxels, segment it with
stable instance ids and export it (:class:`MapSession`)."""
from .session import MapSegmentation, MapSession, MapSessionConfig, NotSegmentable
from .tsdf import SurfaceVoxels, TsdfConfig, TsdfMap, snap_to_voxels

__all__ = ["MapSegmentation", "MapSession", "MapSessionConfig", "NotSegmentable", "SurfaceVoxels", "TsdfConfig",
           "TsdfMap", "snap_to_voxels"]
