"""The memory-lean LIF path: same spikes and gradients as spikingjelly, one stored tensor instead of two."""

from __future__ import annotations

import pytest
import torch
from spikingjelly.activation_based import functional

from monai_medspike.networks.layers import get_neuron_layer, lif_kernel
from monai_medspike.networks.layers.lean_lif import lean_lif_multi_step, surrogate_derivative
from tests.helpers import saved_bytes


def run(layer: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    functional.reset_net(layer)
    layer.to(x.device)
    x = x.clone().requires_grad_(True)
    out = layer(x)
    out.backward(grad)
    return out.detach(), x.grad


@pytest.mark.parametrize("surrogate", [("sigmoid", {"alpha": 4.0}), ("atan", {"alpha": 2.0})])
@pytest.mark.parametrize("v_reset", [0.0, None, -0.2])
@pytest.mark.parametrize("decay_input", [True, False])
@pytest.mark.parametrize("kernel", ["1", "0"], ids=["kernel", "eager"])
def test_lean_path_matches_spikingjelly_spikes_and_gradients(
    surrogate, v_reset, decay_input, kernel, monkeypatch, device
):
    # both lean paths: the fused C kernel (CPU, where a compiler exists) and the eager torch code
    monkeypatch.setenv(lif_kernel.ENV_VAR, kernel)
    torch.manual_seed(0)
    # inputs around the threshold so that spikes, resets and silent steps all occur
    x = (torch.randn(6, 3, 5, 7) * 0.8 + (1.1 if decay_input else 0.6)).to(device)
    grad = torch.randn_like(x)
    spec = {"tau": 3.0, "v_reset": v_reset, "decay_input": decay_input, "surrogate": surrogate}
    lean = get_neuron_layer(("lif", {**spec, "lean": True}))
    reference = get_neuron_layer(("lif", {**spec, "lean": False}))
    out, gx = run(lean, x, grad)
    ref_out, ref_gx = run(reference, x, grad)
    assert torch.equal(out, ref_out)  # bit for bit
    assert 0.05 < float(out.mean()) < 0.95
    torch.testing.assert_close(gx, ref_gx, rtol=1e-5, atol=1e-6)
    # the final membrane potential is kept as spikingjelly keeps it
    torch.testing.assert_close(lean.v, reference.v)


def test_gradient_matches_a_hand_computation():
    # tau 2, threshold 1, hard reset, one neuron, inputs 1.5, 1.5: H1 = 0.75 (silent), H2 = 1.125 (spike)
    x = torch.tensor([[1.5], [1.5]], requires_grad=True)
    spikes, _ = lean_lif_multi_step(x, tau=2.0, surrogate="sigmoid", alpha=4.0)
    assert spikes.flatten().tolist() == [0.0, 1.0]
    spikes.sum().backward()
    g1, g2 = (float(surrogate_derivative("sigmoid", 4.0, torch.tensor(h - 1.0))) for h in (0.75, 1.125))
    # dL/dH2 = g2; dL/dH1 = g1 + dL/dH2 * (1 - 1/tau) * (1 - S1) with S1 = 0; dX = dH / tau
    expected = [(g1 + g2 * 0.5) / 2.0, g2 / 2.0]
    torch.testing.assert_close(x.grad.flatten(), torch.tensor(expected))


def test_lean_path_keeps_one_tensor_for_backward_and_spikingjelly_keeps_two():
    # a neuron feeding a layer: the layer keeps the spikes (its input) in both cases; the lean neuron adds one tensor
    # (its input on the fused kernel, H on the eager path), spikingjelly's two
    x = torch.randn(4, 2, 8, 16, requires_grad=True)
    size = x.numel() * x.element_size()
    for lean, tensors in ((True, 2), (False, 3)):
        layer = torch.nn.Linear(16, 16, bias=False)
        neuron = get_neuron_layer(("lif", {"lean": lean}))
        weight = layer.weight.numel() * layer.weight.element_size()
        assert saved_bytes(lambda layer=layer, neuron=neuron: layer(neuron(x))) - weight == tensors * size


def test_settings_the_lean_path_does_not_cover_fall_back_to_spikingjelly():
    torch.manual_seed(1)
    x = torch.randn(4, 2, 6) + 0.5
    grad = torch.randn_like(x)
    for spec in ({"detach_reset": False}, {"lean": False}):
        layer = get_neuron_layer(("lif", spec))
        out, gx = run(layer, x, grad)
        ref = get_neuron_layer(("lif", {**spec, "lean": False}))
        ref_out, ref_gx = run(ref, x, grad)
        assert torch.equal(out, ref_out)
        torch.testing.assert_close(gx, ref_gx)
    # a membrane carried over from a previous call (no reset in between) continues from that membrane
    layer = get_neuron_layer("lif")
    first = layer(torch.full((1, 1), 0.8))  # H = 0.4, no spike, V = 0.4
    second = layer(torch.full((1, 1), 1.3))  # H = 0.4 + (1.3 - 0.4) / 2 = 0.85: silent only if V was carried
    assert first.item() == 0.0 and second.item() == 0.0
    functional.reset_net(layer)
    assert layer(torch.full((1, 1), 2.0)).item() == 1.0


@pytest.mark.parametrize("kernel", ["1", "0"], ids=["kernel", "eager"])
def test_store_v_false_keeps_no_membrane_and_starts_every_call_from_rest(kernel, monkeypatch, device):
    if kernel == "1" and device.type == "cpu" and lif_kernel.find_compiler() is None:
        pytest.skip("no C compiler to build the LIF kernel")
    monkeypatch.setenv(lif_kernel.ENV_VAR, kernel)
    before = dict(lif_kernel.calls)
    torch.manual_seed(0)
    x = (torch.randn(4, 2, 3, 5) * 0.8 + 1.1).to(device)
    grad = torch.randn_like(x)
    keeping = get_neuron_layer("lif")
    lean = get_neuron_layer("lif")
    lean.store_v = False
    ref_out, ref_gx = run(keeping, x, grad)
    assert isinstance(keeping.v, torch.Tensor)
    for _ in range(2):  # no reset in between: the second call starts from rest too
        lean.to(device)
        leaf = x.clone().requires_grad_(True)
        out = lean(leaf)
        out.backward(grad)
        assert lean.v == 0.0 and not isinstance(lean.v, torch.Tensor)
        assert torch.equal(out, ref_out)
        torch.testing.assert_close(leaf.grad, ref_gx, rtol=1e-6, atol=1e-7)
    spikes, v = lean_lif_multi_step(x, keep_v=False)
    assert v is None and torch.equal(spikes, ref_out)
    on_kernel = kernel == "1" and device.type == "cpu"
    assert (lif_kernel.calls["forward"] > before["forward"]) == on_kernel  # the path this case means to test ran


def test_lean_is_only_a_lif_keyword():
    with pytest.raises(ValueError, match="unknown keyword"):
        get_neuron_layer(("plif", {"lean": True}))
    with pytest.raises(ValueError, match="surrogate must be"):
        surrogate_derivative("relu", 1.0, torch.zeros(1))
