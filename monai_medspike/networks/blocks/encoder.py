"""One encoder stage of MedSpikeFormer: embedding -> AND-SA -> (side mask) -> downsampling."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from monai_medspike.networks.blocks.and_attention import INTERACTIONS, AllNeuronSelfAttention
from monai_medspike.networks.blocks.convolutions import neuron_before
from monai_medspike.networks.blocks.embedding import PatchDownsample, PatchEmbedding
from monai_medspike.networks.blocks.heads import SideMaskHead
from monai_medspike.networks.layers import DEFAULT_NEURON
from monai_medspike.networks.layers.checkpointing import CheckpointedSegments

__all__ = ["EncoderStage"]


class EncoderStage(CheckpointedSegments, nn.Module):
    """Patch embedding (stride 1) -> :class:`AllNeuronSelfAttention` -> patch downsampling (x1/2).

    The side mask head reads the attention output (before downsampling) and is evaluated only on request.

    The stage may receive a single time step (``T = 1``, the image of the first stage): the embedding is then
    computed once and repeated ``time_steps`` times (``forward``'s argument), which gives the values of embedding
    ``T`` identical copies. With ``spike_driven`` a neuron precedes the embedding (except in the first stage, which
    reads the image: the encoding layer) and the downsampling, and the attention and side head are spike-driven.

    Args:
        in_channels: channels entering the stage.
        channels: the stage's width.
        out_channels: channels of the side mask logits (the segmentation classes).
        num_heads, neuron, spiking, interactions, kernel_size, faithful_layout, method, spike_driven: see
            :class:`AllNeuronSelfAttention`.
        encodes_image: the stage reads the image (the first stage): no neuron before its embedding.

    Shapes:
        ``(T, B, C_in, H, W) -> (T, B, C, H/2, W/2)``, and the side logits ``(B, out_channels, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        out_channels: int,
        num_heads: int = 4,
        neuron: str | tuple[str, Mapping[str, Any]] = DEFAULT_NEURON,
        spiking: bool = True,
        interactions: Sequence[str] = INTERACTIONS,
        kernel_size: int = 3,
        faithful_layout: bool = False,
        method: str = "fused",
        spike_driven: bool = False,
        encodes_image: bool = False,
    ) -> None:
        super().__init__()
        self.embed = PatchEmbedding(in_channels, channels, kernel_size)
        if spike_driven and not encodes_image:
            self.embed = neuron_before(self.embed, neuron, spiking)
        self.attention = AllNeuronSelfAttention(
            channels,
            num_heads=num_heads,
            neuron=neuron,
            spiking=spiking,
            interactions=interactions,
            kernel_size=kernel_size,
            faithful_layout=faithful_layout,
            method=method,
            spike_driven=spike_driven,
        )
        self.side_head = SideMaskHead(channels, out_channels, kernel_size, neuron, spiking, spike_driven)
        self.downsample = PatchDownsample(channels, channels)
        if spike_driven:
            self.downsample = neuron_before(self.downsample, neuron, spiking)

    def forward(
        self, x: torch.Tensor, with_side_output: bool = False, time_steps: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x``: ``(T, B, C_in, H, W)``, or ``(1, B, C_in, H, W)`` with ``time_steps``: the embedding is computed once
        and repeated to ``time_steps`` steps."""
        y = self.segment(self._embed, x, time_steps)
        y = self.attention(y)  # checkpoints its own segments
        side = self.segment(self.side_head, y) if with_side_output else None
        return self.segment(self.downsample, y), side

    def _embed(self, x: torch.Tensor, time_steps: int | None) -> torch.Tensor:
        y = self.embed(x)
        if time_steps is not None and y.shape[0] != time_steps:
            # T dense copies in the embedding's memory format (channels-last stays so): the fused LIF kernel wants it
            y = torch.cat([y[0]] * time_steps).unflatten(0, (time_steps, y.shape[1]))
        return y
