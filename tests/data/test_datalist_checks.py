"""Every datalist is checked like a prepared one when a workflow loads it (load_datalist), before any work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_medspike.data import DataError, prepare, prepare_data
from monai_medspike.data.checks import check_datalist, load_datalist
from tests.data import writers


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no remembered checks from other tests


def _pair(folder: Path, name: str, size=(40, 30), mask_values=(0, 255)) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(folder / f"{name}.jpg")
    mask = np.full((size[1], size[0]), mask_values[0], np.uint8)
    mask[5:15, 5:15] = mask_values[1]
    if len(mask_values) > 2:
        mask[20:, :] = mask_values[2]
    Image.fromarray(mask).save(folder / f"{name}_mask.png")
    return {"image": f"{folder.name}/{name}.jpg", "label": f"{folder.name}/{name}_mask.png"}


def _write(path: Path, **splits) -> Path:
    path.write_text(json.dumps({"training": [], "validation": [], "test": [], **splits}))
    return path


def test_a_good_hand_written_datalist_loads_with_resolved_paths(tmp_path):
    entries = [_pair(tmp_path / "data", f"a{i}") for i in range(3)]
    datalist = _write(tmp_path / "list.json", training=entries[:1], validation=entries[1:2], test=entries[2:])
    test = load_datalist(datalist, "test", "kvasir")
    assert test == [{"image": str(tmp_path / "data" / "a2.jpg"), "label": str(tmp_path / "data" / "a2_mask.png")}]


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("duplicate in test", r"entry 1 of 'test': image data/a2\.jpg is also entry 0 of 'test': listed twice"),
        ("test in training", r"entry 0 of 'test': image data/a0\.jpg is also entry 0 of 'training': in two splits"),
        ("training without label", r"entry 0 of 'training' has no 'label'"),
        ("not an object", r"entry 0 of 'test' is not an object with an 'image' path"),
        ("missing file", r"entry 0 of 'test': image data/gone\.jpg -> .*gone\.jpg does not exist"),
    ],
)
def test_datalist_faults_are_refused_naming_the_datalist_and_entry(tmp_path, fault, message):
    entries = [_pair(tmp_path / "data", f"a{i}") for i in range(3)]
    train, val, test = entries[:1], entries[1:2], entries[2:]
    if fault == "duplicate in test":
        test = test * 2
    elif fault == "test in training":
        test = train
    elif fault == "training without label":
        train = [{"image": train[0]["image"]}]
    elif fault == "not an object":
        test = [42]
    elif fault == "missing file":
        test = [{"image": "data/gone.jpg", "label": test[0]["label"]}]
    datalist = _write(tmp_path / "list.json", training=train, validation=val, test=test)
    with pytest.raises(DataError, match=rf"^datalist {datalist}: 1 problem\(s\): {message}"):
        load_datalist(datalist, "test", "kvasir")


def test_image_paired_with_another_images_mask_and_mixed_mask_values(tmp_path):
    good = _pair(tmp_path / "data", "a0")
    other = _pair(tmp_path / "data", "b0", size=(41, 31))
    swapped = {"image": good["image"], "label": other["label"]}
    datalist = _write(tmp_path / "list.json", training=[_pair(tmp_path / "data", "t0")], test=[swapped])
    with pytest.raises(DataError, match=r"b0_mask\.png: size 41x31 differs from its image .*a0\.jpg \(40x30\)"):
        load_datalist(datalist, "test", "kvasir")
    mixed = _pair(tmp_path / "data", "m0", mask_values=(0, 1, 255))  # its 1-pixels would be lost at > 127
    datalist = _write(tmp_path / "list2.json", training=[_pair(tmp_path / "data", "t0")], test=[mixed])
    with pytest.raises(DataError, match=r"m0_mask\.png: a binary mask must hold 0 and 255 .*found 0, 1, 255"):
        load_datalist(datalist, "test", "kvasir")


def test_a_moved_datalist_names_itself_and_the_resolved_path(tmp_path):
    root = writers.write_kvasir(tmp_path / "kvasir", n=6)
    out = tmp_path / "lists" / "kvasir.json"
    out.parent.mkdir()
    prepare("kvasir", root, out, val_fraction=0.2, test_fraction=0.2)
    assert load_datalist(out, "test", "kvasir")
    moved = tmp_path / "elsewhere" / "deeper" / "kvasir.json"
    moved.parent.mkdir(parents=True)
    shutil.move(out, moved)
    with pytest.raises(DataError, match=rf"^datalist {moved}: \d+ problem.*does not exist \(relative paths are read"):
        load_datalist(moved, "training", "kvasir")


def test_labels_needed_for_scoring_and_not_for_inference(tmp_path):
    entries = [_pair(tmp_path / "data", f"a{i}") for i in range(2)]
    datalist = _write(tmp_path / "list.json", training=entries[:1], test=[{"image": entries[1]["image"]}])
    with pytest.raises(DataError, match=r"1 entry of 'test' without a 'label' \(entry 0\); scoring needs"):
        load_datalist(datalist, "test", "kvasir")
    assert load_datalist(datalist, "test", "kvasir", labels=False) == [{"image": str(tmp_path / "data" / "a1.jpg")}]
    with pytest.raises(DataError, match=r"the 'validation' list is empty"):
        load_datalist(datalist, "validation", "kvasir")


def test_corrupt_json_is_named(tmp_path):
    datalist = tmp_path / "list.json"
    datalist.write_text('{"training": [')
    with pytest.raises(DataError, match=rf"^datalist {datalist}: not valid JSON"):
        check_datalist(datalist)


def test_pixel_checks_are_remembered_per_file_state(tmp_path):
    entries = [_pair(tmp_path / "data", f"a{i}") for i in range(2)]
    datalist = _write(tmp_path / "list.json", training=entries[:1], test=entries[1:])
    load_datalist(datalist, "test", "kvasir")
    assert len(list((tmp_path / "cache" / "monai_medspike" / "checked").iterdir())) == 1
    # the mask changes after the check: its new state is checked again and refused
    Image.fromarray(np.full((30, 40), 128, np.uint8)).save(tmp_path / "data" / "a1_mask.png")
    with pytest.raises(DataError, match=r"a1_mask\.png: a binary mask must hold"):
        load_datalist(datalist, "test", "kvasir")


def test_a_datalist_and_a_release_folder_together_are_ambiguous(tmp_path):
    datalist = _write(tmp_path / "list.json", training=[_pair(tmp_path / "data", "a0")])
    with pytest.raises(DataError, match=r"both a datalist .* and a release folder \(--dataset_dir .*\) are given"):
        prepare_data(str(tmp_path / "out"), "kvasir", dataset_dir=str(tmp_path / "data"), datalist=str(datalist))


def test_string_test_entries_deep_images_and_turned_images(tmp_path):
    entries = [_pair(tmp_path / "data", f"a{i}") for i in range(2)]
    # MONAI's load_decathlon_datalist takes a test list of paths
    datalist = _write(tmp_path / "list.json", training=entries[:1], test=[entries[1]["image"]])
    assert load_datalist(datalist, "test", "kvasir", labels=False) == [{"image": str(tmp_path / "data" / "a1.jpg")}]
    # a 16-bit image is refused from its header, before any work
    Image.fromarray(np.full((30, 40), 4000, np.uint16)).save(tmp_path / "data" / "deep.png")
    deep = {"image": "data/deep.png", "label": entries[1]["label"]}
    datalist = _write(tmp_path / "list2.json", training=entries[:1], test=[deep])
    with pytest.raises(DataError, match=r"deep\.png: a 16-bit image \(Pillow mode I;16\)"):
        load_datalist(datalist, "test", "kvasir")
    # an image shown turned (EXIF) whose label was drawn on the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.full((30, 40, 3), 90, np.uint8)).save(tmp_path / "data" / "turned.jpg", exif=exif)
    turned = {"image": "data/turned.jpg", "label": entries[1]["label"]}
    datalist = _write(tmp_path / "list3.json", training=entries[:1], test=[turned])
    with pytest.raises(
        DataError, match=r"the image's EXIF orientation turns it, but its label was drawn on the stored"
    ):
        load_datalist(datalist, "test", "kvasir")


def test_the_search_for_pixel_problems_stops_after_three_and_says_so(tmp_path):
    bad = [_pair(tmp_path / "data", f"m{i}", mask_values=(0, 1, 255)) for i in range(5)]
    datalist = _write(tmp_path / "list.json", training=bad[:4], test=bad[4:])
    with pytest.raises(DataError, match=r"3 or more problems: .*m0_mask\.png.*m1_mask\.png.*m2_mask\.png"):
        load_datalist(datalist, "training", "kvasir")


def test_a_prepared_datalist_is_not_decoded_again(tmp_path, monkeypatch):
    import monai_medspike.data.checks as checks

    root = writers.write_kvasir(tmp_path / "kvasir", n=6)
    prepare("kvasir", root, tmp_path / "k.json", val_fraction=0.2, test_fraction=0.2)

    def decoded(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(checks, "read_mask", decoded)
    assert load_datalist(tmp_path / "k.json", "training", "kvasir")


def test_unknown_reader_options_end_in_one_line():
    from monai_medspike.data import get_reader
    from monai_medspike.errors import UserError

    with pytest.raises(UserError, match=r"does not take the options \['label_threshold'\] \(--data_options\)"):
        get_reader("folder", label_threshold=127)
