"""A memory-lean multi-step LIF with a hand-written backward pass.

Training through spikingjelly's LIF keeps two tensors the size of the input for every neuron layer; this one keeps
one: the membrane potential before firing, ``H``, from which the spikes, the surrogate gradient and the reset
gradient are all recomputed in the backward pass. The forward pass is spikingjelly's formula written the same way,
so the spikes agree bit for bit; the gradients are those of the same recurrence with a detached reset (tested
against spikingjelly's autograd).

On the CPU, float32 and bfloat16 inputs laid out densely with time outermost (contiguous, or channels-last per step)
run a fused C kernel (:mod:`~monai_medspike.networks.layers.lif_kernel`: one
pass over memory each way instead of about five forward and eight backward, the same float operations in the same
order, so spikes and membranes are identical to the eager code below). It keeps only its input for the backward
pass, as a ReLU does, and recomputes ``H`` from it there, so its forward allocates nothing but the spikes.
Everything else (CUDA, float64, strided inputs, no C compiler, ``MONAI_MEDSPIKE_LIF_KERNEL=0``) runs the eager code.

Recurrence (``V`` starts at rest ``V_r``; ``d = 1 / tau``)::

    H_t = V_{t-1} + d (X_t - (V_{t-1} - V_r))        (decay_input)      or  V_{t-1} - d (V_{t-1} - V_r) + X_t
    S_t = Heaviside(H_t - V_th)                      (surrogate derivative g' in the backward pass)
    V_t = H_t (1 - S_t) + V_r S_t                    (hard reset)        or  H_t - V_th S_t  (soft reset)

Backward, from ``t = T - 1`` down to 0, with ``S_t`` detached in the reset (``detach_reset=True``)::

    dL/dH_t     = dL/dS_t g'(H_t - V_th) + dL/dV_t dV_t/dH_t      dV_t/dH_t = 1 - S_t (hard) or 1 (soft)
    dL/dX_t     = dL/dH_t d  (decay_input)  or  dL/dH_t
    dL/dV_{t-1} = dL/dH_t (1 - d)
"""

from __future__ import annotations

import math

import torch

from monai_medspike.networks.layers import lif_kernel

__all__ = ["LOW_PRECISION", "lean_lif_multi_step", "surrogate_derivative"]

LOW_PRECISION = (torch.bfloat16, torch.float16)
"""Input dtypes (mixed precision, e.g. under ``torch.autocast``) whose membranes are integrated in float32."""


def surrogate_derivative(kind: str, alpha: float, x: torch.Tensor) -> torch.Tensor:
    """Derivative of spikingjelly's ``Sigmoid`` (``alpha sig(alpha x)(1 - sig(alpha x))``) or ``ATan`` surrogate.

    Returns a new tensor (``x`` is not changed).

    Raises:
        ValueError: ``kind`` is not ``"sigmoid"`` or ``"atan"``.
    """
    if kind == "sigmoid":
        s = torch.sigmoid(alpha * x)
        return s.mul_(1.0 - s).mul_(alpha)
    if kind == "atan":
        return ((math.pi / 2.0 * alpha) * x).square_().add_(1.0).reciprocal_().mul_(alpha / 2.0)
    raise ValueError(f"surrogate must be 'sigmoid' or 'atan', got {kind!r}.")


def _forward(
    x_seq: torch.Tensor, tau: float, v_threshold: float, v_reset: float | None, decay_input: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(spikes, H, V_T)``, written step by step into two preallocated tensors (five elementwise passes)."""
    rest = 0.0 if v_reset is None else v_reset
    h_seq = torch.empty_like(x_seq)
    spikes = torch.empty_like(x_seq)
    v = None  # the resting membrane, a constant at t = 0
    for t in range(x_seq.shape[0]):
        h, s = h_seq[t], spikes[t]
        # written as spikingjelly's operator writes it, V + (X - (V - V_r)) / tau, so the rounding is the same
        if v is None and rest != 0.0:
            v = torch.full_like(x_seq[0], rest)
        if v is None:
            torch.div(x_seq[t], tau, out=h) if decay_input else h.copy_(x_seq[t])
        elif decay_input:
            torch.sub(x_seq[t], v - rest if rest != 0.0 else v, out=h).div_(tau).add_(v)
        else:
            torch.sub(v, (v - rest if rest != 0.0 else v) / tau, out=h).add_(x_seq[t])
        if v_reset is None:  # soft reset: V = H - V_th S
            torch.ge(h, v_threshold, out=s)
            v = torch.add(h, s, alpha=-v_threshold)
        elif rest == 0.0:  # hard reset to 0: V = H - H S, exactly H (1 - S) + 0 S
            torch.ge(h, v_threshold, out=s)
            v = torch.addcmul(h, h, s, value=-1.0)
        else:
            fired = h >= v_threshold
            s.copy_(fired)
            v = torch.where(fired, rest, h)
    return spikes, h_seq, v


def time_major_dense(x_seq: torch.Tensor) -> bool:
    """True if ``x_seq`` ``(T, ...)`` fills its memory without gaps or overlaps and ``T`` is its outermost dimension.

    Then every step is one dense block of the same layout, as the fused kernel needs: this holds for contiguous
    tensors and for channels-last activations viewed as ``(T, B, C, H, W)`` (strides ``(BHWC, HWC, 1, WC, C)``).
    """
    if x_seq.dim() < 1 or x_seq.numel() == 0:
        return False
    expected = 1
    for size, stride in sorted(
        ((s, st) for s, st in zip(x_seq.shape, x_seq.stride(), strict=True) if s != 1), key=lambda d: d[1]
    ):
        if stride != expected:
            return False
        expected *= size
    return x_seq.shape[0] == 1 or x_seq.stride(0) * x_seq.shape[0] == x_seq.numel()


def _use_kernel(x_seq: torch.Tensor) -> bool:
    """The fused C kernel runs for non-empty float32 or bfloat16 CPU tensors laid out time-major and dense
    (contiguous, or channels-last per step) when it is enabled and builds."""
    return (
        x_seq.device.type == "cpu"
        and x_seq.dtype in lif_kernel.DTYPES
        and time_major_dense(x_seq)
        and lif_kernel.kernel_available()
    )


class _LeanLIF(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x_seq: torch.Tensor,
        tau: float,
        v_threshold: float,
        v_reset: float | None,
        decay_input: bool,
        surrogate: str,
        alpha: float,
        keep_v: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        ctx.kernel = _use_kernel(x_seq)
        if ctx.kernel:  # the fused kernel recomputes H (and from it the spikes) from the input in the backward pass
            spikes, _, v = lif_kernel.forward(x_seq, tau, v_threshold, v_reset, decay_input, with_last=keep_v)
            ctx.save_for_backward(x_seq)
        else:
            spikes, h_seq, v = _forward(x_seq, tau, v_threshold, v_reset, decay_input)
            # the spikes are the next layer's input, which that layer keeps anyway: saving them costs no memory
            ctx.save_for_backward(h_seq, spikes)
        ctx.settings = (tau, v_threshold, v_reset, decay_input, surrogate, alpha)
        if not keep_v:
            return spikes, None
        ctx.mark_non_differentiable(v)
        return spikes, v

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_spikes: torch.Tensor, grad_v: torch.Tensor | None):
        tau, v_threshold, v_reset, decay_input, surrogate, alpha = ctx.settings
        if ctx.kernel:
            (x_seq,) = ctx.saved_tensors
            grad_x = lif_kernel.backward(x_seq, grad_spikes, tau, v_threshold, v_reset, decay_input, surrogate, alpha)
            return grad_x, None, None, None, None, None, None, None
        h_seq, spikes = ctx.saved_tensors
        # dL/dS g'(H - V_th) for all steps at once; the recurrence then adds what flows back through V
        if surrogate == "sigmoid":
            sig = torch.sub(h_seq, v_threshold).mul_(alpha).sigmoid_()
            grad_h = torch.ops.aten.sigmoid_backward(grad_spikes, sig).mul_(alpha)
            del sig
        else:
            grad_h = surrogate_derivative(surrogate, alpha, h_seq - v_threshold).mul_(grad_spikes)
        keep = 1.0 - 1.0 / tau
        through = None if v_reset is None else torch.rsub(spikes, 1.0)  # dV_t/dH_t = 1 - S_t (hard reset)
        for t in range(h_seq.shape[0] - 2, -1, -1):
            if through is None:
                grad_h[t].add_(grad_h[t + 1], alpha=keep)
            else:
                grad_h[t].addcmul_(grad_h[t + 1], through[t], value=keep)
        return (grad_h.div_(tau) if decay_input else grad_h), None, None, None, None, None, None, None


def lean_lif_multi_step(
    x_seq: torch.Tensor,
    tau: float = 2.0,
    v_threshold: float = 1.0,
    v_reset: float | None = 0.0,
    decay_input: bool = True,
    surrogate: str = "sigmoid",
    alpha: float = 4.0,
    keep_v: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Multi-step LIF from a resting membrane with a detached reset, storing one tensor for the backward pass.

    Args:
        x_seq: input current ``(T, ...)``.
        tau: membrane time constant (> 1).
        v_threshold: firing threshold.
        v_reset: hard-reset potential, or None for a soft reset by subtraction.
        decay_input: whether the input is scaled by ``1 / tau`` too.
        surrogate: ``"sigmoid"`` or ``"atan"`` (spikingjelly's surrogate functions).
        alpha: the surrogate's sharpness.
        keep_v: return the membrane after the last step; False returns None in its place, so that no tensor is
            allocated for it (for callers that start every sequence from rest).

    Returns:
        ``(spikes, v)``: spikes ``(T, ...)`` in {0, 1} of ``x_seq``'s dtype and the membrane potential after the last
        step (no gradient), or None with ``keep_v=False``.

    A bfloat16 or float16 input (mixed precision) is integrated in float32: membranes, threshold and surrogate
    gradient in float32, spikes (exact, 0 or 1) and the input's gradient (rounded to nearest) in the input's dtype.
    On the CPU the fused kernel does this for bfloat16 in its one pass; elsewhere the input is copied to float32.
    """
    args = (float(tau), float(v_threshold), v_reset, bool(decay_input), surrogate, float(alpha), bool(keep_v))
    if x_seq.dtype in LOW_PRECISION and not _use_kernel(x_seq):
        spikes, v = _LeanLIF.apply(x_seq.float(), *args)
        return spikes.to(x_seq.dtype), v
    return _LeanLIF.apply(x_seq, *args)
