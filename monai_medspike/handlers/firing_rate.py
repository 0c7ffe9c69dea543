"""Firing rates of a spiking network during training (per layer group, per layer, per time step), per epoch."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from monai_medspike.metrics.spiking import FiringRateMonitor, strip_wrappers
from monai_medspike.networks.layers import is_neuron

__all__ = ["FiringRateHandler", "neuron_groups"]

logger = logging.getLogger(__name__)


def _group(name: str, depth: int) -> str:
    return ".".join(strip_wrappers(name).split(".")[:depth])


def neuron_groups(network: torch.nn.Module, depth: int = 2) -> dict[str, list[torch.nn.Module]]:
    """The spiking neurons of ``network`` grouped by the first ``depth`` parts of their names (e.g. ``stages.0``)."""
    groups: dict[str, list[torch.nn.Module]] = defaultdict(list)
    for name, module in network.named_modules():
        if is_neuron(module):
            groups[_group(name, depth)].append(module)
    return dict(groups)


class FiringRateHandler:
    """Firing rates (spikes / (neurons x time steps x images)) of a spiking network while it trains.

    Forward hooks on the neurons (:class:`~monai_medspike.metrics.FiringRateMonitor`; ``forward`` is not changed)
    count spikes during the attached engine's iterations only, so validation passes are not mixed in. At every
    epoch end:

    - the rates of the layer groups (``stages.0`` ... ``decoders.3``) and overall are logged in one line;
    - TensorBoard (when a writer or ``log_dir`` is given) gets ``<tag>/<group>``, ``<tag>/all`` and, with
      ``per_layer``, ``<tag>_layer/<layer>`` (average over time steps) and ``<tag>_layer/<layer>/t<i>`` (step ``i``);
    - with ``log_dir``, ``<log_dir>/firing_rates.json`` holds the epoch's rates of every layer per time step;
    - ``engine.state.firing_rates`` holds the group rates, ``engine.state.layer_firing_rates`` the per-layer
      ``{layer: [rate at each time step]}``.

    Args:
        network: the (student) network; wrappers such as ``DistributionAlignmentNet`` or DDP are looked through.
        log_dir: TensorBoard folder (a ``SummaryWriter`` is created there) or None.
        summary_writer: an existing ``SummaryWriter`` instead of ``log_dir``.
        tag: TensorBoard tag prefix.
        depth: name parts that define a group: 2 gives ``stages.0``, ``decoders.3``; 1 gives ``stages``.
        per_layer: also write every neuron layer's rates (averaged and per time step) to TensorBoard.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        log_dir: str | None = None,
        summary_writer: object | None = None,
        tag: str = "firing_rate",
        depth: int = 2,
        per_layer: bool = True,
    ) -> None:
        self.groups = neuron_groups(network, depth)
        if not self.groups:
            raise ValueError("network has no spiking neurons: a firing-rate handler needs a spiking network.")
        self.monitor = FiringRateMonitor(network)
        self.monitor.active = False
        self.layer_group = {name: _group(name, depth) for name in self.monitor.layers}
        self.tag = tag
        self.per_layer = per_layer
        self._writer = summary_writer
        self._log_dir = log_dir

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._stop)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def _start(self, engine: Engine) -> None:
        self.monitor.active = True

    def _stop(self, engine: Engine) -> None:
        self.monitor.active = False

    def rates(self) -> dict[str, float]:
        """Firing rate of each group since the last epoch end."""
        spikes: dict[str, float] = defaultdict(float)
        steps: dict[str, int] = defaultdict(int)
        for name, (layer_spikes, layer_steps) in self.monitor.layer_totals().items():
            group = self.layer_group[name]
            spikes[group] += layer_spikes
            steps[group] += layer_steps
        return {g: spikes[g] / steps[g] for g in self.groups if steps.get(g)}

    def epoch_completed(self, engine: Engine) -> None:
        rates = self.rates()
        layers = {name: r.tolist() for name, r in self.monitor.rates().items()}
        engine.state.firing_rates = rates
        engine.state.layer_firing_rates = layers
        if rates:
            spikes, steps = self.monitor.totals()
            overall = spikes / steps
            logger.info(
                "Epoch[%d] firing rates: all %.4f; %s",
                engine.state.epoch,
                overall,
                ", ".join(f"{g} {r:.4f}" for g, r in rates.items()),
            )
            writer = self._get_writer()
            if writer is not None:
                epoch = engine.state.epoch
                for group, rate in rates.items():
                    writer.add_scalar(f"{self.tag}/{group}", rate, epoch)
                writer.add_scalar(f"{self.tag}/all", overall, epoch)
                if self.per_layer:
                    for name, per_step in layers.items():
                        writer.add_scalar(f"{self.tag}_layer/{name}", sum(per_step) / len(per_step), epoch)
                        for step, rate in enumerate(per_step):
                            writer.add_scalar(f"{self.tag}_layer/{name}/t{step}", rate, epoch)
                writer.flush()
            if self._log_dir is not None:
                summary = {"epoch": engine.state.epoch, "all": overall, "groups": rates, "layers": layers}
                path = Path(self._log_dir) / "firing_rates.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(summary, indent=1) + "\n")
                tmp.replace(path)
        self.monitor.reset()

    def _get_writer(self):
        if self._writer is None and self._log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self._log_dir)
        return self._writer

    def remove(self) -> None:
        """Remove the forward hooks."""
        self.monitor.remove()
