"""Device selection in one place: every core class resolves its ``device`` argument here."""
from __future__ import annotations

import logging

_log = logging.getLogger("instseg_ros.device")


def resolve_device(device: str = "auto"):
    """Map "auto" | "cpu" | "cuda" | "cuda:N" to a ``torch.device`` and log the choice.

    "auto" picks the first CUDA device when torch sees one, else the CPU. Asking for CUDA on a
    machine without it raises RuntimeError (rather than silently running on the CPU).
    """
    import torch

    if device in (None, "", "auto"):
        dev = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
        _log.info("device=auto -> %s%s", dev,
                  f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else " (no CUDA device visible)")
        return dev
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} requested but torch sees no CUDA device; use 'cpu' or 'auto'")
    _log.info("device=%s", dev)
    return dev
