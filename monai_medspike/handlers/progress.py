"""Progress of a long engine run: a bar on a terminal, a line every few seconds in a log."""

from __future__ import annotations

import logging
import sys
import time

from ignite.engine import Engine, Events

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
        self._start = self._last = 0.0

    def attach(self, engine: Engine) -> None:
        if sys.stderr.isatty():
            from ignite.handlers import ProgressBar

            ProgressBar(persist=True, desc=f"{self.verb} {self.noun}").attach(engine)
            return
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)

    def started(self, engine: Engine) -> None:
        self._start = self._last = time.monotonic()

    def line(self, engine: Engine) -> str:
        """The progress line of ``engine`` now."""
        done = engine.state.iteration
        total = engine.state.epoch_length or done
        seconds = (time.monotonic() - self._start) / max(done, 1)
        left = seconds * max(total - done, 0)
        rest = f", about {left:.0f} s left" if done < total else ""
        return f"{self.verb} {done} / {total} {self.noun} ({done / max(total, 1):.0%}), {seconds:.2f} s each{rest}"

    def iteration_completed(self, engine: Engine) -> None:
        now = time.monotonic()
        if now - self._last >= self.every or engine.state.iteration == engine.state.epoch_length:
            self._last = now
            logger.info(self.line(engine))
