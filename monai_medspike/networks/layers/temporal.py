"""Helpers for tensors that carry a leading time axis ``(T, B, C, *spatial)`` inside a spiking network."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["TimeDistributed", "as_format_of", "capturing_graph", "encode_direct", "is_channels_last", "time_mean"]


def capturing_graph() -> bool:
    """True while the network is being captured as a graph rather than run: TorchScript tracing or scripting
    (``ckpt_export``, ``torch.onnx.export(dynamo=False)``) or ``torch.export`` / ``torch.compile`` (the default
    ONNX exporter). The network then runs its plain torch ops: the hand-written autograd functions and the fused
    C kernel of the LIF neurons cannot be carried by a graph file, and shape checks would be frozen into it."""
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()


def is_channels_last(x: torch.Tensor) -> bool:
    """True if the channels of ``x`` ``(N, C, H, W)`` or ``(T, B, C, H, W)`` are its innermost axis (channels-last).

    A tensor with one channel is taken as channels-first (both layouts coincide there).
    """
    return x.dim() >= 4 and x.shape[-3] > 1 and x.stride(-3) == 1


def as_format_of(y: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``y`` ``(N, C, H, W)`` or ``(T, B, C, H, W)`` in the memory format of ``reference`` (a copy only if it differs).

    Networks built with ``channels_last=True`` keep every activation channels-last; operations that reshape over
    the channels (attention heads, a concatenation of 5D tensors) return channels-first results, which this puts
    back, so the next convolution neither reorders its input nor hands back gradients in a third layout.
    """
    if not is_channels_last(reference) or is_channels_last(y) or y.dim() not in (4, 5):
        return y
    if y.dim() == 4:
        return y.contiguous(memory_format=torch.channels_last)
    return y.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, tuple(y.shape[:2]))


def time_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean over the time steps of ``x`` ``(T, ...)``, in ``x``'s dtype and the memory format of its steps.

    Summed step by step into a float32 accumulator (float64 for float64 input): one vectorised pass per step,
    where ``x.mean(dim=0)`` reduces channels-last steps about 20 x slower on a CPU and returns them channels-first.
    """
    if x.shape[0] == 1:
        return x[0]
    acc = x[0].to(torch.float64 if x.dtype == torch.float64 else torch.float32, copy=True)
    for t in range(1, x.shape[0]):
        acc.add_(x[t])
    return acc.div_(x.shape[0]).to(x.dtype)


class TimeDistributed(nn.Module):
    """Apply a stateless module to every time step at once by folding ``T`` into the batch axis.

    Args:
        module: any module taking ``(N, C, *spatial)``, e.g. a convolution or batch norm.

    Shapes:
        input ``(T, B, C, *spatial)`` -> output ``(T, B, C', *spatial')``.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b = x.shape[0], x.shape[1]
        y = self.module(x.flatten(0, 1))
        return y.reshape((t, b) + tuple(y.shape[1:]))


def encode_direct(x: torch.Tensor, time_steps: int) -> torch.Tensor:
    """Direct encoding: the image is presented unchanged at every step, ``(B, ...) -> (T, B, ...)``.

    The result is an expanded view (no copy); consumers fold ``T`` into the batch with ``flatten``/``reshape``.
    """
    return x.unsqueeze(0).expand((time_steps,) + tuple(x.shape))
