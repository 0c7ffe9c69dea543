from __future__ import annotations

import torch
from ignite.engine import Engine

from monai_medspike.handlers import BatchNormRecalibration, recalibrate_batch_norm
from tests.helpers import small_net


def test_running_statistics_become_the_average_over_the_batches():
    net = small_net()
    bn = net.stages[1].embed.module[1]  # a BatchNorm2d inside the network
    inputs = []
    hook = bn.register_forward_hook(lambda m, i, o: inputs.append(i[0].detach()))
    batches = [torch.rand(2, 3, 32, 32) for _ in range(3)]
    net.train()
    with torch.no_grad():
        for b in batches:
            net(b)
    hook.remove()
    expected_mean = torch.stack([x.mean(dim=(0, 2, 3)) for x in inputs]).mean(0)
    momentum = bn.momentum
    with torch.no_grad():  # move the statistics away first
        bn.running_mean.fill_(5.0)
    net.eval()
    assert recalibrate_batch_norm(net, batches) == 3
    torch.testing.assert_close(bn.running_mean, expected_mean, rtol=1e-4, atol=1e-5)
    assert bn.momentum == momentum and not net.training  # settings restored


def test_recalibrated_eval_matches_training_mode_better():
    torch.manual_seed(1)
    net = small_net()
    x = torch.rand(4, 3, 32, 32)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)  # a fast-moving network: the running averages lag
    for _ in range(5):
        opt.zero_grad()
        net.train()(x).square().mean().backward()
        opt.step()
    with torch.no_grad():
        reference = net.train()(x)
        before = (net.eval()(x) - reference).abs().mean()
        recalibrate_batch_norm(net, [x], num_batches=1)
        after = (net.eval()(x) - reference).abs().mean()
    assert after < 0.5 * before


def test_handler_runs_at_epoch_end_with_dict_batches_and_can_be_disabled():
    net = small_net()
    loader = [{"image": torch.rand(2, 3, 32, 32)} for _ in range(4)]
    calls = []
    net.register_forward_hook(lambda m, i, o: calls.append(1))
    engine = Engine(lambda e, b: None)
    BatchNormRecalibration(net, loader, num_batches=2).attach(engine)
    engine.run([0, 0], max_epochs=2)
    assert len(calls) == 4  # 2 batches after each of the 2 epochs
    engine = Engine(lambda e, b: None)
    BatchNormRecalibration(net, loader, num_batches=0).attach(engine)
    engine.run([0], max_epochs=1)
    assert len(calls) == 4
