from __future__ import annotations

from .and_attention import (
    INTERACTIONS,
    AllNeuronSelfAttention,
    AttentionProducts,
    all_neuron_attention,
    check_interactions,
)
from .convolutions import ConvBN, DSConv, SpikingMLP
from .decoder import DecoderBlock, ResidualDSConv
from .embedding import PatchDownsample, PatchEmbedding
from .encoder import EncoderStage
from .heads import SegmentationHead, SideMaskHead

__all__ = [
    "INTERACTIONS",
    "AllNeuronSelfAttention",
    "AttentionProducts",
    "ConvBN",
    "DSConv",
    "DecoderBlock",
    "EncoderStage",
    "PatchDownsample",
    "PatchEmbedding",
    "ResidualDSConv",
    "SegmentationHead",
    "SideMaskHead",
    "SpikingMLP",
    "all_neuron_attention",
    "check_interactions",
]
