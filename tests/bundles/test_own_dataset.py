"""Your own dataset in one small file: a generated 2-class, 1-channel, 96 x 96 ultrasound-like set that is none of
the five, given as a MONAI datalist and an overlay of dataset keys on an exported bundle (docs/bundles.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_medspike.bundle import export_bundle
from monai_medspike.checkpoints import load_weights
from monai_medspike.networks.nets import MedSpikeFormer
from tests.bundles.helpers import bundle, run_folder

# the whole of what the user writes for the new dataset (besides the datalist)
OWN = {
    "dataset": "folder",
    "data_options": {"channels": "@in_channels"},
    "label_names": ["background", "lesion"],
    "in_channels": 1,
    "image_size": [96, 96],
    "batch_size": 4,
}


def write_dataset(root: Path, count: int = 12) -> Path:
    """Speckled grey images with a dark elliptic lesion, 0/255 masks, and a datalist of 8 / 2 / 2 pairs."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[0:96, 0:96]
    entries = []
    for i in range(count):
        cy, cx, ry, rx = rng.integers(30, 66), rng.integers(30, 66), rng.integers(8, 20), rng.integers(8, 20)
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        image = np.clip(rng.gamma(2.0, 50.0, (96, 96)) * np.where(mask, 0.3, 1.0), 0, 255).astype(np.uint8)
        Image.fromarray(image, "L").save(root / "images" / f"us{i:02d}.png")
        Image.fromarray(mask.astype(np.uint8) * 255, "L").save(root / "masks" / f"us{i:02d}.png")
        entries.append({"image": f"images/us{i:02d}.png", "label": f"masks/us{i:02d}.png"})
    datalist = {"training": entries[:8], "validation": entries[8:10], "test": entries[10:]}
    (root / "datalist.json").write_text(json.dumps(datalist))
    return root / "datalist.json"


@pytest.mark.slow
def test_a_new_dataset_trains_evaluates_and_infers_from_one_overlay(tmp_path):
    datalist = write_dataset(tmp_path / "us")
    base = export_bundle("kvasir", tmp_path / "my_bundle")  # any 2D bundle serves as the base
    own = tmp_path / "my_dataset.json"
    own.write_text(json.dumps({**OWN, "datalist": str(datalist)}, indent=4))
    out = tmp_path / "out"
    common = ["--output_root", str(out), "--epochs", "1"]

    def config_file(*bundle_configs: str) -> str:  # the dataset overlay goes last
        return str([*(str(base / "configs" / c) for c in bundle_configs), str(own)])

    bundle("run", "training", "--config_file", config_file("train.json"), *common, cwd=tmp_path)
    student = run_folder(out, "student") / "model.pt"
    load_weights(MedSpikeFormer(in_channels=1), str(student))  # one channel, as the overlay says
    load_weights(MedSpikeFormer(in_channels=1, spiking=False), str(run_folder(out, "teacher") / "model.pt"))
    assert (out / "models" / "model.pt").is_file()  # published (the test's --ckpt_dir, see helpers.isolated)

    # the model carries the overlay's settings: evaluation and inference need the bundle's configs only
    evaluate = str([str(base / "configs" / c) for c in ("train.json", "evaluate.json")])
    bundle("run", "evaluating", "--config_file", evaluate, "--output_root", str(out), cwd=tmp_path)
    summary = json.loads((run_folder(out, "evaluate") / "summary.json").read_text())
    assert summary["images"] == 2 and 0.0 <= summary["metrics"]["dice"] <= 1.0

    args = ["--input", str(tmp_path / "us" / "images"), "--infer_name", "pred", "--output_root", str(out)]
    bundle("run", "inferring", "--config_file", str(base / "configs" / "inference.json"), *args, cwd=tmp_path)
    masks = sorted((out / "pred").glob("*_seg.png"))
    assert len(masks) == 12
    for mask in masks:
        array = np.asarray(Image.open(mask))
        assert array.shape == (96, 96) and set(np.unique(array).tolist()) <= {0, 255}
