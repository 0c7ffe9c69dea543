"""The MONAI Label app's pieces that need no MONAI Label: model names, inputs, processing, training datalists."""

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
from monai.transforms import EnsureChannelFirstd, LoadImaged
from PIL import Image

from monai_medspike.apps.monailabel import (
    MODELS,
    CheckInputd,
    app_dir,
    bundle_info,
    bundle_overrides,
    check_input,
    find_model,
    infer_post_transforms,
    insert_input_check,
    load_bundle_config,
    model_output_root,
    reset_spiking_state,
    resolve_models,
    write_training_datalist,
)
from tests.apps.studies import AFFINE, make_studies, write_untrained_checkpoint

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> dict[str, Path]:
    return make_studies(tmp_path_factory.mktemp("monailabel"))


def test_all_maps_the_five_names_to_the_local_bundle_folders():
    models = resolve_models("all")
    assert list(models) == list(MODELS) == ["isic2018", "kvasir", "busi", "monuseg", "covid"]
    assert all(path == (REPO / "bundles" / name).resolve() for name, path in models.items())
    assert resolve_models(None) == models
    assert list(resolve_models(" covid, kvasir ,covid")) == ["covid", "kvasir"]  # order kept, duplicates dropped
    assert list(resolve_models(["busi"])) == ["busi"]


def test_unknown_model_names_are_listed_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"'spleen_ct_segmentation'.*isic2018, kvasir, busi, monuseg, covid.*zoo"):
        resolve_models("covid,spleen_ct_segmentation")


def test_a_bundles_folder_without_the_bundle_is_named(tmp_path):
    (tmp_path / "covid" / "configs").mkdir(parents=True)
    (tmp_path / "covid" / "configs" / "train.json").write_text("{}")
    with pytest.raises(
        FileNotFoundError, match=r"covid.*configs/inference.json, configs/metadata.json.*--conf bundles"
    ):
        resolve_models("covid", tmp_path)
    with pytest.raises(FileNotFoundError, match="kvasir"):
        resolve_models("kvasir", tmp_path)


def test_output_root_defaults_to_the_bundle_outputs_the_command_line_uses(tmp_path):
    bundle = resolve_models("kvasir")["kvasir"]
    assert model_output_root(bundle, "kvasir") == bundle / "outputs"
    assert model_output_root(bundle, "kvasir", tmp_path) == tmp_path / "kvasir"
    parser = load_bundle_config(bundle)
    assert parser.get_parsed_content("output_root") == str(bundle / "outputs")
    assert parser.get_parsed_content("bundle_root") == str(bundle)


@pytest.mark.parametrize(
    "name, dataset, volume, channels, labels",
    [
        ("isic2018", "isic2018", False, 3, {"lesion": 1}),
        ("kvasir", "kvasir", False, 3, {"polyp": 1}),
        ("busi", "busi", False, 3, {"tumor": 1}),
        ("monuseg", "monuseg", False, 3, {"nucleus": 1}),
        ("covid", "covid_ct", True, 1, {"infection": 1}),
    ],
)
def test_bundle_info_of_each_bundle(name, dataset, volume, channels, labels, tmp_path):
    info = bundle_info(name, load_bundle_config(resolve_models(name)[name], tmp_path))
    assert (info.dataset, info.volume, info.in_channels, info.out_channels) == (dataset, volume, channels, 1)
    assert info.labels == labels
    assert info.description
    assert info.accepts("a/b.nii.gz") is volume and info.accepts("a/b.PNG") is not volume


def test_multiclass_covid_by_conf_option_carries_three_label_names(tmp_path):
    conf = {"models": "covid", "covid.classes": "multiclass", "covid.image_size": "[32, 32]", "kvasir.epochs": "3"}
    overrides = bundle_overrides(conf, "covid")
    assert overrides == {"classes": "multiclass", "image_size": [32, 32]}
    assert bundle_overrides(conf, "kvasir") == {"epochs": 3}
    info = bundle_info("covid", load_bundle_config(resolve_models("covid")["covid"], tmp_path, overrides=overrides))
    assert info.out_channels == 3
    assert info.label_names == ("background", "ground-glass", "consolidation")
    assert info.labels == {"ground-glass": 1, "consolidation": 2}
    with pytest.raises(ValueError, match=r"--conf covid\.: name a config id"):
        bundle_overrides({"covid.": "x"}, "covid")


def test_checkpoint_search_prefers_the_latest_student_then_the_zoo_layout(tmp_path):
    bundle, out = tmp_path / "bundle", tmp_path / "out"
    assert find_model(out, bundle) is None
    (bundle / "models").mkdir(parents=True)
    (bundle / "models" / "model.pt").write_bytes(b"zoo")
    assert find_model(out, bundle) == str(bundle / "models" / "model.pt")
    for i, run in enumerate(("student-init", "student-20260101-000000")):
        (out / run).mkdir(parents=True)
        (out / run / "model.pt").write_bytes(b"x")
        os.utime(out / run / "model.pt", ns=(10**18 + i * 10**9, 10**18 + i * 10**9))
    (out / "teacher-20990101-000000").mkdir()
    (out / "teacher-20990101-000000" / "model.pt").write_bytes(b"teacher")
    # the last one written wins, whatever its folder name sorts as
    assert find_model(out, bundle) == str(out / "student-20260101-000000" / "model.pt")
    os.utime(out / "student-init" / "model.pt")
    assert find_model(out, bundle) == str(out / "student-init" / "model.pt")


@pytest.mark.parametrize(
    "shape, volume, match",
    [
        ((2, 8, 8, 4), True, "single-channel CT volume, got 2 channels"),
        ((1, 8, 8), True, r"3D CT volume .* 2 spatial dimensions \(8, 8\)"),
        ((3, 8, 8, 4), False, "takes a 2D image, got 3 spatial dimensions"),
        ((5, 8, 8), False, "grey or RGB\\(A\\) images, got 5 channels"),
    ],
)
def test_inputs_that_do_not_fit_are_named_with_their_shape(shape, volume, match, tmp_path):
    name = "covid" if volume else "kvasir"
    info = bundle_info(name, load_bundle_config(resolve_models(name)[name], tmp_path))
    with pytest.raises(ValueError, match=match) as err:
        check_input(torch.zeros(shape), info, "upload.nii.gz")
    assert str(err.value).startswith(f"upload.nii.gz: the {name} model")
    check_input(torch.zeros((1, 8, 8, 4) if volume else (3, 8, 8)), info)  # what fits passes


@pytest.mark.parametrize("name, shape", [("covid", (1, 8, 8, 4)), ("kvasir", (3, 8, 8))])
def test_inputs_holding_nan_or_inf_are_refused(name, shape, tmp_path):
    info = bundle_info(name, load_bundle_config(resolve_models(name)[name], tmp_path))
    image = torch.zeros(shape)
    image.view(-1)[3] = float("nan")
    image.view(-1)[5] = float("inf")
    with pytest.raises(ValueError, match=r"^upload: 2 value\(s\) are NaN or infinite"):
        check_input(image, info, "upload")


def test_input_check_goes_right_after_channel_first(tmp_path):
    parser = load_bundle_config(resolve_models("covid")["covid"], tmp_path)
    info = bundle_info("covid", parser)
    chain = insert_input_check(parser.get_parsed_content("infer_transforms").transforms, info)
    kinds = [type(t) for t in chain]
    assert kinds[:3] == [LoadImaged, EnsureChannelFirstd, CheckInputd]
    with pytest.raises(ValueError, match="no EnsureChannelFirstd"):
        insert_input_check(chain[:1], info)


def run_pipeline(name: str, image: Path, output_root: Path, overrides: dict | None = None) -> dict:
    """What the infer task runs: the bundle's infer transforms with the input check, the network, post-processing."""
    parser = load_bundle_config(resolve_models(name)[name], output_root, overrides=overrides)
    info = bundle_info(name, parser)
    data = {"image": str(image), "image_path": str(image)}
    for t in insert_input_check(parser.get_parsed_content("infer_transforms").transforms, info):
        data = t(data)
    network = parser.get_parsed_content("network_def").eval()
    torch.manual_seed(0)
    network.load_state_dict(torch.load(write_untrained_checkpoint(name, output_root, overrides))["model"])
    with torch.no_grad():
        data["pred"] = parser.get_parsed_content("inferer")(data["image"][None], network)[0]
    for t in infer_post_transforms(parser):
        data = t(data)
    return data


@pytest.mark.slow
def test_volume_comes_back_as_class_indices_with_the_input_geometry(studies, tmp_path):
    data = run_pipeline("covid", studies["chest0"], tmp_path)
    source = nib.load(studies["chest0"])
    pred = data["pred"]
    assert tuple(pred.shape) == source.shape and pred.dtype == torch.uint8
    np.testing.assert_allclose(np.asarray(pred.affine), AFFINE, atol=1e-5)
    assert set(torch.unique(pred).tolist()) <= {0, 1}


@pytest.mark.slow
def test_multiclass_volume_holds_indices_of_three_classes(studies, tmp_path):
    data = run_pipeline("covid", studies["chest0"], tmp_path, {"classes": "multiclass", "image_size": [32, 32]})
    assert tuple(data["pred"].shape) == nib.load(studies["chest0"]).shape
    assert set(torch.unique(data["pred"]).tolist()) <= {0, 1, 2}


def test_image_comes_back_as_a_mask_of_its_size(studies, tmp_path):
    data = run_pipeline("kvasir", studies["polyp0"], tmp_path)
    width, height = Image.open(studies["polyp0"]).size
    # MONAI's Pillow reader puts width first; the writer transposes back to a height x width PNG
    assert tuple(data["pred"].shape) == (width, height) and data["pred"].dtype == torch.uint8
    assert set(torch.unique(data["pred"]).tolist()) <= {0, 1}


def test_neuron_state_reset_clears_membranes(tmp_path):
    from monai_medspike.networks.layers import is_neuron

    parser = load_bundle_config(resolve_models("kvasir")["kvasir"], tmp_path, overrides={"image_size": [32, 32]})
    network = parser.get_parsed_content("network_def").eval()
    neurons = [m for m in network.modules() if is_neuron(m)]
    neurons[0].v = torch.ones(3)  # state left behind by a caller
    reset_spiking_state(network)
    assert all(not isinstance(m.v, torch.Tensor) or float(m.v.abs().sum()) == 0 for m in neurons)


def test_training_datalist_keeps_what_the_model_reads_and_converts_2d_labels(studies, tmp_path):
    pairs = [{"image": str(p), "label": str(p.parent / "labels" / "final" / f"{i}.png")} for i, p in studies.items()]
    pairs = [p for p in pairs if not p["image"].endswith(".nii.gz")]
    pairs.append(
        {"image": str(studies["chest0"]), "label": str(studies["chest0"].parent / "labels/final/chest0.nii.gz")}
    )
    info = bundle_info("kvasir", load_bundle_config(resolve_models("kvasir")["kvasir"], tmp_path))
    path = write_training_datalist(pairs, tmp_path / "kv", info, val_split=0.34, seed=1)
    datalist = json.loads(path.read_text())
    assert datalist["skipped"] == 1  # the CT volume is not a 2D image
    entries = datalist["training"] + datalist["validation"]
    assert (len(datalist["training"]), len(datalist["validation"])) == (2, 1)
    assert sorted(Path(e["image"]).name for e in entries) == ["polyp0.jpg", "polyp1.jpg", "polyp2.jpg"]
    for e in entries:  # 0/1 label maps become 0/255 PNG files, the same pixels
        label = np.asarray(Image.open(e["label"]))
        original = np.asarray(
            Image.open(studies[Path(e["image"]).stem].parent / "labels/final" / f"{Path(e['image']).stem}.png")
        )
        assert set(np.unique(label)) <= {0, 255} and np.array_equal(label > 0, original > 0)
    ct = bundle_info("covid", load_bundle_config(resolve_models("covid")["covid"], tmp_path))
    one = json.loads(write_training_datalist(pairs, tmp_path / "ct", ct).read_text())
    assert one["training"] == one["validation"] and len(one["training"]) == 1  # a single study serves both
    assert one["training"][0]["label"].endswith("chest0.nii.gz")  # volume labels are used as they are


def test_training_datalist_errors(tmp_path):
    info = bundle_info("covid", load_bundle_config(resolve_models("covid")["covid"], tmp_path))
    with pytest.raises(ValueError, match=r"no labelled NIfTI CT volumes .* model covid \(1 labelled studies"):
        write_training_datalist([{"image": "a.png", "label": "a.png"}], tmp_path, info)
    with pytest.raises(ValueError, match="val_split"):
        write_training_datalist([], tmp_path, info, val_split=1.0)
    assert not (tmp_path / "datalist.json").exists()


def test_app_folder_is_printed_and_holds_main_py():
    out = subprocess.run([sys.executable, "-m", "monai_medspike.apps.monailabel"], capture_output=True, text=True)
    assert out.returncode == 0
    folder = Path(out.stdout.strip())
    assert folder == app_dir() and (folder / "main.py").is_file()
    assert "MedSpikeApp" in (folder / "main.py").read_text()


def test_app_folder_can_be_written_elsewhere(tmp_path):
    command = [sys.executable, "-m", "monai_medspike.apps.monailabel"]
    out = subprocess.run([*command, str(tmp_path / "my_app")], capture_output=True, text=True)
    assert out.returncode == 0 and Path(out.stdout.strip()) == tmp_path / "my_app"
    assert (tmp_path / "my_app" / "main.py").read_text() == (app_dir() / "main.py").read_text()
    (tmp_path / "file").write_text("x")
    out = subprocess.run([*command, str(tmp_path / "file")], capture_output=True, text=True)
    assert out.returncode == 2 and "is not a folder" in out.stderr


def test_the_app_module_needs_monailabel_and_the_pieces_do_not():
    code = "import monai_medspike.apps.monailabel as m, sys; print('monailabel' in sys.modules, len(m.MODELS))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "5"], out.stderr
    pytest.importorskip("monailabel", reason="monailabel is installed only in the MONAI Label environment")
    from monai_medspike.apps.monailabel.app import MedSpikeApp

    assert [b.__name__ for b in MedSpikeApp.__bases__] == ["MONAILabelApp"]  # how MONAI Label finds the app
