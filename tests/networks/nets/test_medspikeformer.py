from __future__ import annotations

import pytest
import torch
from monai.bundle import ConfigParser
from monai.networks.utils import convert_to_torchscript

from monai_medspike.networks.layers import is_neuron
from monai_medspike.networks.nets import MedSpikeFormer
from tests.helpers import SMALL, small_net


@pytest.mark.parametrize(
    "batch, in_ch, out_ch, h, w",
    [
        (1, 3, 1, 32, 32),
        (2, 1, 1, 48, 80),  # not square, not a power of two
        (3, 3, 2, 16, 112),  # the smallest valid height
        (2, 1, 3, 64, 48),  # background / ground-glass / consolidation
    ],
)
def test_output_shape(batch, in_ch, out_ch, h, w):
    net = small_net(in_channels=in_ch, out_channels=out_ch)
    out = net(torch.rand(batch, in_ch, h, w))
    assert out.shape == (batch, out_ch, h, w)
    assert torch.isfinite(out).all()


def test_default_configuration_builds_and_runs():
    net = MedSpikeFormer()
    assert net.embed_dims == (32, 64, 128, 256) and net.time_steps == 4 and net.in_channels == 3
    assert net.interactions == ("aa", "ii", "ai", "ia")
    with torch.no_grad():
        out = net(torch.rand(1, 3, 32, 48))
    assert out.shape == (1, 1, 32, 48)


def test_side_outputs_shapes_and_forward_stays_a_tensor():
    net = small_net(in_channels=1, out_channels=2)
    x = torch.rand(2, 1, 32, 48)
    logits, side = net.forward_with_side_outputs(x)
    assert logits.shape == (2, 2, 32, 48)
    assert [s.shape for s in side] == [(2, 2, 32 >> i, 48 >> i) for i in range(4)]
    for mode in (True, False):
        net.train(mode)
        assert isinstance(net(x), torch.Tensor)
    torch.testing.assert_close(net(x), net.forward_with_side_outputs(x)[0])


def test_spikes_inside_are_binary():
    net = small_net()
    seen = []
    neurons = [m for m in net.modules() if is_neuron(m)]
    assert len(neurons) > 20
    for m in neurons:
        m.register_forward_hook(lambda mod, inp, out: seen.append(out.detach()))
    net(torch.rand(2, 3, 32, 32))
    assert len(seen) == len(neurons)
    values = torch.cat([s.flatten() for s in seen])
    assert set(values.unique().tolist()) == {0.0, 1.0}
    # the time axis is inside: every neuron sees (T, B, ...)
    assert all(s.shape[:2] == (SMALL["time_steps"], 2) for s in seen)


@pytest.mark.parametrize("train", [True, False])
def test_same_input_twice_gives_identical_output(train, device):
    net = small_net().train(train).to(device)
    x = torch.rand(2, 3, 32, 32, device=device)
    with torch.no_grad():
        first = net(x)
        # a different batch size in between would break a net that keeps membrane state
        net(torch.rand(1, 3, 64, 32, device=device))
        second = net(x)
    assert torch.equal(first, second)


def test_neuron_state_is_reset_by_forward_and_freed_after_it():
    net = small_net()
    x = torch.rand(1, 3, 32, 32)
    lifs = [m for m in net.modules() if is_neuron(m)]
    seen = []
    lifs[0].register_forward_pre_hook(lambda m, i: seen.append(m.v))
    lifs[0].register_forward_hook(lambda m, i, o: seen.append(m.v))
    lifs[0].v = torch.ones(1)  # state left by someone calling the neuron directly...
    first = net(x)
    assert seen[0] == 0.0  # ...is cleared before the forward
    # the last membrane is not kept, not even during the forward (every forward starts from rest)
    assert seen[1] == 0.0 and all(not m.store_v for m in lifs)
    assert all(not isinstance(m.v, torch.Tensor) for m in lifs)
    # a neuron asked to keep its membranes (spikingjelly's path) does so during the forward, with the same output
    lifs[0].store_v_seq = True
    lifs[0].register_forward_hook(lambda m, i, o: seen.append(m.v_seq))
    seen.clear()
    torch.testing.assert_close(net(x), first)
    assert isinstance(seen[1], torch.Tensor) and seen[1].abs().sum() > 0
    assert seen[2].shape[0] == SMALL["time_steps"]
    assert all(not isinstance(m.v, torch.Tensor) for m in lifs)  # still freed after the call


def test_ann_twin_runs_one_step_and_ignores_time_steps():
    a = small_net(spiking=False, time_steps=4)
    b = small_net(spiking=False, time_steps=1)
    b.load_state_dict(a.state_dict())
    assert a.time_steps == 1
    assert not any(is_neuron(m) for m in a.modules())
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(a(x), b(x))


def test_spiking_student_and_ann_twin_share_parameter_layout():
    student, teacher = small_net(), small_net(spiking=False)
    shapes = {k: v.shape for k, v in student.state_dict().items() if "w" != k.split(".")[-1]}
    assert shapes == {k: v.shape for k, v in teacher.state_dict().items()}


def _load_matching(dst: torch.nn.Module, src: torch.nn.Module) -> None:
    """Copy every parameter/buffer of src whose name and shape exist in dst."""
    src_state = src.state_dict()
    dst_state = dst.state_dict()
    dst.load_state_dict(
        {k: src_state[k] if k in src_state and src_state[k].shape == v.shape else v for k, v in dst_state.items()}
    )


@pytest.mark.parametrize(
    "ablation",
    [
        {"interactions": ("ii", "ai", "ia")},  # w/o A-A
        {"interactions": ("aa", "ai", "ia")},  # w/o I-I
        {"interactions": ("aa", "ii", "ia")},  # w/o A-I
        {"interactions": ("aa", "ii", "ai")},  # w/o I-A
        {"attention": "ssa"},
        {"faithful_layout": True},
        {"spiking": False},
    ],
)
def test_each_ablation_changes_output_and_keeps_shape(ablation):
    base = small_net()
    variant = small_net(**ablation)
    _load_matching(variant, base)  # same weights wherever the architectures agree
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        y_base, y_variant = base(x), variant(x)
    assert y_variant.shape == y_base.shape
    assert not torch.allclose(y_base, y_variant, atol=1e-4)


def test_ssa_is_the_activated_only_attention():
    net = small_net(attention="ssa")
    assert net.interactions == ("aa",)
    assert all(set(stage.attention.term_convs) == {"aa"} for stage in net.stages)


def test_direct_and_fused_attention_give_the_same_network_output(device):
    fused = small_net().to(device)
    direct = small_net(attention_method="direct").to(device)
    direct.load_state_dict(fused.state_dict())
    x = torch.rand(2, 3, 32, 32, device=device)
    torch.testing.assert_close(direct(x), fused(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"spatial_dims": 3}, "spatial_dims"),
        ({"in_channels": 0}, "in_channels"),
        ({"out_channels": -1}, "out_channels"),
        ({"embed_dims": ()}, "embed_dims"),
        ({"embed_dims": (30, 64)}, "embed_dims"),
        ({"num_heads": 0}, "num_heads"),
        ({"time_steps": 0}, "time_steps"),
        ({"attention": "softmax"}, "attention"),
        ({"interactions": ("aa", "xx")}, "interactions"),
        ({"attention": "ssa", "interactions": ("ii",)}, "interactions"),
        ({"neuron": "izhikevich"}, "neuron"),
        ({"neuron": ("lif", {"tau": 0.5})}, "tau"),
        ({"kernel_size": 2}, "kernel_size"),
        ({"attention_method": "einsum"}, "attention_method"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        MedSpikeFormer(**kwargs)


def test_wrong_input_size_names_size_and_nearest_valid_one():
    net = small_net()
    with pytest.raises(ValueError, match=r"height=250, width=256.*divisible by 16.*\(256, 256\)"):
        net(torch.rand(1, 3, 250, 256))
    with pytest.raises(ValueError, match=r"height=40, width=100.*nearest valid size is \(48, 96\).*pad to \(48, 112\)"):
        net(torch.rand(1, 3, 40, 100))


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 1, 3, 32, 32), (1, 1, 32, 32)])
def test_wrong_input_rank_or_channels(shape):
    with pytest.raises(ValueError, match=r"expects input of shape \(B, 3, H, W\)"):
        small_net()(torch.rand(*shape))


def test_size_divisor_follows_number_of_stages():
    net = MedSpikeFormer(embed_dims=(8, 16), num_heads=2, time_steps=1)
    assert net.size_divisor == 4
    assert net(torch.rand(1, 3, 12, 20)).shape == (1, 1, 12, 20)


def test_resolves_as_bundle_target():
    config = {
        "network_def": {
            "_target_": "monai_medspike.networks.nets.MedSpikeFormer",
            "in_channels": 1,
            "out_channels": 3,
            "embed_dims": [8, 16, 16, 32],
            "num_heads": 2,
            "time_steps": 2,
            "neuron": ["lif", {"tau": 2.0}],
        }
    }
    parser = ConfigParser(config)
    net = parser.get_parsed_content("network_def")
    assert isinstance(net, MedSpikeFormer)
    assert net.out_channels == 3 and net.embed_dims == (8, 16, 16, 32)
    assert net(torch.rand(1, 1, 32, 32)).shape == (1, 3, 32, 32)


def test_trace_export_matches_eager():
    net = small_net(in_channels=1, out_channels=2)
    net(torch.rand(4, 1, 32, 32))  # populate batch-norm statistics so eval mode is not degenerate
    net.eval()
    x = torch.rand(1, 1, 32, 32)
    ts = convert_to_torchscript(net, use_trace=True, verify=True, inputs=[x], device="cpu", rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        for other in (x, torch.rand(1, 1, 32, 32), torch.rand(2, 1, 48, 32)):
            expected = net(other)
            assert expected.std() > 0
            torch.testing.assert_close(ts(other), expected, rtol=1e-4, atol=1e-5)


def test_ann_twin_has_the_same_arguments_but_no_neurons():
    net = MedSpikeFormer(in_channels=1, out_channels=3, attention="ssa", **SMALL)
    twin = net.ann_twin()
    assert type(twin) is MedSpikeFormer and twin is not net and not twin.spiking and net.spiking
    assert twin._arguments == {**net._arguments, "spiking": False}
    assert twin.embed_dims == net.embed_dims and twin.interactions == ("aa",)
    own, theirs = twin.state_dict(), net.state_dict()
    shared = set(own) & set(theirs)
    assert len(shared) > 0.9 * len(own)  # the same layers, under the same names
    assert all(own[k].shape == theirs[k].shape for k in shared)
    assert twin(torch.rand(1, 1, 32, 32)).shape == (1, 3, 32, 32)
