"""Progress of a long engine run: a bar on a terminal, a line every few seconds in a log."""

from __future__ import annotations

import logging
import sys

from ignite.engine import Engine, Events

from monai_medspike.utils import Progress

__all__ = ["ProgressLog"]

logger = logging.getLogger(__name__)


class ProgressLog:
    """Show how far an engine's run is: ignite's ``ProgressBar`` when standard error is a terminal, else one log line
    every ``every`` seconds (and at the end): ``segmented 12 / 40 images (30 %), 0.8 s each, about 22 s left``.

    Args:
        verb: what one iteration does, in the past tense (``"segmented"``, ``"scored"``).
        noun: what an iteration handles (``"images"``).
        every: seconds between two log lines.
    """

    def __init__(self, verb: str = "processed", noun: str = "images", every: float = 10.0) -> None:
        self.verb, self.noun, self.every = verb, noun, float(every)
        self._progress = Progress(verb, noun, 0, every, logger)

    def attach(self, engine: Engine) -> None:
        if sys.stderr.isatty():
            from ignite.handlers import ProgressBar

            ProgressBar(persist=True, desc=f"{self.verb} {self.noun}").attach(engine)
            return
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)

    def started(self, engine: Engine) -> None:
        self._progress = Progress(self.verb, self.noun, engine.state.epoch_length or 0, self.every, logger)

    def line(self, engine: Engine) -> str:
        """The progress line of ``engine`` now."""
        self._progress.total = engine.state.epoch_length or engine.state.iteration
        return self._progress.line(engine.state.iteration)

    def iteration_completed(self, engine: Engine) -> None:
        self._progress.total = engine.state.epoch_length or engine.state.iteration
        self._progress.step(engine.state.iteration)
