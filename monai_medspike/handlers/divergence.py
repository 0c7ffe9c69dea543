"""Stops a diverging training at once: a non-finite loss, gradient or weight, or an exploding loss."""

from __future__ import annotations

from pathlib import Path

import torch
from ignite.engine import Engine, Events

from .checkpoint import all_finite

__all__ = ["DivergenceError", "DivergenceGuard"]


class DivergenceError(FloatingPointError):
    """Training diverged: a non-finite loss, gradient or weight, or a loss far above its first value."""


class DivergenceGuard:
    """After every training iteration, check that the loss, the gradients and the updated weights are finite and
    that the loss has not exploded.

    A diverging run (too high a learning rate) otherwise trains on: its loss reaches 1e12, its validation Dice 0,
    its weights turn NaN, and it still exits 0. The guard raises :class:`DivergenceError` at the first iteration
    whose loss, gradients or updated weights hold a non-finite value, or whose loss exceeds ``max_loss_ratio``
    times the first loss of the run. The error ends the run with a non-zero exit status; its message names the
    phase, epoch and iteration, what to try, and the last good checkpoint (written at the end of the previous
    epoch, if any). Attach it to the trainer before the handlers that save.

    Args:
        network: the trained network (its parameters and their gradients are checked).
        phase: the phase's name, for the message.
        checkpoint: the resumable checkpoint of this run (``last.pt``), for the message.
        learning_rate: the current setting, for the message.
        max_loss_ratio: the loss may grow to this multiple of the run's first loss (None: no limit). Dice + cross
            entropy starts near 1-2 and shrinks in a healthy run.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        phase: str = "training",
        checkpoint: str | Path | None = None,
        learning_rate: float | None = None,
        max_loss_ratio: float | None = 1e3,
    ) -> None:
        self.parameters = [p for p in network.parameters() if p.requires_grad]
        self.phase = phase
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.learning_rate = learning_rate
        self.max_loss_ratio = max_loss_ratio
        self.first_loss: float | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        output = engine.state.output
        loss = output.get("loss") if isinstance(output, dict) else None
        if loss is not None:
            value = float(torch.as_tensor(loss).detach().float().mean())
            if not torch.isfinite(torch.tensor(value)):
                self._stop(engine, f"the loss is {value}")
            if self.first_loss is None:
                self.first_loss = value
            elif self.max_loss_ratio is not None and abs(value) > self.max_loss_ratio * max(abs(self.first_loss), 1e-3):
                self._stop(
                    engine,
                    f"the loss is {value:.4g}, over {self.max_loss_ratio:g}x its first value {self.first_loss:.4g}",
                )
        if not all_finite(p.grad for p in self.parameters):
            self._stop(engine, "a gradient is not finite")
        if not all_finite(self.parameters):
            self._stop(engine, "a weight is not finite after the optimizer step")

    def _stop(self, engine: Engine, what: str) -> None:
        state = engine.state
        epoch_length = state.epoch_length or 1
        iteration = (state.iteration - 1) % epoch_length + 1
        lr = f" (now {self.learning_rate:g})" if self.learning_rate is not None else ""
        if self.checkpoint is not None and self.checkpoint.is_file():
            last = (
                f"The last good checkpoint is {self.checkpoint} (end of the previous epoch); resume it with "
                f"--resume_from {self.checkpoint.parent} and the changed setting."
            )
        else:
            last = "No checkpoint was written before this point."
        raise DivergenceError(
            f"{self.phase} phase, epoch {state.epoch}, iteration {iteration}: {what}; training stopped. "
            f"Try a lower --learning_rate{lr}. {last}"
        )
