"""Activation checkpointing of the network's segments (``torch.utils.checkpoint``) that leaves training unchanged.

A checkpointed segment keeps only its inputs for the backward pass and runs again there. Two things make the rerun
exactly the first run here: the neurons start from rest in both (every forward resets them, and MedSpikeFormer's
LIF neurons keep no membrane), and the batch norms' running statistics, which the rerun would update a second
time, are put back after it. The random state is replayed by ``torch.utils.checkpoint``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

__all__ = ["CheckpointedSegments", "recomputing", "run_segment"]

_rerunning = 0


def recomputing() -> bool:
    """True while a checkpointed segment runs again in the backward pass: forward hooks that count (firing rates,
    operations) skip it, so that a checkpointed step counts each spike once."""
    return _rerunning > 0


def _norm_buffers(module: nn.Module) -> list[torch.Tensor]:
    return [
        b
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
        for b in (m.running_mean, m.running_var, m.num_batches_tracked)
        if b is not None
    ]


def run_segment(module: nn.Module, function: Callable[..., Any], *args: Any, enabled: bool = True) -> Any:
    """``function(*args)``, checkpointed if ``enabled`` and autograd records a training step of ``module``.

    Args:
        module: the module whose layers ``function`` runs (its batch norms are restored after the rerun).
        function: the segment, e.g. ``module`` itself or one of its methods.
        enabled: False runs ``function`` plainly.
    """
    if not (enabled and module.training and torch.is_grad_enabled()):
        return function(*args)
    runs = 0

    def segment(*inputs: Any) -> Any:
        nonlocal runs
        runs += 1
        if runs == 1:
            return function(*inputs)
        global _rerunning
        buffers = _norm_buffers(module)
        saved = [b.clone() for b in buffers]
        _rerunning += 1
        try:
            return function(*inputs)
        finally:
            _rerunning -= 1
            with torch.no_grad():
                for b, old in zip(buffers, saved, strict=True):
                    b.copy_(old)

    return checkpoint(segment, *args, use_reentrant=False)


class CheckpointedSegments:
    """Mixin of the blocks that checkpoint their own segments when ``use_checkpoint`` is set (off by default).

    Set it through ``MedSpikeFormer(use_checkpoint=True)``: the rerun relies on every forward starting its neurons
    from rest, which MedSpikeFormer guarantees (a block used alone with a membrane carried over from an earlier call
    would rerun from another state)."""

    use_checkpoint: bool = False

    def segment(self, function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)`` as one checkpointed segment of this block (see :func:`run_segment`)."""
        return run_segment(self, function, *args, enabled=self.use_checkpoint)  # type: ignore[arg-type]
