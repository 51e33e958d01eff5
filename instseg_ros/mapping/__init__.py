"""TSDF mapping: fuse posed RGB-D frames into a voxel map and extract its surface voxels."""
from .tsdf import SurfaceVoxels, TsdfConfig, TsdfMap, snap_to_voxels

__all__ = ["SurfaceVoxels", "TsdfConfig", "TsdfMap", "snap_to_voxels"]
