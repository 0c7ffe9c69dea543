"""A bundle training survives SIGKILL (resumed, losing at most one epoch) and a diverging one stops loudly."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from monai_medspike.handlers import all_finite
from monai_medspike.workflows import trained_epochs
from tests.bundles.helpers import REPO, isolated

TRAIN = REPO / "bundles" / "covid" / "configs" / "train.json"
FAST = ["--image_size", "[32, 32]", "--demo_count", "5", "--slices_per_volume", "2"]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(TRAIN), *isolated(args)]


def kill_after(args: list[str], pattern: str) -> tuple[str, re.Match]:
    """Start a training, SIGKILL it as soon as a log line matches ``pattern``; returns the log and the match."""
    proc = subprocess.Popen(command(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    log = []
    try:
        for line in proc.stdout:
            log.append(line)
            match = re.search(pattern, line)
            if match:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return "".join(log), match
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    raise AssertionError(f"the training ended before {pattern!r}:\n{''.join(log)[-4000:]}")


def run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), capture_output=True, text=True, env=ENV, timeout=900)


@pytest.mark.slow
def test_sigkill_in_the_student_phase_resumes_at_the_next_epoch_with_its_best_metric(tmp_path):
    args = ["--output_root", str(tmp_path), "--epochs", "3", *FAST]
    _, match = kill_after(args, r"Epoch\[2\] resumable checkpoint written to (\S*student-\S+)/last\.pt")
    student = Path(match.group(1))
    saved = torch.load(student / "last.pt", weights_only=True)
    assert saved["phase"] == "student" and trained_epochs(saved)[0] == 2 and not saved["finished"]
    best = saved["best"]
    assert set(saved["teacher"]) == set(torch.load(saved["teacher_checkpoint"], weights_only=True)["model"])
    teacher_file = Path(saved["teacher_checkpoint"])
    teacher_file.rename(teacher_file.with_suffix(".moved"))  # the resume must not need the teacher's file

    # the run folder; phase "both" continues with the student, at the lower learning rate given now
    proc = run(["--resume_from", str(student), *args, "--learning_rate", "0.001"])
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    expected = (
        f"resuming the student from {student / 'last.pt'} at epoch 3 "
        f"(best val_mean_dice {best['best_metric']:.4f} at epoch {best['best_metric_epoch']})"
    )
    assert expected in log
    assert "training the teacher" not in log and "Epoch[1]" not in log and "Epoch[2]" not in log
    assert "learning rate set to --learning_rate 0.001 (the run started at 0.003)" in log
    assert f"teacher restored from the resumed checkpoint (trained as {teacher_file})" in log
    final = torch.load(student / "last.pt", weights_only=True)
    assert trained_epochs(final)[0] == 3 and final["finished"]
    assert final["best"]["best_metric"] >= best["best_metric"]
    assert [g["lr"] for g in final["optimizer"]["param_groups"]] == [0.001]
    assert (student / "model.pt").is_file()


@pytest.mark.slow
def test_sigkill_in_the_teacher_phase_resumes_the_teacher_then_trains_the_student(tmp_path):
    args = ["--output_root", str(tmp_path), "--epochs", "2", *FAST]
    _, match = kill_after(args, r"Epoch\[1\] resumable checkpoint written to (\S*teacher-(\S+))/last\.pt")
    teacher, run_id = Path(match.group(1)), match.group(2)
    assert not list(tmp_path.glob("student-*"))

    # nothing of the first command line but where it wrote: the epochs, size, demo data and slices are the run's
    proc = run(["--resume_from", str(teacher / "last.pt"), "--output_root", str(tmp_path)])
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert f"resuming the teacher from {teacher / 'last.pt'} at epoch 2" in log
    student = tmp_path / f"student-{run_id}"  # the same run id: the student sits beside its teacher
    assert f"teacher loaded from {teacher / 'model.pt'}" in log
    assert trained_epochs(torch.load(teacher / "last.pt", weights_only=True))[0] == 2
    last = torch.load(student / "last.pt", weights_only=True)
    assert trained_epochs(last)[0] == 2
    assert last["record"]["settings"]["data"]["image_size"] == [32, 32]
    assert last["record"]["settings"]["data"]["demo_count"] == 5


@pytest.mark.slow
def test_resuming_a_finished_phase_moves_on_and_a_missing_checkpoint_is_named(tmp_path):
    args = ["--output_root", str(tmp_path), "--epochs", "1", "--phase", "teacher", *FAST]
    assert run(args).returncode == 0
    (teacher,) = tmp_path.glob("teacher-*")
    run_id = teacher.name.split("-", 1)[1]
    proc = run(["--resume_from", str(teacher), *args])
    assert (
        proc.returncode == 0 and "has trained 1 epoch(s) (--epochs 1); not trained again" in proc.stdout + proc.stderr
    )
    assert not list(tmp_path.glob("student-*"))
    # the same folder with --phase both: the finished teacher is kept and its student trained beside it
    both = [a if a != "teacher" else "both" for a in args]
    proc = run(["--resume_from", str(teacher), *both])
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and f"teacher loaded from {teacher / 'model.pt'}" in log
    assert (tmp_path / f"student-{run_id}" / "model.pt").is_file()
    shutil.rmtree(tmp_path / f"student-{run_id}")

    # a phase that stopped early is finished too, whatever --epochs says
    early = tmp_path / "early"
    stop = ["--early_stop_patience", "1", "--early_stop_min_delta", "2.0"]  # Dice cannot improve by 2
    args_early = ["--output_root", str(early), "--epochs", "3", "--phase", "teacher", *FAST]
    assert run([*args_early, *stop]).returncode == 0
    (stopped,) = early.glob("teacher-*")
    proc = run(["--resume_from", str(stopped), *args_early])
    assert "stopped early after 2 epoch(s) (--epochs 3); not trained again" in proc.stdout + proc.stderr

    (teacher / "last.pt").unlink()
    proc = run(["--resume_from", str(teacher), *args])
    assert proc.returncode == 2
    assert f"--resume_from '{teacher}': no last.pt in this folder (it holds: model.pt, tb/)" in proc.stderr


@pytest.mark.slow
def test_a_diverging_run_exits_non_zero_without_saving_a_model(tmp_path):
    proc = run(["--output_root", str(tmp_path), "--epochs", "3", "--learning_rate", "1e6", *FAST])
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert re.match(r"error: teacher phase, epoch 1, iteration \d+: .*training stopped\. Try a lower "
                    r"--learning_rate \(now 1e\+06\)\.", last), last  # fmt: skip
    for path in tmp_path.rglob("*.pt"):  # whatever was saved is finite
        state = torch.load(path, weights_only=True)
        assert all_finite((state["model"] if "model" in state else state).values())
    assert not list(tmp_path.glob("student-*"))
