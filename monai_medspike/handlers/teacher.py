"""Loads the frozen ANN teacher of distribution alignment when training starts, or stops with a clear error."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from monai_medspike.bundle import load_weights

__all__ = ["TeacherLoader"]

logger = logging.getLogger(__name__)


class TeacherLoader:
    """Load the teacher's weights into ``teacher`` when the trainer starts (before the first iteration).

    A missing checkpoint, or one whose keys or shapes do not match the teacher, stops the run at once with an
    error that names the file (and lists the keys), so the student is never aligned to an untrained teacher (the
    public code configured a teacher checkpoint and silently never loaded it).

    Args:
        teacher: the teacher network (usually ``MedSpikeFormer(spiking=False)``).
        checkpoint: its checkpoint file (a state dict or ``{"model": state_dict}``); None when none was found.
        enabled: False (alignment off) skips loading entirely.
        hint: how to produce the checkpoint, appended to the error.
    """

    def __init__(
        self,
        teacher: torch.nn.Module,
        checkpoint: str | None,
        enabled: bool = True,
        hint: str = "Train the teacher first (phase 'teacher') or give its checkpoint.",
    ) -> None:
        self.teacher = teacher
        self.checkpoint = checkpoint
        self.enabled = enabled
        self.hint = hint

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        if not self.enabled:
            return
        if self.checkpoint is None or not Path(self.checkpoint).is_file():
            found = f"{self.checkpoint} does not exist" if self.checkpoint else "no teacher checkpoint was found"
            raise FileNotFoundError(f"distribution alignment is on but {found}. {self.hint}")
        load_weights(self.teacher, self.checkpoint)
        self.teacher.eval()
        logger.info("teacher loaded from %s", self.checkpoint)
