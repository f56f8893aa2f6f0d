"""A small U-Net that maps an image to keypoint confidence maps (paper section III-A1).

The paper uses "a minor adjustment of U-Net" whose target is a Gaussian confidence map per
keypoint instead of a segmentation mask. This is the same idea, sized for one CPU core:
``depth`` down/up levels, ``base_channels`` doubling per level, two 3x3 conv + BatchNorm +
ReLU per block, bilinear upsampling with skip concatenation, a 1x1 head with one channel
per keypoint. The output has the input's height and width (both must be divisible by
2**depth; ``pad_to_multiple`` pads). The network outputs logits; ``sigmoid(logits)`` is the
confidence map, trained against Gaussian maps of peak 1 (see ``training`` for the loss).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
import torch.nn.functional as F


@dataclass(frozen=True)
class NetConfig:
    in_channels: int = 3
    out_channels: int = 1
    base_channels: int = 8
    depth: int = 3

    def to_dict(self) -> dict:
        return asdict(self)


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 conv + BatchNorm + ReLU layers, ``c_in`` -> ``c_out`` channels, same spatial size."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def unet_pass(enc: nn.ModuleList, dec: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    """The U-Net's encoder (max-pool down) and decoder (bilinear up, skip concatenation) on ``x``;
    returns the finest decoder features. Shared by the keypoint and completion networks."""
    skips = []
    for i, block in enumerate(enc):
        x = block(x if i == 0 else F.max_pool2d(x, 2))
        skips.append(x)
    x = skips.pop()
    for block in dec:
        skip = skips.pop()
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = block(torch.cat([x, skip], dim=1))
    return x


class KeypointUNet(nn.Module):
    def __init__(self, config: NetConfig):
        super().__init__()
        self.config = config
        c = [config.base_channels * 2 ** i for i in range(config.depth + 1)]
        self.enc = nn.ModuleList([conv_block(config.in_channels, c[0])]
                                 + [conv_block(c[i], c[i + 1]) for i in range(config.depth)])
        self.dec = nn.ModuleList([conv_block(c[i + 1] + c[i], c[i]) for i in reversed(range(config.depth))])
        self.head = nn.Conv2d(c[0], config.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, C, H, W) float in [0, 1]; returns (B, K, H, W) logits of the confidence maps."""
        return self.head(unet_pass(self.enc, self.dec, x))


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad (B, C, H, W) at the bottom/right so H and W are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return F.pad(x, (0, pw, 0, ph)) if ph or pw else x
