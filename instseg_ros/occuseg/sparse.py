"""spconv on this machine's CPU: the two measured caveats handled in one place.

1. spconv 2.3.8's backward calls ``torch.cuda.current_stream`` through ``get_current_stream``; on a
   CPU-only torch that raises, so it is replaced by a function returning the null stream (0).
2. With more than one torch thread the CPU sparse-conv kernels return wrong, run-to-run different
   values (errors 0.04-0.6 against dense conv3d, measured). Every sparse forward/backward on the CPU
   therefore runs inside :func:`sparse_threads`, which pins torch to one thread and restores the
   previous count afterwards.
"""
from __future__ import annotations

import contextlib
import threading

_PATCHED = False
_LOCK = threading.Lock()


def import_spconv():
    """Import ``spconv.pytorch`` with the CPU backward patch applied (idempotent); returns the module."""
    global _PATCHED
    import spconv.pytorch as spconv

    with _LOCK:
        if not _PATCHED:
            import torch

            if not torch.cuda.is_available():
                from spconv.pytorch import cppcore, ops

                def _null_stream() -> int:
                    return 0

                ops.get_current_stream = _null_stream
                cppcore.get_current_stream = _null_stream
            _PATCHED = True
    return spconv


@contextlib.contextmanager
def sparse_threads(device):
    """Run the enclosed sparse convolutions single-threaded when ``device`` is the CPU."""
    import torch

    is_cpu = getattr(device, "type", str(device)).startswith("cpu")
    if not is_cpu:
        yield
        return
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(prev)
