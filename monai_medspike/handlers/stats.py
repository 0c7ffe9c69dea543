"""MONAI's ``StatsHandler`` that leaves a failure to the error boundary instead of logging its traceback."""

from __future__ import annotations

from ignite.engine import Engine
from monai.handlers import StatsHandler as MonaiStatsHandler

__all__ = ["StatsHandler"]


class StatsHandler(MonaiStatsHandler):
    """MONAI's ``StatsHandler`` (same arguments), except when the engine raises: MONAI's logs the exception with its
    traceback before re-raising it, so a failure the user can fix (a damaged image, Ctrl-C) would print tracebacks
    above the one line of :mod:`monai_medspike.errors`. This one only re-raises; a bug still gets its traceback, from
    Python, when the exception ends the process."""

    def exception_raised(self, _engine: Engine, e: Exception) -> None:
        raise e
