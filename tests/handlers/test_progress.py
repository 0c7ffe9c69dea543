"""Long runs say how far they are: a line every few seconds in a log."""

from __future__ import annotations

import logging

from ignite.engine import Engine

from monai_medspike.handlers import ProgressLog


def test_a_log_line_says_done_total_and_time_left(caplog):
    engine = Engine(lambda engine, batch: batch)
    ProgressLog("segmented", "inputs", every=0.0).attach(engine)  # not a terminal under pytest: log lines
    with caplog.at_level(logging.INFO, logger="monai_medspike.handlers.progress"):
        engine.run(list(range(4)), max_epochs=1)
    lines = [r.getMessage() for r in caplog.records if r.name == "monai_medspike.handlers.progress"]
    assert len(lines) == 4
    assert lines[0].startswith("segmented 1 / 4 inputs (25%), ") and "s left" in lines[0]
    assert lines[-1].startswith("segmented 4 / 4 inputs (100%), ") and "left" not in lines[-1]
    quiet = Engine(lambda engine, batch: batch)
    ProgressLog("scored", every=3600.0).attach(quiet)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="monai_medspike.handlers.progress"):
        quiet.run(list(range(4)), max_epochs=1)
    assert [r.getMessage()[:18] for r in caplog.records] == ["scored 4 / 4 image"]  # only the last one
