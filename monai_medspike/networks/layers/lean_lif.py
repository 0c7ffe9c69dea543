"""A memory-lean multi-step LIF with a hand-written backward pass.

Training through spikingjelly's LIF keeps two tensors the size of the input for every neuron layer; this one keeps
one: the membrane potential before firing, ``H``, from which the spikes, the surrogate gradient and the reset
gradient are all recomputed in the backward pass. The forward pass is spikingjelly's formula written the same way,
so the spikes agree bit for bit; the gradients are those of the same recurrence with a detached reset (tested
against spikingjelly's autograd).

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

__all__ = ["lean_lif_multi_step", "surrogate_derivative"]


def surrogate_derivative(kind: str, alpha: float, x: torch.Tensor) -> torch.Tensor:
    """Derivative of spikingjelly's ``Sigmoid`` (``alpha sig(alpha x)(1 - sig(alpha x))``) or ``ATan`` surrogate.

    Raises:
        ValueError: ``kind`` is not ``"sigmoid"`` or ``"atan"``.
    """
    if kind == "sigmoid":
        s = torch.sigmoid(alpha * x)
        return alpha * s * (1.0 - s)
    if kind == "atan":
        return (alpha / 2.0) / (1.0 + (math.pi / 2.0 * alpha * x) ** 2)
    raise ValueError(f"surrogate must be 'sigmoid' or 'atan', got {kind!r}.")


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
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rest = 0.0 if v_reset is None else v_reset
        h_seq = torch.empty_like(x_seq)
        spikes = torch.empty_like(x_seq)
        v = torch.full_like(x_seq[0], rest)
        for t in range(x_seq.shape[0]):
            # written as spikingjelly's operator writes it (same rounding)
            h = v + (x_seq[t] - (v - rest)) / tau if decay_input else v - (v - rest) / tau + x_seq[t]
            spike = (h >= v_threshold).to(x_seq.dtype)
            v = h - spike * v_threshold if v_reset is None else h * (1.0 - spike) + rest * spike
            h_seq[t] = h
            spikes[t] = spike
        ctx.save_for_backward(h_seq)
        ctx.settings = (tau, v_threshold, v_reset, decay_input, surrogate, alpha)
        ctx.mark_non_differentiable(v)
        return spikes, v

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_spikes: torch.Tensor, grad_v: torch.Tensor | None):
        (h_seq,) = ctx.saved_tensors
        tau, v_threshold, v_reset, decay_input, surrogate, alpha = ctx.settings
        grad_x = torch.empty_like(h_seq)
        carry = torch.zeros_like(h_seq[0])  # dL/dV_t from the later steps
        keep = 1.0 - 1.0 / tau
        for t in range(h_seq.shape[0] - 1, -1, -1):
            h = h_seq[t]
            grad_h = grad_spikes[t] * surrogate_derivative(surrogate, alpha, h - v_threshold)
            if v_reset is None:
                grad_h = grad_h + carry
            else:
                grad_h = grad_h + carry * (h < v_threshold).to(h.dtype)
            grad_x[t] = grad_h / tau if decay_input else grad_h
            carry = grad_h * keep
        return grad_x, None, None, None, None, None, None


def lean_lif_multi_step(
    x_seq: torch.Tensor,
    tau: float = 2.0,
    v_threshold: float = 1.0,
    v_reset: float | None = 0.0,
    decay_input: bool = True,
    surrogate: str = "sigmoid",
    alpha: float = 4.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-step LIF from a resting membrane with a detached reset, storing one tensor for the backward pass.

    Args:
        x_seq: input current ``(T, ...)``.
        tau: membrane time constant (> 1).
        v_threshold: firing threshold.
        v_reset: hard-reset potential, or None for a soft reset by subtraction.
        decay_input: whether the input is scaled by ``1 / tau`` too.
        surrogate: ``"sigmoid"`` or ``"atan"`` (spikingjelly's surrogate functions).
        alpha: the surrogate's sharpness.

    Returns:
        ``(spikes, v)``: spikes ``(T, ...)`` in {0, 1} and the membrane potential after the last step (no gradient).
    """
    return _LeanLIF.apply(x_seq, float(tau), float(v_threshold), v_reset, bool(decay_input), surrogate, float(alpha))
