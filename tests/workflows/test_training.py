"""The two-phase workflow: phases independent of each other, split defaults shared with the data command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, run
from monai.networks.nets import BasicUNet

from monai_medspike.checkpoints import load_weights
from monai_medspike.data import prepare
from monai_medspike.data.__main__ import main as data_main
from monai_medspike.data.splits import DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION
from tests.bundles.helpers import REPO, run_folder

TRAIN = REPO / "bundles" / "covid" / "configs" / "train.json"
FAST = {"image_size": [32, 32], "demo_count": 5, "slices_per_volume": 2, "epochs": 1}
BASIC_UNET = {
    "_target_": "monai.networks.nets.BasicUNet", "spatial_dims": 2, "in_channels": "@in_channels",
    "out_channels": "@out_channels", "features": [8, 8, 16, 16, 32, 8],
}  # fmt: skip


@pytest.mark.slow
def test_the_teacher_phase_trains_any_monai_network_and_builds_nothing_of_the_student(tmp_path, monkeypatch):
    import monai_medspike.networks.nets as nets

    def refuse(*args, **kwargs):
        raise AssertionError("the teacher phase built the alignment net")

    monkeypatch.setattr(nets, "DistributionAlignmentNet", refuse)
    run("training", config_file=str(TRAIN), output_root=str(tmp_path), phase="teacher", teacher_def=BASIC_UNET, **FAST)
    teacher = run_folder(tmp_path, "teacher")
    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=(8, 8, 16, 16, 32, 8))
    load_weights(net, str(teacher / "model.pt"))
    last = torch.load(teacher / "last.pt", weights_only=True)
    assert last["phase"] == "teacher" and last["finished"] and "teacher_checkpoint" not in last
    assert not list(tmp_path.glob("student-*"))


def test_the_bundles_and_the_data_command_split_alike(tmp_path):
    assert DEFAULT_VAL_FRACTION == 0.2 and DEFAULT_TEST_FRACTION == 0.2
    import inspect

    defaults = inspect.signature(prepare).parameters
    assert defaults["val_fraction"].default == DEFAULT_VAL_FRACTION
    assert defaults["test_fraction"].default == DEFAULT_TEST_FRACTION
    # the command's datalist and the bundle's --dataset_dir datalist of one release are the same split
    from monai_medspike.data import make_demo_dataset

    release = make_demo_dataset("kvasir", tmp_path / "release", count=10, seed=0)
    assert data_main(["prepare", "kvasir", "--root", str(release), "--out", str(tmp_path / "cli.json")]) == 0
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "kvasir" / "configs" / "train.json"))
    parser.update({"output_root": str(tmp_path / "out"), "dataset_dir": str(release)})
    bundle_list = json.loads(Path(parser.get_parsed_content("datalist_file")).read_text())
    cli_list = json.loads((tmp_path / "cli.json").read_text())
    for split in ("training", "validation", "test"):
        assert [e["id"] for e in bundle_list[split]] == [e["id"] for e in cli_list[split]], split
    assert bundle_list["val_fraction"] == cli_list["val_fraction"] == DEFAULT_VAL_FRACTION


def test_cached_datasets_give_the_plain_datasets_items_and_disk_cache_follows_the_transforms(tmp_path):
    from monai.data import CacheDataset, PersistentDataset

    from monai_medspike.data import get_transforms, make_demo_dataset
    from monai_medspike.workflows import make_dataset

    release = make_demo_dataset("kvasir", tmp_path / "release", count=6, seed=0)
    prepare("kvasir", release, tmp_path / "k.json")
    data = json.loads((tmp_path / "k.json").read_text())["training"]
    for entry in data:
        entry["image"], entry["label"] = str(tmp_path / entry["image"]), str(tmp_path / entry["label"])
    small = get_transforms("kvasir", "eval", spatial_size=(32, 32))
    plain = make_dataset(data, small)
    memory = make_dataset(data, small, "memory")
    disk = make_dataset(data, small, "disk", tmp_path / "cache")
    assert isinstance(memory, CacheDataset) and isinstance(disk, PersistentDataset)
    for i in range(len(data)):
        for cached in (memory, disk):
            torch.testing.assert_close(torch.as_tensor(cached[i]["image"]), torch.as_tensor(plain[i]["image"]))
            torch.testing.assert_close(torch.as_tensor(cached[i]["label"]), torch.as_tensor(plain[i]["label"]))
    files = sorted((tmp_path / "cache").rglob("*.pt"))
    assert len(files) == len(data)
    # another image size is another cache entry, never a stale one
    other = make_dataset(data, get_transforms("kvasir", "eval", spatial_size=(48, 48)), "disk", tmp_path / "cache")
    assert other[0]["image"].shape[-2:] == (48, 48)
    assert len(list((tmp_path / "cache").rglob("*.pt"))) == len(data) + 1
    with pytest.raises(ValueError, match="cache must be one of None, memory, disk; got 'ram'"):
        make_dataset(data, small, "ram")


def test_resume_takes_a_run_folder_or_its_last_pt_and_refuses_other_checkpoints(tmp_path):
    from monai_medspike.runs import resolve_resume
    from monai_medspike.workflows import load_resumable, trained_epochs

    run = tmp_path / "teacher-1"
    run.mkdir()
    torch.save({"model": {}}, run / "model.pt")
    with pytest.raises(FileNotFoundError, match=r"no last\.pt in this folder \(it holds: model\.pt\)"):
        resolve_resume(run)
    with pytest.raises(ValueError, match="is not a resumable checkpoint .*lacks optimizer, lr_scheduler, trainer"):
        load_resumable(resolve_resume(run / "model.pt"))
    trainer = {"iteration": 6, "epoch_length": 3, "max_epochs": 10}
    torch.save({"model": {}, "optimizer": {}, "lr_scheduler": {}, "trainer": trainer}, run / "last.pt")
    assert resolve_resume(run) == resolve_resume(run / "last.pt") == (run / "last.pt").resolve()
    assert trained_epochs(load_resumable(run / "last.pt")) == (2, 10)
    assert resolve_resume(None) is None


def test_the_teacher_loader_starts_a_fresh_student_from_the_teacher_and_leaves_a_resumed_one(tmp_path):
    from ignite.engine import Engine

    from monai_medspike.handlers import TeacherLoader
    from monai_medspike.networks.nets import MedSpikeFormer

    student = MedSpikeFormer(in_channels=1, out_channels=1, embed_dims=(8, 8, 16, 16), num_heads=2, time_steps=2)
    teacher = student.ann_twin()
    with torch.no_grad():
        for p in teacher.parameters():
            p.uniform_(-1, 1)
    torch.save({"model": teacher.state_dict()}, tmp_path / "teacher.pt")
    before = {k: v.clone() for k, v in student.state_dict().items()}

    engine = Engine(lambda e, b: None)
    engine.state.iteration = 7  # a resumed run: the student keeps its weights, nothing else is needed
    TeacherLoader(None, str(tmp_path / "missing.pt"), student=student)(engine)
    assert all(torch.equal(v, before[k]) for k, v in student.state_dict().items())

    engine.state.iteration = 0
    TeacherLoader(None, str(tmp_path / "teacher.pt"), student=student)(engine)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in student.state_dict().items())
    with pytest.raises(FileNotFoundError, match="the student starts from its teacher but .*missing.pt does not exist"):
        TeacherLoader(None, str(tmp_path / "missing.pt"), student=student)(engine)


@pytest.mark.slow
@pytest.mark.parametrize("init", [True, False])
def test_init_from_teacher_starts_the_student_from_the_teacher_weights(tmp_path, init):
    """With a learning rate of 1e-30 (below float32's resolution of the weights) the student's weights stay where
    they started: the teacher's, or its own."""
    run("training", config_file=str(TRAIN), output_root=str(tmp_path), phase="teacher", **FAST)
    teacher = run_folder(tmp_path, "teacher") / "model.pt"
    overrides = {"init_from_teacher": init, "lambda_align": 0.0, "learning_rate": 1e-30}
    run("training", config_file=str(TRAIN), output_root=str(tmp_path), phase="student", teacher_checkpoint=str(teacher),
        ckpt_dir=str(tmp_path / "models"), **FAST, **overrides)  # fmt: skip
    student = torch.load(run_folder(tmp_path, "student") / "model.pt", weights_only=True)["model"]
    teacher_state = torch.load(teacher, weights_only=True)["model"]
    weights = [k for k, v in teacher_state.items() if k.endswith(".weight") and v.dim() > 1]  # convolutions
    same = [torch.equal(student[k], teacher_state[k]) for k in weights]
    # (without it, only layers the teacher phase does not train, such as the side heads, may match by seed)
    assert all(same) if init else sum(same) < len(same) / 2


@pytest.mark.slow
@pytest.mark.parametrize("lambda_side", [0.0, 0.5])
def test_lambda_side_trains_the_teachers_side_heads_and_nothing_else_changes(tmp_path, lambda_side):
    """Adam keeps state only for the parameters that got a gradient: the side heads get one only with lambda_side."""
    run("training", config_file=str(TRAIN), output_root=str(tmp_path), phase="teacher", lambda_side=lambda_side, **FAST)
    parser = ConfigParser()
    parser.read_config(str(TRAIN))
    parser.update({"output_root": str(tmp_path / "x"), **FAST})
    names = [name for name, _ in parser.get_parsed_content("teacher_def").named_parameters()]
    last = torch.load(run_folder(tmp_path, "teacher") / "last.pt", weights_only=True)
    trained = {names[i] for i in last["optimizer"]["state"]}
    side = {n for n in names if ".side_head." in n}
    assert side and trained | side == set(names)
    assert trained >= side if lambda_side else not trained & side


def test_the_workflow_takes_groups_of_settings_not_one_argument_each():
    import inspect

    from monai_medspike.settings import SettingsError
    from monai_medspike.workflows import TwoPhaseTraining

    parameters = inspect.signature(TwoPhaseTraining).parameters
    assert len(parameters) <= 15 and {"data", "training", "run"} <= set(parameters)
    with pytest.raises(SettingsError, match="no 'epochs' \\(epochs belongs to the training group\\)"):
        TwoPhaseTraining(None, None, "", None, None, None, None, data={"epochs": 3}, run={"output_root": "x"})
