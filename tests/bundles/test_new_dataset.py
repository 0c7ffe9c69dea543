"""A sixth dataset is a reader, its record and a README: registered outside the shipped five, its bundle generated
by ``sync``, trained for one epoch, evaluated and inferred without repeating a setting, and served by MONAI Label's
model discovery."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from monai_medspike.apps.monailabel import bundle_info, resolve_models
from monai_medspike.bundle.__main__ import main
from monai_medspike.bundle.sync import GENERATED
from monai_medspike.data import READERS
from tests.apps.studies import read_config
from tests.bundles.helpers import REPO, bundle, run_folder
from tests.bundles.new_reader import CystReader, write_release

RECORD = {
    "dataset": "cysts",
    "imports": ["tests.bundles.new_reader"],
    "settings": {"batch_size": 4, "demo_count": 10},
    "metadata": {
        "name": "MedSpikeFormer cyst segmentation in ultrasound",
        "task": "Segmentation of cysts in grey ultrasound scans with a spiking transformer",
        "description": "MedSpikeFormer on a user's own ultrasound scans (a test of new datasets).",
        "changelog": {},
        "data_source": "generated scans in scans/ and annotations/",
        "data_type": "png",
        "image_classes": "single channel grey scan, scaled to [0, 1]",
        "modality": "US",
        "references": ["MedSpikeFormer: All Neurons Matter for Medical Image Segmentation (ICLR 2026 submission)"],
    },
}


def make_bundle(root, version: str) -> object:
    folder = root / "bundles" / "cysts"
    (folder / "docs").mkdir(parents=True)
    record = {**RECORD, "metadata": {**RECORD["metadata"], "changelog": {version: "first version"}}}
    (folder / "dataset.json").write_text(json.dumps(record, indent=4))
    (folder / "docs" / "README.md").write_text("# Cysts\n\nMedSpikeFormer on ultrasound cysts.\n")
    return folder


def test_the_reader_registers_itself():
    assert READERS["cysts"] is CystReader


@pytest.mark.slow
def test_a_new_dataset_is_a_reader_a_record_and_a_readme(tmp_path, capsys):
    import monai_medspike

    folder = make_bundle(tmp_path, monai_medspike.__version__)
    assert main(["sync", "--bundles", str(tmp_path / "bundles")]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in (folder / "configs").glob("*.json")) == sorted(GENERATED)
    for link in ("train.json", "metadata.json", "logging.conf"):
        assert (folder / link).resolve() == (folder / "configs" / link).resolve()
    meta = json.loads((folder / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["inputs"]["image"]["num_channels"] == 1  # the reader's channels
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "cyst"}
    assert main(["sync", "--check", "--bundles", str(tmp_path / "bundles")]) == 0

    release = write_release(tmp_path / "release")
    out = tmp_path / "outputs"
    train = ["--dataset_dir", str(release), "--epochs", "1", "--image_size", "[32, 32]", "--output_root", str(out)]
    # from another folder: the reader's module is importable because it is on the path (installed, or PYTHONPATH)
    elsewhere = {"cwd": tmp_path, "env": {"PYTHONPATH": str(REPO)}}
    bundle("run", "training", "--config_file", str(folder / "configs" / "train.json"), *train, **elsewhere)
    student = torch.load(run_folder(out, "student") / "model.pt", weights_only=True)
    assert student["record"]["bundle"] == "cysts" and student["record"]["network"]["in_channels"] == 1
    assert (out / "models" / "model.pt").is_file()  # published (the test's --ckpt_dir, see helpers.isolated)

    # evaluation and inference: only where the runs are; the data, size and network come from the checkpoint
    common = ["--output_root", str(out), "--ckpt_dir", str(out / "models")]
    evaluate = f"['{folder / 'configs' / 'train.json'}','{folder / 'configs' / 'evaluate.json'}']"
    bundle("run", "evaluating", "--config_file", evaluate, *common, **elsewhere)
    summary = json.loads((run_folder(out, "evaluate") / "summary.json").read_text())
    datalist = json.loads(next((out / "data").glob("cysts-*.json")).read_text())
    assert summary["images"] == len(datalist["test"]) > 0 and 0.0 <= summary["metrics"]["dice"] <= 1.0
    args = ["--input", str(release / "scans"), "--infer_name", "pred", *common]
    bundle("run", "inferring", "--config_file", str(folder / "configs" / "inference.json"), *args, **elsewhere)
    masks = sorted((out / "pred").glob("*_seg.png"))
    assert len(masks) == 10
    for mask in masks:
        array = np.asarray(Image.open(mask))
        assert array.shape == (80, 80) and set(np.unique(array).tolist()) <= {0, 255}

    # MONAI Label serves every bundle of its --conf bundles folder, the new one included
    assert list(resolve_models("all", tmp_path / "bundles")) == ["cysts"]
    info = bundle_info("cysts", read_config(folder))
    assert (info.dataset, info.in_channels, info.labels) == ("cysts", 1, {"cyst": 1})
