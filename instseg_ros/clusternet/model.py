"""ClusterNet network (paper §III-C, Fig. 4): RGB and XYZ ResNet encoders, C1 fusion, C4 ASPP, a VGG-style
depth branch with its own ASPP, the encoding E_f, and the four heads (ξ̂, η̂, foreground mask, B̂).

Everything is written here (no torchvision). Tensors are NCHW float32; the camera is the optical frame
(x right, y down, z forward), metres.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import BACKBONES, LossConfig, ModelConfig

RGB_MEAN = (0.485, 0.456, 0.406)
RGB_STD = (0.229, 0.224, 0.225)
#: Window sizes (pixels) of the normalised-convolution hole filling, finest first.
FILL_SCALES = (4, 16, 64)


def _norm(c: int) -> nn.Module:
    return nn.BatchNorm2d(c)


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, bias=False), _norm(cout),
                         nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = _norm(planes)
        self.conv2 = nn.Conv2d(planes, cout, 3, 1, 1, bias=False)
        self.bn2 = _norm(cout)
        self.down = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(cout))
                     if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.down is None else self.down(x)), inplace=True)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = _norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = _norm(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = _norm(cout)
        self.down = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(cout))
                     if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = F.relu(self.bn2(self.conv2(y)), inplace=True)
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.down is None else self.down(x)), inplace=True)


class ResNetEncoder(nn.Module):
    """ResNet (He et al.) returning the 1/4, 1/8 ("C1" in the paper) and 1/32 ("C4") feature maps."""

    def __init__(self, in_channels: int, backbone: str, base_width: int) -> None:
        super().__init__()
        kind, depths = BACKBONES[backbone]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.stem = nn.Sequential(nn.Conv2d(in_channels, base_width, 7, 2, 3, bias=False), _norm(base_width),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], base_width
        for i, n in enumerate(depths):
            planes = base_width * 2 ** i
            blocks = []
            for j in range(n):
                blocks.append(block(cin, planes, stride=2 if (j == 0 and i > 0) else 1))
                cin = planes * block.expansion
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.channels = tuple(base_width * 2 ** i * block.expansion for i in range(4))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c0 = self.layer1(self.stem(x))
        c1 = self.layer2(c0)
        c4 = self.layer4(self.layer3(c1))
        return c0, c1, c4


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (Chen et al.): 1x1 + dilated 3x3 branches + image pooling, fused by 1x1."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...]) -> None:
        super().__init__()
        self.branches = nn.ModuleList([conv_bn_relu(cin, cout, 1)] +
                                      [conv_bn_relu(cin, cout, 3, dilation=r) for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True))
        self.project = conv_bn_relu(cout * (len(rates) + 2), cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        outs.append(self.pool(x).expand(-1, -1, x.shape[2], x.shape[3]))
        return self.project(torch.cat(outs, 1))


class DepthVGG(nn.Module):
    """VGG-style depth encoder: stacks of 3x3 conv + max-pool down to 1/8 resolution."""

    def __init__(self, cin: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        w0, w1, w2, w3 = widths
        self.body = nn.Sequential(
            conv_bn_relu(cin, w0), nn.MaxPool2d(2),
            conv_bn_relu(w0, w1), nn.MaxPool2d(2),
            conv_bn_relu(w1, w2), conv_bn_relu(w2, w2), nn.MaxPool2d(2),
            conv_bn_relu(w2, w3), conv_bn_relu(w3, w3))
        self.channels = w3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _up(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def fill_depth_holes(depth: torch.Tensor, fallback: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill invalid depth by normalised box filters of growing size.

    Args:
        depth: float (B, 1, H, W) metres, <= 0 or non-finite = invalid. fallback: metres, used where no
            valid pixel is within the largest window.
    Returns:
        (filled depth (B, 1, H, W) metres, valid mask (B, 1, H, W) float 0/1 of the original).
    """
    depth = torch.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0)
    valid = (depth > 0).to(depth.dtype)
    filled = depth.clone()
    have = valid.clone()
    h, w = depth.shape[-2:]
    for s in FILL_SCALES:
        k = min(s, h, w)
        num = F.avg_pool2d(depth * valid, k, k, ceil_mode=True)
        den = F.avg_pool2d(valid, k, k, ceil_mode=True)
        est = F.interpolate(num / den.clamp_min(1e-6), size=(h, w), mode="nearest")
        est_ok = F.interpolate((den > 0).to(depth.dtype), size=(h, w), mode="nearest")
        take = (have < 0.5) & (est_ok > 0.5)
        filled = torch.where(take, est, filled)
        have = torch.maximum(have, take.to(depth.dtype))
    filled = torch.where(have > 0.5, filled, torch.full_like(filled, fallback))
    return filled, valid


def backproject_torch(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) depth metres + (B, 3, 3) intrinsics -> (B, 3, H, W) camera-frame points, metres."""
    b, _, h, w = depth.shape
    u = torch.arange(w, device=depth.device, dtype=depth.dtype).view(1, 1, 1, w)
    v = torch.arange(h, device=depth.device, dtype=depth.dtype).view(1, 1, h, 1)
    K = K.to(depth.dtype)
    fx, fy = K[:, 0, 0].view(b, 1, 1, 1), K[:, 1, 1].view(b, 1, 1, 1)
    cx, cy = K[:, 0, 2].view(b, 1, 1, 1), K[:, 1, 2].view(b, 1, 1, 1)
    x = (u - cx) / fx * depth
    y = (v - cy) / fy * depth
    return torch.cat([x, y, depth], 1)


class ClusterNetModel(nn.Module):
    """The network of Fig. 4. ``forward(inputs)`` -> raw predictions; see :meth:`forward`."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        bw = cfg.base_width
        self.rgb_enc = ResNetEncoder(3, cfg.backbone, bw)
        ch = self.rgb_enc.channels
        c1_in, c4_in, c0_in = ch[1], ch[3], ch[0]
        if cfg.use_xyz:
            self.xyz_enc = ResNetEncoder(4, cfg.backbone, bw)      # xyz + validity
            c1_in, c4_in, c0_in = 2 * ch[1], 2 * ch[3], 2 * ch[0]
        self.c1_fuse = conv_bn_relu(c1_in, cfg.c1_channels, 1)
        self.c4_aspp = ASPP(c4_in, cfg.aspp_channels, cfg.aspp_rates)
        ef = cfg.c1_channels + cfg.aspp_channels
        if cfg.use_depth:
            self.depth_enc = DepthVGG(2, cfg.depth_widths)       # depth + validity
            self.depth_aspp = ASPP(self.depth_enc.channels, cfg.aspp_channels, cfg.depth_aspp_rates)
            ef += cfg.aspp_channels
        dc = cfg.decoder_channels
        self.skip = conv_bn_relu(c0_in, dc // 2, 1)
        self.dec8 = conv_bn_relu(ef, dc)
        self.dec4 = nn.Sequential(conv_bn_relu(dc + dc // 2, dc), conv_bn_relu(dc, dc))
        self.centroid_head = nn.Conv2d(dc, 2, 1)
        self.mask_head = nn.Conv2d(dc, 2, 1)
        self.xi_up2 = conv_bn_relu(dc, dc // 2)
        self.xi_up1 = conv_bn_relu(dc // 2 + 4 * int(cfg.xi_residual and cfg.use_xyz), dc // 4)
        self.xi_head = nn.Conv2d(dc // 4, cfg.feature_dim, 1)
        self.radius_head = nn.Sequential(conv_bn_relu(cfg.aspp_channels, dc), nn.Conv2d(dc, 1, 1))
        nn.init.zeros_(self.xi_head.weight)
        nn.init.zeros_(self.xi_head.bias)

    def prepare(self, rgb: torch.Tensor, depth: torch.Tensor, K: torch.Tensor) -> dict[str, torch.Tensor]:
        """Network inputs from raw tensors already at the network resolution.

        Args:
            rgb: uint8 or float 0..255 (B, 3, H, W). depth: float (B, 1, H, W) metres, 0 = invalid.
            K: (B, 3, 3) intrinsics at this resolution.
        Returns:
            dict rgb (normalised), depth (filled, normalised), valid (0/1), xyz (filled, metres).
        """
        c = self.cfg
        x = rgb.float() / 255.0
        mean = torch.tensor(RGB_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(RGB_STD, device=x.device).view(1, 3, 1, 1)
        filled, valid = fill_depth_holes(depth.float(), c.depth_mean)
        xyz = backproject_torch(filled, K.float())
        return {"rgb": (x - mean) / std, "depth": (filled - c.depth_mean) / c.depth_std, "valid": valid,
                "xyz": xyz}

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Raw predictions.

        Args:
            inputs: the dict of :meth:`prepare` ((B, C, H, W) tensors).
        Returns:
            dict "xi" (B, D, H, W) ξ̂ metres (D = 3 or 9), "centroid_logits" (B, 2, H, W),
            "mask_logits" (B, 2, H, W), "radius" (B, 1, H, W) B̂ metres (> 0).
        """
        c = self.cfg
        h, w = inputs["rgb"].shape[-2:]
        r0, r1, r4 = self.rgb_enc(inputs["rgb"])
        if c.use_xyz:
            xyz_n = inputs["xyz"].clone()
            xyz_n[:, 2:3] = xyz_n[:, 2:3] - c.depth_mean
            xyz_n = torch.cat([xyz_n / c.depth_std, inputs["valid"]], 1)
            x0, x1, x4 = self.xyz_enc(xyz_n)
            r0, r1, r4 = torch.cat([r0, x0], 1), torch.cat([r1, x1], 1), torch.cat([r4, x4], 1)
        c1f = self.c1_fuse(r1)
        s8 = c1f.shape[-2:]
        c4f = _up(self.c4_aspp(r4), s8)
        parts = [c1f, c4f]
        if c.use_depth:
            d = self.depth_enc(torch.cat([inputs["depth"], inputs["valid"]], 1))
            parts.append(_up(self.depth_aspp(d), s8))
        ef = torch.cat(parts, 1)
        skip = self.skip(r0)
        f4 = self.dec4(torch.cat([_up(self.dec8(ef), skip.shape[-2:]), skip], 1))
        centroid = _up(self.centroid_head(f4), (h, w))
        mask = _up(self.mask_head(f4), (h, w))
        f2 = self.xi_up2(_up(f4, ((h + 1) // 2, (w + 1) // 2)))
        f1 = _up(f2, (h, w))
        residual = c.xi_residual and c.use_xyz
        parts = [f1]
        if residual:
            xyz_n = inputs["xyz"].clone()
            xyz_n[:, 2:3] = xyz_n[:, 2:3] - c.depth_mean
            parts += [xyz_n / c.depth_std, inputs["valid"]]
        if isinstance(self.xi_up1, SplitInputConv):   # export form: no full-resolution concatenation
            up1 = self.xi_up1(f1, torch.cat(parts[1:], 1)) if residual else self.xi_up1(f1)
        else:
            up1 = self.xi_up1(torch.cat(parts, 1) if residual else f1)
        offset = self.xi_head(up1) * c.offset_scale
        if residual:
            base = inputs["xyz"].repeat(1, c.feature_dim // 3, 1, 1)
            xi = base + offset
        else:
            xi = offset + torch.tensor([0.0, 0.0, c.depth_mean] * (c.feature_dim // 3),
                                       device=offset.device).view(1, -1, 1, 1)
        radius = _up(F.softplus(self.radius_head(c4f)) * c.radius_scale, (h, w))
        return {"xi": xi, "centroid_logits": centroid, "mask_logits": mask, "radius": radius}


class ClusterNet(nn.Module):
    """Network + object-centric loss. ``forward(inputs, targets)`` returns the dict of loss terms in
    training mode and the raw predictions (with probabilities) in eval mode."""

    def __init__(self, cfg: ModelConfig, loss_cfg: LossConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.loss_cfg = loss_cfg or LossConfig()
        self.net = ClusterNetModel(cfg)
        self.lam_var, self.lam_vio = self.loss_cfg.lam_var, self.loss_cfg.lam_vio

    def set_step(self, step: int) -> None:
        """Apply the λ_var / λ_vio schedule for this training step."""
        self.lam_var, self.lam_vio = self.loss_cfg.weights_at(step)

    def forward(self, inputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor] | None = None):
        pred = self.net(inputs)
        if self.training:
            if targets is None:
                raise RuntimeError("ClusterNet in training mode needs targets; call .eval() for inference")
            from .loss import clusternet_loss
            return clusternet_loss(pred, targets, self.loss_cfg, self.lam_var, self.lam_vio)
        pred["centroid_prob"] = class1_probability(pred["centroid_logits"])
        pred["fg_prob"] = class1_probability(pred["mask_logits"])
        return pred


def class1_probability(logits: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) two-class logits -> (B, H, W) softmax probability of class 1; a (B, 1, H, W) tensor is taken
    as the logit difference (class 1 - class 0) of the export form, for which that probability is its sigmoid."""
    if logits.shape[1] == 1:
        return torch.sigmoid(logits[:, 0])
    return logits.softmax(1)[:, 1]


class SplitInputConv(nn.Module):
    """conv -> BatchNorm (eval) -> ReLU over the concatenation of two inputs, computed without concatenating them:
    the convolution is linear in its input channels, so conv(cat(a, b)) = conv_a(a) + conv_b(b) with the weight
    split along its input channels; BatchNorm's eval-mode affine map is folded into both (bias on the first).
    Same function up to float32 rounding (summation order)."""

    def __init__(self, seq: nn.Sequential, split: int) -> None:
        super().__init__()
        conv, bn = seq[0], seq[1]
        if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and conv.groups == 1):
            raise TypeError("SplitInputConv folds a conv_bn_relu block (Conv2d without groups, BatchNorm2d, ReLU)")
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        w = conv.weight.detach() * scale.view(-1, 1, 1, 1)
        b = bn.bias.detach() - bn.running_mean * scale
        if conv.bias is not None:
            b = b + conv.bias.detach() * scale
        kw = dict(kernel_size=conv.kernel_size, stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                  dtype=conv.weight.dtype, device=conv.weight.device)
        self.split = int(split)
        self.conv_a = nn.Conv2d(self.split, conv.out_channels, bias=True, **kw)
        self.conv_a.weight.data.copy_(w[:, :self.split])
        self.conv_a.bias.data.copy_(b)
        self.conv_b = None
        if conv.in_channels > self.split:
            self.conv_b = nn.Conv2d(conv.in_channels - self.split, conv.out_channels, bias=False, **kw)
            self.conv_b.weight.data.copy_(w[:, self.split:])

    def forward(self, a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        y = self.conv_a(a)
        if self.conv_b is not None:
            y = y + self.conv_b(b)
        return torch.relu(y)


def _difference_head(head: nn.Conv2d) -> nn.Conv2d:
    """A two-output 1x1 conv -> one output, its class-1 minus class-0 logit (softmax over two classes is the
    sigmoid of that difference; bilinear upsampling is linear, so it commutes with the difference)."""
    w = head.weight.detach()
    out = nn.Conv2d(head.in_channels, 1, head.kernel_size, head.stride, head.padding, bias=True, dtype=w.dtype,
                    device=w.device)
    out.weight.data.copy_(w[1:2] - w[0:1])
    bias = head.bias.detach() if head.bias is not None else w.new_zeros(2)
    out.bias.data.copy_(bias[1:2] - bias[0:1])
    return out


def export_form(model: ClusterNet) -> ClusterNet:
    """An eval-mode copy of ``model`` computing the same outputs with less memory traffic, for graph runtimes.

    Two rewrites, both exact up to float32 rounding: the full-resolution ξ̂ layer over cat(features, xyz,
    validity) becomes two convolutions summed (:class:`SplitInputConv`: no (C + 4, H, W) concatenation, which in
    ONNX Runtime's blocked layout also costs two layout reorders), and the centroid / mask heads predict their
    logit difference, upsampled as one channel and passed through a sigmoid instead of a two-channel softmax at
    full resolution. Measured by ONNX Runtime's profiler on the lite model at 480 x 640, one thread: these
    operators took ~80 of 516 ms. The copy is for inference only (the loss needs the two-class logits).
    """
    import copy

    net = copy.deepcopy(model).eval()
    m = net.net
    if not isinstance(m.xi_up1, SplitInputConv):
        m.xi_up1 = SplitInputConv(m.xi_up1, m.xi_up2[0].out_channels)
    for name in ("centroid_head", "mask_head"):
        head = getattr(m, name)
        if head.out_channels == 2:
            setattr(m, name, _difference_head(head))
    return net
