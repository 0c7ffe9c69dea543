"""The four 2D bundles (isic2018, kvasir, busi, monuseg): literal commands, evaluation, inference, metadata."""

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

import monai_medspike.bundle.sync as sync
from monai_medspike.bundle import META_SCHEMA, load_weights
from monai_medspike.networks.nets import MedSpikeFormer
from tests.bundles.helpers import REPO, bundle, export, run_folder

BUNDLES = ("isic2018", "kvasir", "busi", "monuseg")
FAST = ["--epochs", "1", "--image_size", "[32, 32]"]


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLES)
def test_train_evaluate_infer_on_demo_data(name, tmp_path):
    configs = REPO / "bundles" / name / "configs"
    out = tmp_path / "outputs"
    bundle("run", "training", "--config_file", f"bundles/{name}/train.json", "--output_root", str(out), *FAST)
    student = run_folder(out, "student") / "model.pt"
    load_weights(MedSpikeFormer(in_channels=3), str(student))
    load_weights(MedSpikeFormer(in_channels=3, spiking=False), str(run_folder(out, "teacher") / "model.pt"))

    evaluate = f"['{configs / 'train.json'}','{configs / 'evaluate.json'}']"
    bundle("run", "evaluating", "--config_file", evaluate, "--output_root", str(out), *FAST)
    summary = json.loads((run_folder(out, "evaluate") / "summary.json").read_text())
    datalist = json.loads(next((out / "demo_data").glob("*.json")).read_text())
    assert summary["images"] == len(datalist["test"]) > 0
    assert 0.0 <= summary["metrics"]["dice"] <= 1.0

    infer = f"['{configs / 'train.json'}','{configs / 'inference.json'}']"
    bundle("run", "inferring", "--config_file", infer, "--output_root", str(out), "--infer_name", "pred", *FAST)
    for entry in datalist["test"]:
        source = out / "demo_data" / entry["image"]
        mask = Image.open(out / "pred" / f"{source.stem}_seg.png")
        assert mask.size == Image.open(source).size  # back at the input's size
        assert set(np.unique(np.asarray(mask)).tolist()) <= {0, 255}

    # resume: the teacher's last checkpoint continues at epoch 2 with its optimizer and best metric
    last = run_folder(out, "teacher") / "last.pt"
    before = torch.load(last, weights_only=False)
    args = ["--output_root", str(out), "--phase", "teacher", "--resume_from", str(last), "--epochs", "2"]
    proc = bundle("run", "training", "--config_file", f"bundles/{name}/train.json", *args, *FAST[2:])
    log = proc.stdout + proc.stderr
    assert f"resuming the teacher from {last} at epoch 2" in log and "Epoch[2]" in log and "Epoch[1]" not in log
    after = torch.load(last, weights_only=False)
    assert after["trainer"]["iteration"] == 2 * before["trainer"]["epoch_length"]
    assert after["best"]["best_metric"] >= before["best"]["best_metric"]

    # TorchScript export of the student matches the checkpointed network
    ts_file = export(configs, student, tmp_path / "model.ts", channels=3)
    x = torch.rand(2, 3, 32, 32)
    net = load_weights(MedSpikeFormer(in_channels=3), str(student)).eval()
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(ts_file))(x), net(x), rtol=1e-4, atol=1e-5)


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
    batch = json.loads((configs / "train.json").read_text())["batch_size"]
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
    assert train["bundle_root"] == f"$monai_medspike.bundle.bundle_root('{name}')"
    for overlay in ("evaluate.json", "multi_gpu_train.json"):
        assert "network_def" not in json.loads((configs / overlay).read_text())
    for link in ("train.json", "metadata.json", "logging.conf"):
        assert (folder / link).is_symlink() and (folder / link).resolve() == (configs / link).resolve()
    assert (folder / "docs" / "README.md").is_file() and (folder / "LICENSE").is_file()


# what a bundle may set for its dataset; everything else (the workflow's wiring, the settings' defaults, the
# network) is the same in all five, written once in monai_medspike/bundle/shared (and sync uses the same list)
DATASET_KEYS = {
    "bundle_root", "dataset", "label_names", "in_channels", "out_channels", "resize", "demo_count", "batch_size",
    "data_options", "transform_options", "slices_per_volume",
}  # fmt: skip
assert DATASET_KEYS == sync.DATASET_KEYS


def test_the_five_bundles_differ_only_in_their_dataset_keys():
    bundles = sorted(p.parent.parent.name for p in (REPO / "bundles").glob("*/configs/train.json"))
    assert bundles == sorted(["covid", *BUNDLES])

    def read(config: str) -> dict[str, dict]:
        return {name: json.loads((REPO / "bundles" / name / "configs" / config).read_text()) for name in bundles}

    for config in ("train.json", "inference.json"):
        configs = read(config)
        for key in sorted(set().union(*configs.values()) - DATASET_KEYS):
            values = [c.get(key, "<missing>") for c in configs.values()]
            assert all(v == values[0] for v in values), f"{config} key {key!r} differs between bundles: {values}"
        for c in configs.values():
            assert "teacher" not in c and "student" not in c  # no copy of the workflow
            assert not any("covid_ct" in json.dumps(v) for k, v in c.items() if k != "dataset")  # no name tests
    for name in bundles:
        assert len((REPO / "bundles" / name / "configs" / "train.json").read_text().splitlines()) < 100, name
    # the standalone inference.json repeats what inference needs of train.json, with the same values
    for train, infer in zip(read("train.json").values(), read("inference.json").values(), strict=True):
        # (training's datalist is not prepared when MONAI Label gives train#dataset#data)
        # channels_last differs on purpose: inference runs channels-last on a CPU by default, training does not
        shared = sorted(
            set(train) & set(infer) - {"initialize", "run", "postprocessing", "datalist_file", "channels_last"}
        )
        assert {"dataset", "image_size", "network_def", "in_channels", "out_channels", "classes"} <= set(shared)
        assert all(train[k] == infer[k] for k in shared), [k for k in shared if train[k] != infer[k]]
        assert train["channels_last"] is False and infer["channels_last"] == "$torch.device(@device).type == 'cpu'"
    # the overlays are one and the same file in every bundle
    for overlay in ("evaluate.json", "multi_gpu_train.json"):
        texts = {(REPO / "bundles" / name / "configs" / overlay).read_text() for name in bundles}
        assert len(texts) == 1, overlay
    total = sum(len(p.read_text().splitlines()) for p in (REPO / "bundles").rglob("*.json") if not p.is_symlink())
    assert total < 1400, f"{total} lines of bundle JSON"


def test_metadata_names_the_labels_the_bundle_writes():
    """MONAI Label reads the label names and values from the output ``channel_def`` of ``metadata.json``."""
    for name in ["covid", *BUNDLES]:
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
