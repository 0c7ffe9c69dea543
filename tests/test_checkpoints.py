"""Every checkpoint carries the record of its network and settings; what reads it back refuses what contradicts it."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

import monai_medspike
from monai_medspike.checkpoints import (
    CheckpointError,
    TrainedModel,
    check_resume,
    load_weights,
    make_record,
    model_file,
    read_checkpoint,
)
from monai_medspike.networks.nets import MedSpikeFormer
from tests.bundles.helpers import REPO
from tests.helpers import SMALL, write_model

KVASIR = REPO / "bundles" / "kvasir" / "configs"
GROUPS = {"data": {"dataset": "kvasir", "classes": "binary", "image_size": [32, 32],
                   "label_names": ["background", "polyp"]},
          "training": {"learning_rate": 0.003, "epochs": 3}, "run": {"seed": 0, "device": "cuda"}}  # fmt: skip


def small(**kwargs) -> MedSpikeFormer:
    return MedSpikeFormer(in_channels=3, **{**SMALL, **kwargs})


def saved(tmp_path, network: torch.nn.Module, phase: str = "student", bundle: str = "kvasir", **groups) -> str:
    record = make_record(network, phase, bundle, {**GROUPS, **groups})
    path = tmp_path / f"{phase}-{bundle}.pt"
    torch.save(model_file(network, record), path)
    return str(path)


def test_a_model_file_holds_the_weights_under_model_and_what_the_network_is():
    net = small(layout="spike_driven")
    content = model_file(net, make_record(net, "student", "kvasir", GROUPS))
    assert set(content) == {"model", "record"} and content["model"].keys() == net.state_dict().keys()
    record = content["record"]
    assert record["bundle"] == "kvasir" and record["phase"] == "student" and record["kind"] == "spiking student"
    assert record["network"]["_target_"] == "monai_medspike.networks.nets.MedSpikeFormer"
    assert record["network"]["layout"] == "spike_driven" and record["network"]["embed_dims"] == [8, 16, 16, 32]
    # the network group is what the network is; the other groups are the run's
    assert record["settings"]["network"]["time_steps"] == 2 and record["settings"]["network"]["in_channels"] == 3
    assert record["settings"]["data"]["image_size"] == [32, 32]
    assert record["versions"] == {"monai_medspike": monai_medspike.__version__,
                                  "monai": __import__("monai").__version__, "torch": torch.__version__}  # fmt: skip
    assert json.loads(json.dumps(record)) == record  # plain data: torch.load(weights_only=True) reads it
    assert make_record(net.ann_twin(), "teacher", "kvasir", GROUPS)["kind"] == "ANN twin"
    from monai.networks.nets import BasicUNet

    unet = BasicUNet(spatial_dims=2, in_channels=3, out_channels=1)
    assert make_record(unet, "teacher", "kvasir", GROUPS)["kind"] == "MONAI network (BasicUNet)"


def test_the_teachers_checkpoint_is_refused_as_the_student_and_the_reverse(tmp_path):
    student = small()
    teacher_file, student_file = saved(tmp_path, student.ann_twin(), "teacher"), saved(tmp_path, student)
    with pytest.raises(CheckpointError, match=r"holds the ANN teacher .* use the student's model\.pt"):
        load_weights(small(), teacher_file)
    with pytest.raises(CheckpointError, match=r"holds the spiking student, not its ANN teacher: use the teacher's"):
        load_weights(small().ann_twin(), student_file)
    load_weights(small(), teacher_file, twin=True)  # the student starting from its teacher's weights
    load_weights(small(), student_file)
    with pytest.raises(CheckpointError, match="trained with faithful_layout=False but the network has .*=True"):
        load_weights(small(faithful_layout=True), student_file)  # the same parameters, another network


def test_a_checkpoint_without_a_record_loads_with_one_warning(tmp_path, caplog):
    net = small()
    torch.save(net.state_dict(), tmp_path / "old.pt")
    caplog.set_level(logging.WARNING, logger="monai_medspike.checkpoints")
    for _ in range(2):
        load_weights(small(), tmp_path / "old.pt")
    warnings = [r for r in caplog.records if "carries no settings record" in r.getMessage()]
    assert len(warnings) == 1 and str(tmp_path / "old.pt") in warnings[0].getMessage()
    model = TrainedModel(tmp_path / "old.pt", "kvasir")
    assert model.record is None and model.setting("image_size", [64, 64]) == [64, 64]


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", b"\x80\x04not a pickle"])
def test_an_empty_or_damaged_checkpoint_is_named(tmp_path, content):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"checkpoint {path} cannot be read \({len(content)} bytes"):
        read_checkpoint(path)
    torch.save({"optimizer": {"lr": 1}}, path)
    with pytest.raises(CheckpointError, match="holds no network weights"):
        load_weights(small(), path)


def test_a_trained_model_gives_its_settings_and_refuses_contradictions(tmp_path):
    model = TrainedModel(saved(tmp_path, small()), "kvasir")
    assert model.setting("image_size", [64, 64]) == [32, 32] and model.setting("time_steps", 4) == 2
    assert model.setting("epochs", 10) == 3  # a resumed training's, unless given
    assert model.setting("device", "cpu") == "cpu"  # not carried: the run's own
    assert model.check({"time_steps": 2, "image_size": [32, 32]}) == []
    notes = model.check({"image_size": [48, 48]})
    assert notes == [f"--image_size [48, 48] is used as given; {model.path} was trained with [32, 32]"]
    with pytest.raises(
        CheckpointError, match=r"--time_steps 4 contradicts the checkpoint .* trained with time_steps 2"
    ):
        model.check({"time_steps": 4})
    with pytest.raises(CheckpointError, match="holds the spiking student, not its ANN teacher"):
        model.check({"spiking": False})
    with pytest.raises(CheckpointError, match="is a model of the kvasir bundle, not of covid; use it with the kvasir"):
        TrainedModel(model.path, "covid")
    # yes/no settings as the command line gives them: "false" is false
    assert model.check({"spiking": "true", "resize": "true"}) == []
    with pytest.raises(CheckpointError, match="holds the spiking student, not its ANN teacher"):
        model.check({"spiking": "false"})
    built = model.network({"time_steps": 2}, channels_last=True)
    assert list(built.arguments["embed_dims"]) == [8, 16, 16, 32]
    assert built.channels_last and built.time_steps == 2


@pytest.mark.parametrize(
    "name, value, recorded",
    [
        ("in_channels", 1, 3),
        ("out_channels", 3, 1),
        ("classes", "multiclass", "binary"),
        ("label_names", ["background", "lesion"], ["background", "polyp"]),
        ("dataset", "isic2018", "kvasir"),
        ("embed_dims", [32, 64, 128, 256], [8, 16, 16, 32]),
        ("num_heads", 4, 2),
        ("layout", "spike_driven", "published"),
    ],
)
def test_every_setting_that_makes_the_network_is_refused_when_it_contradicts(tmp_path, name, value, recorded):
    model = TrainedModel(saved(tmp_path, small()), "kvasir")
    assert model.settings()[name] == recorded
    with pytest.raises(CheckpointError) as err:
        model.check({name: value})
    assert str(err.value) == (
        f"--{name} {value!r} contradicts the checkpoint {model.path}, which was trained with {name} {recorded!r}; "
        f"leave --{name} out to use the checkpoint's."
    )


def test_an_export_builds_the_network_of_the_checkpoint_it_exports(tmp_path, monkeypatch):
    """``python -m monai.bundle ckpt_export ... --ckpt_file X``: the network is X's (MONAI gives X no config id)."""
    path = saved(tmp_path, small(time_steps=3))
    main = str(Path(sys.modules["monai"].__file__).parent / "bundle" / "__main__.py")
    monkeypatch.setattr(
        sys, "argv", [main, "ckpt_export", "network_def", "--ckpt_file", path, "--key_in_ckpt", "model"]
    )
    assert TrainedModel.locate(None, None, str(tmp_path / "nothing")).path == Path(path)
    monkeypatch.setattr(sys, "argv", [main, "run", "inferring", "--ckpt_file", path])  # not an export: ignored
    assert TrainedModel.locate(None, None, str(tmp_path / "nothing")).path is None


def test_load_model_builds_the_recorded_network_with_its_weights(tmp_path):
    from monai_medspike.checkpoints import load_model

    net = small(layout="spike_driven", faithful_layout=True)
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(-0.1, 0.1)
    for model, phase in ((net, "student"), (net.ann_twin(), "teacher")):
        loaded = load_model(saved(tmp_path, model, phase))
        assert not loaded.training and loaded.spiking == model.spiking and loaded.layout == "spike_driven"
        assert loaded.arguments["faithful_layout"] is True
        own = model.state_dict()
        assert all(torch.equal(value, own[key]) for key, value in loaded.state_dict().items())
    torch.save(net.state_dict(), tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="carries no record of its network; build the network"):
        load_model(tmp_path / "old.pt")


def test_resume_keeps_what_the_run_was_started_with():
    student = small()
    old = make_record(student, "student", "kvasir", GROUPS)
    free = {**GROUPS, "training": {"learning_rate": 0.001, "epochs": 9}}
    check_resume(old, make_record(small(), "student", "kvasir", free), "run/last.pt")  # budget may change
    cases = {
        "image_size": make_record(student, "student", "kvasir", {**GROUPS, "data": {**GROUPS["data"],
                                                                                     "image_size": [48, 48]}}),
        "time_steps": make_record(small(time_steps=4), "student", "kvasir", GROUPS),
        "layout": make_record(small(layout="spike_driven"), "student", "kvasir", GROUPS),
    }  # fmt: skip
    for name, new in cases.items():
        with pytest.raises(CheckpointError) as err:
            check_resume(old, new, "run/last.pt")
        line = str(err.value)
        assert line.startswith(f"--resume_from run/last.pt was trained with {name} ") and f"leave --{name} out" in line
    with pytest.raises(CheckpointError, match="is a run of the kvasir bundle, not of covid; resume it with the kvasir"):
        check_resume(old, make_record(student, "student", "covid", GROUPS), "run/last.pt")
    for name, value in (("dataset", "isic2018"), ("classes", "multiclass"), ("seed", 1)):
        group = "run" if name == "seed" else "data"
        other = {**GROUPS, group: {**GROUPS[group], name: value}}
        with pytest.raises(CheckpointError, match=rf"was trained with {name} .*; this run has {value!r}"):
            check_resume(old, make_record(student, "student", "kvasir", other), "run/last.pt")
    with pytest.raises(CheckpointError, match=r"was trained with embed_dims \[8, 16, 16, 32\]; this run has \[8, 8"):
        check_resume(old, make_record(small(embed_dims=(8, 8, 16, 16)), "student", "kvasir", GROUPS), "run/last.pt")
    with pytest.raises(
        CheckpointError, match="holds a network with faithful_layout False; this run builds it with True"
    ):
        check_resume(old, make_record(small(faithful_layout=True), "student", "kvasir", GROUPS), "run/last.pt")


def parser_of(*files: str, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(KVASIR / f) for f in files])
    parser.update(overrides)
    return parser


def test_inference_and_evaluation_build_network_and_transforms_from_the_checkpoint(tmp_path):
    settings = {"image_size": [32, 32], "layout": "spike_driven", "time_steps": 2, "embed_dims": [8, 8, 16, 16]}
    trained = parser_of("train.json", output_root=str(tmp_path), **settings)
    model = write_model(tmp_path / "model.pt", trained)
    for files in (["inference.json"], ["train.json", "evaluate.json"]):
        parser = parser_of(*files, ckpt_path=str(model), output_root=str(tmp_path / "other"), ckpt_dir=None)
        assert parser.get_parsed_content("image_size") == [32, 32]
        network = parser.get_parsed_content("network_def")
        assert (network.layout, network.time_steps, list(network.embed_dims)) == ("spike_driven", 2, [8, 8, 16, 16])
        chain = parser.get_parsed_content("val_transforms" if len(files) > 1 else "preprocessing").transforms
        size = [t for t in chain if type(t).__name__ == "Resized"][0].resizer.spatial_size
        assert tuple(size) == (32, 32)


def run_inference(tmp_path, bundle: str, *args: str) -> subprocess.CompletedProcess:
    config = REPO / "bundles" / bundle / "configs" / "inference.json"
    command = [sys.executable, "-m", "monai.bundle", "run", "inferring", "--config_file", str(config),
               "--output_root", str(tmp_path / "out"), "--ckpt_dir", "None", "--infer_name", "masks",
               *args]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)


@pytest.mark.parametrize(
    "bundle, args, line",
    [
        ("kvasir", ["--time_steps", "4"], "error: --time_steps 4 contradicts the checkpoint {student}, which was "
                                          "trained with time_steps 2; leave --time_steps out to use the checkpoint's."),
        ("kvasir", ["--ckpt_path", "{teacher}"], "error: checkpoint {teacher} holds the ANN teacher (spiking false), "
                                                 "not the spiking student: use the student's model.pt "
                                                 "(student-*/model.pt, or the bundle's models/model.pt)."),
        ("kvasir", ["--spiking", "false"], "error: checkpoint {student} holds the spiking student, not its ANN "
                                           "teacher: use the teacher's model.pt (teacher-*/model.pt)."),
        ("busi", [], "error: {student} is a model of the kvasir bundle, not of busi; use it with the kvasir bundle's "
                     "configs (bundles/kvasir/configs/)."),
    ],
)  # fmt: skip
def test_a_contradiction_ends_inference_in_one_line_before_any_output(tmp_path, bundle, args, line):
    trained = parser_of("train.json", image_size=[32, 32], time_steps=2, output_root=str(tmp_path))
    student = write_model(tmp_path / "student.pt", trained)
    teacher = write_model(tmp_path / "teacher.pt", trained, phase="teacher")
    args = [a.format(student=student, teacher=teacher) for a in args]
    checkpoint = [] if "--ckpt_path" in args else ["--ckpt_path", str(student)]
    proc = run_inference(tmp_path, bundle, *checkpoint, *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == line.format(student=student, teacher=teacher)
    assert not (tmp_path / "out" / "masks").exists()


def test_a_model_file_given_as_the_weights_is_read_as_its_weights_after_its_record_is_checked(tmp_path):
    """MONAI's tools that take a checkpoint for a bare state dict (``ckpt_export``/``onnx_export`` without
    ``--key_in_ckpt``, ``monai.bundle.load``, ``CheckpointLoader`` with one object) read a model file as its weights;
    a teacher's file is refused for the student, and the reverse."""
    from ignite.handlers import Checkpoint

    student = small()
    path = saved(tmp_path, student)
    loaded = small()
    loaded.load_state_dict(torch.load(path, weights_only=True))
    for name, value in student.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value)
    Checkpoint.load_objects(to_load={"": small()}, checkpoint=path)  # MONAI's _export, key_in_ckpt ""
    teacher = saved(tmp_path, small().ann_twin(), phase="teacher")
    with pytest.raises(CheckpointError, match="holds the ANN teacher .spiking false., not the spiking student"):
        small().load_state_dict(torch.load(teacher, weights_only=True))
    with pytest.raises(CheckpointError, match="holds the spiking student, not its ANN teacher"):
        small().ann_twin().load_state_dict(torch.load(path, weights_only=True))
    with pytest.raises(CheckpointError, match="trained with time_steps=2 but the network has time_steps=4"):
        small(time_steps=4).load_state_dict(torch.load(path, weights_only=True))
    # a plain state dict, and the student starting from its teacher's weights, load as before
    small().load_state_dict(student.state_dict())
    load_weights(small(), teacher, twin=True)


@pytest.mark.parametrize("converter, missing", [(None, "onnx and onnxscript"), ("{'dynamo': False}", "onnx,")])
def test_onnx_export_without_the_onnx_packages_is_refused_naming_them_and_the_extra(monkeypatch, converter, missing):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("onnx") else real(name))
    argv = ["/x/monai/bundle/__main__.py", "onnx_export", "network_def", "--ckpt_file", "m.pt"]
    monkeypatch.setattr(sys, "argv", argv + (["--converter_kwargs", converter] if converter else []))
    with pytest.raises(monai_medspike.errors.UserError, match=f"onnx_export needs {missing}") as caught:
        TrainedModel.locate(None, None, "outputs", "kvasir")
    assert 'pip install -e ".[onnx]"' in str(caught.value)
