"""The fused C kernel of the lean LIF: identical spikes and membranes to the eager path, matching gradients, the
fallbacks it leaves to the eager path, and its build cache."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch

from monai_medspike.networks.layers import lean_lif, lif_kernel
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
        pytest.param(lambda x: x.permute(1, 2, 0).contiguous().permute(2, 0, 1), id="time-innermost"),
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
    # no temporary file left behind; the lock file stays (removing it could let two builds run at once)
    assert sorted(os.listdir(path.parent)) == [path.name, path.name + ".lock"]


@pytest.mark.parametrize("refuse", ["flock", "lock file"])
def test_build_goes_ahead_unlocked_where_no_lock_can_be_taken(refuse, tmp_path, monkeypatch, kernel_state, caplog):
    import fcntl

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv(lif_kernel.ENV_VAR, "1")
    path = lif_kernel.library_path(lif_kernel.find_compiler())
    lock_file = path.with_name(path.name + ".lock")
    if refuse == "flock":  # a file system without flock

        def no_flock(*args):
            raise OSError(38, "Function not implemented")

        monkeypatch.setattr(fcntl, "flock", no_flock)
    else:  # the lock file's name is taken by a folder: open() fails
        lock_file.mkdir(parents=True)
    with caplog.at_level(logging.INFO, logger=lif_kernel.__name__):
        assert lif_kernel.kernel_available()
    assert path.exists()
    assert [r.getMessage() for r in caplog.records if "without a lock" in r.getMessage()] != []
    assert sorted(os.listdir(path.parent)) == [path.name, lock_file.name]  # no temporary file left


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


def test_kernel_runs_on_channels_last_steps(monkeypatch):
    """(T, B, C, H, W) views of channels-last activations are time-major and dense: the kernel takes them, returns
    spikes and gradients in the same layout, with the values of the contiguous input."""
    x, grad = inputs((3, 2, 5, 7, 6), True)
    x_cl = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (3, 2))
    grad_cl = grad.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (3, 2))
    assert not x_cl.is_contiguous() and lean_lif.time_major_dense(x_cl)
    for g in (grad_cl, grad):  # a gradient in the input's layout, or in another one
        spikes, _, gx = run(x_cl, g, True, monkeypatch)
        ref_spikes, _, ref_gx = run(x, grad, False, monkeypatch)
        assert spikes.stride() == x_cl.stride() and gx.stride() == x_cl.stride()
        assert torch.equal(spikes, ref_spikes)
        torch.testing.assert_close(gx, ref_gx, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.zeros(6, 5, 4).permute(2, 0, 1),  # dense, but time is the innermost axis of memory
        lambda: torch.zeros(4, 6, 5).transpose(0, 1),
        lambda: torch.zeros(4, 6, 10)[..., ::2],  # gaps
        lambda: torch.zeros(6, 5).expand(4, 6, 5),  # overlapping steps
    ],
)
def test_time_major_dense_rejects_other_layouts(make):
    assert not lean_lif.time_major_dense(make())
    assert lean_lif.time_major_dense(torch.zeros(4, 6, 5).transpose(1, 2))  # any dense layout within a step


def _compile_logging_compiler(tmp_path, log):
    """A C compiler that appends a line to ``log`` per compilation (not per ``--version``) and runs the real one."""
    wrapper = tmp_path / "cc"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'case "$*" in *-shared*) echo build >> "{log}"; sleep 1;; esac\n'
        f'exec "{lif_kernel.find_compiler()}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


def test_concurrent_warm_ups_compile_once(tmp_path):
    """Processes that start together (DDP ranks, workers) wait for one build under the file lock."""
    log = tmp_path / "builds.log"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), lif_kernel.ENV_VAR: "1",
           "CC": str(_compile_logging_compiler(tmp_path, log))}  # fmt: skip
    command = [sys.executable, "-m", "monai_medspike.warmup", "--strict"]
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0]
    assert log.read_text().split() == ["build"]
    libraries = list((tmp_path / "cache" / "monai_medspike").glob("lif_kernel-*.so"))
    assert len(libraries) == 1 and all(str(libraries[0]) in out for out in outputs)
    assert not list((tmp_path / "cache" / "monai_medspike").glob("*.tmp.so"))


def test_warm_up_builds_before_the_first_forward(tmp_path, monkeypatch, kernel_state):
    log = tmp_path / "builds.log"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv(lif_kernel.ENV_VAR, "1")
    monkeypatch.setenv("CC", str(_compile_logging_compiler(tmp_path, log)))
    path = lif_kernel.warm_up()
    assert path is not None and path.is_file() and log.read_text().split() == ["build"]
    x, grad = inputs((3, 2, 40), True)
    run(x, grad, True, monkeypatch)  # the forward finds the loaded kernel: no second build
    assert log.read_text().split() == ["build"]


def test_warm_up_without_a_compiler_reports_the_eager_path(tmp_path, kernel_state, capsys, monkeypatch):
    from monai_medspike import warmup

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv(lif_kernel.ENV_VAR, "1")
    monkeypatch.setenv("CC", "false")
    assert warmup.main([]) == 0  # the package works without the kernel
    assert "eager torch path" in capsys.readouterr().err
    lif_kernel._state.clear()
    assert warmup.main(["--strict"]) == 1
    monkeypatch.setenv(lif_kernel.ENV_VAR, "0")
    lif_kernel._state.clear()
    assert lif_kernel.warm_up() is None


def test_warm_up_builds_nothing_for_a_gpu_run(tmp_path, monkeypatch, kernel_state):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv(lif_kernel.ENV_VAR, "1")
    assert lif_kernel.warm_up("cuda:0") is None and lif_kernel.warm_up(torch.device("cuda")) is None
    assert not (tmp_path / "monai_medspike").exists() and "lib" not in lif_kernel._state
    assert lif_kernel.warm_up("cpu") is not None


@pytest.mark.parametrize("surrogate", ["sigmoid", "atan"])
@pytest.mark.parametrize("v_reset", [0.0, None, -0.2])
@pytest.mark.parametrize("decay_input", [True, False])
@pytest.mark.parametrize("inner", [(2, 37, 13), (2, 3, 11011)])
def test_bfloat16_kernel_integrates_in_float32(surrogate, v_reset, decay_input, inner, monkeypatch):
    """A bfloat16 input (mixed precision) runs the kernel's bfloat16 entry points: the spikes and last membrane of
    the float32 eager path on the widened input, and its gradient rounded to bfloat16 as torch rounds it."""
    settings = {"tau": 2.0, "v_reset": v_reset, "decay_input": decay_input, "surrogate": surrogate}
    x, grad = inputs((4, *inner), decay_input)
    x, grad = x.bfloat16(), grad.bfloat16()
    spikes, v, gx = run(x, grad, True, monkeypatch, **settings)
    ref_spikes, ref_v, ref_gx = run(x.float(), grad.float(), False, monkeypatch, **settings)
    assert spikes.dtype == gx.dtype == torch.bfloat16 and v.dtype == torch.float32
    assert 0 < spikes.float().mean() < 1
    assert torch.equal(spikes.float(), ref_spikes) and torch.equal(v, ref_v)
    # the kernel's float32 gradient matches the eager one to float rounding; rounded to bfloat16 both agree except
    # where that rounding straddles a bfloat16 midpoint (one unit in the last place)
    diff = (gx.float() - ref_gx.bfloat16().float()).abs()
    assert (diff > ref_gx.abs() * 2**-6 + 1e-6).sum() == 0


def test_bfloat16_without_the_kernel_takes_the_same_path_in_float32(monkeypatch):
    """Eager path (kernel off): the bfloat16 input is integrated in float32 too; same spikes and gradients."""
    x, grad = inputs((4, 2, 3, 500), True)
    x, grad = x.bfloat16(), grad.bfloat16()
    k_spikes, k_v, k_gx = run(x, grad, True, monkeypatch)
    e_spikes, e_v, e_gx = run(x, grad, False, monkeypatch)
    assert e_spikes.dtype == e_gx.dtype == torch.bfloat16
    assert torch.equal(k_spikes, e_spikes) and torch.equal(k_v, e_v)
    assert (k_gx != e_gx).float().mean() < 1e-3  # at most a few bfloat16 roundings of float32 values that differ


def test_bfloat16_kernel_rounds_gradients_to_nearest_even():
    """The C narrowing is torch's: exact cases, ties to even, huge values, infinities and NaN."""
    values = torch.tensor([1.0, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-9, -3.3e38, 3.4e38, float("inf"), float("nan")])
    x = torch.zeros(1, values.numel(), dtype=torch.bfloat16)  # H = x / 2 = 0: below the threshold, slope at u = -1
    slope = lean_lif.surrogate_derivative("atan", 2.0, torch.tensor(-1.0)).item()
    grad_s = (values / slope * 2).bfloat16().float()  # what reaches dL/dX after slope and 1 / tau, in bfloat16
    grad_x = lif_kernel.backward(x, grad_s.bfloat16().view(1, -1), 2.0, 1.0, 0.0, True, "atan", 2.0)
    expected = (grad_s * slope / 2).bfloat16()
    assert torch.equal(grad_x.view(-1)[:-1], expected[:-1]) and grad_x.view(-1)[-1].isnan()
