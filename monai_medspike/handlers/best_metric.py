"""Carries an evaluator's best key metric through a checkpoint, so a resumed run keeps its best model."""

from __future__ import annotations

from typing import Any

from ignite.engine import Engine

__all__ = ["BestMetricState"]


class BestMetricState:
    """A checkpointable view of an evaluator's best metric and of the best-model saver's ranking.

    Put it in the trainer checkpoint's ``save_dict`` (e.g. under ``"best"``) and in the resume loader's
    ``load_dict``: after resuming, ``evaluator.state.best_metric``/``best_metric_epoch`` and the ranking that
    decides whether a new ``model.pt`` replaces the best one are as they were when the checkpoint was written.

    Args:
        evaluator: the validation engine (MONAI ``SupervisedEvaluator``).
        saver: the MONAI ``CheckpointSaver`` that keeps the best model (``save_key_metric=True``), if any.
    """

    def __init__(self, evaluator: Engine | None, saver: Any = None) -> None:
        self.evaluator = evaluator
        self.saver = saver

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"best_metric": -1.0, "best_metric_epoch": -1}
        if self.evaluator is not None:
            state["best_metric"] = float(getattr(self.evaluator.state, "best_metric", -1.0))
            state["best_metric_epoch"] = int(getattr(self.evaluator.state, "best_metric_epoch", -1))
        checkpoint = getattr(self.saver, "_key_metric_checkpoint", None)
        if checkpoint is not None:
            state["ranking"] = checkpoint.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.evaluator is not None:
            self.evaluator.state.best_metric = state["best_metric"]
            self.evaluator.state.best_metric_epoch = state["best_metric_epoch"]
        checkpoint = getattr(self.saver, "_key_metric_checkpoint", None)
        if checkpoint is not None and "ranking" in state:
            checkpoint.load_state_dict(state["ranking"])
