"""OccuSeg's learning stage: a sparse 3D U-Net (spconv) with the five per-voxel heads of §3.1.

Spatial quantities inside the network and the losses are in *normalised units*: metres divided by
``NetConfig.spatial_scale`` (default 5 cm for bins), so offsets and the spatial covariance are O(1).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .config import LossWeights, NetConfig
from .sparse import import_spconv

spconv = import_spconv()

#: Input feature channels: RGB in [-0.5, 0.5], unit normal, height z (m) / spatial_scale.
IN_CHANNELS = 7


@dataclass
class HeadOutputs:
    """Per-voxel predictions, all (V, ...) float32 tensors in the input voxel order.

    semantic: (V, num_classes) logits c_i. embedding: (V, E) feature embedding s_i.
    offset: (V, 3) spatial embedding d_i (normalised units; mu_i + d_i = predicted instance centre).
    sigma: (V, 2) positive (sigma_s, sigma_d) (feature units, normalised spatial units).
    occupancy: (V,) o_i = predicted log(voxel count of the voxel's instance).
    """

    semantic: torch.Tensor
    embedding: torch.Tensor
    offset: torch.Tensor
    sigma: torch.Tensor
    occupancy: torch.Tensor
    extra: dict = field(default_factory=dict)


def _block(cin: int, cout: int, key: str):
    return spconv.SparseSequential(
        spconv.SubMConv3d(cin, cout, 3, padding=1, bias=False, indice_key=key),
        nn.BatchNorm1d(cout), nn.ReLU(inplace=True))


class SparseUNet(nn.Module):
    """Submanifold U-Net: SubMConv3d blocks, SparseConv3d(2, stride 2) down, SparseInverseConv3d up."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        ch = cfg.channels
        self.levels = len(ch)
        self.stem = _block(IN_CHANNELS, ch[0], "subm0")
        self.enc = nn.ModuleList()
        self.down = nn.ModuleList()
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for lv in range(self.levels):
            self.enc.append(spconv.SparseSequential(
                *[_block(ch[lv], ch[lv], f"subm{lv}") for _ in range(cfg.reps)]))
        for lv in range(self.levels - 1):
            self.down.append(spconv.SparseSequential(
                spconv.SparseConv3d(ch[lv], ch[lv + 1], 2, stride=2, bias=False, indice_key=f"down{lv}"),
                nn.BatchNorm1d(ch[lv + 1]), nn.ReLU(inplace=True)))
            self.up.append(spconv.SparseSequential(
                spconv.SparseInverseConv3d(ch[lv + 1], ch[lv], 2, bias=False, indice_key=f"down{lv}"),
                nn.BatchNorm1d(ch[lv]), nn.ReLU(inplace=True)))
            self.dec.append(spconv.SparseSequential(
                _block(2 * ch[lv], ch[lv], f"subm{lv}"),
                *[_block(ch[lv], ch[lv], f"subm{lv}") for _ in range(cfg.reps - 1)]))

    def forward(self, x):
        x = self.stem(x)
        skips = []
        for lv in range(self.levels):
            x = self.enc[lv](x)
            if lv < self.levels - 1:
                skips.append(x)
                x = self.down[lv](x)
        for lv in reversed(range(self.levels - 1)):
            x = self.up[lv](x)
            x = x.replace_feature(torch.cat([x.features, skips[lv].features], dim=1))
            x = self.dec[lv](x)
        return x


class OccuSegNet(nn.Module):
    """U-Net backbone + linear heads c_i, s_i, d_i, b_i = (sigma_s, sigma_d), o_i, and the loss of eq. (1).

    ``forward(features, coords, targets)`` returns the dict of loss terms (total under "loss") in training
    mode and the :class:`HeadOutputs` in eval mode, as ClusterNet's model does.
    """

    def __init__(self, cfg: NetConfig | None = None, loss_weights: LossWeights | None = None) -> None:
        super().__init__()
        self.cfg = cfg or NetConfig()
        self.loss_weights = loss_weights or LossWeights()
        c0 = self.cfg.channels[0]
        self.backbone = SparseUNet(self.cfg)
        self.head_sem = nn.Linear(c0, self.cfg.num_classes)
        self.head_emb = nn.Linear(c0, self.cfg.embed_dim)
        self.head_off = nn.Linear(c0, 3)
        self.head_sig = nn.Linear(c0, 2)
        self.head_occ = nn.Linear(c0, 1)
        with torch.no_grad():
            self.head_occ.bias.fill_(float(np.log(500.0)))   # a typical object's surface-voxel count
            self.head_sig.bias.fill_(0.5)

    def forward(self, features: torch.Tensor, coords: torch.Tensor,
                targets: dict[str, torch.Tensor] | None = None) -> HeadOutputs | dict[str, torch.Tensor]:
        """Args:
            features: float32 (V, IN_CHANNELS), see :func:`voxel_features`.
            coords: int32 (V, 3) voxel indices (x, y, z), may be negative; batch 0.
            targets: training mode only: "pos" float32 (V, 3) voxel positions in normalised units (metres /
                spatial_scale), "semantic" int64 (V,) class (0 = background, -1 = unlabelled), "instance"
                int64 (V,) id (0 = background / unlabelled).
        Returns:
            training mode: the loss terms of :func:`.loss.occuseg_loss` (scalar tensors, total under "loss");
            eval mode: :class:`HeadOutputs`.
        """
        if self.training and targets is None:
            raise RuntimeError("OccuSegNet in training mode needs targets; call .eval() for inference")
        if features.ndim != 2 or features.shape[1] != IN_CHANNELS:
            raise ValueError(f"features must be (V, {IN_CHANNELS}), got {tuple(features.shape)}")
        if coords.shape != (features.shape[0], 3):
            raise ValueError(f"coords must be ({features.shape[0]}, 3), got {tuple(coords.shape)}")
        c = coords.to(torch.int32)
        c = c - c.min(dim=0).values
        shape = (c.max(dim=0).values + 1).tolist()
        div = 2 ** (len(self.cfg.channels) - 1)
        shape = [int(-(-s // div) * div) for s in shape]
        idx = torch.cat([torch.zeros_like(c[:, :1]), c], dim=1).contiguous()   # (batch, x, y, z)
        x = spconv.SparseConvTensor(features, idx, shape, 1)
        f = self.backbone(x).features
        sig = nn.functional.softplus(self.head_sig(f)) + 1e-3
        out = HeadOutputs(semantic=self.head_sem(f), embedding=self.head_emb(f), offset=self.head_off(f),
                          sigma=sig, occupancy=self.head_occ(f)[:, 0])
        if self.training:
            from .loss import occuseg_loss

            return occuseg_loss(out, targets["pos"], targets["semantic"], targets["instance"], self.loss_weights)
        return out


def voxel_features(colors: np.ndarray, normals: np.ndarray, points: np.ndarray,
                   spatial_scale: float) -> np.ndarray:
    """Network input per voxel: float32 (V, 7) = RGB/255 - 0.5, unit normal, z / spatial_scale."""
    f = np.concatenate([np.asarray(colors, np.float32) / 255.0 - 0.5, np.asarray(normals, np.float32),
                        np.asarray(points, np.float32)[:, 2:3] / np.float32(spatial_scale)], axis=1)
    return np.ascontiguousarray(f, dtype=np.float32)
