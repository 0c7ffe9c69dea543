"""Output heads: the segmentation head and the per-stage side mask heads used for distribution alignment.

Both average over the time axis (rate decoding) and return LOGITS: sigmoid/softmax belong to the loss and to
post-processing.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from monai_medspike.networks.blocks.convolutions import conv_bn

__all__ = ["SegmentationHead", "SideMaskHead"]


class SegmentationHead(nn.Module):
    """Mean over T -> 3x3 conv + BN -> 1x1 conv to ``out_channels`` logits.

    Shapes:
        ``(T, B, C, H, W) -> (B, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.merge = conv_bn(in_channels, in_channels, kernel_size)
        self.classifier = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.merge(x.mean(dim=0)))


class SideMaskHead(nn.Module):
    """Mean over T -> depthwise conv + BN -> 1x1 conv + BN -> 1x1 conv to ``out_channels`` logits.

    Used on each encoder stage for the distribution-alignment loss (the coarse mask of that stage).

    Shapes:
        ``(T, B, C, H, W) -> (B, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.merge = nn.Sequential(
            *conv_bn(in_channels, in_channels, kernel_size, groups=in_channels),
            *conv_bn(in_channels, in_channels, 1),
        )
        self.classifier = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.merge(x.mean(dim=0)))
