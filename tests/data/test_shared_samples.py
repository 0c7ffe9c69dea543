"""``prepare`` on the real dataset samples in ../shared/data (skipped when that folder is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from PIL import Image

from monai_medspike.data.datalist import prepare
from monai_medspike.data.transforms import get_transforms

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason=f"real samples not found at {SHARED}")


@pytest.mark.parametrize(
    "dataset, folder, options, total",
    [
        ("isic2018", "isic2018", {}, 40),
        ("kvasir", "kvasir-seg", {}, 40),
        ("busi", "busi", {}, 30),
        ("busi", "busi", {"include_normal": False}, 26),
        ("monuseg", "monuseg", {}, 3),
        ("covid", "covid19", {}, 50),
        ("covid", "covid19", {"classes": "multiclass"}, 50),
    ],
)
def test_prepare_real_samples(tmp_path, dataset, folder, options, total):
    out = tmp_path / f"{dataset}.json"
    fractions = {"val_fraction": 0.34, "test_fraction": 0.33} if dataset == "monuseg" else {}
    summary = prepare(dataset, SHARED / folder, out, seed=0, **fractions, **options)
    assert summary["total"] == total and summary["skipped"] == []
    entries = [
        e for s in ("training", "validation", "test") for e in load_decathlon_datalist(str(out), data_list_key=s)
    ]
    assert len({e["id"] for e in entries}) == total
    sample = get_transforms(dataset, "eval", classes=options.get("classes", "binary"))(entries[0])
    assert sample["image"].shape[1:] == (256, 256) and sample["label"].shape == (1, 256, 256)
    if dataset == "covid" and options:
        assert set(summary["class_fraction"]) == {0, 1, 2}
    if dataset == "kvasir":
        assert summary["sizes"]["distinct"] == 25 and summary["mask_coverage"]["empty"] == 0


def test_real_busi_multi_masks_are_or_merged(tmp_path):
    out = tmp_path / "busi.json"
    prepare("busi", SHARED / "busi", out)
    entries = {e["id"]: e for s in ("training", "validation", "test") for e in json.loads(out.read_text())[s]}
    folder = SHARED / "busi" / "Dataset_BUSI_with_GT"
    for name, cls in (("benign (25)", "benign"), ("malignant (53)", "malignant")):
        masks = [np.asarray(Image.open(folder / cls / f"{name}{s}.png").convert("L")) > 0 for s in ("_mask", "_mask_1")]
        merged = np.asarray(Image.open(out.parent / entries[name]["label"])) > 0
        assert np.array_equal(merged, masks[0] | masks[1])
        assert merged.sum() > max(m.sum() for m in masks)  # the second mask adds a lesion
    assert entries["normal (2)"]["class"] == "normal"


def test_real_monuseg_counts_nuclei(tmp_path):
    out = tmp_path / "m.json"
    prepare("monuseg", SHARED / "monuseg", out, val_fraction=0, test_fraction=0)
    counts = {}
    for e in json.loads(out.read_text())["training"]:
        counts[e["id"]] = len(np.unique(np.asarray(Image.open(out.parent / e["instance"])))) - 1
    assert counts["TCGA-B0-5698-01Z-00-DX1"] >= 0.9 * 357
    assert counts["TCGA-CH-5767-01Z-00-DX1"] >= 0.9 * 294
