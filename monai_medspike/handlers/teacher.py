"""Loads the frozen ANN teacher of distribution alignment when training starts, or stops with a clear error."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from monai_medspike.checkpoints import load_weights

__all__ = ["TeacherLoader"]

logger = logging.getLogger(__name__)


class TeacherLoader:
    """Load the teacher's weights into ``teacher`` when the trainer starts (before the first iteration).

    A missing checkpoint, or one whose keys or shapes do not match the teacher, stops the run at once with an
    error that names the file (and lists the keys), so the student is never aligned to an untrained teacher (the
    public code configured a teacher checkpoint and silently never loaded it).

    Args:
        teacher: the teacher network (usually ``MedSpikeFormer(spiking=False)``); None: only ``student`` is loaded.
        checkpoint: its checkpoint file (a state dict or ``{"model": state_dict}``); None when none was found.
        enabled: False (alignment off) skips loading entirely.
        hint: how to produce the checkpoint, appended to the error.
        student: a network that also starts from the teacher's weights (the spiking student, whose ANN twin has the
            same parameters) in a fresh run; a resumed run (iteration > 0 when the trainer starts) keeps its own.
    """

    def __init__(
        self,
        teacher: torch.nn.Module,
        checkpoint: str | None,
        enabled: bool = True,
        hint: str = "Train the teacher first (phase 'teacher') or give its checkpoint.",
        student: torch.nn.Module | None = None,
    ) -> None:
        self.teacher = teacher
        self.student = student
        self.checkpoint = checkpoint
        self.enabled = enabled
        self.hint = hint

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        fresh = engine is None or engine.state.iteration == 0
        if not self.enabled or (self.teacher is None and not fresh):
            return
        if self.checkpoint is None or not Path(self.checkpoint).is_file():
            found = f"{self.checkpoint} does not exist" if self.checkpoint else "no teacher checkpoint was found"
            needs = "the student starts from its teacher" if self.teacher is None else "distribution alignment is on"
            raise FileNotFoundError(f"{needs} but {found}. {self.hint}")
        if self.teacher is not None:
            load_weights(self.teacher, self.checkpoint)
            self.teacher.eval()
            logger.info("teacher loaded from %s", self.checkpoint)
        if self.student is not None and fresh:
            load_weights(self.student, self.checkpoint, twin=True)
            logger.info("the student starts from the teacher's weights (%s)", self.checkpoint)
