"""The covid bundle: the user's literal commands, two-phase training, evaluation, inference, export, metadata."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from monai_medspike.bundle import META_SCHEMA
from monai_medspike.checkpoints import CheckpointError, load_weights
from monai_medspike.networks.nets import MedSpikeFormer
from tests.bundles.helpers import REPO, bundle, export, exported_network_output, run_folder

BUNDLE = REPO / "bundles" / "covid"
CONFIGS = BUNDLE / "configs"
# a small, fast configuration; the network_def is the bundle's own
FAST = ["--epochs", "1", "--image_size", "[32, 32]", "--demo_count", "5", "--slices_per_volume", "2"]


def overlay(name: str) -> str:
    return f"['{CONFIGS / 'train.json'}','{CONFIGS / name}']"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One run of the user's literal command (both phases) into a temporary output root, from another folder."""
    out = tmp_path_factory.mktemp("covid_outputs")
    bundle("run", "training", "--config_file", "bundles/covid/train.json", "--output_root", str(out), *FAST)
    return out


@pytest.mark.slow
def test_literal_command_trains_teacher_then_student(trained):
    teacher, student = run_folder(trained, "teacher"), run_folder(trained, "student")
    assert teacher.name.split("-", 1)[1] == student.name.split("-", 1)[1]  # one run id
    for folder in (teacher, student):
        assert (folder / "model.pt").is_file() and (folder / "last.pt").is_file()
        assert list((folder / "tb").glob("events.out.tfevents.*"))
        last = torch.load(folder / "last.pt", weights_only=True)
        assert {"model", "optimizer", "lr_scheduler"} <= set(last)
    load_weights(MedSpikeFormer(in_channels=1, spiking=True), str(student / "model.pt"))
    load_weights(MedSpikeFormer(in_channels=1, spiking=False), str(teacher / "model.pt"))
    with pytest.raises(CheckpointError, match=r"trained with embed_dims=\[32, 64, 128, 256\] but the network has"):
        load_weights(MedSpikeFormer(in_channels=1, embed_dims=(16, 32, 64, 128)), str(student / "model.pt"))
    datalist = json.loads(next((trained / "demo_data").glob("*.json")).read_text())
    assert datalist["name"] == "covid_ct" and datalist["validation"] and datalist["test"]


@pytest.mark.slow
def test_tensorboard_holds_losses_metrics_lr_firing_rates_and_overlays(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def tags(folder: Path) -> tuple[set[str], set[str]]:
        scalars, images = set(), set()
        for events in sorted((folder / "tb").glob("events.out.tfevents.*")):
            acc = EventAccumulator(str(events), size_guidance={"images": 0})
            acc.Reload()
            scalars |= set(acc.Tags()["scalars"])
            images |= set(acc.Tags()["images"])
        return scalars, images

    scalars, images = tags(run_folder(trained, "student"))
    expected = {"train_loss", "train_seg_loss", "train_align_loss", "lr", "val_mean_dice", "val_mean_iou", "val_loss"}
    assert expected <= scalars
    assert {f"firing_rate/stages.{i}" for i in range(4)} | {"firing_rate/all"} <= scalars
    assert images  # prediction / label / image overlays of the validation volumes
    scalars, _ = tags(run_folder(trained, "teacher"))
    assert "train_align_loss" not in scalars and not any(t.startswith("firing_rate") for t in scalars)


@pytest.mark.slow
def test_student_phase_alone_uses_a_given_teacher(trained, tmp_path):
    teacher = run_folder(trained, "teacher") / "model.pt"
    out = tmp_path / "out"
    args = ["--output_root", str(out), "--phase", "student", "--teacher_checkpoint", str(teacher), *FAST]
    proc = bundle("run", "training", "--config_file", str(BUNDLE / "train.json"), *args, cwd=tmp_path)
    assert f"teacher loaded from {teacher}" in proc.stdout + proc.stderr
    assert (run_folder(out, "student") / "model.pt").is_file()
    assert not list(out.glob("teacher-*"))


@pytest.mark.slow
def test_student_without_teacher_stops_at_start(tmp_path):
    args = ["--output_root", str(tmp_path), "--phase", "student", *FAST]
    proc = bundle("run", "training", "--config_file", str(BUNDLE / "train.json"), *args, check=False)
    assert proc.returncode != 0
    assert "distribution alignment is on but no teacher checkpoint was found" in proc.stdout + proc.stderr
    assert not list(tmp_path.glob("student-*/*.pt"))


def test_bad_phase_is_named(tmp_path):
    args = ["--phase", "ann", "--output_root", str(tmp_path / "out")]
    proc = bundle("run", "training", "--config_file", str(BUNDLE / "train.json"), *args, check=False)
    assert proc.returncode == 2 and "error: --phase 'ann': must be one of teacher, student, both." in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_evaluate_writes_per_image_csv_and_summary(trained):
    # nothing of the training's command line again: the checkpoint carries its settings (size, demo data, ...)
    bundle("run", "evaluating", "--config_file", overlay("evaluate.json"), "--output_root", str(trained))
    folder = run_folder(trained, "evaluate")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["split"] == "test" and summary["checkpoint"].endswith("model.pt")
    assert {"dice", "miou", "accuracy", "specificity", "sensitivity", "monai_dice", "monai_iou", "hd95"} <= set(
        summary["metrics"]
    )
    rows = (folder / "dice_raw.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + summary["images"]  # header + one row per test volume
    assert all(0.0 <= summary["metrics"][k] <= 1.0 for k in ("dice", "miou", "accuracy"))


@pytest.mark.slow
def test_inference_writes_nifti_with_the_input_geometry(trained):
    datalist = json.loads(next((trained / "demo_data").glob("*.json")).read_text())
    volume = trained / "demo_data" / datalist["test"][0]["image"]
    outputs = []
    for name in ("first", "second"):
        args = ["--input", str(volume), "--infer_name", name, "--output_root", str(trained)]
        bundle("run", "inferring", "--config_file", overlay("inference.json"), *args)
        masks = list((trained / name).glob("*_seg.nii.gz"))
        assert len(masks) == 1
        outputs.append(masks[0])
    image, mask = nib.load(volume), nib.load(outputs[0])
    assert mask.shape == image.shape
    np.testing.assert_allclose(mask.affine, image.affine, atol=1e-4)
    data = np.asarray(mask.dataobj)
    assert set(np.unique(data).tolist()) <= {0, 1}
    assert np.array_equal(data, np.asarray(nib.load(outputs[1]).dataobj))  # same volume twice, same mask
    import itk

    itk_mask = itk.imread(str(outputs[0]))
    assert tuple(itk.size(itk_mask)) == image.shape
    np.testing.assert_allclose(np.asarray(itk_mask.GetSpacing()), np.abs(np.diag(image.affine)[:3]), atol=1e-4)


@pytest.mark.slow
def test_ckpt_export_trace_matches_the_checkpoint(trained, tmp_path):
    ckpt = run_folder(trained, "student") / "model.pt"
    ts_file = export(CONFIGS, ckpt, tmp_path / "model.ts")
    x = torch.rand(2, 1, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    # the exported file runs where neither spikingjelly nor monai_medspike is imported
    script = (
        "import sys, torch; m = torch.jit.load(sys.argv[1]); y = m(torch.load(sys.argv[2]));"
        "assert not any(k.startswith(('spikingjelly', 'monai_medspike')) for k in sys.modules);"
        "torch.save(y, sys.argv[3])"
    )
    args = [sys.executable, "-c", script, str(ts_file), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")]
    subprocess.run(args, check=True, timeout=300)
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), exported_network_output(ckpt, x))


def test_metadata_verifies_offline_and_a_broken_one_fails(tmp_path):
    args = ["--filepath", str(META_SCHEMA)]
    proc = bundle("verify_metadata", "--meta_file", str(CONFIGS / "metadata.json"), *args)
    assert "metadata is verified with no error" in proc.stdout + proc.stderr
    broken = json.loads((CONFIGS / "metadata.json").read_text())
    del broken["task"]
    (tmp_path / "metadata.json").write_text(json.dumps(broken))
    assert bundle("verify_metadata", "--meta_file", str(tmp_path / "metadata.json"), *args, check=False).returncode


def test_verify_net_in_out():
    proc = bundle(
        "verify_net_in_out", "network_def", "--meta_file", str(CONFIGS / "metadata.json"),
        "--config_file", str(CONFIGS / "train.json"), "--n", "2",
    )  # fmt: skip
    assert "data shape of network is verified with no error" in proc.stdout + proc.stderr


def test_evaluation_and_inference_build_the_network_of_their_checkpoint_and_root_links_point_into_configs():
    train = json.loads((CONFIGS / "train.json").read_text())
    from_model = "$@trained_model.network(@model_settings, "
    assert json.loads((CONFIGS / "evaluate.json").read_text())["network_def"].startswith(from_model)
    assert json.loads((CONFIGS / "inference.json").read_text())["network_def"].startswith(from_model)
    parser = ConfigParser(train)
    student, teacher = parser.get_parsed_content("network_def"), parser.get_parsed_content("teacher_def")
    assert student.spiking and not teacher.spiking  # the twin differs only in `spiking`
    assert teacher._arguments == {**student._arguments, "spiking": False}
    for link in ("train.json", "metadata.json", "logging.conf"):
        assert (BUNDLE / link).is_symlink() and (BUNDLE / link).resolve() == (CONFIGS / link).resolve()
    assert {"training", "run", "bundle_root", "device", "dataset_dir", "network_def", "val_interval"} <= set(train)


def test_outputs_default_to_the_bundle_folder():
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    assert Path(parser.get_parsed_content("output_root")) == BUNDLE / "outputs"


@pytest.mark.slow
def test_resume_continues_at_the_next_epoch_with_its_best_metric(trained, tmp_path):
    import shutil

    run = tmp_path / "teacher-run"
    shutil.copytree(run_folder(trained, "teacher"), run)
    before = torch.load(run / "last.pt", weights_only=False)
    assert before["trainer"]["iteration"] == before["trainer"]["epoch_length"]  # one epoch done
    args = ["--output_root", str(trained), "--phase", "teacher", "--resume_from", str(run / "last.pt")]
    proc = bundle("run", "training", "--config_file", str(BUNDLE / "train.json"), *args, "--epochs", "2")
    log = proc.stdout + proc.stderr
    assert f"resuming the teacher from {run / 'last.pt'} at epoch 2" in log and "Epoch[2]" in log
    assert "Epoch[1]" not in log
    after = torch.load(run / "last.pt", weights_only=False)
    assert after["trainer"]["iteration"] == 2 * before["trainer"]["epoch_length"]
    assert after["best"]["best_metric"] >= before["best"]["best_metric"]
    assert after["best"]["best_metric_epoch"] in (1, 2)
    assert not after["optimizer"] == before["optimizer"]  # the optimizer state was carried on and updated
    args = ["--resume_from", str(run), "--phase", "student", "--output_root", str(tmp_path)]
    with pytest.raises(AssertionError, match="holds the teacher phase but --phase is student"):
        bundle("run", "training", "--config_file", str(BUNDLE / "train.json"), *args)


@pytest.mark.slow
def test_multi_gpu_config_trains_on_two_cpu_processes_with_gloo(tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    args = [
        str(torchrun), "--nproc_per_node", "2", "-m", "monai.bundle", "run", "training",
        "--config_file", f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}']",
        "--output_root", str(tmp_path), "--ckpt_dir", str(tmp_path / "models"), "--epochs", "1",
        "--image_size", "[32, 32]",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    for phase in ("teacher", "student"):
        folder = run_folder(tmp_path, phase)  # one folder per phase: the ranks agreed on the run id
        assert sorted(p.name for p in folder.glob("*.pt")) == ["last.pt", "model.pt"]
        last = torch.load(folder / "last.pt", weights_only=False)
        # 4 training volumes, 2 per batch: one iteration per rank (DistributedSampler split the data between
        # the two ranks, and DDP's all-reduce only completes when both ran forward and backward)
        assert last["trainer"]["epoch_length"] == 1
        writers = {p.name.split(".")[-2] for p in (folder / "tb").glob("events.out.tfevents.*")}
        assert len(writers) == 1  # TensorBoard written by one process only
    # no duplicate logs: each phase validated once and reported once
    assert log.count("Epoch[1] Metrics") == 2
    assert log.count("firing rates: all") == 1


@pytest.mark.slow
def test_early_stopping_ends_training_when_the_validation_score_stalls(tmp_path):
    args = [
        "--output_root", str(tmp_path), "--phase", "teacher", "--epochs", "5", "--image_size", "[32, 32]",
        "--early_stop_patience", "1", "--early_stop_min_delta", "2.0",  # Dice cannot improve by 2
    ]  # fmt: skip
    proc = bundle("run", "training", "--config_file", str(BUNDLE / "train.json"), *args)
    log = proc.stdout + proc.stderr
    assert "EarlyStopping: Stop training" in log
    last = torch.load(run_folder(tmp_path, "teacher") / "last.pt", weights_only=False)["trainer"]
    assert last["iteration"] == 2 * last["epoch_length"]  # no improvement counts: stopped after the second epoch


@pytest.mark.slow
def test_multiclass_labels_train_evaluate_per_class_and_infer_class_indices(tmp_path):
    common = ["--output_root", str(tmp_path)]  # evaluation and inference read the classes from the checkpoint
    train = [*common, "--classes", "multiclass", *FAST]
    bundle("run", "training", "--config_file", "bundles/covid/train.json", "--phase", "both", *train)
    datalist = json.loads(next((tmp_path / "demo_data").glob("*.json")).read_text())
    assert datalist["reader"]["classes"] == "multiclass"
    label = nib.load(tmp_path / "demo_data" / datalist["training"][0]["label"])
    assert set(np.unique(np.asarray(label.dataobj)).tolist()) == {0, 1, 2}
    student = torch.load(run_folder(tmp_path, "student") / "model.pt", weights_only=True)
    assert student["model"]["head.classifier.weight"].shape[0] == 3  # background, ground-glass, consolidation
    assert student["record"]["settings"]["data"]["label_names"] == ["background", "ground-glass", "consolidation"]

    bundle("run", "evaluating", "--config_file", overlay("evaluate.json"), *common)
    folder = run_folder(tmp_path, "evaluate")
    summary = json.loads((folder / "summary.json").read_text())
    assert list(summary["per_class"]) == ["ground-glass", "consolidation"]
    for scores in summary["per_class"].values():
        assert {"dice", "miou", "accuracy", "specificity", "sensitivity", "monai_dice", "hd95"} <= set(scores)
        assert 0.0 <= scores["dice"] <= 1.0
    # the overall score is the mean of the per-class scores; the CSV has one column per foreground class
    mean = np.mean([s["dice"] for s in summary["per_class"].values()])
    assert summary["metrics"]["dice"] == pytest.approx(mean, abs=1e-6)
    header = (folder / "dice_raw.csv").read_text().splitlines()[0].split(",")
    assert header == ["filename", "class0", "class1", "mean"]

    volume = tmp_path / "demo_data" / datalist["test"][0]["image"]
    args = ["--input", str(volume), "--infer_name", "mc", *common]
    bundle("run", "inferring", "--config_file", overlay("inference.json"), *args)
    (mask,) = (tmp_path / "mc").glob("*_seg.nii.gz")
    assert nib.load(mask).shape == nib.load(volume).shape
    assert set(np.unique(np.asarray(nib.load(mask).dataobj)).tolist()) <= {0, 1, 2}


@pytest.mark.slow
@pytest.mark.parametrize(
    "bundle_name, args, expected",
    [
        ("covid", ["--image_size", "[48, 48]"], "was trained with image_size [32, 32]; this run has [48, 48]"),
        ("covid", ["--time_steps", "2"], "was trained with time_steps 4; this run has 2"),
        ("covid", ["--layout", "spike_driven"], "was trained with layout 'published'; this run has 'spike_driven'"),
        ("kvasir", [], "is a run of the covid bundle, not of kvasir; use it with the covid bundle's configs"),
    ],
)
def test_resume_refuses_what_the_run_cannot_change_in_one_line(trained, tmp_path, bundle_name, args, expected):
    run = run_folder(trained, "student")
    before = (run / "last.pt").read_bytes()
    out = tmp_path / "out"
    command = ["--resume_from", str(run), "--epochs", "2", "--output_root", str(out), *args]
    proc = bundle("run", "training", "--config_file", f"bundles/{bundle_name}/train.json", *command, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last, proc.stderr[-2000:]
    assert (run / "last.pt").read_bytes() == before and not list(out.glob("*-*"))  # nothing trained, nothing new
