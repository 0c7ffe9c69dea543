"""Crash-safe checkpoints: atomic writes survive SIGKILL, non-finite networks are never saved, divergence stops."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedTrainer

from monai_medspike.handlers import (
    BestModelSaver,
    DivergenceError,
    DivergenceGuard,
    ResumableCheckpoint,
    all_finite,
    save_atomic,
)

WRITER = textwrap.dedent(
    """
    import sys, torch
    from monai_medspike.handlers import save_atomic
    folder = sys.argv[1]
    print("ready", flush=True)
    i = 0
    while True:  # checkpoints of changing size; each holds its own checksum
        i += 1
        x = torch.full((1 + (i * 7919) % 3_000_000,), float(i))
        save_atomic({"x": x, "i": i, "sum": float(x.sum())}, f"{folder}/last.pt")
    """
)


def test_a_kill_at_any_moment_leaves_a_checkpoint_that_loads(tmp_path):
    random.seed(0)
    loaded = []
    for trial in range(8):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3 + random.random() * 1.5)  # somewhere inside a save, most of the time
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        files = [p for p in tmp_path.iterdir() if p.suffix == ".pt"]
        assert [p.name for p in files] == ["last.pt"], trial
        state = torch.load(tmp_path / "last.pt", weights_only=True)
        assert state["sum"] == pytest.approx(float(state["x"].sum())) and state["x"][0] == state["i"]
        loaded.append(state["i"])
    assert len(set(loaded)) > 1  # the kills did interrupt different saves


def test_a_failed_save_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "last.pt"
    save_atomic({"epoch": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_atomic({"epoch": 2, "bad": Unpicklable()}, path)
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_all_finite():
    assert all_finite([torch.ones(3), None, torch.zeros(2, dtype=torch.long)])
    assert not all_finite([torch.ones(3), torch.tensor([1.0, float("nan")])])
    assert not all_finite([torch.tensor([float("inf")])])


def _engine(epoch: int = 1) -> Engine:
    engine = Engine(lambda e, b: None)
    engine.state.epoch = epoch
    return engine


def test_resumable_checkpoint_holds_the_objects_and_skips_a_non_finite_network(tmp_path):
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.Adam(net.parameters())
    saver = ResumableCheckpoint(tmp_path, {"model": net, "optimizer": opt}, extra=lambda: {"phase": "teacher"})
    saver.save(_engine())
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert set(state) == {"model", "optimizer", "phase", "finished"} and state["finished"] is False
    torch.testing.assert_close(state["model"]["weight"], net.weight.detach())
    good = (tmp_path / "last.pt").read_bytes()
    with torch.no_grad():
        net.weight[0, 0] = float("nan")
    saver.save(_engine(2), finished=True)
    assert (tmp_path / "last.pt").read_bytes() == good  # the last good checkpoint stays


def test_best_model_saver_saves_new_bests_and_never_a_non_finite_network(tmp_path):
    net = torch.nn.Linear(2, 1)
    saver = BestModelSaver(net, tmp_path, record=lambda: {"phase": "student", "epoch": engine.state.epoch})
    engine = _engine(3)
    engine.state.best_metric, engine.state.best_metric_epoch = 0.5, 2  # the best is from an earlier epoch
    saver(engine)
    assert not (tmp_path / "model.pt").exists()
    engine.state.best_metric_epoch = 3
    saver(engine)
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(saved) == {"model", "record"} and set(saved["model"]) == {"weight", "bias"}  # MONAI's "model" key
    assert saved["record"] == {"phase": "student", "epoch": 3}  # the record as it is when the best is saved
    with torch.no_grad():
        net.bias.fill_(float("inf"))
    engine.state.epoch = engine.state.best_metric_epoch = 4
    with pytest.raises(FloatingPointError, match="non-finite values; not saving"):
        saver(engine)
    assert torch.isfinite(torch.load(tmp_path / "model.pt", weights_only=True)["model"]["bias"]).all()
    # batch-norm statistics count too
    bn = torch.nn.BatchNorm1d(2)
    bn.running_var[0] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite values"):
        BestModelSaver(bn, tmp_path, "bn.pt")(engine)
    assert not (tmp_path / "bn.pt").exists()


def _trainer(learning_rate: float, data: list, guard_kwargs: dict | None = None, tmp_path: Path | None = None):
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    batches = [{"image": x, "label": x.sum(1, keepdim=True)} for x in data]
    trainer = SupervisedTrainer(
        device="cpu", max_epochs=3, train_data_loader=batches, network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=learning_rate), loss_function=torch.nn.MSELoss(),
        decollate=False,
    )  # fmt: skip
    checkpoint = ResumableCheckpoint(tmp_path, {"model": net}) if tmp_path else None
    DivergenceGuard(
        net, "student", checkpoint.path if checkpoint else None, learning_rate, **(guard_kwargs or {})
    ).attach(trainer)
    if checkpoint:
        checkpoint.attach(trainer)
    return trainer


def test_a_healthy_run_is_not_stopped():
    torch.manual_seed(0)
    trainer = _trainer(0.01, [torch.randn(4, 4) for _ in range(5)])
    trainer.run()
    assert trainer.state.epoch == 3


def test_a_nan_input_stops_training_naming_phase_epoch_iteration_and_checkpoint(tmp_path):
    torch.manual_seed(0)
    data = [torch.randn(4, 4) for _ in range(5)]
    trainer = _trainer(0.01, data, tmp_path=tmp_path)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: data[2].fill_(float("nan")))  # epoch 2 goes bad
    with pytest.raises(DivergenceError) as error:
        trainer.run()
    message = str(error.value)
    assert message.startswith("student phase, epoch 2, iteration 3: the loss is nan; training stopped.")
    assert "Try a lower --learning_rate (now 0.01)" in message
    assert f"The last good checkpoint is {tmp_path / 'last.pt'}" in message
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert all_finite(state["model"].values())  # written at the end of epoch 1, before the NaN


def test_an_exploding_loss_stops_training_in_its_first_epoch():
    torch.manual_seed(0)
    trainer = _trainer(1e3, [torch.randn(4, 4) * 10 for _ in range(5)])
    with pytest.raises(DivergenceError, match=r"epoch 1, iteration \d: (the loss is .*over 1000x its first value|a)"):
        trainer.run()


def test_the_loss_ratio_limit_can_be_turned_off():
    torch.manual_seed(0)
    guard = DivergenceGuard(torch.nn.Linear(1, 1), max_loss_ratio=None)
    engine = _engine()
    engine.state.iteration, engine.state.epoch_length = 1, 1
    for loss in (1.0, 1e9):
        engine.state.output = {"loss": torch.tensor(loss)}
        guard(engine)  # no limit on the growth, only on finiteness
    engine.state.output = {"loss": torch.tensor(float("inf"))}
    with pytest.raises(DivergenceError, match="the loss is inf"):
        guard(engine)
