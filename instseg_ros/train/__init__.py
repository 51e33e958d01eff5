"""The training engine both models use (:func:`.engine.run`) and the loop settings they share."""
from .config import TrainLoopConfig
from .engine import Context, TrainResult, TrainTask, lr_at, run, setup

__all__ = ["Context", "TrainLoopConfig", "TrainResult", "TrainTask", "lr_at", "run", "setup"]
