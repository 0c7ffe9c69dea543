from __future__ import annotations

import logging

import pytest
import torch
from ignite.engine import Engine, Events

from monai_medspike.handlers import FiringRateHandler, neuron_groups
from monai_medspike.networks.nets import DistributionAlignmentNet
from tests.helpers import small_net


def test_groups_follow_stages_and_look_through_wrappers():
    pair = DistributionAlignmentNet(small_net(), small_net(spiking=False))
    groups = neuron_groups(pair)
    assert set(groups) == {"stages.0", "stages.1", "stages.2", "stages.3", "decoders.0", "decoders.1", "decoders.2",
                           "decoders.3"}  # fmt: skip
    assert sum(len(v) for v in groups.values()) == sum(1 for m in pair.modules() if hasattr(m, "v_threshold"))


class Counter:
    """Counts spikes and elements of some neurons with separate forward hooks (the reference)."""

    def __init__(self, neurons):
        self.spikes, self.n = 0.0, 0
        self.hooks = [n.register_forward_hook(self) for n in neurons]

    def __call__(self, module, inputs, output):
        self.spikes += float(output.detach().sum())
        self.n += output.numel()

    def remove(self):
        for h in self.hooks:
            h.remove()


def test_rates_match_a_direct_count_and_exclude_passes_outside_iterations(tmp_path, caplog):
    net = small_net().train()
    x = torch.rand(2, 3, 32, 32)
    engine = Engine(lambda e, batch: net(batch))
    # a "validation" pass at epoch end, before the rates are computed: it must not be counted
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: net(torch.rand(4, 3, 32, 32) * 3))
    handler = FiringRateHandler(net, log_dir=str(tmp_path / "tb"))
    handler.attach(engine)
    with caplog.at_level(logging.INFO, logger="monai_medspike.handlers.firing_rate"):
        engine.run([x, x], max_epochs=1)
    handler.remove()
    rates = engine.state.firing_rates
    assert set(rates) == set(neuron_groups(net))
    assert "firing rates: all" in caplog.text
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    # the same two training passes, counted directly (no optimizer: the weights did not change)
    for group in ("stages.0", "stages.3", "decoders.2"):
        counter = Counter(neuron_groups(net)[group])
        net(x), net(x)
        counter.remove()
        assert 0.0 < rates[group] < 1.0
        assert rates[group] == pytest.approx(counter.spikes / counter.n, rel=1e-6)


def test_zero_input_spikes_give_zero_rate():
    net = small_net()
    for p in net.parameters():
        torch.nn.init.zeros_(p)  # every membrane input is 0: no neuron reaches the threshold
    handler = FiringRateHandler(net)
    engine = Engine(lambda e, batch: net(batch))
    handler.attach(engine)
    engine.run([torch.rand(1, 3, 32, 32)], max_epochs=1)
    assert set(engine.state.firing_rates.values()) == {0.0}


def test_needs_a_spiking_network():
    with pytest.raises(ValueError, match="no spiking neurons"):
        FiringRateHandler(small_net(spiking=False))


def test_per_layer_and_per_time_step_rates_reach_tensorboard_and_a_summary(tmp_path):
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    net = small_net().train()  # T = 2
    engine = Engine(lambda e, batch: net(batch))
    handler = FiringRateHandler(net, log_dir=str(tmp_path))
    handler.attach(engine)
    engine.run([torch.rand(2, 3, 32, 32)], max_epochs=2)
    handler.remove()
    layers = engine.state.layer_firing_rates
    layer = "stages.0.attention.to_q.1"
    assert layer in layers and len(layers[layer]) == 2
    summary = json.loads((tmp_path / "firing_rates.json").read_text())
    assert summary["epoch"] == 2 and summary["layers"][layer] == pytest.approx(layers[layer])
    assert summary["groups"] == pytest.approx(engine.state.firing_rates)
    assert 0.0 < summary["all"] < 1.0
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"firing_rate/all", "firing_rate/stages.0", f"firing_rate_layer/{layer}"} <= tags
    assert {f"firing_rate_layer/{layer}/t0", f"firing_rate_layer/{layer}/t1"} <= tags
    assert [e.step for e in events.Scalars(f"firing_rate_layer/{layer}/t1")] == [1, 2]
    assert events.Scalars(f"firing_rate_layer/{layer}/t1")[-1].value == pytest.approx(layers[layer][1])
