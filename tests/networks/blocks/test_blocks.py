from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from monai_medspike.networks.blocks import (
    ConvBN,
    DecoderBlock,
    DSConv,
    EncoderStage,
    PatchDownsample,
    PatchEmbedding,
    ResidualDSConv,
    SegmentationHead,
    SideMaskHead,
    SpikingMLP,
)
from monai_medspike.networks.layers import TimeDistributed, encode_direct, is_neuron

T, B = 3, 2


def test_time_distributed_equals_per_step_application():
    conv = nn.Conv2d(4, 6, 3, padding=1)
    x = torch.randn(T, B, 4, 8, 8)
    out = TimeDistributed(conv)(x)
    assert out.shape == (T, B, 6, 8, 8)
    for t in range(T):
        torch.testing.assert_close(out[t], conv(x[t]))


def test_encode_direct_repeats_without_copy():
    x = torch.randn(B, 1, 4, 4)
    seq = encode_direct(x, 4)
    assert seq.shape == (4, B, 1, 4, 4)
    assert all(torch.equal(seq[t], x) for t in range(4))
    assert seq.data_ptr() == x.data_ptr()


@pytest.mark.parametrize(
    "block, c_in, out_shape",
    [
        (ConvBN(4, 8, 3), 4, (T, B, 8, 8, 12)),
        (PatchEmbedding(3, 8), 3, (T, B, 8, 8, 12)),
        (PatchDownsample(8, 16), 8, (T, B, 16, 4, 6)),
        (DSConv(8), 8, (T, B, 8, 8, 12)),
        (SpikingMLP(16, 8), 16, (T, B, 8, 8, 12)),
        (ResidualDSConv(8), 8, (T, B, 8, 8, 12)),
        (DecoderBlock(16, 8), 16, (T, B, 8, 16, 24)),
        (SegmentationHead(8, 3), 8, (B, 3, 8, 12)),
        (SideMaskHead(8, 2), 8, (B, 2, 8, 12)),
        (DSConv(8, spike_driven=True), 8, (T, B, 8, 8, 12)),
        (SpikingMLP(16, 8, spike_driven=True), 16, (T, B, 8, 8, 12)),
        (ResidualDSConv(8, spike_driven=True), 8, (T, B, 8, 8, 12)),
        (DecoderBlock(16, 8, spike_driven=True), 16, (T, B, 8, 16, 24)),
        (SegmentationHead(8, 3, spike_driven=True), 8, (B, 3, 8, 12)),
        (SideMaskHead(8, 2, spike_driven=True), 8, (B, 2, 8, 12)),
        (EncoderStage(8, 16, 1, num_heads=2, spike_driven=True), 8, (T, B, 16, 4, 6)),
    ],
)
def test_block_shapes(block, c_in, out_shape):
    out = block(torch.randn(T, B, c_in, 8, 12))
    assert (out[0] if isinstance(out, tuple) else out).shape == out_shape


def test_spike_driven_blocks_start_with_a_neuron_and_keep_the_published_names_otherwise():
    published, driven = SpikingMLP(8, 8), SpikingMLP(8, 8, spike_driven=True)
    assert sum(is_neuron(m) for m in driven.modules()) == 3 and sum(is_neuron(m) for m in published.modules()) == 1
    assert "expand.module.0.weight" in published.state_dict()  # checkpoints of the published layout still load
    spikes = []
    driven.expand[0][1].register_forward_hook(lambda m, i, o: spikes.append(i[0]))
    driven(torch.randn(T, B, 8, 4, 4) * 3)
    assert set(spikes[0].unique().tolist()) <= {0.0, 1.0}


def test_heads_average_over_time():
    head = SideMaskHead(4, 1)
    x = torch.randn(1, B, 4, 8, 8)
    # T copies of the same step average to that step
    torch.testing.assert_close(head(x.expand(T, -1, -1, -1, -1)), head(x))


@pytest.mark.parametrize("spiking", [True, False])
def test_dsconv_activation_follows_spiking_flag(spiking):
    block = DSConv(8, spiking=spiking)
    assert is_neuron(block.act) == spiking
    assert isinstance(block.act, nn.GELU) != spiking


def test_encoder_stage_side_output_on_request():
    stage = EncoderStage(3, 8, out_channels=2, num_heads=2)
    x = torch.randn(T, B, 3, 16, 16)
    y, side = stage(x)
    assert y.shape == (T, B, 8, 8, 8) and side is None
    y2, side = stage(x, with_side_output=True)
    assert side.shape == (B, 2, 16, 16)
