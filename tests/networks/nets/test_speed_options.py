"""The speed and memory options of MedSpikeFormer give the plain network's results: channels-last memory format,
activation checkpointing (``use_checkpoint``) and batch-norm folding for inference; bfloat16 mixed precision
(``precision``) keeps neurons, parameters and outputs in float32."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from monai_medspike.metrics import FiringRateMonitor
from monai_medspike.networks.layers import LIFNode, lif_kernel
from monai_medspike.networks.layers.neurons import _lif_reference
from monai_medspike.networks.nets import MedSpikeFormer
from monai_medspike.networks.utils import fold_batch_norm, fold_for_inference
from tests.helpers import SMALL, saved_bytes

LAYOUTS = ["published", "spike_driven"]


def _pair(layout: str, dtype: torch.dtype = torch.float32, **options):
    """A network and a copy with the same weights built with ``options``."""
    torch.manual_seed(0)
    plain = MedSpikeFormer(in_channels=1, out_channels=2, layout=layout, **SMALL).to(dtype)
    other = MedSpikeFormer(in_channels=1, out_channels=2, layout=layout, **SMALL, **options).to(dtype)
    other.load_state_dict(plain.state_dict())
    for net in (plain, other):  # batch-norm statistics away from their initial values, as after training
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                g = torch.Generator().manual_seed(m.num_features)
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return plain, other


def _train_step(net: MedSpikeFormer, x: torch.Tensor):
    net.train()
    net.zero_grad(set_to_none=True)
    out, side = net.forward_with_side_outputs(x)
    (out.square().mean() + sum(s.mean() for s in side)).backward()
    return out.detach(), {n: p.grad for n, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_channels_last_is_the_same_network(layout):
    """In float64 the layouts differ only in memory order: outputs, gradients and running statistics agree to
    1e-10 in training and in eval mode (in float32 their different rounding may flip a spike at the threshold)."""
    plain, cl = _pair(layout, torch.float64, channels_last=True)
    assert cl.stages[0].attention.to_q[0].module[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(2, 1, 32, 48, dtype=torch.float64)
    (out, grads), (out_cl, grads_cl) = _train_step(plain, x), _train_step(cl, x)
    torch.testing.assert_close(out_cl, out, rtol=0, atol=1e-10)
    assert grads.keys() == grads_cl.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grads_cl[name].contiguous(), grad, rtol=0, atol=1e-10, msg=name)
    for (name, b), b_cl in zip(plain.named_buffers(), cl.buffers(), strict=True):
        torch.testing.assert_close(b_cl, b, rtol=1e-10, atol=1e-10, msg=name)  # variances up to 1e6
    plain.eval(), cl.eval()
    with torch.no_grad():
        torch.testing.assert_close(cl(x), plain(x), rtol=0, atol=1e-10)
    assert cl.ann_twin().channels_last  # the teacher is built the same way
    cl.use_checkpoint = True
    assert cl.ann_twin().use_checkpoint


@pytest.mark.parametrize("layout", LAYOUTS)
def test_channels_last_keeps_every_activation_channels_last(layout):
    """No convolution or batch norm reorders its input or gets channels-first data (no hidden copies), and the
    neurons' fused kernel takes the channels-last steps."""
    _, cl = _pair(layout, channels_last=True)
    seen: list[str] = []

    def check(name):
        def hook(module, inputs, output):
            for role, t in (("input", inputs[0]), ("output", output)):
                if t.shape[1] > 1 and not t.is_contiguous(memory_format=torch.channels_last):
                    seen.append(f"{name} {role}")

        return hook

    convs = [m.register_forward_hook(check(n)) for n, m in cl.named_modules()
             if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.BatchNorm2d) and n != "head.classifier"]  # fmt: skip
    before = lif_kernel.calls["forward"]
    cl.train()
    cl.forward_with_side_outputs(torch.rand(2, 1, 32, 32))
    for h in convs:
        h.remove()
    assert seen == []
    if lif_kernel.kernel_available():
        assert lif_kernel.calls["forward"] - before == sum(1 for m in cl.modules() if type(m).__name__ == "LIFNode")


@pytest.mark.parametrize("shape", [(1, 1, 16, 16), (1, 1, 32, 48), (3, 1, 16, 32)])  # batch 1; 1 x 1 deepest maps
def test_channels_last_float32_on_the_fused_kernel_gives_the_same_network(shape):
    """float32, as trained: the spike-driven layout's spikes do not sit on the threshold, so its outputs and
    gradients equal the default layout's up to float rounding (the published layout may flip a spike there)."""
    plain, cl = _pair("spike_driven", channels_last=True)
    x = torch.rand(shape)
    (out, grads), (out_cl, grads_cl) = _train_step(plain, x), _train_step(cl, x)
    torch.testing.assert_close(out_cl, out, rtol=1e-4, atol=1e-5)
    scale = max(float(g.abs().max()) for g in grads.values())  # some layers' gradients are float noise-sized
    for name, grad in grads.items():
        torch.testing.assert_close(grads_cl[name].contiguous(), grad, rtol=1e-3, atol=1e-4 * scale, msg=name)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_checkpointing_gives_the_same_step_with_less_memory(layout):
    """Exactly the same outputs, gradients and running statistics (updated once per step, not again by the rerun),
    and less than half of the activation memory kept for the backward pass."""
    plain, ckpt = _pair(layout, use_checkpoint=True)
    x = torch.rand(2, 1, 32, 48)
    (out, grads), (out_c, grads_c) = _train_step(plain, x), _train_step(ckpt, x)
    assert torch.equal(out_c, out)
    assert grads.keys() == grads_c.keys() and all(torch.equal(grads_c[n], g) for n, g in grads.items())
    for b, b_c in zip(plain.buffers(), ckpt.buffers(), strict=True):
        assert torch.equal(b_c, b)
    kept = saved_bytes(lambda: plain.forward_with_side_outputs(x))
    kept_c = saved_bytes(lambda: ckpt.forward_with_side_outputs(x))
    assert kept_c < 0.5 * kept


def test_checkpointing_leaves_firing_rates_and_inference_alone():
    plain, ckpt = _pair("published", use_checkpoint=True)
    x = torch.rand(2, 1, 32, 32)
    rates, totals = [], []
    for net in (plain, ckpt):
        with FiringRateMonitor(net) as monitor:
            _train_step(net, x)  # the segments' reruns in the backward pass are not counted again
            rates.append(monitor.mean_rates())
            totals.append(monitor.layer_totals())
    assert rates[0] == rates[1] and totals[0] == totals[1]
    ckpt.eval()
    with torch.no_grad():
        plain.eval()
        assert torch.equal(ckpt(x), plain(x))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_folded_batch_norm_gives_the_same_masks(layout, channels_last):
    plain, folded = _pair(layout, channels_last=channels_last)
    plain.eval(), folded.eval()
    sequences = [list(m) for m in folded.modules() if isinstance(m, nn.Sequential)]
    pairs = sum(isinstance(a, nn.Conv2d | nn.ConvTranspose2d) and isinstance(b, nn.BatchNorm2d)
                for s in sequences for a, b in zip(s, s[1:], strict=False))  # fmt: skip
    assert fold_batch_norm(folded) == pairs > 20
    assert fold_batch_norm(folded) == 0  # nothing left to fold
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert norms == sum(isinstance(m, nn.BatchNorm2d) for m in plain.modules()) - pairs
    x = torch.rand(3, 1, 64, 48)
    with torch.no_grad():
        logits, logits_f = plain(x), folded(x)
    assert torch.equal(logits_f.argmax(1), logits.argmax(1))
    torch.testing.assert_close(logits_f, logits, rtol=1e-4, atol=1e-4)
    plain64 = copy.deepcopy(plain).double()
    folded64 = copy.deepcopy(plain64)
    fold_batch_norm(folded64)  # folded in float64: the same function, exactly
    with torch.no_grad():
        torch.testing.assert_close(folded64(x.double()), plain64(x.double()), rtol=0, atol=1e-10)


def test_fold_batch_norm_refuses_a_network_in_training_mode():
    net = MedSpikeFormer(in_channels=1, **SMALL)
    with pytest.raises(ValueError, match=r"eval mode.*network\.eval\(\)"):
        fold_batch_norm(net)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) > 20  # nothing was changed


def test_fold_for_inference_puts_a_trained_network_in_eval_mode_and_folds_it():
    net = MedSpikeFormer(in_channels=1, **SMALL)  # training mode, as built or trained
    reference = copy.deepcopy(net).eval()
    expected = fold_batch_norm(reference)
    assert fold_for_inference(net) == expected > 20
    assert not net.training
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), reference(x))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_bfloat16_autocasts_the_layers_and_fires_on_float32_membranes(layout, channels_last):
    """precision="bfloat16": convolutions run in bfloat16, every neuron's spikes are those of a float32 membrane
    fed with its (bfloat16) input, and logits, side outputs, parameters and gradients stay float32."""
    _, net = _pair(layout, channels_last=channels_last, precision="bfloat16")
    conv_inputs, checked = [], []

    def on_conv(module, args, out):
        conv_inputs.append(args[0].dtype)

    def on_neuron(module, args, out):
        x = args[0]
        assert out.dtype == x.dtype and out.unique().tolist() in ([0.0], [1.0], [0.0, 1.0])
        ref = _lif_reference(x.detach().float(), lambda a: a / module.tau, module.v_threshold, module.v_reset,
                             module.decay_input)  # fmt: skip
        assert torch.equal(out.detach().float(), ref)
        checked.append(x.dtype)

    hooks = [m.register_forward_hook(on_neuron) for m in net.modules() if isinstance(m, LIFNode)]
    hooks += [m.register_forward_hook(on_conv) for m in net.modules() if isinstance(m, nn.Conv2d)]
    out, grads = _train_step(net, torch.rand(2, 1, 32, 48))
    for hook in hooks:
        hook.remove()
    assert conv_inputs.count(torch.bfloat16) > 0.8 * len(conv_inputs)
    assert checked.count(torch.bfloat16) > 0.8 * len(checked) and len(checked) > 20
    assert out.dtype == torch.float32 and all(g.dtype == torch.float32 for g in grads.values())
    assert all(p.dtype == torch.float32 for p in net.state_dict().values() if p.is_floating_point())
    assert all(s.dtype == torch.float32 for s in net.eval().forward_with_side_outputs(torch.rand(1, 1, 32, 32))[1])


def test_bfloat16_ann_twin_is_float32_up_to_bfloat16_rounding():
    """Without thresholds (the ANN twin) the bfloat16 forward differs from the float32 one by rounding only."""
    plain, bf16 = (n.ann_twin() for n in _pair("published", precision="bfloat16"))
    bf16.load_state_dict(plain.state_dict())
    assert bf16.precision == "bfloat16" and plain.precision == "float32"
    x = torch.rand(2, 1, 32, 32)
    plain.eval(), bf16.eval()
    with torch.no_grad():
        ref, out = plain(x), bf16(x)
    assert out.dtype == torch.float32 and not torch.equal(out, ref)  # it did run in bfloat16
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


def test_precision_is_checked_switchable_and_not_traced():
    with pytest.raises(ValueError, match=r"precision must be one of \('float32', 'bfloat16'\), got 'float16'"):
        MedSpikeFormer(in_channels=1, precision="float16", **SMALL)
    plain, net = _pair("published", precision="bfloat16")
    net.precision = "float32"  # switched on an existing network: the float32 forward again, the twin follows
    plain.eval(), net.eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), plain(x)) and net.ann_twin().precision == "float32"
        net.precision = "bfloat16"
        traced = torch.jit.trace(net, x, check_trace=False)  # exported in float32 (TorchScript has no autocast)
        torch.testing.assert_close(traced(x), plain(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="precision"):
        net.precision = "half"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_channels_last_inference_is_the_same_network(layout):
    """Eval mode without gradients (the token-major attention and the step-wise time mean): the default layout's
    logits and side outputs, in float64 to 1e-10."""
    plain, cl = _pair(layout, torch.float64, channels_last=True)
    plain.eval(), cl.eval()
    x = torch.rand(2, 1, 32, 48, dtype=torch.float64)
    with torch.no_grad():
        (out, side), (out_cl, side_cl) = plain.forward_with_side_outputs(x), cl.forward_with_side_outputs(x)
    torch.testing.assert_close(out_cl, out, rtol=0, atol=1e-10)
    for s, s_cl in zip(side, side_cl, strict=True):
        torch.testing.assert_close(s_cl, s, rtol=0, atol=1e-10)


@pytest.mark.parametrize("channels_last", [False, True])
def test_time_mean_is_the_mean_over_steps_in_the_steps_layout(channels_last):
    from monai_medspike.networks.layers import time_mean

    x = torch.randn(4, 2, 3, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    if channels_last:
        x = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (4, 2))
    x.requires_grad_(True)
    out = time_mean(x)
    torch.testing.assert_close(out, x.mean(dim=0), rtol=0, atol=1e-15)
    assert out.stride() == x[0].stride()
    out.square().sum().backward()
    torch.testing.assert_close(x.grad, (2 * x.mean(dim=0) / 4).expand_as(x), rtol=0, atol=1e-15)
    low = x.detach().bfloat16()
    assert time_mean(low).dtype == torch.bfloat16
    torch.testing.assert_close(time_mean(low).double(), low.double().mean(dim=0), rtol=2**-8, atol=0)
    assert torch.equal(time_mean(x[:1]), x[0])
