"""The fused C kernel of the lean LIF: identical spikes and membranes to the eager path, matching gradients, the
fallbacks it leaves to the eager path, and its build cache."""

from __future__ import annotations

import logging
import os

import pytest
import torch

from monai_medspike.networks.layers import lif_kernel
from monai_medspike.networks.layers.lean_lif import _forward, lean_lif_multi_step
from tests.helpers import saved_bytes

pytestmark = pytest.mark.skipif(lif_kernel.find_compiler() is None, reason="no C compiler to build the LIF kernel")


@pytest.fixture
def kernel_state():
    """Runs a test with a fresh kernel state (nothing loaded) and restores the session's state after it."""
    saved = dict(lif_kernel._state)
    lif_kernel._state.clear()
    yield
    lif_kernel._state.clear()
    lif_kernel._state.update(saved)


def run(x: torch.Tensor, grad: torch.Tensor, kernel: bool, monkeypatch, **settings):
    """``(spikes, v, dL/dx)`` on the kernel or the eager path; asserts the path that ran."""
    monkeypatch.setenv(lif_kernel.ENV_VAR, "1" if kernel else "0")
    before = dict(lif_kernel.calls)
    x = x.clone().requires_grad_(True)
    spikes, v = lean_lif_multi_step(x, **settings)
    spikes.backward(grad)
    ran = lif_kernel.calls["forward"] - before["forward"], lif_kernel.calls["backward"] - before["backward"]
    assert ran == ((1, 1) if kernel else (0, 0))
    return spikes.detach(), v, x.grad


def inputs(shape: tuple[int, ...], decay_input: bool, v_threshold: float = 1.0, seed: int = 0):
    torch.manual_seed(seed)
    # around the threshold, so that spikes, resets and silent steps all occur
    x = torch.randn(shape) * 0.8 + (1.1 if decay_input else 0.6) * v_threshold
    return x, torch.randn(shape)


@pytest.mark.parametrize("surrogate", [("sigmoid", 4.0), ("atan", 2.0), ("sigmoid", 1.5)])
@pytest.mark.parametrize("v_reset", [0.0, None, -0.2])
@pytest.mark.parametrize("decay_input", [True, False])
@pytest.mark.parametrize("steps", [1, 4, 7])
# 2 x 37 x 13 = 962 elements per step (not a multiple of any vector width); 2 x 3 x 11011 (above the block size
# and, with 4 or 7 steps, above the size from which the kernel runs on several threads)
@pytest.mark.parametrize("inner", [(2, 37, 13), (2, 3, 11011)])
def test_kernel_matches_the_eager_path(surrogate, v_reset, decay_input, steps, inner, monkeypatch):
    kind, alpha = surrogate
    settings = {"tau": 3.0, "v_reset": v_reset, "decay_input": decay_input, "surrogate": kind, "alpha": alpha}
    x, grad = inputs((steps, *inner), decay_input)
    spikes, v, gx = run(x, grad, True, monkeypatch, **settings)
    ref_spikes, ref_v, ref_gx = run(x, grad, False, monkeypatch, **settings)
    assert torch.equal(spikes, ref_spikes)
    assert torch.equal(v, ref_v)
    if steps > 1:
        assert 0.05 < float(spikes.mean()) < 0.95
    torch.testing.assert_close(gx, ref_gx, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tau", [2.0, 1.7, 2.5])
@pytest.mark.parametrize("v_threshold", [1.0, 0.3])
@pytest.mark.parametrize("v_reset", [0.0, None, 0.1])
@pytest.mark.parametrize("decay_input", [True, False])
def test_kernel_membranes_are_bit_identical(tau, v_threshold, v_reset, decay_input):
    # thresholds and time constants that are not exact in binary: the rounding must still be the eager code's
    x, _ = inputs((6, 2, 1001), decay_input, v_threshold)
    got = lif_kernel.forward(x, tau, v_threshold, v_reset, decay_input, with_membrane=True)
    assert lif_kernel.forward(x, tau, v_threshold, v_reset, decay_input)[1] is None  # not computed unless asked
    expected = _forward(x, tau, v_threshold, v_reset, decay_input)
    for a, b, name in zip(got, expected, ("spikes", "H", "V_T"), strict=True):
        assert torch.equal(a, b), name
    spikes, h, v = lif_kernel.forward(x, tau, v_threshold, v_reset, decay_input, with_last=False)
    assert h is None and v is None and torch.equal(spikes, expected[0])  # spikes only: nothing else allocated


def test_kernel_result_does_not_depend_on_the_thread_count(monkeypatch):
    x, grad = inputs((4, 2, 3, 11011), True)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run(x, grad, True, monkeypatch)
        torch.set_num_threads(max(2, threads))
        several = run(x, grad, True, monkeypatch)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, several, strict=True):
        assert torch.equal(a, b)


def test_kernel_takes_a_non_contiguous_gradient(monkeypatch):
    monkeypatch.setenv(lif_kernel.ENV_VAR, "1")
    x, _ = inputs((3, 2, 50), True)
    grads = []
    for kernel in ("1", "0"):
        monkeypatch.setenv(lif_kernel.ENV_VAR, kernel)
        leaf = x.clone().requires_grad_(True)
        lean_lif_multi_step(leaf)[0].sum().backward()  # the gradient of a sum is an expanded (stride 0) tensor
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_kernel_keeps_only_its_input_for_backward(monkeypatch):
    x = torch.randn(4, 2, 8, 16, requires_grad=True)
    size = x.numel() * x.element_size()
    saved = []

    def keep(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    monkeypatch.setenv(lif_kernel.ENV_VAR, "1")
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        lean_lif_multi_step(x)
    # the input itself, no new tensor: nothing beyond what a ReLU or GELU keeps
    assert len(saved) == 1 and saved[0].untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
    monkeypatch.setenv(lif_kernel.ENV_VAR, "0")  # the eager path keeps H and the spikes
    assert saved_bytes(lambda: lean_lif_multi_step(x)) == 2 * size


def test_backward_recomputes_the_forward_membranes(monkeypatch):
    # the gradient at a step depends on whether H crossed the threshold there: an input exactly at the threshold
    # (H = X / tau = 1.0 at the first step) must be treated as a spike in the backward pass as it was in the forward
    monkeypatch.setenv(lif_kernel.ENV_VAR, "1")
    x = torch.tensor([[2.0, 1.9, 2.1], [2.0, 2.0, 0.0]])  # T = 2, three neurons; the first fires at both steps
    grad = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    spikes, v, gx = run(x, grad, True, monkeypatch)
    assert spikes.tolist() == [[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]
    ref = run(x, grad, False, monkeypatch)
    for a, b in zip((spikes, v, gx), ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # a spike at step 0 blocks the reset gradient into it (hard reset): only the silent neuron gets dL/dX_0 != 0
    assert gx[0, 0] == 0.0 and gx[0, 2] == 0.0 and gx[0, 1] != 0.0


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda x: x.double(), id="float64"),
        pytest.param(lambda x: x.transpose(1, 2), id="non-contiguous"),
        pytest.param(lambda x: x[:, :, ::2], id="strided"),
    ],
)
def test_inputs_the_kernel_does_not_take_run_the_eager_path(make, monkeypatch):
    monkeypatch.setenv(lif_kernel.ENV_VAR, "1")
    x, _ = inputs((3, 4, 6), True)
    x = make(x)
    before = dict(lif_kernel.calls)
    leaf = x.detach().requires_grad_(True)
    spikes, _ = lean_lif_multi_step(leaf)
    spikes.sum().backward()
    assert lif_kernel.calls == before
    assert torch.equal(spikes, _forward(x.contiguous(), 2.0, 1.0, 0.0, True)[0])
    assert leaf.grad is not None and leaf.grad.dtype == x.dtype


@pytest.mark.parametrize("value", ["0", "false", "off"])
def test_environment_variable_turns_the_kernel_off(value, monkeypatch):
    monkeypatch.setenv(lif_kernel.ENV_VAR, value)
    assert not lif_kernel.kernel_available()
    before = dict(lif_kernel.calls)
    lean_lif_multi_step(torch.randn(2, 5))
    assert lif_kernel.calls == before
    monkeypatch.setenv(lif_kernel.ENV_VAR, "1")
    assert lif_kernel.kernel_available()


def test_missing_library_is_built_atomically(tmp_path, monkeypatch, kernel_state):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv(lif_kernel.ENV_VAR, "1")
    path = lif_kernel.library_path(lif_kernel.find_compiler())
    assert path.parent == tmp_path / "monai_medspike" and not path.exists()
    assert lif_kernel.kernel_available()
    assert path.exists()
    assert os.listdir(path.parent) == [path.name]  # no temporary file left behind


@pytest.mark.parametrize("content", [b"not a shared library", b"\x7fELF\x02\x01\x01" + bytes(40)])
def test_corrupt_cached_library_is_rebuilt(content, tmp_path, monkeypatch, kernel_state):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv(lif_kernel.ENV_VAR, "1")
    path = lif_kernel.library_path(lif_kernel.find_compiler())
    path.parent.mkdir(parents=True)
    path.write_bytes(content)  # e.g. truncated by a full disk
    assert lif_kernel.kernel_available()
    assert path.read_bytes() != content
    x, grad = inputs((3, 2, 40), True)
    spikes, _, _ = run(x, grad, True, monkeypatch)
    assert torch.equal(spikes, _forward(x, 2.0, 1.0, 0.0, True)[0])


def test_failed_build_warns_once_and_falls_back(tmp_path, monkeypatch, kernel_state, caplog):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv(lif_kernel.ENV_VAR, "1")
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    with caplog.at_level(logging.WARNING, logger=lif_kernel.__name__):
        assert not lif_kernel.kernel_available()
        assert not lif_kernel.kernel_available()
        before = dict(lif_kernel.calls)
        spikes, _ = lean_lif_multi_step(torch.full((2, 3), 2.0))
    assert spikes.tolist() == [[1.0] * 3] * 2
    assert lif_kernel.calls == before
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "eager" in warnings[0].getMessage()
