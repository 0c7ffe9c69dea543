"""Helpers the bundle configs call: the per-class evaluation summary, the cached demo datalists, the allocator."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from monai.bundle import ConfigParser

from monai_medspike.data import prepare_data
from monai_medspike.errors import UserError
from monai_medspike.runs import run_dir
from monai_medspike.utils import check_flag
from monai_medspike.workflows.evaluation import write_summary
from tests.bundles.helpers import BUNDLES, REPO


def engine(details: dict[str, torch.Tensor], images: int) -> SimpleNamespace:
    state = SimpleNamespace(metrics={"dice": torch.tensor(0.5)}, metric_details=details)
    return SimpleNamespace(state=state, data_loader=SimpleNamespace(dataset=list(range(images))))


def test_summary_reports_each_foreground_class_by_name(tmp_path):
    details = {
        "dice": torch.tensor([[0.2, 1.0], [0.4, 0.0], [0.6, 0.5]]),
        "hd95": torch.tensor([[1.0, math.inf], [3.0, 2.0], [math.nan, 4.0]]),
    }
    path = write_summary(engine(details, 3), str(tmp_path), {"split": "test"}, ["background", "ggo", "consolidation"])
    summary = json.loads(open(path).read())
    assert summary["split"] == "test" and summary["images"] == 3 and summary["metrics"] == {"dice": 0.5}
    per_class = summary["per_class"]
    assert list(per_class) == ["ggo", "consolidation"]
    assert per_class["ggo"]["dice"] == pytest.approx(0.4)
    assert per_class["consolidation"]["dice"] == pytest.approx(0.5)
    # images where HD95 is not finite are left out of its mean and counted
    assert per_class["ggo"]["hd95"] == pytest.approx(2.0) and per_class["ggo"]["hd95_not_finite"] == 1
    assert per_class["consolidation"]["hd95"] == pytest.approx(3.0)
    assert "dice_not_finite" not in per_class["ggo"]


def test_summary_without_label_names_has_no_per_class_part(tmp_path):
    path = write_summary(engine({"dice": torch.ones(2, 1)}, 2), str(tmp_path))
    assert "per_class" not in json.loads(open(path).read())


def test_label_names_that_do_not_match_the_metric_channels_are_an_error(tmp_path):
    with pytest.raises(ValueError, match="'dice' has 2 classes but label_names names 1"):
        write_summary(engine({"dice": torch.ones(2, 2)}, 2), str(tmp_path), label_names=["background", "infection"])
    assert not (tmp_path / "summary.json").exists()


def test_demo_datalists_are_kept_apart_by_their_options(tmp_path):
    binary = prepare_data(str(tmp_path), "covid_ct", demo_count=3, val_fraction=0.34, test_fraction=0.0)
    multi = prepare_data(
        str(tmp_path), "covid_ct", demo_count=3, val_fraction=0.34, test_fraction=0.0, classes="multiclass"
    )
    assert binary != multi
    assert json.loads(open(binary).read())["reader"]["classes"] == "binary"
    entries = json.loads(open(multi).read())
    assert entries["reader"]["classes"] == "multiclass"
    assert "infection_mask_multiclass" in entries["training"][0]["label"]
    # the same options again reuse the prepared datalist
    assert prepare_data(str(tmp_path), "covid_ct", demo_count=3, val_fraction=0.34, test_fraction=0.0) == binary


@pytest.mark.parametrize("name", BUNDLES)
@pytest.mark.parametrize("overlay", (None, "evaluate.json", "inference.json", "multi_gpu_train.json"))
def test_every_run_keeps_freed_memory_unless_told_not_to(name, overlay, monkeypatch):
    import monai_medspike.utils

    calls = []
    monkeypatch.setattr(monai_medspike.utils, "keep_freed_memory", lambda enable=True: calls.append(enable))
    configs = REPO / "bundles" / name / "configs"
    files = [str(configs / "train.json")] + ([str(configs / overlay)] if overlay else [])
    for override, expected in ((None, [True]), (False, [False])):
        calls.clear()
        parser = ConfigParser()
        parser.read_config(files)
        if override is not None:
            parser["keep_freed_memory"] = override
        assert "$import monai_medspike.utils" in parser["imports"]
        steps = [i for i, step in enumerate(parser["initialize"]) if "keep_freed_memory" in str(step)]
        assert len(steps) == 1, f"{name} {overlay}: initialize should call keep_freed_memory once"
        parser.get_parsed_content(f"initialize#{steps[0]}")
        assert calls == expected


@pytest.mark.parametrize("name", BUNDLES)
@pytest.mark.parametrize("overlay", (None, "evaluate.json", "inference.json", "multi_gpu_train.json"))
def test_every_run_builds_the_lif_kernel_before_its_first_step(name, overlay, monkeypatch):
    """``initialize`` builds (or loads) the fused LIF kernel under its lock, so that no forward waits for the
    compiler and DDP ranks do not compile at once."""
    from monai_medspike.networks.layers import lif_kernel

    calls = []
    monkeypatch.setattr(lif_kernel, "warm_up", lambda device=None: calls.append(str(device)))
    configs = REPO / "bundles" / name / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json")] + ([str(configs / overlay)] if overlay else []))
    parser["device"] = "$torch.device('cpu')"
    steps = [i for i, step in enumerate(parser["initialize"]) if "lif_kernel.warm_up(" in str(step)]
    assert len(steps) == 1, f"{name} {overlay}: initialize should warm the LIF kernel up once"
    assert steps[0] == len(parser["initialize"]) - 1  # after the allocator setting, before any network runs
    parser.get_parsed_content(f"initialize#{steps[0]}")
    assert calls == ["cpu"]  # the run's device: a CUDA run builds no CPU kernel


def test_flags_read_command_line_words_as_meant():
    # monai.bundle's command line passes "--overwrite false" as the string "false"
    for value, expected in (("false", False), ("False", False), ("0", False), ("off", False), (False, False),
                            (0, False), ("true", True), ("YES", True), (True, True), (1, True)):  # fmt: skip
        assert check_flag(value, "overwrite") is expected
    for bad in ("maybe", "", None, 2):
        with pytest.raises(ValueError, match="--overwrite must be true or false"):
            check_flag(bad, "overwrite")


def test_overwrite_false_from_the_command_line_keeps_an_earlier_run(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.pt").write_bytes(b"earlier")
    with pytest.raises(UserError, match="--overwrite true"):
        run_dir(str(tmp_path), "run", "false")
    assert run_dir(str(tmp_path), "run", "true") == str(tmp_path / "run")
    assert (tmp_path / "run" / "model.pt").read_bytes() == b"earlier"  # run_dir itself never deletes


def test_bundle_root_is_the_bundle_monai_put_on_the_path_else_the_shipped_one(tmp_path, monkeypatch):
    """``python -m monai.bundle run`` puts the bundle folder of its config on ``sys.path`` (after the current
    directory) before it runs; ``bundle_root`` takes it from there, never from the command line."""
    from monai_medspike.bundle import bundle_root, export_bundle, shipped_bundle

    copy = export_bundle("kvasir", tmp_path / "copy")
    other = export_bundle("busi", tmp_path / "other")
    monkeypatch.setattr("sys.argv", ["python", "--config_file", str(other / "configs" / "train.json")])
    monkeypatch.setattr("sys.path", [str(other), str(copy), str(tmp_path)])  # cwd first, as MONAI leaves it
    assert bundle_root("kvasir") == str(copy.resolve())  # not argv's, not the current directory's
    monkeypatch.setattr("sys.path", [str(tmp_path), str(other), str(copy)])  # an earlier run of another bundle
    assert bundle_root("kvasir") == str(copy.resolve()) and bundle_root("busi") == str(other.resolve())
    monkeypatch.setattr("sys.path", [str(tmp_path), str(tmp_path / "nothing")])
    assert bundle_root("kvasir") == str(shipped_bundle("kvasir"))
    monkeypatch.setattr("sys.path", [str(other)])  # run from inside a bundle folder: `--config_file train.json`
    assert bundle_root("busi") == str(other.resolve())


def test_evaluation_and_inference_load_the_newest_trained_student(tmp_path):
    import os

    from monai_medspike.checkpoints import TrainedModel
    from monai_medspike.runs import newest_model

    none = TrainedModel.locate(None, str(tmp_path / "models"), str(tmp_path / "outputs"))
    assert none.path is None and none.setting("image_size", [64, 64]) == [64, 64]
    with pytest.raises(FileNotFoundError, match=r"no trained student.*--ckpt_path"):
        none.require()
    run = tmp_path / "outputs" / "student-20260101-000000" / "model.pt"
    run.parent.mkdir(parents=True)
    run.write_bytes(b"x")
    assert newest_model(str(tmp_path / "models"), str(tmp_path / "outputs"))[0] == run
    published = tmp_path / "models" / "model.pt"
    published.parent.mkdir()
    published.write_bytes(b"y")
    os.utime(run, (1, 1))
    assert newest_model(str(tmp_path / "models"), str(tmp_path / "outputs"))[0] == published
    os.utime(published, (0, 0))
    assert newest_model(None, str(tmp_path / "outputs"))[0] == run


def test_end_distributed_waits_then_destroys_the_process_group(tmp_path, monkeypatch):
    """The multi-GPU configs' finalize: a barrier before the group is destroyed (a rank that tore its connections
    down while another still wrote its checkpoint was aborted by gloo at exit); nothing outside distributed runs."""
    import torch.distributed as dist

    from monai_medspike.distributed import end_distributed

    end_distributed()  # no group: nothing to do, no error
    calls = []
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        barrier = dist.barrier
        monkeypatch.setattr(dist, "barrier", lambda *a, **k: (calls.append("barrier"), barrier(*a, **k))[1])
        end_distributed()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert calls == ["barrier"] and not dist.is_initialized()
    shared = json.loads((REPO / "monai_medspike" / "bundle" / "shared" / "multi_gpu_train.json").read_text())
    assert shared["finalize"] == ["$monai_medspike.distributed.end_distributed()"]
