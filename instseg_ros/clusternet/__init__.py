"""ClusterNet (RGB-D instance segmentation by regressing per-pixel object moments, then clustering).

Public API: :class:`ClusterNetPredictor` (numpy frame -> :class:`instseg_ros.core.Instances`), the model
and loss (:mod:`.model`, :mod:`.loss`), the clustering (:mod:`.clustering`), training targets
(:mod:`.targets`) and typed configs (:mod:`.config`). Torch is imported lazily by the submodules.
"""
from __future__ import annotations

__all__ = ["ClusterNetPredictor", "ClusterParams", "ModelConfig"]


def __getattr__(name: str):
    if name == "ClusterNetPredictor":
        from .predictor import ClusterNetPredictor
        return ClusterNetPredictor
    if name == "ClusterParams":
        from .clustering import ClusterParams
        return ClusterParams
    if name == "ModelConfig":
        from .config import ModelConfig
        return ModelConfig
    raise AttributeError(name)
