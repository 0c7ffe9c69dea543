"""Firing-rate monitor and operation counting against hand computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from monai_medspike.metrics import E_AC, E_MAC, FiringRateMonitor, count_operations, is_spike_tensor
from monai_medspike.networks.blocks import AttentionProducts
from monai_medspike.networks.layers import get_neuron_layer
from tests.helpers import small_net


class Heaviside(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > 0).float()


def two_layer_net() -> nn.Sequential:
    first = nn.Conv2d(1, 2, kernel_size=3, padding=1, bias=False)
    second = nn.Conv2d(2, 1, kernel_size=1, bias=False)
    with torch.no_grad():
        first.weight.zero_()
        first.weight[0, 0, 1, 0], first.weight[1, 0, 1, 0] = 1.0, -1.0  # out(i, j) = +-in(i, j - 1)
        second.weight.fill_(1.0)
    return nn.Sequential(first, Heaviside(), second)


def test_two_layer_counts_equal_a_hand_computation():
    # first conv: channel 0 copies the pixel to the left (+), channel 1 its negative; 4x4 image
    image = torch.tensor([[0.5, -1.0, 2.0, 0.0], [1.0, 1.0, -3.0, 0.2], [0.0, 0.0, 0.0, 0.0], [-1.0, 2.0, 0.1, 0.3]])
    report = count_operations(two_layer_net(), image.view(1, 1, 4, 4))
    first, second = report.layers
    # conv1 on real input: 2 output channels x 16 pixels x (1 input channel x 3 x 3 kernel) MACs
    assert (first.input, first.macs, first.sops) == ("real", 2 * 16 * 9, 0.0)
    # the spikes: the column-shifted image > 0 (channel 0) and < 0 (channel 1), zero padding at the left edge
    shifted = torch.nn.functional.pad(image, (1, 0))[:, :4]
    rate = float(((shifted > 0).sum() + (shifted < 0).sum()) / 32)
    assert second.input == "spikes" and second.firing_rate == pytest.approx(rate)
    # conv2 (1x1, 2 -> 1): 16 outputs x 2 inputs = 32 dense operations, of which rate x 32 are accumulates
    assert second.macs == 32 and second.sops == pytest.approx(rate * 32)
    assert report.macs == 2 * 16 * 9 and report.sops == pytest.approx(rate * 32)
    assert report.energy == pytest.approx(E_MAC * 288 + E_AC * rate * 32)
    assert report.dense_macs == 288 + 32


def test_counts_are_per_image_and_constants_can_be_overridden():
    net = two_layer_net()
    one = count_operations(net, torch.ones(1, 1, 4, 4))
    three = count_operations(net, torch.ones(3, 1, 4, 4), e_mac=1.0, e_ac=0.5)
    assert three.macs == one.macs and three.sops == pytest.approx(one.sops)
    assert three.energy == pytest.approx(one.macs * 1.0 + one.sops * 0.5)


class Operands(nn.Module):
    """Feeds a stacked (3, heads, d, N) tensor to an attention module as q, k, v."""

    def __init__(self, attention: AttentionProducts) -> None:
        super().__init__()
        self.attention = attention

    def forward(self, x: torch.Tensor) -> dict:
        return self.attention(x[0], x[1], x[2])


def test_attention_products_are_counted_on_their_spike_inputs():
    torch.manual_seed(0)
    d, n = 4, 6
    q, k, v = ((torch.rand(1, 2, d, n) < p).float() for p in (0.5, 0.3, 0.25))
    report = count_operations(Operands(AttentionProducts(method="fused")), torch.stack([q, k, v]))
    rows = {layer.name.split(".")[-1]: layer for layer in report.layers}
    heads = 2 / 3  # two heads, divided by the "batch" of three stacked operands
    assert rows["qk"].macs == pytest.approx(heads * d * d * n)
    assert rows["qk"].sops == pytest.approx(float(q.mean()) * heads * d * d * n)
    assert rows["qkv"].sops == pytest.approx(float(v.mean()) * heads * d * d * n)
    assert rows["kv"].macs == pytest.approx(heads * d * n) and rows["kv"].input == "spikes"
    assert rows["rank1"].input == "real" and rows["rank1"].macs == pytest.approx(2 * heads * d * n)
    # the direct form: two products per term
    direct = count_operations(Operands(AttentionProducts(method="direct")), torch.stack([q, k, v]))
    assert len(direct.layers) == 8 and all(layer.input == "spikes" for layer in direct.layers)
    # real-valued operands (the ANN twin) are all multiply-accumulates
    real = count_operations(Operands(AttentionProducts()), torch.stack([q * 0.5, k, v]) + 0.1)
    assert real.sops == 0 and real.macs == real.dense_macs


def test_zero_input_spikes_give_zero_rate_and_no_operations():
    net = two_layer_net()
    with torch.no_grad():
        net[0].weight.zero_()
    report = count_operations(net, torch.rand(2, 1, 4, 4))
    assert report.layers[1].firing_rate == 0.0 and report.sops == 0.0
    lif = get_neuron_layer("lif")
    with FiringRateMonitor(nn.Sequential(lif)) as monitor:
        lif(torch.zeros(4, 2, 3))
    assert monitor.rates()["0"].tolist() == [0.0] * 4


def test_monitor_rates_per_time_step_match_the_neuron_dynamics(device):
    # tau 2, threshold 1: constant input 1.5 spikes at steps 2 and 4 (H = 0.75, 1.125, 0.75, 1.125)
    net = nn.Sequential(get_neuron_layer("lif")).to(device)
    with FiringRateMonitor(net) as monitor:
        x = torch.cat([torch.full((4, 1, 2), 1.5), torch.zeros(4, 1, 2)], dim=1).to(device)
        net(x)  # half the neurons silent
    torch.testing.assert_close(monitor.rates()["0"], torch.tensor([0.0, 0.5, 0.0, 0.5], dtype=torch.float64))
    assert monitor.mean_rates()["0"] == pytest.approx(0.25)
    assert monitor.totals() == (4.0, 16)


def test_the_spiking_network_counts_spikes_where_its_layers_receive_them(device):
    torch.manual_seed(0)
    net = small_net(in_channels=1).to(device)
    report = count_operations(net, torch.rand(2, 1, 32, 32, device=device))
    kinds = {layer.name: layer.input for layer in report.layers}
    assert kinds["stages.0.embed.module.0"] == "real"  # the image itself
    assert kinds["stages.0.attention.term_convs.aa.pointwise.module"] == "spikes"  # after a neuron
    assert any(name.endswith("attention.attention.qk") for name in kinds)
    twin = count_operations(small_net(in_channels=1, spiking=False, time_steps=1), torch.rand(2, 1, 32, 32))
    assert twin.sops == 0 and all(layer.input == "real" for layer in twin.layers)

    # the spiking net does the twin's dense work at each of its T=2 steps, except the encoding (the first embedding
    # runs once, on the image) and the head (once, after the mean over T)
    def macs(r, layers):
        return sum(layer.macs for layer in r.layers if layer.name.startswith(layers))

    once = ("head.", "stages.0.embed.")
    assert macs(report, "stages.0.embed.") == macs(twin, "stages.0.embed.") > 0
    assert report.dense_macs - macs(report, once) == pytest.approx(2 * (twin.dense_macs - macs(twin, once)))


def test_spike_tensors_are_recognised_by_value():
    assert is_spike_tensor(torch.tensor([0.0, 1.0, 1.0])) and is_spike_tensor(torch.zeros(3))
    assert not is_spike_tensor(torch.tensor([0.0, 0.5]))
    with pytest.raises(ValueError, match="batch"):
        count_operations(two_layer_net(), torch.rand(4, 4))
