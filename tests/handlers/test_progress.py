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


def test_prepare_and_the_datalist_check_say_how_far_they_are(tmp_path, caplog, monkeypatch):
    from monai_medspike.data import make_demo_dataset, prepare
    from monai_medspike.data.checks import check_datalist
    from monai_medspike.utils import Progress

    monkeypatch.setattr(Progress, "__init__", _every_step(Progress.__init__))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = make_demo_dataset("kvasir", tmp_path / "release", seed=1)
    with caplog.at_level(logging.INFO):
        prepare("kvasir", root, tmp_path / "kvasir.json", seed=0, val_fraction=0.25, test_fraction=0.25)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("checked ")]
    count = len(list((root / "Kvasir-SEG" / "images").glob("*.jpg")))
    assert lines[0].startswith(f"checked 1 / {count} samples (") and "s left" in lines[0]
    assert lines[-1].startswith(f"checked {count} / {count} samples (100%)")
    (tmp_path / "copy.json").write_text((tmp_path / "kvasir.json").read_text())  # not remembered as checked
    caplog.clear()
    with caplog.at_level(logging.INFO):
        check_datalist(tmp_path / "copy.json", "kvasir")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("checked the files of copy.json")]
    assert lines and lines[-1].startswith(f"checked the files of copy.json: {count} / {count} pairs (100%)")


def _every_step(init):
    def every_step(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.every = 0.0

    return every_step
