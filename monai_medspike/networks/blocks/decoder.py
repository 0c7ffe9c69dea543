"""Spiking decoder block of MedSpikeFormer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from monai_medspike.networks.blocks.convolutions import DSConv, conv_bn, neuron_before
from monai_medspike.networks.layers import DEFAULT_NEURON, TimeDistributed

__all__ = ["DecoderBlock", "ResidualDSConv"]


class ResidualDSConv(nn.Module):
    """Two residual spiking :class:`DSConv` layers, each followed by BN: ``x = BN(DSConv(x) + x)``, twice.

    ``spike_driven`` puts a neuron before each DSConv (a membrane shortcut: the residual sum stays real, the
    convolutions read spikes).

    Shapes:
        ``(T, B, C, H, W) -> (T, B, C, H, W)``.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        neuron: str | tuple[str, Mapping[str, Any]] = DEFAULT_NEURON,
        spiking: bool = True,
        spike_driven: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = DSConv(channels, kernel_size, neuron, spiking, spike_driven)
        self.norm1 = TimeDistributed(nn.BatchNorm2d(channels))
        self.conv2 = DSConv(channels, kernel_size, neuron, spiking, spike_driven)
        self.norm2 = TimeDistributed(nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(self.conv1(x) + x)
        return self.norm2(self.conv2(x) + x)


class DecoderBlock(nn.Module):
    """``x = BN(ResidualDSConv(x) + x)``, then bilinear x2 upsampling and a 3x3 conv + BN to ``out_channels``.

    The encoder skip is ADDED to the output by the network (not concatenated), so ``out_channels`` must equal the
    skip's channels. With ``spike_driven`` the upsampling reads spikes: a neuron, then a 2x2 stride-2 transposed
    convolution + BN (learned upsampling that reads the spikes at the low resolution: a ninth of the operations of
    upsampling the spikes and convolving them 3x3 at the high one).

    Shapes:
        ``(T, B, C_in, H, W) -> (T, B, C_out, 2H, 2W)``.
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
        super().__init__()
        self.refine = ResidualDSConv(in_channels, kernel_size, neuron, spiking, spike_driven)
        self.norm = TimeDistributed(nn.BatchNorm2d(in_channels))
        if spike_driven:  # a 2x2 stride-2 transposed conv on spikes: each input spike reaches 4 x out_channels outputs
            upsample = nn.Sequential(
                nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2), nn.BatchNorm2d(out_channels)
            )
            self.upsample = neuron_before(TimeDistributed(upsample), neuron, spiking)
        else:
            self.upsample = TimeDistributed(
                nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                    *conv_bn(in_channels, out_channels, kernel_size),
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.norm(self.refine(x) + x))
