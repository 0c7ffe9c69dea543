"""Crash-safe checkpoints: atomic writes, a resumable checkpoint every epoch, the best model only when finite."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from monai_medspike.bundle import is_main_process

__all__ = ["BestModelSaver", "ResumableCheckpoint", "all_finite", "save_atomic"]

logger = logging.getLogger(__name__)


def save_atomic(obj: Any, path: str | Path) -> str:
    """``torch.save(obj, path)`` so that a kill at any moment leaves either the previous file or the new one.

    The object is written to a temporary file in the same folder, flushed to disk, then renamed over ``path``
    (a rename within one file system is atomic). The temporary file is removed if writing fails; temporary files of
    an earlier writer that was killed are removed by the next write (one process writes a given file).

    Returns:
        ``path`` as a string.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a writer killed mid-write
        with contextlib.suppress(OSError):
            stale.unlink()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return str(path)


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
    """Save the network's state dict as ``<save_dir>/<filename>`` when validation reaches a new best.

    Attach it to the evaluator. It reads the best key metric that MONAI's ``SupervisedEvaluator`` keeps in
    ``state.best_metric``/``best_metric_epoch``; a non-finite metric never counts as best, and a network holding a
    non-finite weight is never saved (the evaluator's run stops with an error instead). The file is written
    atomically, by the main process only, as a plain state dict (as MONAI's ``CheckpointSaver`` writes a single
    object and model-zoo bundles ship ``models/model.pt``).

    Args:
        network: the network to save (the student itself, not a wrapper around it).
        save_dir: the run folder.
        filename: the file name.
    """

    def __init__(self, network: torch.nn.Module, save_dir: str | Path, filename: str = "model.pt") -> None:
        self.network = network
        self.path = Path(save_dir) / filename

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
        save_atomic(self.network.state_dict(), self.path)
        logger.info("Epoch[%d] new best %.4f: %s written", state.epoch, metric, self.path)
