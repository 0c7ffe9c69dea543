"""Convolution blocks shared by the encoder, the attention block and the decoder.

Every block takes and returns ``(T, B, C, H, W)`` tensors. Stateless layers (convolution, batch norm) see
``T * B`` images at once; spiking neurons see the time axis.

Blocks take ``spike_driven``: False builds the published layout (some convolutions read real values: batch-norm
outputs, residual sums); True puts a neuron before every convolution that would otherwise read real values, so that
every convolution reads spikes (0/1), as in Spike-driven Transformer's membrane shortcuts. In the ANN twin the
neurons are GELUs either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from monai_medspike.networks.layers import DEFAULT_NEURON, TimeDistributed, get_activation

__all__ = ["ConvBN", "DSConv", "SpikingMLP", "neuron_before"]

NeuronSpec = str | tuple[str, Mapping[str, Any]]


def conv_bn(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1, bias: bool = True
) -> nn.Sequential:
    """``Conv2d`` (same padding for odd kernels) followed by ``BatchNorm2d``, on ``(N, C, H, W)``."""
    return nn.Sequential(
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size=kernel_size,
            stride=stride,
            padding=(kernel_size - 1) // 2 if stride == 1 else 0,
            groups=groups,
            bias=bias,
        ),
        nn.BatchNorm2d(out_channels),
    )


def neuron_before(module: nn.Module, neuron: NeuronSpec, spiking: bool) -> nn.Sequential:
    """``module`` preceded by a neuron (a GELU in the ANN twin), so that it reads spikes: ``(T, B, ...)`` in and out."""
    return nn.Sequential(get_activation(neuron, spiking, "gelu"), module)


class ConvBN(TimeDistributed):
    """Convolution + batch norm applied to every time step.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd kernel for stride 1 (same padding); with ``stride > 1`` no padding is used, so a
            ``kernel_size == stride`` convolution is a patch-merging downsampler.
        stride: convolution stride.
        groups: convolution groups (``in_channels`` for a depthwise convolution).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__(conv_bn(in_channels, out_channels, kernel_size, stride, groups))


class DSConv(nn.Module):
    """Depthwise-separable spiking convolution: depthwise conv -> BN -> neuron -> pointwise conv.

    The output is real-valued (the pointwise convolution is not followed by a neuron), as in the published
    design. In the ANN twin the neuron is a GELU. With ``spike_driven`` a neuron comes first, so the depthwise
    convolution reads spikes too.

    Args:
        channels: input and output channels.
        kernel_size: depthwise kernel size (odd).
        neuron: neuron specification (see :func:`monai_medspike.networks.layers.get_neuron_layer`).
        spiking: False builds the ANN twin.
        spike_driven: put a neuron before the depthwise convolution.

    Shapes:
        ``(T, B, C, H, W) -> (T, B, C, H, W)``.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        neuron: NeuronSpec = DEFAULT_NEURON,
        spiking: bool = True,
        spike_driven: bool = False,
    ) -> None:
        super().__init__()
        depthwise = ConvBN(channels, channels, kernel_size, groups=channels)
        self.depthwise = neuron_before(depthwise, neuron, spiking) if spike_driven else depthwise
        self.act = get_activation(neuron, spiking, "gelu")
        self.pointwise = TimeDistributed(nn.Conv2d(channels, channels, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.act(self.depthwise(x)))


class SpikingMLP(nn.Module):
    """Convolutional MLP: 1x1 conv -> BN -> depthwise conv -> BN -> neuron -> 1x1 conv.

    With ``spike_driven``: neuron -> 1x1 conv -> BN -> neuron -> depthwise conv -> BN -> neuron -> 1x1 conv.

    Args:
        in_channels: input channels.
        out_channels: output (and hidden) channels.
        kernel_size: depthwise kernel size (odd).
        neuron: neuron specification.
        spiking: False builds the ANN twin (GELU).
        spike_driven: a neuron before each of the first two convolutions as well.

    Shapes:
        ``(T, B, C_in, H, W) -> (T, B, C_out, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        neuron: NeuronSpec = DEFAULT_NEURON,
        spiking: bool = True,
        spike_driven: bool = False,
    ) -> None:
        super().__init__()
        pointwise = conv_bn(in_channels, out_channels, 1)
        depthwise = conv_bn(out_channels, out_channels, kernel_size, groups=out_channels)
        if spike_driven:
            self.expand = nn.Sequential(
                neuron_before(TimeDistributed(pointwise), neuron, spiking),
                neuron_before(TimeDistributed(depthwise), neuron, spiking),
            )
        else:
            self.expand = TimeDistributed(nn.Sequential(*pointwise, *depthwise))
        self.act = get_activation(neuron, spiking, "gelu")
        self.project = TimeDistributed(nn.Conv2d(out_channels, out_channels, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.act(self.expand(x)))
