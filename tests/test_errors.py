"""The one error boundary: failures a user can cause end in one line and exit status 2, by kind."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from monai.bundle import run
from PIL import Image

from monai_medspike.checkpoints import save_atomic
from monai_medspike.data import DataError
from monai_medspike.errors import UserError, run_command, stray_arguments, user_message
from monai_medspike.runs import folder_lock
from tests.bundles.helpers import REPO, bundle, run_folder

KVASIR = REPO / "bundles" / "kvasir" / "configs" / "train.json"
COVID = REPO / "bundles" / "covid" / "configs" / "train.json"
FAST = {"image_size": [32, 32], "demo_count": 5, "slices_per_volume": 2}


def test_user_errors_are_found_through_the_wrappers_of_monai_and_torch():
    try:
        try:
            raise DataError("a.png: corrupt")
        except DataError as e:
            raise RuntimeError("Failed to evaluate ConfigExpression") from e
    except RuntimeError as wrapped:
        assert user_message(wrapped) == "a.png: corrupt"
    full = OSError(errno.ENOSPC, "No space left on device", "/out/last.pt")
    assert user_message(full).startswith("/out/last.pt: No space left on device: the disk is full")
    denied = PermissionError(errno.EACCES, "Permission denied", "/ro/x")
    assert "may not be used; give one you may read and write" in user_message(denied)
    assert user_message(KeyboardInterrupt()) == "interrupted (Ctrl-C)."
    assert user_message(ZeroDivisionError("a bug")) is None  # bugs keep their traceback


def test_run_command_ends_in_one_line_with_status_2_and_lets_bugs_through(capsys):
    def bad_input():
        raise DataError("x.json: not valid JSON; fix it.")

    with pytest.raises(SystemExit) as stop:
        run_command(bad_input)
    assert stop.value.code == 2
    assert capsys.readouterr().err == "error: x.json: not valid JSON; fix it.\n"
    with pytest.raises(ZeroDivisionError):
        run_command(lambda: 1 / 0)


def test_stray_values_are_found():
    argv = ["monai/bundle/__main__.py", "run", "training", "--config_file", "t.json", "--image_size", "32", "32"]
    assert 'e.g. --image_size "[32, 32]"' in stray_arguments(argv)
    assert stray_arguments(["m", "run", "training", "--epochs=2", "3"]).startswith("the value '3' follows --epochs 2")
    assert stray_arguments(["m", "run", "training", "--overwrite", "--epochs", "2", "--x", "[1, 2]"]) is None
    assert stray_arguments(["m", "ckpt_export", "network_def", "--filepath", "m.ts"]) is None


def _one_line(proc: subprocess.CompletedProcess, *expected: str) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def test_bundle_runs_end_in_one_line(tmp_path):
    base = ["run", "training", "--config_file", str(KVASIR), "--epochs", "1", "--image_size", "[32, 32]"]
    # a list given as two values
    proc = bundle("run", "training", "--config_file", str(KVASIR), "--image_size", "32", "32", check=False)
    _one_line(proc, "the value '32' follows --image_size 32", '--image_size "[32, 32]"')
    # an output folder under a file: refused before any data is written
    (tmp_path / "a-file").write_text("")
    proc = bundle(*base, "--output_root", str(tmp_path / "a-file" / "out"), check=False)
    _one_line(proc, f"--output_root {tmp_path / 'a-file' / 'out'}", "is a file, not a folder")
    # a hand-written datalist with a test image the model trains on
    pairs = []
    for i in range(3):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(tmp_path / f"i{i}.jpg")
        Image.fromarray((np.arange(32 * 32).reshape(32, 32) % 2 * 255).astype(np.uint8)).save(tmp_path / f"m{i}.png")
        pairs.append({"image": f"i{i}.jpg", "label": f"m{i}.png"})
    datalist = tmp_path / "list.json"
    datalist.write_text(json.dumps({"training": pairs[:2], "validation": pairs[2:], "test": pairs[:1]}))
    proc = bundle(*base, "--output_root", str(tmp_path / "out"), "--datalist", str(datalist), check=False)
    _one_line(proc, f"datalist {datalist}", "entry 0 of 'test': image i0.jpg is also entry 0 of 'training'")
    assert not list((tmp_path / "out").glob("teacher-*/*.pt"))  # refused before any training


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_device_cuda_without_a_gpu_is_refused_in_one_line(tmp_path):
    proc = bundle("run", "training", "--config_file", str(KVASIR), "--output_root", str(tmp_path), "--device", "cuda",
                  check=False)  # fmt: skip
    _one_line(proc, "--device 'cuda': names a CUDA GPU, but none is visible here")


def test_a_failed_checkpoint_write_says_what_is_intact(tmp_path, monkeypatch):
    import monai_medspike.checkpoints as checkpoints

    path = tmp_path / "run" / "last.pt"
    save_atomic({"epoch": 1}, path)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints.os, "fsync", full)
    with pytest.raises(
        UserError,
        match=rf"last\.pt: not written \(No space left on device\); the last\.pt there is "
        rf"the previous one, complete: free space, then resume with --resume_from {tmp_path / 'run'}",
    ):
        save_atomic({"epoch": 2}, path)
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # nothing half-written left
    with pytest.raises(UserError, match=r"model\.pt: not written .*; no earlier version of it exists"):
        save_atomic({}, tmp_path / "run" / "model.pt")


def test_two_runs_on_one_folder_are_refused_naming_the_other(tmp_path):
    folder = tmp_path / "out" / "first"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from monai_medspike.runs import folder_lock\n"
         f"with folder_lock({str(folder)!r}, wait=False):\n print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"first: another run \(pid {holder.pid} on .*\) is writing to it"):
            with folder_lock(folder, wait=False):
                pass
        # a training on that folder stops at once, naming the other run
        proc = bundle("run", "training", "--config_file", str(KVASIR), "--output_root", str(tmp_path / "out"),
                      "--run_name", "first", "--phase", "teacher", "--epochs", "1", "--image_size", "[32, 32]",
                      check=False)  # fmt: skip
        _one_line(proc, f"{folder}: another run (pid {holder.pid} on")
        assert not (folder / "last.pt").exists()
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(folder, wait=False):  # free again once the other ended
        pass
    with folder_lock(tmp_path / "shared"):  # waiting locks (data preparation) are taken in turn
        start = time.monotonic()
    assert time.monotonic() - start < 5


@pytest.mark.slow
def test_ctrl_c_says_where_to_resume_and_resume_works(tmp_path, monkeypatch):
    import monai_medspike.handlers.checkpoint as checkpoint

    save = checkpoint.ResumableCheckpoint.save

    def save_then_interrupt(self, engine, finished=False):
        save(self, engine, finished)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.ResumableCheckpoint, "save", save_then_interrupt)
    with pytest.raises(BaseException) as info:
        run("training", config_file=str(COVID), output_root=str(tmp_path), phase="teacher", epochs=2, **FAST)
    teacher = run_folder(tmp_path, "teacher")
    assert user_message(info.value) == (
        f"interrupted (Ctrl-C); {teacher / 'last.pt'} holds the last finished epoch: resume with --resume_from "
        f"{teacher}"
    )
    monkeypatch.setattr(checkpoint.ResumableCheckpoint, "save", save)
    run("training", config_file=str(COVID), output_root=str(tmp_path), phase="teacher", epochs=2,
        resume_from=str(teacher), **FAST)  # fmt: skip
    assert torch.load(teacher / "last.pt", weights_only=False)["finished"]


def test_a_damaged_comparison_result_is_named(tmp_path, capsys):
    from monai_medspike.compare.__main__ import main

    done = tmp_path / "runs" / "student-seed0" / "result.json"
    done.parent.mkdir(parents=True)
    done.write_text('{"job": ')
    assert main(["--bundle", str(REPO / "bundles" / "kvasir"), "--out", str(tmp_path), "--report_only"]) == 2
    err = capsys.readouterr().err
    assert f"{done}: cannot be read as JSON" in err and "remove it and run the comparison again" in err


def test_a_user_error_from_a_loader_worker_and_a_bug_raised_while_handling_one():
    worker = RuntimeError(
        "Caught RuntimeError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n  ...\n"
        "monai_medspike.data.errors.DataError: /data/x.png: a 16-bit image (Pillow mode I;16); convert it.\n"
    )
    assert user_message(worker) == "/data/x.png: a 16-bit image (Pillow mode I;16); convert it."
    try:
        try:
            raise DataError("a.png: corrupt")
        except DataError:
            raise ZeroDivisionError("a bug in the handler")  # noqa: B904 - the implicit context is the point
    except ZeroDivisionError as bug:
        assert user_message(bug) is None  # not taken for the user error it was handling


def test_a_models_recorded_data_gives_way_to_data_named_on_the_command_line(tmp_path, monkeypatch):
    from monai_medspike.checkpoints import TrainedModel

    model = TrainedModel(None)
    model.record = {"settings": {"data": {"datalist": "/recorded/list.json", "dataset_dir": None}}}
    assert model.setting("datalist") == "/recorded/list.json"
    argv = ["/x/monai/bundle/__main__.py", "run", "evaluating", "--dataset_dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    assert model.setting("datalist") is None  # the folder given replaces the recorded datalist: not ambiguous
