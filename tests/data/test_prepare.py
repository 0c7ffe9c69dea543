from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from PIL import Image

from monai_medspike.data.datalist import prepare
from monai_medspike.data.errors import DataError
from monai_medspike.data.readers import get_reader
from tests.data import writers


def load_split(out: Path, split: str) -> list[dict]:
    return load_decathlon_datalist(str(out), data_list_key=split) if json.loads(out.read_text())[split] else []


def all_entries(out: Path) -> list[dict]:
    return [e for split in ("training", "validation", "test") for e in load_split(out, split)]


@pytest.mark.parametrize(
    "dataset, write, count",
    [
        ("isic2018", writers.write_isic, 6),
        ("kvasir", writers.write_kvasir, 5),
        ("busi", writers.write_busi, 7),
        ("monuseg", writers.write_monuseg, 4),
        ("covid", writers.write_covid_infnet, 5),
        ("covid_ct", writers.write_covid_ct, 5),
    ],
)
def test_prepare_writes_a_monai_datalist_with_disjoint_splits(tmp_path, dataset, write, count):
    root = write(tmp_path / "release")
    out = tmp_path / f"{dataset}.json"
    summary = prepare(dataset, root, out, seed=3, val_fraction=0.2, test_fraction=0.2)
    assert summary["total"] == count
    assert sum(s["count"] for s in summary["splits"].values()) == count
    entries = all_entries(out)
    assert len(entries) == count
    ids = [e["id"] for e in entries]
    assert len(set(ids)) == count
    for e in entries:
        assert Path(e["image"]).is_file() and Path(e["label"]).is_file()
    groups = {split: {e["group"] for e in load_split(out, split)} for split in ("training", "validation", "test")}
    assert not (groups["training"] & groups["validation"] or groups["training"] & groups["test"])
    assert not groups["validation"] & groups["test"]
    assert all(groups.values()), groups  # every split has something
    # paths are relative to the datalist, so the folder can move with its release
    raw = json.loads(out.read_text())
    assert not any(Path(e["image"]).is_absolute() for e in raw["training"])
    assert raw["summary"] == summary


def test_same_seed_same_split_other_seed_other_split(tmp_path):
    root = writers.write_isic(tmp_path / "isic", n=20)
    splits = []
    for i, seed in enumerate((1, 1, 2)):
        out = tmp_path / f"d{i}.json"
        prepare("isic2018", root, out, seed=seed)
        splits.append({s: sorted(e["id"] for e in json.loads(out.read_text())[s]) for s in ("training", "test")})
    assert splits[0] == splits[1]
    assert splits[0] != splits[2]


def test_isic_pairs_and_mask_values(tmp_path):
    root = writers.write_isic(tmp_path / "isic", n=4)
    samples, problems = get_reader("isic2018").find(root)
    assert [s.id for s in samples] == [f"ISIC_{i:07d}" for i in range(4)] and problems == []
    loaded = get_reader("isic2018").load(samples[1])
    assert set(np.unique(loaded.label).tolist()) == {0, 1}
    assert loaded.size == (40, 48)


def test_unpaired_files_are_errors_or_skipped_and_listed(tmp_path):
    root = writers.write_isic(tmp_path / "isic", n=5)
    (root / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000001_segmentation.png").unlink()
    (root / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000099_segmentation.png").write_bytes(
        (root / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000002_segmentation.png").read_bytes()
    )
    out = tmp_path / "isic.json"
    with pytest.raises(DataError) as err:
        prepare("isic2018", root, out)
    assert "ISIC_0000001.jpg: image without mask" in str(err.value)
    assert "ISIC_0000099_segmentation.png: mask without image" in str(err.value)
    assert "--skip_bad" in str(err.value)
    assert not out.exists()
    summary = prepare("isic2018", root, out, skip_bad=True, val_fraction=0.0, test_fraction=0.25)
    assert summary["total"] == 4 and len(summary["skipped"]) == 2
    assert "ISIC_0000001" not in {e["id"] for e in all_entries(out)}


def test_corrupt_image_names_the_file(tmp_path):
    root = writers.write_isic(tmp_path / "isic", n=4)
    bad = root / "ISIC2018_Task1-2_Training_Input" / "ISIC_0000002.jpg"
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 3])  # truncated JPEG
    out = tmp_path / "isic.json"
    with pytest.raises(DataError, match=r"ISIC_0000002\.jpg: cannot be read as an image"):
        prepare("isic2018", root, out)
    assert not out.exists() and not list(tmp_path.glob(".*tmp*"))
    summary = prepare("isic2018", root, out, skip_bad=True, val_fraction=0.0, test_fraction=0.25)
    assert summary["total"] == 3 and "ISIC_0000002.jpg" in summary["skipped"][0]


def test_size_mismatch_and_non_binary_mask(tmp_path):
    root = writers.write_isic(tmp_path / "isic", n=4)
    gt = root / "ISIC2018_Task1_Training_GroundTruth"
    Image.fromarray(np.zeros((20, 20), np.uint8), "L").save(gt / "ISIC_0000001_segmentation.png")
    with pytest.raises(
        DataError, match=r"ISIC_0000001_segmentation\.png: mask size 20x20 \(WxH\) differs .* \(48x40\)"
    ):
        prepare("isic2018", root, tmp_path / "a.json")
    Image.fromarray(np.full((40, 48), 128, np.uint8), "L").save(gt / "ISIC_0000001_segmentation.png")
    with pytest.raises(
        DataError, match=r"ISIC_0000001_segmentation\.png: a binary mask must hold 0 and 255.*found 128\."
    ):
        prepare("isic2018", root, tmp_path / "a.json")


def test_missing_or_wrong_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        prepare("kvasir", tmp_path / "nope", tmp_path / "k.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"not a kvasir release folder: expected the sub-folders"):
        prepare("kvasir", tmp_path / "empty", tmp_path / "k.json")
    with pytest.raises(ValueError, match="unknown dataset 'lits'; valid names are: isic2018, kvasir"):
        prepare("lits", tmp_path, tmp_path / "k.json")


def test_existing_datalist_is_kept_unless_overwrite(tmp_path):
    root = writers.write_kvasir(tmp_path / "k")
    out = tmp_path / "k.json"
    prepare("kvasir", root, out, seed=0)
    before = out.read_text()
    with pytest.raises(DataError, match="already exists.*--overwrite"):
        prepare("kvasir", root, out, seed=5)
    assert out.read_text() == before
    prepare("kvasir", root, out, seed=5, overwrite=True)
    assert json.loads(out.read_text())["seed"] == 5


def test_kvasir_jpeg_masks_are_thresholded_at_127(tmp_path):
    root = writers.write_kvasir(tmp_path / "k", n=3)
    samples, _ = get_reader("kvasir").find(root)  # the layout one level up is found too
    loaded = get_reader("kvasir").load(samples[0])
    expected = writers.disk(48, 64, 20, 30, 10)
    # JPEG ringing may move a few border pixels; the mask is the thresholded disk
    assert np.mean(loaded.label != expected) < 0.01
    assert get_reader("kvasir").find(root / "Kvasir-SEG")[0] == samples
    mask = root / "Kvasir-SEG" / "masks" / "case1.jpg"
    Image.fromarray(np.full((48, 64, 3), 128, np.uint8), "RGB").save(mask)
    with pytest.raises(DataError, match=r"case1\.jpg: 100% of the pixels are mid-grey"):
        get_reader("kvasir").load(samples[1])


def test_busi_merges_all_masks_and_can_exclude_normal(tmp_path):
    root = writers.write_busi(tmp_path / "busi")
    out = tmp_path / "busi.json"
    summary = prepare("busi", root, out, val_fraction=0.15, test_fraction=0.3)
    entries = {e["id"]: e for e in all_entries(out)}
    assert set(entries) == {"benign (1)", "benign (2)", "benign (3)", "malignant (1)", "malignant (2)",
                            "normal (1)", "normal (2)"}  # fmt: skip
    merged = np.asarray(Image.open(entries["benign (2)"]["label"])) > 0
    expected = writers.disk(40, 50, 10, 12, 6) | writers.disk(40, 50, 30, 37, 6)
    assert np.array_equal(merged, expected.astype(bool))
    assert "_labels/" in entries["benign (2)"]["label"]  # derived
    assert entries["benign (1)"]["label"].endswith("benign (1)_mask.png")  # the release file itself
    assert entries["normal (1)"]["class"] == "normal"
    assert summary["mask_coverage"]["empty"] == 2
    out2 = tmp_path / "busi2.json"
    assert prepare("busi", root, out2, include_normal=False, val_fraction=0.2, test_fraction=0.2)["total"] == 5


def test_monuseg_rasterises_xml_and_keeps_patients_together(tmp_path):
    root = writers.write_monuseg(tmp_path / "monuseg")
    out = tmp_path / "m.json"
    for seed in range(6):
        prepare("monuseg", root, out, seed=seed, val_fraction=0.25, test_fraction=0.25, overwrite=True)
        entries = all_entries(out)
        split_of = {}
        for split in ("training", "validation", "test"):
            for e in load_split(out, split):
                split_of.setdefault(e["group"], set()).add(split)
        assert all(len(s) == 1 for s in split_of.values())
        assert {e["group"] for e in entries} == {"TCGA-AA-0001", "TCGA-BB-0002", "TCGA-CC-0003"}
    e = next(e for e in entries if e["id"] == "TCGA-BB-0002-01Z-00-DX1")
    binary = np.asarray(Image.open(e["label"]))
    instance = np.asarray(Image.open(e["instance"]))
    assert set(np.unique(binary).tolist()) == {0, 255}
    assert set(np.unique(instance).tolist()) == {0, 1, 2}
    assert instance[23, 23] == 2 and instance[5, 6] == 1 and instance[15, 15] == 0
    assert np.array_equal(binary > 0, instance > 0)


def test_monuseg_xml_of_another_image_is_an_error(tmp_path):
    root = writers.write_monuseg(tmp_path / "m", ids=("TCGA-AA-0001-01Z-00-DX1",))
    xml = root / "MoNuSeg 2018 Training Data" / "Annotations" / "TCGA-AA-0001-01Z-00-DX1.xml"
    xml.write_text(writers.aperio_xml([[(500, 500), (520, 500), (520, 520)]]))
    with pytest.raises(DataError, match=r"TCGA-AA-0001-01Z-00-DX1\.xml"):
        prepare("monuseg", root, tmp_path / "m.json", val_fraction=0, test_fraction=0)


def test_covid_binary_and_multiclass(tmp_path):
    root = writers.write_covid_infnet(tmp_path / "covid")
    binary = get_reader("covid").load(get_reader("covid").find(root)[0][0]).label
    multi_reader = get_reader("covid", classes="multiclass")
    multi = multi_reader.load(multi_reader.find(root)[0][0]).label
    assert set(np.unique(multi).tolist()) == {0, 1, 2}
    assert np.array_equal(binary, (multi > 0).astype(np.uint8))
    summary = prepare("covid", root, tmp_path / "c.json", classes="multiclass", val_fraction=0.2, test_fraction=0.2)
    assert set(summary["class_fraction"]) == {0, 1, 2}
    bad = root / "TrainingSet" / "MultiClassInfection-Train" / "GT" / "2.png"
    Image.fromarray(np.full((36, 44), 7, np.uint8), "L").save(bad)  # grey values, not class indices
    with pytest.raises(DataError, match=r"2\.png: a multi-class mask must hold the class indices 0\.\.2, found 7"):
        prepare("covid", root, tmp_path / "c2.json", classes="multiclass")


def test_covid_m2snet_layout(tmp_path):
    base = tmp_path / "m2snet" / "COVID-19_Lung_Infection_train"
    (base / "images").mkdir(parents=True)
    (base / "masks").mkdir()
    for i in range(4):
        Image.fromarray(np.zeros((20, 24), np.uint8), "L").save(base / "images" / f"{i}.jpg")
        Image.fromarray(writers.disk(20, 24, 10, 10, 4) * 255, "L").save(base / "masks" / f"{i}.png")
    samples, problems = get_reader("covid").find(tmp_path / "m2snet")
    assert len(samples) == 4 and problems == []


def test_ct_splits_never_share_a_case_and_summary_counts_slices(tmp_path):
    root = writers.write_covid_ct(tmp_path / "ct", cases=tuple(f"case_{i}" for i in range(8)))
    for seed in range(3):
        out = tmp_path / f"ct{seed}.json"
        summary = prepare("covid_ct", root, out, seed=seed, val_fraction=0.25, test_fraction=0.25)
        cases = [e["id"] for e in all_entries(out)]
        assert sorted(cases) == [f"case_{i}" for i in range(8)]  # each case exactly once
        assert summary["slices"] == {"total": 48, "with_mask": 16}


@pytest.mark.parametrize("problem", ["shape", "affine", "corrupt", "constant"])
def test_bad_ct_pairs_name_the_file(tmp_path, problem):
    root = writers.write_covid_ct(tmp_path / "ct", cases=("a", "b", "c"))
    mask = root / "infection_mask" / "b.nii.gz"
    image = root / "ct" / "b.nii.gz"
    if problem == "shape":
        nib.save(nib.Nifti1Image(np.zeros((32, 24, 5), np.uint8), writers.AFFINE), mask)
        match = r"b\.nii\.gz: mask shape \(32, 24, 5\) differs"
    elif problem == "affine":
        nib.save(nib.Nifti1Image(np.zeros((32, 24, 6), np.uint8), np.eye(4)), mask)
        match = r"b\.nii\.gz: mask affine differs"
    elif problem == "corrupt":
        image.write_bytes(image.read_bytes()[:100])
        match = r"b\.nii\.gz: cannot be read as a NIfTI volume"
    else:
        nib.save(nib.Nifti1Image(np.zeros((32, 24, 6), np.int16), writers.AFFINE), image)
        match = r"b\.nii\.gz: the volume is empty"
    out = tmp_path / "ct.json"
    with pytest.raises(DataError, match=match):
        prepare("covid_ct", root, out, val_fraction=0, test_fraction=0)
    assert not out.exists()
    assert prepare("covid_ct", root, out, skip_bad=True, val_fraction=0, test_fraction=0)["total"] == 2


def test_original_protocol_test_share(tmp_path):
    root = writers.write_kvasir(tmp_path / "k", n=25)
    summary = prepare("kvasir", root, tmp_path / "k.json", protocol="original", val_fraction=0.0)
    assert summary["splits"]["test"]["count"] == 3  # 120 / 1000 of 25
    assert summary["splits"]["validation"]["count"] == 0


def test_out_must_be_json_in_an_existing_folder(tmp_path):
    root = writers.write_kvasir(tmp_path / "k")
    with pytest.raises(ValueError, match="out must be a .json file"):
        prepare("kvasir", root, tmp_path / "k.txt")
    with pytest.raises(DataError, match="output folder does not exist"):
        prepare("kvasir", root, tmp_path / "missing" / "k.json")


@pytest.mark.parametrize("which", ["png mask", "tif image"])
def test_corrupt_png_and_tif_name_the_file(tmp_path, which):
    if which == "png mask":
        root = writers.write_isic(tmp_path / "isic", n=3)
        bad = root / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000001_segmentation.png"
        dataset = "isic2018"
    else:
        root = writers.write_monuseg(tmp_path / "m")
        bad = root / "MoNuSeg 2018 Training Data" / "Tissue Images" / "TCGA-BB-0002-01Z-00-DX1.tif"
        dataset = "monuseg"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(DataError, match=rf"{bad.name.replace('.', '[.]')}: cannot be read as an image"):
        prepare(dataset, root, tmp_path / "d.json", val_fraction=0, test_fraction=0)
    assert not (tmp_path / "d.json").exists() and not (tmp_path / "d_labels").exists()
