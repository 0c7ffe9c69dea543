"""Settings are checked before any work starts: unknown keys with the nearest valid ones, bad values named."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from monai_medspike.settings import SettingsError, check_settings
from monai_medspike.workflows import check_command_line, check_overrides

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "bundles" / "covid" / "configs" / "train.json"


def config() -> dict:
    return ConfigParser.load_config_files(str(TRAIN))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"epochz": 3}, "--epochz: unknown setting; the config has no id 'epochz'. Did you mean --epochs?"),
        ({"learning_rat": 0.1}, "Did you mean --learning_rate?"),
        ({"network_def#time_step": 2}, "Did you mean --network_def#time_steps?"),
        ({"epochs": "abc"}, "--epochs 'abc': must be a whole number >= 1."),
        ({"epochs": 0}, "--epochs 0: must be a whole number >= 1."),
        ({"epochs": True}, "--epochs True: must be a whole number >= 1."),
        ({"image_size": 65}, "--image_size 65: must be two sizes, each a multiple of 16"),
        ({"image_size": [64, 40]}, "--image_size [64, 40]: must be two sizes, each a multiple of 16"),
        ({"batch_size": 0}, "--batch_size 0: must be a whole number >= 1."),
        ({"learning_rate": 0}, "--learning_rate 0: must be a number > 0."),
        ({"learning_rate": float("nan")}, "--learning_rate nan: must be a number > 0."),
        ({"lambda_align": -1}, "--lambda_align -1: must be a number >= 0."),
        ({"lambda_side": -0.5}, "--lambda_side -0.5: must be a number >= 0."),
        ({"phase": "ann"}, "--phase 'ann': must be one of teacher, student, both."),
        ({"classes": "three"}, "--classes 'three': must be one of binary, multiclass."),
        ({"overwrite": "maybe"}, "--overwrite 'maybe': must be true or false."),
        ({"use_checkpoint": "sometimes"}, "--use_checkpoint 'sometimes': must be true or false."),
        ({"channels_last": 2}, "--channels_last 2: must be true, false or auto."),
        ({"precision": "float16"}, "--precision 'float16': must be one of float32, bfloat16, auto."),
        ({"align_stages": [0, 4]}, "--align_stages [0, 4]: must be a list of encoder stages 0..3"),
        ({"datalist": "/no/such/list.json"}, "--datalist '/no/such/list.json': must be an existing file."),
        ({"dataset_dir": "/no/such/folder"}, "--dataset_dir '/no/such/folder': must be an existing folder."),
    ],
)
def test_bad_overrides_are_named_with_what_is_accepted(overrides, message):
    with pytest.raises(SettingsError) as error:
        check_overrides(config(), overrides)
    assert message in str(error.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(SettingsError) as error:
        check_overrides(config(), {"epochz": 1, "batch_size": -1, "phase": "x"})
    assert len(str(error.value).splitlines()) == 3


@pytest.mark.parametrize(
    "overrides",
    [
        {"epochs": 3, "image_size": [32, 32], "phase": "teacher", "overwrite": "false", "learning_rate": 1e-4},
        {"network_def#time_steps": 2, "early_stop_min_delta": 0.1, "config_file": "x", "logging_file": "y"},
        {"train_transforms": "$None", "epochs": "$1 + 1"},  # expressions are the config's business
        {"use_checkpoint": "true", "channels_last": "false", "precision": "bfloat16"},
    ],
)
def test_valid_overrides_pass(overrides):
    check_overrides(config(), overrides)


@pytest.mark.parametrize("value, expected", [("true", True), ("false", False), (True, True), ("0", False)])
def test_speed_flags_reach_the_network_and_its_teacher_as_booleans(value, expected):
    """``--use_checkpoint false`` arrives as the string "false": the network must not read it as true."""
    parser = ConfigParser()
    parser.read_config(str(TRAIN))
    parser["use_checkpoint"] = value
    parser["channels_last"] = value
    parser["embed_dims"] = [8, 16, 16, 32]
    network = parser.get_parsed_content("network_def")
    teacher = parser.get_parsed_content("teacher_def")
    for net in (network, teacher):
        assert net.use_checkpoint is expected and net.channels_last is expected


def untrained(parser: ConfigParser, folder: Path) -> ConfigParser:
    """``parser`` with its runs and published model moved to ``folder`` (nothing trained there)."""
    parser["output_root"], parser["ckpt_dir"] = str(folder), None
    return parser


@pytest.mark.parametrize("config_file", [TRAIN, TRAIN.with_name("inference.json")])
def test_precision_reaches_the_network_and_its_teacher(config_file, tmp_path):
    parser = ConfigParser()
    parser.read_config(str(config_file))
    untrained(parser, tmp_path)
    assert parser["precision"] == "auto"  # the default: chosen for the device (tests/test_speed.py)
    parser["precision"] = "bfloat16"
    parser["embed_dims"] = [8, 16, 16, 32]
    nets = [parser.get_parsed_content("network_def")]
    nets += [parser.get_parsed_content("teacher_def")] if "teacher_def" in parser.config else []
    assert [net.precision for net in nets] == ["bfloat16"] * len(nets)


@pytest.mark.parametrize("device, channels_last", [("cpu", True), ("cuda", False)])
def test_inference_defaults_to_the_fastest_float32_path_for_its_device(device, channels_last, tmp_path, monkeypatch):
    """inference.json folds the batch norms and, on a CPU, runs channels-last (same masks up to float32
    rounding); on a CPU without fast bfloat16 it stays in float32. Each is switched off by its key, as the command
    line passes it."""
    import monai_medspike.speed

    monkeypatch.setattr(monai_medspike.speed, "probe_cpu_bfloat16", lambda: 11.0)  # a CPU like this one
    parser = ConfigParser()
    parser.read_config(str(TRAIN.with_name("inference.json")))
    untrained(parser, tmp_path)
    parser["device"] = f"$torch.device('{device}')"
    parser["embed_dims"] = [8, 16, 16, 32]
    net = parser.get_parsed_content("network_def")
    assert net.channels_last is channels_last and net.precision == "float32"
    assert parser.get_parsed_content("inference#fold_batch_norm", instantiate=False) is True
    parser["channels_last"], parser["fold_batch_norm"] = "false", "false"
    assert parser.get_parsed_content("network_def", lazy=False).channels_last is False
    assert parser.get_parsed_content("inference#fold_batch_norm", lazy=False, instantiate=False) is False


def test_a_folder_without_a_checkpoint_is_refused_with_what_it_holds(tmp_path):
    (tmp_path / "teacher-1").mkdir()
    (tmp_path / "teacher-1" / "model.pt").write_bytes(b"")
    with pytest.raises(SettingsError, match=r"no last\.pt in this folder \(it holds: model\.pt\)"):
        check_overrides(config(), {"resume_from": str(tmp_path / "teacher-1")})


def test_the_bundle_files_own_values_are_checked_too():
    with pytest.raises(SettingsError, match="--batch_size 0"):
        check_settings({"batch_size": 0, "epochs": "$@x"})
    check_settings({"epochs": "$@x", "unknown": 1})  # expressions and unknown keys are not judged here


def test_outside_the_bundle_command_line_nothing_is_checked():
    check_command_line(["pytest", "--epochz", "3"])  # not `python -m monai.bundle`: no SystemExit


def test_the_command_line_is_read_as_monai_bundle_reads_it(capsys):
    main = str(Path(sys.modules["monai"].__file__).parent / "bundle" / "__main__.py")
    with pytest.raises(SystemExit) as stop:
        check_command_line([main, "run", "training", "--config_file", str(TRAIN), "--epochs=0", "--epochz", "3"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--epochz: unknown setting" in err and "--epochs 0:" in err
    check_command_line([main, "run", "training", "--config_file", f"['{TRAIN}']", "--epochs", "2"])


@pytest.mark.parametrize("overlay", ["train.json", "evaluate.json", "inference.json"])
def test_bundle_command_refuses_a_typo_before_any_work(overlay, tmp_path):
    files = str(TRAIN) if overlay == "train.json" else f"['{TRAIN}','{TRAIN.parent / overlay}']"
    run = {"train.json": "training", "evaluate.json": "evaluating", "inference.json": "inferring"}[overlay]
    out = tmp_path / "out"
    args = ["--config_file", files, "--output_root", str(out), "--epochz", "3", "--batch_size", "0"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", run, *args], env=env, capture_output=True, text=True,
        timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("error: --epochz: unknown setting") and "Did you mean --epochs?" in lines[0]
    assert lines[1] == "--batch_size 0: must be a whole number >= 1."
    assert "Traceback" not in proc.stderr
    assert not out.exists()  # nothing created
