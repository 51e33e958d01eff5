"""spconv layers against dense torch conv3d on the same weights (catches the multi-thread CPU bug)."""
import numpy as np
import torch

from instseg_ros.occuseg.sparse import import_spconv, sparse_threads

spconv = import_spconv()
G = 10  # grid edge


def _random_sites(rng, n):
    flat = rng.choice(G ** 3, n, replace=False)
    return np.stack(np.unravel_index(flat, (G, G, G)), axis=1).astype(np.int32)


def _dense_weight(w_sparse):
    # spconv 2.x stores (out, kx, ky, kz, in); conv3d wants (out, in, kx, ky, kz)
    return w_sparse.permute(0, 4, 1, 2, 3).contiguous()


def _dense_input(sites, feats):
    x = torch.zeros(1, feats.shape[1], G, G, G, dtype=feats.dtype)
    x[0, :, sites[:, 0], sites[:, 1], sites[:, 2]] = feats.T
    return x


def test_submconv_matches_dense_conv3d_forward_and_backward():
    rng = np.random.default_rng(0)
    sites = _random_sites(rng, 300)
    feats = torch.from_numpy(rng.normal(size=(len(sites), 4)).astype(np.float32))
    conv = spconv.SubMConv3d(4, 5, 3, padding=1, bias=False)
    torch.nn.init.normal_(conv.weight)
    idx = torch.from_numpy(np.concatenate([np.zeros((len(sites), 1), np.int32), sites], 1))
    g = torch.from_numpy(rng.normal(size=(len(sites), 5)).astype(np.float32))
    with sparse_threads("cpu"):
        out = conv(spconv.SparseConvTensor(feats, idx, [G, G, G], 1))
        (out.features * g).sum().backward()
    wd = _dense_weight(conv.weight.detach()).requires_grad_(True)
    dense = torch.nn.functional.conv3d(_dense_input(sites, feats), wd, padding=1)
    at_sites = dense[0][:, sites[:, 0], sites[:, 1], sites[:, 2]].T
    # submanifold conv = dense conv (inactive inputs = 0) read at the active sites, in input order
    np.testing.assert_allclose(out.features.detach().numpy(), at_sites.detach().numpy(), atol=1e-4)
    (at_sites * g).sum().backward()
    np.testing.assert_allclose(_dense_weight(conv.weight.grad).numpy(), wd.grad.numpy(), rtol=1e-3, atol=1e-3)


def test_strided_sparseconv_matches_dense_conv3d():
    rng = np.random.default_rng(1)
    sites = _random_sites(rng, 200)
    feats = torch.from_numpy(rng.normal(size=(len(sites), 3)).astype(np.float32))
    conv = spconv.SparseConv3d(3, 4, 2, stride=2, bias=False)
    torch.nn.init.normal_(conv.weight)
    idx = torch.from_numpy(np.concatenate([np.zeros((len(sites), 1), np.int32), sites], 1))
    with sparse_threads("cpu"), torch.no_grad():
        out = conv(spconv.SparseConvTensor(feats, idx, [G, G, G], 1))
    dense = torch.nn.functional.conv3d(_dense_input(sites, feats), _dense_weight(conv.weight.detach()), stride=2)
    oi = out.indices.numpy()[:, 1:]
    # output sites are exactly the coarse cells that contain an input site
    np.testing.assert_array_equal(np.unique(oi, axis=0), np.unique(sites // 2, axis=0))
    np.testing.assert_allclose(out.features.numpy(), dense[0][:, oi[:, 0], oi[:, 1], oi[:, 2]].T.numpy(), atol=1e-4)


def test_sparse_threads_restores_thread_count():
    before = torch.get_num_threads()
    with sparse_threads("cpu"):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
