"""The 2D bundles (isic2018, kvasir, busi, monuseg, and any other discovered): literal commands, evaluation,
inference, resume and export without repeating a training setting, metadata."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from PIL import Image

from monai_medspike.bundle import META_SCHEMA
from monai_medspike.checkpoints import load_weights
from monai_medspike.data import get_reader
from monai_medspike.networks.nets import MedSpikeFormer
from tests.bundles.helpers import BUNDLES as ALL
from tests.bundles.helpers import REPO, bundle, export, exported_network_output, run_folder

BUNDLES = tuple(
    n
    for n in ALL
    if get_reader(json.loads((REPO / "bundles" / n / "dataset.json").read_text())["dataset"]).kind == "2d"
)
FAST = ["--epochs", "1", "--image_size", "[32, 32]"]


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLES)
def test_train_evaluate_infer_on_demo_data(name, tmp_path):
    """Trained at 32 x 32: evaluation, inference, resume and export take that size (and every other setting) from
    the checkpoint, without repeating it."""
    configs = REPO / "bundles" / name / "configs"
    out = tmp_path / "outputs"
    bundle("run", "training", "--config_file", f"bundles/{name}/train.json", "--output_root", str(out), *FAST)
    student = run_folder(out, "student") / "model.pt"
    load_weights(MedSpikeFormer(in_channels=3), str(student))
    load_weights(MedSpikeFormer(in_channels=3, spiking=False), str(run_folder(out, "teacher") / "model.pt"))
    record = torch.load(student, weights_only=True)["record"]
    assert record["bundle"] == name and record["settings"]["data"]["image_size"] == [32, 32]

    evaluate = f"['{configs / 'train.json'}','{configs / 'evaluate.json'}']"
    proc = bundle("run", "evaluating", "--config_file", evaluate, "--output_root", str(out))
    summary = json.loads((run_folder(out, "evaluate") / "summary.json").read_text())
    datalist = json.loads(next((out / "demo_data").glob("*.json")).read_text())
    assert summary["images"] == len(datalist["test"]) > 0
    assert 0.0 <= summary["metrics"]["dice"] <= 1.0
    assert "note:" not in proc.stderr

    infer = str(configs / "inference.json")
    proc = bundle("run", "inferring", "--config_file", infer, "--output_root", str(out), "--infer_name", "pred")
    assert "note:" not in proc.stderr
    log = proc.stdout + proc.stderr  # where the masks go, what they hold, and how far it is
    count = len(datalist["test"])
    assert f"segmenting {count} input(s) with " in log and "model.pt; writing <input name>_seg.png to " in log
    assert f"to {out / 'pred'} (uint8: 0 background, 255 " in log
    assert f"segmented {count} / {count} inputs (100%)" in log and f"wrote {count} mask(s) to {out / 'pred'}" in log
    given = ["--output_root", str(out), "--infer_name", "given", "--image_size", "[32, 32]"]
    bundle("run", "inferring", "--config_file", infer, *given)  # the same size, given: the same masks
    written = json.loads((configs / "metadata.json").read_text())["inference_output"]  # what metadata promises
    for entry in datalist["test"]:
        source = out / "demo_data" / entry["image"]
        mask = Image.open(out / "pred" / written["file"].replace("<input name>", source.stem))
        assert mask.size == Image.open(source).size  # back at the input's size
        assert set(np.unique(np.asarray(mask)).tolist()) <= {int(v) for v in written["values"]} == {0, 255}
        same = Image.open(out / "given" / f"{source.stem}_seg.png")
        np.testing.assert_array_equal(np.asarray(mask), np.asarray(same))

    # resume: the teacher's last checkpoint continues at epoch 2, at 32 x 32, with its optimizer and best metric
    last = run_folder(out, "teacher") / "last.pt"
    before = torch.load(last, weights_only=False)
    args = ["--output_root", str(out), "--phase", "teacher", "--resume_from", str(last), "--epochs", "2"]
    proc = bundle("run", "training", "--config_file", f"bundles/{name}/train.json", *args)
    log = proc.stdout + proc.stderr
    assert f"resuming the teacher from {last} at epoch 2" in log and "Epoch[2]" in log and "Epoch[1]" not in log
    after = torch.load(last, weights_only=False)
    assert after["trainer"]["iteration"] == 2 * before["trainer"]["epoch_length"]
    assert after["best"]["best_metric"] >= before["best"]["best_metric"]
    assert after["record"]["settings"]["data"]["image_size"] == [32, 32]

    # TorchScript export of the student (MONAI's ckpt_export; the network from the checkpoint's record) matches it
    ts_file = export(configs, student, tmp_path / "model.ts")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(ts_file))(x), exported_network_output(student, x))


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLES)
def test_multi_gpu_config_on_two_cpu_processes(name, tmp_path):
    configs = REPO / "bundles" / name / "configs"
    torchrun = Path(sys.executable).parent / "torchrun"
    args = [
        str(torchrun), "--nproc_per_node", "2", "-m", "monai.bundle", "run", "training",
        "--config_file", f"['{configs / 'train.json'}','{configs / 'multi_gpu_train.json'}']",
        "--output_root", str(tmp_path), "--ckpt_dir", str(tmp_path / "models"), *FAST,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    datalist = json.loads(next((tmp_path / "demo_data").glob("*.json")).read_text())
    parser = ConfigParser()
    parser.read_config(str(configs / "train.json"))
    batch = parser.get_parsed_content("batch_size")  # the bundle's (a resumed run's: none here)
    for phase in ("teacher", "student"):
        folder = run_folder(tmp_path, phase)  # the ranks agreed on one run folder
        assert sorted(p.name for p in folder.glob("*.pt")) == ["last.pt", "model.pt"]
        last = torch.load(folder / "last.pt", weights_only=False)
        # each rank trained on its half of the training split
        assert last["trainer"]["epoch_length"] == math.ceil(math.ceil(len(datalist["training"]) / 2) / batch)
        assert len({p.name.split(".")[-2] for p in (folder / "tb").glob("events.out.tfevents.*")}) == 1
    assert log.count("Epoch[1] Metrics") == 2  # logged once per phase, by rank 0 only


@pytest.mark.parametrize("name", BUNDLES)
def test_metadata_network_and_layout(name):
    folder = REPO / "bundles" / name
    configs = folder / "configs"
    proc = bundle(
        "verify_metadata", "--meta_file", str(configs / "metadata.json"),
        "--filepath", str(META_SCHEMA),
    )  # fmt: skip
    assert "metadata is verified with no error" in proc.stdout + proc.stderr
    proc = bundle(
        "verify_net_in_out", "network_def", "--meta_file", str(configs / "metadata.json"),
        "--config_file", str(configs / "train.json"), "--n", "2",
    )  # fmt: skip
    assert "data shape of network is verified with no error" in proc.stdout + proc.stderr
    proc = bundle(
        "verify_net_in_out", "network_def", "--meta_file", str(configs / "metadata.json"),
        "--config_file", str(configs / "inference.json"), "--n", "2",
    )  # fmt: skip
    assert "data shape of network is verified with no error" in proc.stdout + proc.stderr
    train = json.loads((configs / "train.json").read_text())
    assert train["bundle_name"] == name and train["bundle_root"] == "$monai_medspike.bundle.bundle_root(@bundle_name)"
    assert "network_def" not in json.loads((configs / "multi_gpu_train.json").read_text())
    # evaluation builds the network of the checkpoint it evaluates (its record), not train.json's
    assert json.loads((configs / "evaluate.json").read_text())["network_def"].startswith("$@trained_model.network(")
    for link in ("train.json", "metadata.json", "logging.conf"):
        assert (folder / link).is_symlink() and (folder / link).resolve() == (configs / link).resolve()
    assert (folder / "docs" / "README.md").is_file() and (folder / "LICENSE").is_file()


def test_metadata_names_the_labels_the_bundle_writes():
    """MONAI Label reads the label names and values from the output ``channel_def`` of ``metadata.json``."""
    for name in ALL:
        configs = REPO / "bundles" / name / "configs"
        parser = ConfigParser()
        parser.read_config(str(configs / "train.json"))
        labels = parser.get_parsed_content("label_names")
        meta = json.loads((configs / "metadata.json").read_text())
        (output,) = meta["network_data_format"]["outputs"].values()
        assert output["channel_def"] == {str(i): label for i, label in enumerate(labels)}, name


SHARED = REPO.parent / "shared" / "data"
REAL = {
    "isic2018": ("isic2018", []),
    "kvasir": ("kvasir-seg", []),
    "busi": ("busi", []),
    "monuseg": ("monuseg", []),
    "covid": ("covid19", ["--dataset", "covid"]),
}


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"real samples not found at {SHARED}")
@pytest.mark.parametrize("name", list(REAL))
def test_training_on_the_real_samples(name, tmp_path):
    folder, extra = REAL[name]
    out = tmp_path / "outputs"
    args = ["--dataset_dir", str(SHARED / folder), "--output_root", str(out), *extra, *FAST]
    bundle("run", "training", "--config_file", f"bundles/{name}/train.json", *args)
    datalists = list((out / "data").glob("*.json"))
    assert len(datalists) == 1 and not (out / "demo_data").exists()
    splits = json.loads(datalists[0].read_text())
    assert splits["summary"]["skipped"] == [] and splits["training"] and splits["validation"] and splits["test"]
    load_weights(MedSpikeFormer(in_channels=1 if name == "covid" else 3), str(run_folder(out, "student") / "model.pt"))


def test_monuseg_keeps_native_resolution_with_a_sliding_window():
    from monai.inferers import SimpleInferer, SlidingWindowInferer

    def inferer(name: str):
        parser = ConfigParser()
        parser.read_config(str(REPO / "bundles" / name / "configs" / "train.json"))
        return parser.get_parsed_content("resize"), parser.get_parsed_content("inferer")

    resize, monuseg = inferer("monuseg")
    assert resize is False and isinstance(monuseg, SlidingWindowInferer)
    assert tuple(monuseg.roi_size) == (64, 64)
    for name in ("isic2018", "kvasir", "busi"):
        resize, other = inferer(name)
        assert resize is True and isinstance(other, SimpleInferer)
