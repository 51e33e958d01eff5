"""OccuSeg (Han et al., CVPR 2020) on a TSDF map: sparse U-Net heads, supervoxels, occupancy-aware clustering.

Importing this package imports spconv with the CPU backward patch (see :mod:`.sparse`).
"""
from .clustering import ClusterConfig, cluster_voxels
from .config import SegmenterConfig
from .segmenter import MapSegmenter
from .supervoxels import SupervoxelConfig, supervoxels

__all__ = ["ClusterConfig", "MapSegmenter", "SegmenterConfig", "SupervoxelConfig", "cluster_voxels",
           "supervoxels"]
