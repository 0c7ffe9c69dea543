"""Output heads: the segmentation head and the per-stage side mask heads used for distribution alignment.

Both average over the time axis (rate decoding) and return LOGITS: sigmoid/softmax belong to the loss and to
post-processing. In the published layout they average the input over time and convolve the average (real values);
with ``spike_driven`` a neuron precedes each convolution, the convolutions run at every time step on spikes, and the
logits are averaged over time (the same linear read-out of the spike counts).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from monai_medspike.networks.blocks.convolutions import conv_bn, neuron_before
from monai_medspike.networks.layers import DEFAULT_NEURON, TimeDistributed, time_mean

__all__ = ["SegmentationHead", "SideMaskHead"]


class _Head(nn.Module):
    """``merge`` then ``classifier``: on the time average (published), or per step on spikes, then averaged."""

    def __init__(
        self, units: list[nn.Sequential], classifier: nn.Module, neuron: Any, spiking: bool, spike_driven: bool
    ) -> None:
        super().__init__()
        self.spike_driven = spike_driven
        if spike_driven:  # a neuron before each conv + BN unit and before the classifier
            self.merge = nn.Sequential(*(neuron_before(TimeDistributed(u), neuron, spiking) for u in units))
            self.classifier = neuron_before(TimeDistributed(classifier), neuron, spiking)
        else:
            self.merge = nn.Sequential(*(m for u in units for m in u))
            self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spike_driven:
            return time_mean(self.classifier(self.merge(x)))
        return self.classifier(self.merge(time_mean(x)))


class SegmentationHead(_Head):
    """Mean over T -> 3x3 conv + BN -> 1x1 conv to ``out_channels`` logits.

    With ``spike_driven``: neuron -> 3x3 conv + BN -> neuron -> 1x1 conv at every step, then the mean over T.

    Shapes:
        ``(T, B, C, H, W) -> (B, out_channels, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        neuron: str | tuple[str, Mapping[str, Any]] = DEFAULT_NEURON,
        spiking: bool = True,
        spike_driven: bool = False,
    ) -> None:
        units = [conv_bn(in_channels, in_channels, kernel_size)]
        classifier = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        super().__init__(units, classifier, neuron, spiking, spike_driven)


class SideMaskHead(_Head):
    """Mean over T -> depthwise conv + BN -> 1x1 conv + BN -> 1x1 conv to ``out_channels`` logits.

    Used on each encoder stage for the distribution-alignment loss (the coarse mask of that stage). With
    ``spike_driven`` a neuron precedes each of the three convolutions, which run at every step; then the mean over T.

    Shapes:
        ``(T, B, C, H, W) -> (B, out_channels, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        neuron: str | tuple[str, Mapping[str, Any]] = DEFAULT_NEURON,
        spiking: bool = True,
        spike_driven: bool = False,
    ) -> None:
        units = [
            conv_bn(in_channels, in_channels, kernel_size, groups=in_channels),
            conv_bn(in_channels, in_channels, 1),
        ]
        classifier = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        super().__init__(units, classifier, neuron, spiking, spike_driven)
