"""A small CNN that reads the remaining bone thickness under one groove point from a 32 x 32
camera crop, as fine-grained classes (``thickness_classes``) or, for the ablation, as one
regressed number (issue 15, after seed 000: depth as fine-grained classification with a
Fine-Grained Attention Fusion module and CrossNorm / SelfNorm feature augmentation).

Architecture (input (B, 3, 32, 32) BGR in [0, 1]):

- stem: 3x3 conv (stride 1) + BN + ReLU to ``base_channels`` at 32 x 32;
- three stages, each one stride-2 block: 32 -> 16 -> 8 -> 4 px, widths 2c, 4c, 8c
  (c = ``base_channels``);
- head: global average pool -> linear: ``n_classes`` logits, or one output, the thickness in
  units of 100 um (``REGRESSION_UNIT_M``) for ``head="regression"``.

``fgaf=True``: every stage block is an ``FGAF`` module (our reading of the abstract's
"multi-scale grouped convolution + attention"): three parallel grouped 3x3 convolutions with
dilations 1, 2, 3 (receptive fields 3, 5, 7 px at the cost of a 3x3; at 25.7 px/mm these span
the groove's wall, its floor and the bone beside it), each stride 2, BN + ReLU; concatenated;
channel attention (squeeze-and-excitation) then spatial attention (a 7x7 conv over the channel
mean and max, sigmoid); a 1x1 fusion conv + BN; plus a strided 1x1 projection of the input
(residual); ReLU. ``fgaf=False`` (the ablation): the same widths with a plain residual block
(3x3 stride-2 conv-BN-ReLU, 3x3 conv-BN, the same 1x1 projection, ReLU).

``crossnorm_selfnorm=True``: ``CrossNorm`` after the stem and after the first stage (training
only, probability 0.5 per batch) and ``SelfNorm`` after each stage (always on).

Cost: see ``benchmarks/thickness_speed.py`` (one CPU thread, batch 64).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from controllers.perception.thickness_classes import N_CLASSES

HEADS = ("classes", "regression")
REGRESSION_UNIT_M = 100e-6          # the regression head outputs thickness / REGRESSION_UNIT_M
_EPS = 1e-5


@dataclass(frozen=True)
class ThicknessNetConfig:
    base_channels: int = 16
    fgaf: bool = True
    crossnorm_selfnorm: bool = True
    head: str = "classes"
    n_classes: int = N_CLASSES

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"ThicknessNetConfig.head={self.head!r} is not one of {HEADS}")
        if self.base_channels < 4 or self.base_channels % 4:
            raise ValueError(f"ThicknessNetConfig.base_channels={self.base_channels}: must be a multiple of 4, >= 4")
        if self.n_classes < 2:
            raise ValueError(f"ThicknessNetConfig.n_classes={self.n_classes} must be >= 2")

    @property
    def n_outputs(self) -> int:
        return self.n_classes if self.head == "classes" else 1

    def to_dict(self) -> dict:
        return asdict(self)


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and standard deviation of (B, C, H, W), each (B, C, 1, 1)."""
    mu = x.mean(dim=(2, 3), keepdim=True)
    sigma = (x.var(dim=(2, 3), keepdim=True, unbiased=False) + _EPS).sqrt()
    return mu, sigma


class CrossNorm(nn.Module):
    """CrossNorm (Tang et al., ICCV 2021), the in-batch variant: in training, with probability
    ``p`` per batch, every sample's channel-wise instance mean and std are replaced by those of
    another sample of the batch (a random permutation): x' = (x - mu) / sigma * sigma[perm] +
    mu[perm]. The exchanged statistics carry style (brightness, contrast, tint of the render or
    the microscope), so the network learns to read the thickness from structure, not from a
    global colour. Identity in eval mode and for batches of one. Random draws use torch's global
    generator (seeded by the training)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.shape[0] < 2 or float(torch.rand(())) >= self.p:
            return x
        mu, sigma = channel_stats(x)
        perm = torch.randperm(x.shape[0], device=x.device)
        return (x - mu) / sigma * sigma[perm].detach() + mu[perm].detach()


class SelfNorm(nn.Module):
    """SelfNorm (Tang et al., ICCV 2021): each channel's instance mean and std are re-weighted
    by gates learned from the pair (mean, std) of that channel: g = sigmoid(w . [mu, sigma] + b)
    per channel (a depthwise 1-D convolution of kernel 2 over the pair, one for the mean's gate
    and one for the std's), then x' = (x - mu) / sigma * (sigma * g_std) + mu * g_mean. The gates
    start near 1 (bias 3, sigmoid 0.95), i.e. close to the identity. Active in training and eval."""

    def __init__(self, channels: int):
        super().__init__()
        self.gate_mean = nn.Conv1d(channels, channels, kernel_size=2, groups=channels)
        self.gate_std = nn.Conv1d(channels, channels, kernel_size=2, groups=channels)
        for conv in (self.gate_mean, self.gate_std):
            nn.init.normal_(conv.weight, std=0.1)
            nn.init.constant_(conv.bias, 3.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        mu, sigma = channel_stats(x)
        pair = torch.cat([mu.view(b, c, 1), sigma.view(b, c, 1)], dim=2)          # (B, C, 2)
        g_mean = torch.sigmoid(self.gate_mean(pair)).view(b, c, 1, 1)
        g_std = torch.sigmoid(self.gate_std(pair)).view(b, c, 1, 1)
        return (x - mu) / sigma * (sigma * g_std) + mu * g_mean


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation,
                                   groups=groups, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def _projection(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=2, bias=False), nn.BatchNorm2d(c_out))


class FGAF(nn.Module):
    """Fine-Grained Attention Fusion block, stride 2 (see the module docstring)."""

    DILATIONS = (1, 2, 3)

    def __init__(self, c_in: int, c_out: int, groups: int = 4, reduction: int = 4):
        super().__init__()
        branch = c_out // 2
        self.branches = nn.ModuleList([conv_bn_relu(c_in, branch, stride=2, groups=groups, dilation=d)
                                       for d in self.DILATIONS])
        cat = branch * len(self.DILATIONS)
        self.se = nn.Sequential(nn.Conv2d(cat, max(cat // reduction, 4), 1), nn.ReLU(inplace=True),
                                nn.Conv2d(max(cat // reduction, 4), cat, 1))
        self.spatial = nn.Conv2d(2, 1, 7, padding=3)
        self.fuse = nn.Sequential(nn.Conv2d(cat, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.skip = _projection(c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([b(x) for b in self.branches], dim=1)
        y = y * torch.sigmoid(self.se(y.mean(dim=(2, 3), keepdim=True)))                      # channel attention
        att = torch.cat([y.mean(dim=1, keepdim=True), y.amax(dim=1, keepdim=True)], dim=1)
        y = y * torch.sigmoid(self.spatial(att))                                               # spatial attention
        return F.relu(self.fuse(y) + self.skip(x))


class PlainBlock(nn.Module):
    """The ablation's stride-2 residual block of plain 3x3 convolutions."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(c_in, c_out, stride=2),
                                  nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.skip = _projection(c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class ThicknessNet(nn.Module):
    def __init__(self, config: ThicknessNetConfig = ThicknessNetConfig()):
        super().__init__()
        self.config = config
        c = config.base_channels
        widths = [c, 2 * c, 4 * c, 8 * c]
        self.stem = conv_bn_relu(3, c)
        block = FGAF if config.fgaf else PlainBlock
        self.stages = nn.ModuleList([block(widths[i], widths[i + 1]) for i in range(3)])
        cnsn = config.crossnorm_selfnorm
        self.crossnorm = nn.ModuleList([CrossNorm() if cnsn else nn.Identity() for _ in range(2)])
        self.selfnorm = nn.ModuleList([SelfNorm(w) if cnsn else nn.Identity() for w in widths[1:]])
        self.head = nn.Linear(widths[-1], config.n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, 3, 32, 32) float BGR in [0, 1]; returns (B, n_classes) logits, or (B,)
        thickness / ``REGRESSION_UNIT_M`` for the regression head."""
        x = self.crossnorm[0](self.stem(x))
        for i, stage in enumerate(self.stages):
            x = self.selfnorm[i](stage(x))
            if i == 0:
                x = self.crossnorm[1](x)
        out = self.head(x.mean(dim=(2, 3)))
        return out[:, 0] if self.config.head == "regression" else out
