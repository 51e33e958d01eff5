"""The torch (GPU) clustering path waits for the device a constant number of times plus once per ``block``
seeds, never once per object.

On CPU there is nothing to wait for, so the count is taken by structure: a dispatch mode records every op
that makes the host wait for a CUDA device (reading a value back: .item() / bool() / int(); ops whose
output size depends on the data: nonzero, boolean-mask indexing, masked_select, unique, bincount). On a
CUDA machine the same is checked with torch.cuda.set_sync_debug_mode, which warns at each real sync.
"""
import math
import warnings

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from instseg_ros.clusternet.clustering import ClusterParams, cluster_pixels, sphere_seeding

aten = torch.ops.aten
SYNCING = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
           aten.bincount.default, aten._unique2.default, aten.unique_consecutive.default,
           aten.unique_dim.default, aten.is_nonzero.default}
INDEXING = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default}


class SyncCounter(TorchDispatchMode):
    """Counts the ops that would synchronise host and device on CUDA."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        bool_index = func in INDEXING and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool
                                               for i in args[1] if i is not None)
        if func in SYNCING or bool_index:
            self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def _separated(n: int, per: int = 25, seed: int = 0):
    """n feature clusters 0.3 m apart, `per` points each (P, 3), η, radius 0.05 m."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n * per, 3)) * 0.003 + np.repeat(np.arange(n)[:, None] * 0.3, per, 0)
    return (torch.tensor(x, dtype=torch.float32), torch.tensor(rng.uniform(0, 1, n * per), dtype=torch.float32),
            torch.full((n * per,), 0.05))


@pytest.mark.parametrize("n,block", [(1, 4), (5, 4), (12, 4), (12, 1), (1, 64), (30, 64)])
def test_seeding_syncs_once_per_block(n, block):
    x, e, r = _separated(n)
    with SyncCounter() as sc:
        assign, seeds, _ = sphere_seeding(x, e, r, min_radius=0.003, max_radius=0.1, max_instances=200,
                                          block=block)
    obj = np.repeat(np.arange(n), 25)
    assert len(seeds) == n and len(set(zip(obj.tolist(), assign.tolist()))) == n   # one cluster per object
    # one boolean compaction per block of seeds, one to drop empty clusters at the end
    assert len(sc.ops) == math.ceil(n / block) + 1, sc.ops


def _frame(n: int):
    """(D, H, W) maps of n separated objects in 8x8-pixel blocks of one image row."""
    h, w = 8, 8 * n
    x, e, r = _separated(n, per=64)
    order = torch.arange(n * 64).view(n, 8, 8).permute(1, 0, 2).reshape(-1)   # block k = object k
    xi = x[order].t().reshape(3, h, w).contiguous()
    return xi, e[order].view(h, w), r[order].view(h, w), torch.ones(h, w)


@pytest.mark.parametrize("gmm", [False, True])
def test_cluster_pixels_torch_syncs_do_not_grow_with_objects(gmm):
    params = ClusterParams(min_size=5, block=64, gmm=gmm)
    counts = []
    for n in (1, 30):
        t = _frame(n)
        with SyncCounter() as sc:
            labels, scores = cluster_pixels(*t, params, backend="torch")
        assert len(scores) == n
        assert torch.equal(labels, cluster_pixels(*t, params, backend="numba")[0])
        counts.append(len(sc.ops))
    assert counts[0] == counts[1] <= 8, counts


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none visible to torch here)")
def test_cuda_syncs_do_not_grow_with_objects_and_match_cpu():
    params = ClusterParams(min_size=5, block=64)
    counts = []
    for n in (1, 30):
        t = _frame(n)
        cpu_labels, cpu_scores = cluster_pixels(*t, params)
        dev = [a.cuda() for a in t]
        cluster_pixels(*dev, params)                                      # warm-up (lazy CUDA init)
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                labels, scores = cluster_pixels(*dev, params)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        counts.append(sum("synchroniz" in str(c.message) for c in caught))
        assert labels.is_cuda and torch.equal(labels.cpu(), cpu_labels) and torch.equal(scores.cpu(), cpu_scores)
    assert counts[0] == counts[1], counts
