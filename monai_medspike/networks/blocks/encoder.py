"""One encoder stage of MedSpikeFormer: embedding -> AND-SA -> (side mask) -> downsampling."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from monai_medspike.networks.blocks.and_attention import INTERACTIONS, AllNeuronSelfAttention
from monai_medspike.networks.blocks.embedding import PatchDownsample, PatchEmbedding
from monai_medspike.networks.blocks.heads import SideMaskHead
from monai_medspike.networks.layers import DEFAULT_NEURON

__all__ = ["EncoderStage"]


class EncoderStage(nn.Module):
    """Patch embedding (stride 1) -> :class:`AllNeuronSelfAttention` -> patch downsampling (x1/2).

    The side mask head reads the attention output (before downsampling) and is evaluated only on request.

    Args:
        in_channels: channels entering the stage.
        channels: the stage's width.
        out_channels: channels of the side mask logits (the segmentation classes).
        num_heads, neuron, spiking, interactions, kernel_size, faithful_layout, method: see
            :class:`AllNeuronSelfAttention`.

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
    ) -> None:
        super().__init__()
        self.embed = PatchEmbedding(in_channels, channels, kernel_size)
        self.attention = AllNeuronSelfAttention(
            channels,
            num_heads=num_heads,
            neuron=neuron,
            spiking=spiking,
            interactions=interactions,
            kernel_size=kernel_size,
            faithful_layout=faithful_layout,
            method=method,
        )
        self.side_head = SideMaskHead(channels, out_channels, kernel_size)
        self.downsample = PatchDownsample(channels, channels)

    def forward(self, x: torch.Tensor, with_side_output: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        y = self.attention(self.embed(x))
        side = self.side_head(y) if with_side_output else None
        return self.downsample(y), side
