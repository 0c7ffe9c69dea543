"""Re-estimates batch-norm statistics before validation (precise batch norm)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from ignite.engine import Engine, Events

__all__ = ["BatchNormRecalibration", "recalibrate_batch_norm"]

logger = logging.getLogger(__name__)

_BN = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)


@torch.no_grad()
def recalibrate_batch_norm(
    network: torch.nn.Module, batches: Iterable, num_batches: int | None = None, device: torch.device | None = None
) -> int:
    """Replace every batch-norm layer's running statistics by their average over ``batches`` of training data.

    The running averages that batch norm keeps during training (momentum 0.1) lag behind weights that change
    quickly. A spiking network is very sensitive to that lag: the statistics scale the membrane inputs, and a few
    percent change the spike pattern after the threshold, so an evaluation in eval mode can differ completely from
    the network that training sees. Re-estimating the statistics with the current weights removes the lag.

    Args:
        network: the network (put in training mode for the passes, then restored).
        batches: batches of images, ``(B, C, H, W)`` tensors or dicts with an ``"image"`` key.
        num_batches: at most this many batches (None: all of them).
        device: where to send the images (default: the network's device).

    Returns:
        the number of batches used.
    """
    layers = [m for m in network.modules() if isinstance(m, _BN) and m.track_running_stats]
    if not layers:
        return 0
    device = device or next(network.parameters()).device
    momenta = [m.momentum for m in layers]
    was_training = network.training
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the passes below
    network.train()
    used = 0
    try:
        for batch in batches:
            if num_batches is not None and used >= num_batches:
                break
            images = batch["image"] if isinstance(batch, dict) else batch
            network(torch.as_tensor(images).to(device))
            used += 1
    finally:
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
        network.train(was_training)
    return used


class BatchNormRecalibration:
    """Before each validation, re-estimate the network's batch-norm statistics on training batches.

    Attach it to the trainer BEFORE the ``ValidationHandler`` (handlers run in the order they were attached).
    See :func:`recalibrate_batch_norm` for why a spiking network needs it.

    Args:
        network: the network to recalibrate (the student itself, not a wrapper holding a frozen teacher).
        data_loader: the training data loader.
        num_batches: batches per recalibration (None: one pass over the loader; 0 disables).
        interval: recalibrate every ``interval`` epochs (use the validation interval).
    """

    def __init__(
        self, network: torch.nn.Module, data_loader: Iterable, num_batches: int | None = None, interval: int = 1
    ) -> None:
        self.network = network
        self.data_loader = data_loader
        self.num_batches = num_batches
        self.interval = interval

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def __call__(self, engine: Engine) -> None:
        if self.num_batches == 0:
            return
        used = recalibrate_batch_norm(self.network, self.data_loader, self.num_batches)
        logger.info("Epoch[%d] batch-norm statistics re-estimated on %d training batches", engine.state.epoch, used)
