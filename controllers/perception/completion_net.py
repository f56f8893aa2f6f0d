"""A small encoder-decoder that maps a window crop to a per-pixel completion map (paper section III-C).

The paper uses a DSSD-inspired network that outputs a bounding box of the milling area and
a pixel-wise completion heatmap. Here the controller already knows where the window is (the
planned trajectory projected through its calibration), so there is no box regression: the
input is a fixed-size crop around the window (``completion_detector.crop_window``) and the
output is the completion map c(u, v) in [0, 1] over that crop (0 untouched bone, 1 cut
through), sampled at the trajectory points afterwards.

Architecture, sized for one CPU core at >= 72 Hz on a 128 x 128 crop:
- stem: one 3x3 convolution with stride 2 (the full-resolution level of a plain U-Net is
  half of its cost; the groove is ~25 px wide in the crop, so half resolution keeps >= 10 px
  across it);
- a U-Net of ``depth`` levels on the half-resolution features (two 3x3 conv + BatchNorm +
  ReLU per block, ``base_channels`` doubling per level, max-pool down, bilinear up with skip
  concatenation, the blocks of ``keypoint_net``);
- a 1x1 head, bilinearly upsampled to the input size. The network outputs logits;
  ``sigmoid(logits)`` is the completion map.

Input height and width must be divisible by 2 ** (depth + 1).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from controllers.perception.keypoint_net import conv_block, unet_pass


@dataclass(frozen=True)
class CompletionNetConfig:
    """Network shape: ``base_channels`` at the first (half-resolution) level, doubling for each
    of the ``depth`` levels below it."""

    in_channels: int = 3
    base_channels: int = 12
    depth: int = 3

    def __post_init__(self):
        if self.in_channels < 1 or self.base_channels < 1 or self.depth < 1:
            raise ValueError(f"CompletionNetConfig in_channels={self.in_channels}, base_channels="
                             f"{self.base_channels}, depth={self.depth}: all must be >= 1")

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2 ** (self.depth + 1)

    def to_dict(self) -> dict:
        return asdict(self)


class CompletionNet(nn.Module):
    def __init__(self, config: CompletionNetConfig):
        super().__init__()
        self.config = config
        c = [config.base_channels * 2 ** i for i in range(config.depth + 1)]
        self.stem = nn.Sequential(nn.Conv2d(config.in_channels, c[0], 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(c[0]), nn.ReLU(inplace=True))
        self.enc = nn.ModuleList([conv_block(c[0], c[0])] + [conv_block(c[i], c[i + 1]) for i in range(config.depth)])
        self.dec = nn.ModuleList([conv_block(c[i + 1] + c[i], c[i]) for i in reversed(range(config.depth))])
        self.head = nn.Conv2d(c[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, C, H, W) float in [0, 1]; returns (B, 1, H, W) logits of the completion map."""
        h, w = x.shape[-2:]
        m = self.config.size_multiple
        if h % m or w % m:
            raise ValueError(f"input {h} x {w} px: height and width must be multiples of {m}")
        x = unet_pass(self.enc, self.dec, self.stem(x))
        return F.interpolate(self.head(x), size=(h, w), mode="bilinear", align_corners=False)
