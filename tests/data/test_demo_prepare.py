"""The built-in demo data goes through ``prepare`` and the transforms like a real release."""

from __future__ import annotations

import pytest
import torch
from monai.data import load_decathlon_datalist

from monai_medspike.data import DEMO_DATASETS, get_transforms, make_demo_dataset, prepare
from monai_medspike.data.__main__ import main


@pytest.mark.parametrize("dataset", DEMO_DATASETS)
def test_demo_data_prepares_cleanly_and_loads(tmp_path, dataset):
    root = make_demo_dataset(dataset, tmp_path / "release", seed=1)
    out = tmp_path / f"{dataset}.json"
    summary = prepare(dataset, root, out, seed=0, val_fraction=0.25, test_fraction=0.25)
    assert summary["skipped"] == []
    assert all(s["count"] > 0 for s in summary["splits"].values())
    assert 0.0 < summary["mask_coverage"]["mean"] < 0.6
    entry = load_decathlon_datalist(str(out), data_list_key="training")[0]
    mode_out = get_transforms(dataset, "train", spatial_size=(64, 64))(entry)
    samples = mode_out if isinstance(mode_out, list) else [mode_out]
    for s in samples:
        assert s["image"].shape[1:] == (64, 64) and s["label"].shape == (1, 64, 64)
        assert set(torch.unique(s["label"]).tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("dataset", ["covid", "covid_ct"])
def test_demo_multiclass_covid(tmp_path, dataset):
    root = make_demo_dataset(dataset, tmp_path / "release", seed=2)
    options = {"classes": "multiclass"}
    if dataset == "covid_ct":
        options["mask_dir"] = "infection_mask_multiclass"
    summary = prepare(dataset, root, tmp_path / "d.json", val_fraction=0.25, test_fraction=0.25, **options)
    assert set(summary["class_fraction"]) == {0, 1, 2}


def test_demo_command(tmp_path, capsys):
    assert main(["demo", "kvasir", "--out", str(tmp_path / "k"), "--count", "3", "--seed", "5"]) == 0
    assert str(tmp_path / "k") in capsys.readouterr().out
    assert len(list((tmp_path / "k" / "Kvasir-SEG" / "images").glob("*.jpg"))) == 3
    assert main(["demo", "kvasir", "--out", str(tmp_path / "k")]) == 2  # exists: refused
    assert "already exists and is not empty" in capsys.readouterr().err
