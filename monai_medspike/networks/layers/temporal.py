"""Helpers for tensors that carry a leading time axis ``(T, B, C, *spatial)`` inside a spiking network."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["TimeDistributed", "encode_direct"]


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
