"""Per-layer-group firing rates of a spiking network during training, logged at the end of every epoch."""

from __future__ import annotations

import logging
from collections import defaultdict

import torch
from ignite.engine import Engine, Events

from monai_medspike.networks.layers import is_neuron

__all__ = ["FiringRateHandler", "neuron_groups"]

logger = logging.getLogger(__name__)

_WRAPPERS = ("module", "student")  # DistributedDataParallel and DistributionAlignmentNet prefixes


def _group(name: str, depth: int) -> str:
    parts = name.split(".")
    while parts and parts[0] in _WRAPPERS:
        parts = parts[1:]
    return ".".join(parts[:depth])


def neuron_groups(network: torch.nn.Module, depth: int = 2) -> dict[str, list[torch.nn.Module]]:
    """The spiking neurons of ``network`` grouped by the first ``depth`` parts of their names (e.g. ``stages.0``)."""
    groups: dict[str, list[torch.nn.Module]] = defaultdict(list)
    for name, module in network.named_modules():
        if is_neuron(module):
            groups[_group(name, depth)].append(module)
    return dict(groups)


class FiringRateHandler:
    """Measure the firing rate (spikes / (neurons x time steps x images)) of each layer group while training.

    Forward hooks on the neurons (``forward`` is not changed) count spikes during the attached engine's
    iterations only, so validation passes are not mixed in. At every epoch end the rates are logged, written to
    TensorBoard as ``<tag>/<group>`` (when a writer or ``log_dir`` is given) and kept in
    ``engine.state.firing_rates``.

    Args:
        network: the (student) network; wrappers such as ``DistributionAlignmentNet`` or DDP are looked through.
        log_dir: TensorBoard folder (a ``SummaryWriter`` is created there) or None.
        summary_writer: an existing ``SummaryWriter`` instead of ``log_dir``.
        tag: TensorBoard tag prefix.
        depth: name parts that define a group: 2 gives ``stages.0``, ``decoders.3``; 1 gives ``stages``.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        log_dir: str | None = None,
        summary_writer: object | None = None,
        tag: str = "firing_rate",
        depth: int = 2,
    ) -> None:
        self.groups = neuron_groups(network, depth)
        if not self.groups:
            raise ValueError("network has no spiking neurons: a firing-rate handler needs a spiking network.")
        self.tag = tag
        self._writer = summary_writer
        self._log_dir = log_dir
        self._active = False
        self._spikes: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = defaultdict(int)
        self._hooks = [
            neuron.register_forward_hook(self._hook(group))
            for group, neurons in self.groups.items()
            for neuron in neurons
        ]

    def _hook(self, group: str):
        def record(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if self._active:
                total = output.detach().sum()
                self._spikes[group] = self._spikes[group] + total if group in self._spikes else total
                self._counts[group] += output.numel()

        return record

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._stop)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def _start(self, engine: Engine) -> None:
        self._active = True

    def _stop(self, engine: Engine) -> None:
        self._active = False

    def rates(self) -> dict[str, float]:
        """Firing rate of each group since the last epoch end."""
        return {g: float(self._spikes[g]) / self._counts[g] for g in self.groups if self._counts.get(g)}

    def epoch_completed(self, engine: Engine) -> None:
        rates = self.rates()
        engine.state.firing_rates = rates
        if rates:
            overall = sum(float(self._spikes[g]) for g in rates) / sum(self._counts[g] for g in rates)
            logger.info(
                "Epoch[%d] firing rates: all %.4f; %s",
                engine.state.epoch,
                overall,
                ", ".join(f"{g} {r:.4f}" for g, r in rates.items()),
            )
            writer = self._get_writer()
            if writer is not None:
                for group, rate in rates.items():
                    writer.add_scalar(f"{self.tag}/{group}", rate, engine.state.epoch)
                writer.add_scalar(f"{self.tag}/all", overall, engine.state.epoch)
                writer.flush()
        self._spikes, self._counts = {}, defaultdict(int)

    def _get_writer(self):
        if self._writer is None and self._log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self._log_dir)
        return self._writer

    def remove(self) -> None:
        """Remove the forward hooks."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
