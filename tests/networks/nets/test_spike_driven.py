"""The spike-driven layout of MedSpikeFormer: every weight layer but the encoding reads spikes."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from monai.networks.utils import convert_to_torchscript

from monai_medspike.handlers import recalibrate_batch_norm
from monai_medspike.metrics import count_operations
from monai_medspike.metrics.spiking import is_spike_tensor
from monai_medspike.networks.blocks import AttentionProducts
from monai_medspike.networks.layers import is_neuron
from monai_medspike.networks.nets import MedSpikeFormer
from monai_medspike.networks.nets.medspikeformer import SPIKE_DRIVEN_NEURON
from tests.helpers import SMALL, small_net

ENCODING = "stages.0.embed.module.0"  # the one layer that reads the image


def weight_layer_inputs(net: nn.Module, x: torch.Tensor, side_outputs: bool = False) -> dict[str, list[torch.Tensor]]:
    """The inputs of every convolution, linear layer and attention product (``name.q|k|v``) during one forward."""
    seen: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for name, module in net.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd | nn.Linear):
            hooks.append(module.register_forward_hook(lambda m, i, o, n=name: seen.setdefault(n, []).append(i[0])))
        if isinstance(module, AttentionProducts):

            def record(m, i, o, n=name):
                for operand, value in zip("qkv", i, strict=True):
                    seen.setdefault(f"{n}.{operand}", []).append(value)

            hooks.append(module.register_forward_hook(record))
    try:
        with torch.no_grad():
            net.forward_with_side_outputs(x) if side_outputs else net(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def train_briefly(net: MedSpikeFormer, steps: int = 12) -> MedSpikeFormer:
    """A few Adam steps on a learnable task (a bright square), so that the weights and firing rates move."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(steps):
        x = torch.rand(4, net.in_channels, 32, 32) * 0.2
        y = torch.zeros(4, 1, 32, 32)
        x[..., 8:24, 8:24] += 0.8
        y[..., 8:24, 8:24] = 1
        loss = nn.functional.binary_cross_entropy_with_logits(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


@pytest.mark.parametrize("trained", [False, True])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_every_weight_layer_but_the_encoding_reads_only_spikes(trained, mode):
    torch.manual_seed(1)
    net = small_net(in_channels=1, layout="spike_driven")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    if trained:
        train_briefly(net)
        assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())  # the weights did move
    x = torch.rand(2, 1, 32, 32)
    if mode == "eval":
        recalibrate_batch_norm(net, [torch.rand(4, 1, 32, 32)], num_batches=1)  # population statistics
    net.train(mode == "train")
    seen = weight_layer_inputs(net, x, side_outputs=True)
    convolutions = {n for n, m in net.named_modules() if isinstance(m, nn.modules.conv._ConvNd | nn.Linear)}
    assert convolutions <= set(seen)  # every convolution ran, the side heads' and the transposed ones too
    real = sorted(name for name, inputs in seen.items() if not all(is_spike_tensor(t) for t in inputs))
    assert real == [ENCODING]
    # not trivially silent: most layers receive spikes, and no layer is flooded
    rates = [float(t.float().mean()) for name, ts in seen.items() if name != ENCODING for t in ts]
    assert sum(r > 0 for r in rates) > 0.8 * len(rates) and max(rates) < 0.9


@pytest.mark.parametrize(
    "variant",
    [{"interactions": ("aa", "ai")}, {"attention": "ssa"}, {"faithful_layout": True}, {"attention_method": "direct"}],
)
def test_ablations_of_the_spike_driven_layout_read_only_spikes_too(variant):
    torch.manual_seed(2)
    net = small_net(in_channels=1, layout="spike_driven", **variant)
    seen = weight_layer_inputs(net, torch.rand(2, 1, 32, 32), side_outputs=True)
    assert {n for n, m in net.named_modules() if isinstance(m, nn.modules.conv._ConvNd)} <= set(seen)
    assert sorted(n for n, ts in seen.items() if not all(is_spike_tensor(t) for t in ts)) == [ENCODING]


def test_the_published_layout_feeds_real_values_to_many_layers():
    net = small_net(in_channels=1)
    net(torch.rand(4, 1, 32, 32))  # batch-norm statistics
    seen = weight_layer_inputs(net.eval(), torch.rand(2, 1, 32, 32))
    real = [n for n, ts in seen.items() if not all(is_spike_tensor(t) for t in ts)]
    assert ENCODING in real and len(real) > 10


def test_the_encoding_runs_once_on_the_image_for_both_layouts():
    for layout in ("published", "spike_driven"):
        net = small_net(in_channels=1, layout=layout).eval()
        seen = weight_layer_inputs(net, torch.rand(3, 1, 32, 32))
        assert [t.shape for t in seen[ENCODING]] == [(3, 1, 32, 32)]  # B images, not T x B
        # every later layer runs at every time step
        assert seen["stages.0.attention.to_q.0.module.0"][0].shape[0] == SMALL["time_steps"] * 3


@pytest.mark.parametrize("layout", ["published", "spike_driven"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_encoding_once_gives_the_values_and_gradients_of_encoding_every_step(layout, mode):
    """Against the previous form (the image repeated T times, then embedded at every step), in both modes."""
    torch.manual_seed(3)
    stage = small_net(in_channels=1, layout=layout).stages[0].train(mode == "train")
    x = torch.rand(2, 1, 32, 32)
    grads = []
    outputs = []
    for once in (True, False):
        stage.zero_grad()
        seq = x[None] if once else x[None].expand(SMALL["time_steps"], *x.shape)
        out, _ = stage(seq, time_steps=SMALL["time_steps"] if once else None)
        out.square().mean().backward()
        outputs.append(out.detach())
        grads.append(stage.embed.module[0].weight.grad.clone())
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "batch, in_ch, out_ch, h, w", [(1, 3, 1, 32, 32), (2, 1, 1, 48, 80), (2, 1, 3, 64, 48), (3, 3, 2, 16, 112)]
)
def test_shapes_and_side_outputs(batch, in_ch, out_ch, h, w):
    net = small_net(in_channels=in_ch, out_channels=out_ch, layout="spike_driven")
    x = torch.rand(batch, in_ch, h, w)
    assert net(x).shape == (batch, out_ch, h, w)
    logits, sides = net.forward_with_side_outputs(x)
    assert logits.shape == (batch, out_ch, h, w)
    assert [s.shape[-2:] for s in sides] == [(h // 2**i, w // 2**i) for i in range(len(SMALL["embed_dims"]))]


def test_state_is_reset_between_calls_and_freed_after():
    net = small_net(layout="spike_driven").eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        first = net(x)
        net(torch.rand(1, 3, 64, 32))  # another batch shape in between
        second = net(x)
    assert torch.equal(first, second) and first.std() > 0
    assert all(not isinstance(m.v, torch.Tensor) for m in net.modules() if is_neuron(m))


def test_gradients_reach_every_parameter_through_the_neurons():
    net = small_net(in_channels=1, layout="spike_driven")
    logits, sides = net.forward_with_side_outputs(torch.rand(2, 1, 32, 32))
    (logits.mean() + sum(s.mean() for s in sides)).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert net.stages[0].embed.module[0].weight.grad.abs().sum() > 0


def test_default_neuron_of_the_layout_and_an_explicit_one():
    net = small_net(layout="spike_driven")
    lif = next(m for m in net.modules() if is_neuron(m))
    assert (
        (lif.v_threshold, lif.v_reset)
        == (0.5, None)
        == (
            SPIKE_DRIVEN_NEURON[1]["v_threshold"],
            SPIKE_DRIVEN_NEURON[1]["v_reset"],
        )
    )
    published = next(m for m in small_net().modules() if is_neuron(m))
    assert (published.v_threshold, published.v_reset) == (1.0, 0.0)
    own = next(m for m in small_net(layout="spike_driven", neuron=("lif", {"tau": 3.0})).modules() if is_neuron(m))
    assert (own.tau, own.v_threshold) == (3.0, 1.0)


def test_ann_twin_is_the_same_layout_without_neurons():
    net = small_net(in_channels=1, layout="spike_driven")
    twin = net.ann_twin()
    assert twin.layout == "spike_driven" and not twin.spiking
    assert not any(is_neuron(m) for m in twin.modules())
    assert {k: v.shape for k, v in twin.state_dict().items()} == {
        k: v.shape for k, v in net.state_dict().items() if k.split(".")[-1] != "w"
    }
    # the twin loads the student's weights (initialising a student from a teacher works both ways)
    net.load_state_dict(twin.state_dict())
    assert twin(torch.rand(1, 1, 32, 32)).shape == (1, 1, 32, 32)


def test_layouts_do_not_load_each_others_weights():
    with pytest.raises(RuntimeError, match="Missing key"):
        small_net(layout="spike_driven").load_state_dict(small_net().state_dict())


def test_bad_layout_is_named():
    with pytest.raises(ValueError, match="layout must be one of .*'spike_driven'.*got 'spike'"):
        MedSpikeFormer(layout="spike")


def test_trace_export_matches_eager():
    net = small_net(in_channels=1, out_channels=2, layout="spike_driven")
    net(torch.rand(4, 1, 32, 32))
    net.eval()
    x = torch.rand(1, 1, 32, 32)
    ts = convert_to_torchscript(net, use_trace=True, verify=True, inputs=[x], device="cpu", rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        for other in (x, torch.rand(2, 1, 48, 32)):
            expected = net(other)
            assert expected.std() > 0
            torch.testing.assert_close(ts(other), expected, rtol=1e-4, atol=1e-5)


def test_operation_count_is_accumulates_except_the_encoding():
    torch.manual_seed(0)
    net = train_briefly(small_net(in_channels=1, layout="spike_driven"))
    x = torch.rand(2, 1, 32, 32)
    report = count_operations(net, x)
    real = {layer.name for layer in report.layers if layer.input == "real"}
    # the encoding, and the fused AND-SA's outer products of spike counts (rank-1 terms, heads x d x N each)
    assert real == {ENCODING} | {f"stages.{i}.attention.attention.rank1" for i in range(len(SMALL["embed_dims"]))}
    assert report.macs < 0.1 * report.dense_macs
    for layer in report.layers:  # the per-layer figures a hardware user checks: SOPs = rate x inputs x fan-out
        if layer.input == "spikes":
            assert layer.sops == pytest.approx(layer.firing_rate * layer.inputs * layer.fan_out, rel=1e-6)
    conv = next(layer for layer in report.layers if layer.name == "stages.0.attention.to_q.0.module.0")
    assert conv.fan_out == pytest.approx(9.0)  # depthwise 3x3: each input spike reaches 9 outputs
    assert conv.inputs == pytest.approx(SMALL["time_steps"] * SMALL["embed_dims"][0] * 32 * 32)
    neurons = sum(1 for m in net.modules() if is_neuron(m))
    assert report.neuron_updates > neurons * SMALL["time_steps"]  # every neuron updates at every step
    # the spiking network costs a fraction of its ANN twin's energy
    twin = count_operations(net.ann_twin(), x)
    assert report.energy < twin.energy
