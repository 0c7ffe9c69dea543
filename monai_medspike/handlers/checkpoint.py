"""Crash-safe checkpoints: atomic writes, a resumable checkpoint every epoch, the best model only when finite."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from monai_medspike.checkpoints import model_file, save_atomic
from monai_medspike.distributed import is_main_process

__all__ = ["BestModelSaver", "ResumableCheckpoint", "all_finite", "save_atomic"]

logger = logging.getLogger(__name__)


def all_finite(tensors: Any) -> bool:
    """True if every element of every tensor in ``tensors`` (tensors, or None entries that are skipped) is finite."""
    flags = [torch.isfinite(t).all() for t in tensors if t is not None and t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def _state_dicts(objects: Mapping[str, Any]) -> dict[str, Any]:
    return {name: obj.state_dict() for name, obj in objects.items()}


class ResumableCheckpoint:
    """Write ``<save_dir>/<filename>`` atomically at the end of every epoch and when training ends.

    The file holds ``state_dict()`` of each of ``objects`` (network, optimizer, scheduler, trainer) under its name,
    the dict that ``extra()`` returns (e.g. the phase and the best metric), and ``"finished"``: True only when the
    trainer completed (max epochs reached or stopped early). A kill at any moment leaves the previous epoch's file.
    Only the main process writes in distributed training. Nothing is written while ``network`` holds a non-finite
    weight.

    Args:
        save_dir: the run folder.
        objects: name -> object with ``state_dict()``; the network under ``"model"``.
        extra: returns more entries for the file at each save.
        filename: the checkpoint's file name.
    """

    def __init__(
        self,
        save_dir: str | Path,
        objects: Mapping[str, Any],
        extra: Callable[[], dict[str, Any]] | None = None,
        filename: str = "last.pt",
    ) -> None:
        self.path = Path(save_dir) / filename
        self.objects = dict(objects)
        self.extra = extra

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save, False)
        engine.add_event_handler(Events.COMPLETED, self.save, True)

    def save(self, engine: Engine, finished: bool = False) -> None:
        if not is_main_process():
            return
        model = self.objects.get("model")
        if model is not None and not all_finite(model.state_dict().values()):
            logger.error("%s not written: the network holds non-finite weights or statistics", self.path)
            return
        state = _state_dicts(self.objects)
        state.update(self.extra() if self.extra is not None else {})
        state["finished"] = finished
        save_atomic(state, self.path)
        logger.info("Epoch[%d] resumable checkpoint written to %s", engine.state.epoch, self.path)


class BestModelSaver:
    """Save the network as ``<save_dir>/<filename>`` when validation reaches a new best.

    Attach it to the evaluator. It reads the best key metric that MONAI's ``SupervisedEvaluator`` keeps in
    ``state.best_metric``/``best_metric_epoch``; a non-finite metric never counts as best, and a network holding a
    non-finite weight is never saved (the evaluator's run stops with an error instead). The file is written
    atomically, by the main process only, as ``{"model": state_dict, "record": record}``
    (:func:`monai_medspike.checkpoints.model_file`: MONAI's ``CheckpointLoader`` and ``ckpt_export --key_in_ckpt
    model`` read the weights under ``"model"``; the record says what the network is and how it was trained).

    Args:
        network: the network to save (the student itself, not a wrapper around it).
        save_dir: the run folder.
        filename: the file name.
        record: the record saved with it (:func:`monai_medspike.checkpoints.make_record`), or a callable that
            returns it; None: the weights alone, under ``"model"``.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        save_dir: str | Path,
        filename: str = "model.pt",
        record: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self.network = network
        self.path = Path(save_dir) / filename
        self.record = record

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        state = engine.state
        if getattr(state, "best_metric_epoch", -1) != state.epoch or not is_main_process():
            return
        metric = float(state.best_metric)
        if not torch.isfinite(torch.tensor(metric)):
            return
        if not all_finite(self.network.state_dict().values()):
            raise FloatingPointError(
                f"validation at epoch {state.epoch} scored {metric:.4f} but the network holds non-finite values; "
                f"not saving it as {self.path}. Lower the learning rate."
            )
        record = self.record() if callable(self.record) else self.record
        save_atomic(model_file(self.network, record), self.path)
        logger.info("Epoch[%d] new best %.4f: %s written", state.epoch, metric, self.path)
