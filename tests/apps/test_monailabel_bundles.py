"""The MONAI Label app's pieces that need no MONAI Label: model names, bundle folders, inputs, studies per model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.transforms import EnsureChannelFirstd, LoadImaged

from monai_medspike.apps.monailabel import (
    MODELS,
    CheckInputd,
    app_dir,
    bundle_info,
    bundle_overrides,
    check_input,
    default_bundles_dir,
    insert_input_check,
    model_studies,
    resolve_models,
    served_model,
)
from monai_medspike.bundle import shipped_bundles
from monai_medspike.data.transforms import LoadDecodedd
from tests.apps.studies import label_of, make_studies, read_config


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> dict[str, Path]:
    return make_studies(tmp_path_factory.mktemp("monailabel"))


def info_of(name: str, overrides: dict | None = None):
    """The bundle's info from its config alone: no trained model of the checkout (``.ci/run`` trains the covid
    bundle's before these tests) is read."""
    untrained = {"ckpt_path": None, "ckpt_dir": None, "output_root": str(Path(__file__).parent / "no-runs")}
    return bundle_info(name, read_config(resolve_models(name)[name], overrides={**untrained, **(overrides or {})}))


def test_all_maps_the_names_to_the_shipped_bundle_folders():
    models = resolve_models("all")
    assert list(models) == list(MODELS) == list(shipped_bundles()) == ["busi", "covid", "isic2018", "kvasir", "monuseg"]
    assert models == {name: shipped_bundles()[name].resolve() for name in MODELS}
    assert all(path.parent == default_bundles_dir().resolve() for path in models.values())
    assert resolve_models(None) == models
    assert list(resolve_models(" covid, kvasir ,covid")) == ["covid", "kvasir"]  # order kept, duplicates dropped
    assert list(resolve_models(["busi"])) == ["busi"]


def test_unknown_model_names_are_listed_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"'spleen_ct_segmentation'.*busi, covid, isic2018, kvasir, monuseg.*zoo"):
        resolve_models("covid,spleen_ct_segmentation")


def test_a_bundles_folder_serves_every_bundle_in_it_a_new_one_included(tmp_path):
    from monai_medspike.bundle import export_bundle

    export_bundle("kvasir", tmp_path / "kvasir")
    export_bundle("kvasir", tmp_path / "my_polyps")  # any other bundle folder, e.g. a new dataset's
    assert list(resolve_models("all", tmp_path)) == ["kvasir", "my_polyps"]
    assert resolve_models("my_polyps", tmp_path) == {"my_polyps": (tmp_path / "my_polyps").resolve()}


def test_a_bundles_folder_without_the_bundle_is_named(tmp_path):
    (tmp_path / "covid" / "configs").mkdir(parents=True)
    (tmp_path / "covid" / "configs" / "train.json").write_text("{}")
    with pytest.raises(
        FileNotFoundError, match=r"covid.*configs/inference.json, configs/metadata.json.*--conf bundles"
    ):
        resolve_models("covid", tmp_path)
    with pytest.raises(FileNotFoundError, match="kvasir"):
        resolve_models("kvasir", tmp_path)


def test_the_served_weights_are_the_bundles_models_model_pt(tmp_path):
    assert served_model(tmp_path / "kvasir") == tmp_path / "kvasir" / "models" / "model.pt"
    # the file the stock BundleInferTask loads, and the one the bundle's training publishes to by default
    parser = read_config(resolve_models("kvasir")["kvasir"], "train.json")
    assert Path(parser.get_parsed_content("ckpt_dir")) / "model.pt" == served_model(resolve_models("kvasir")["kvasir"])


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
def test_bundle_info_of_each_bundle(name, dataset, volume, channels, labels):
    info = info_of(name)
    assert (info.dataset, info.volume, info.in_channels, info.out_channels) == (dataset, volume, channels, 1)
    assert info.labels == labels
    assert info.description and info.path == resolve_models(name)[name]
    assert info.accepts("a/b.nii.gz") is volume and info.accepts("a/b.PNG") is not volume


def test_multiclass_covid_by_conf_option_carries_three_label_names():
    conf = {"models": "covid", "covid.classes": "multiclass", "covid.image_size": "[32, 32]", "kvasir.epochs": "3"}
    overrides = bundle_overrides(conf, "covid")
    assert overrides == {"classes": "multiclass", "image_size": [32, 32]}
    assert bundle_overrides(conf, "kvasir") == {"epochs": 3}
    info = info_of("covid", overrides)
    assert info.out_channels == 3
    assert info.label_names == ("background", "ground-glass", "consolidation")
    assert info.labels == {"ground-glass": 1, "consolidation": 2}
    with pytest.raises(ValueError, match=r"--conf covid\.: name a config id"):
        bundle_overrides({"covid.": "x"}, "covid")


@pytest.mark.parametrize(
    "shape, volume, match",
    [
        ((2, 8, 8, 4), True, "single-channel CT volume, got 2 channels"),
        ((1, 8, 8), True, r"3D CT volume .* 2 spatial dimensions \(8, 8\)"),
        ((3, 8, 8, 4), False, "takes a 2D image, got 3 spatial dimensions"),
        ((5, 8, 8), False, "grey or RGB\\(A\\) images, got 5 channels"),
    ],
)
def test_inputs_that_do_not_fit_are_named_with_their_shape(shape, volume, match):
    name = "covid" if volume else "kvasir"
    info = info_of(name)
    with pytest.raises(ValueError, match=match) as err:
        check_input(torch.zeros(shape), info, "upload.nii.gz")
    assert str(err.value).startswith(f"upload.nii.gz: the {name} model")
    check_input(torch.zeros((1, 8, 8, 4) if volume else (3, 8, 8)), info)  # what fits passes


@pytest.mark.parametrize("name, shape", [("covid", (1, 8, 8, 4)), ("kvasir", (3, 8, 8))])
def test_inputs_holding_nan_or_inf_are_refused(name, shape):
    image = torch.zeros(shape)
    image.view(-1)[3] = float("nan")
    image.view(-1)[5] = float("inf")
    with pytest.raises(ValueError, match=r"^upload: 2 value\(s\) are NaN or infinite"):
        check_input(image, info_of(name), "upload")


@pytest.mark.parametrize("name", ["covid", "kvasir"])
def test_input_check_goes_right_after_channel_first_of_the_bundle_preprocessing(name, studies):
    parser = read_config(resolve_models(name)[name])
    info = bundle_info(name, parser)
    chain = insert_input_check(parser.get_parsed_content("preprocessing").transforms, info)
    loader = LoadImaged if name == "covid" else LoadDecodedd  # 2D files decoded by kind (palette, CMYK, EXIF)
    assert [type(t) for t in chain[:3]] == [loader, EnsureChannelFirstd, CheckInputd]
    image = studies["chest0" if name == "covid" else "polyp0"]
    data = {"image": str(image)}
    for t in chain:  # the bundle's own preprocessing passes the check with the studies of its kind
        data = t(data)
    assert data["image"].shape[0] == info.in_channels
    wrong = studies["polyp0" if name == "covid" else "chest0"]
    data = {"image": str(wrong), "image_path": str(wrong)}
    refusal = f"the {name} model takes" if name == "covid" else "a volume, not a 2D image"  # 2D: refused when read
    with pytest.raises(ValueError, match=rf"^{wrong}: {refusal}"):
        for t in chain[:3]:
            data = t(data)
    with pytest.raises(ValueError, match="no EnsureChannelFirstd"):
        insert_input_check(chain[:1], info)


def test_each_model_trains_on_the_studies_of_its_kind(studies):
    pairs = [{"image": str(p), "label": str(label_of(p))} for p in studies.values()]
    pairs.append({"image": "unlabelled.png", "label": ""})
    kvasir = model_studies(pairs, info_of("kvasir"))
    assert sorted(Path(p["image"]).name for p in kvasir) == ["polyp0.jpg", "polyp1.jpg", "polyp2.jpg"]
    assert all(Path(p["label"]) == label_of(Path(p["image"])) for p in kvasir)  # labels used as they are (0/1)
    covid = model_studies(pairs, info_of("covid"))
    assert covid == [{"image": str(studies["chest0"]), "label": str(label_of(studies["chest0"]))}]


def test_a_model_without_studies_of_its_kind_is_told_what_to_label():
    with pytest.raises(ValueError, match=r"no labelled NIfTI CT volumes .* model covid \(1 labelled studies"):
        model_studies([{"image": "a.png", "label": "a.png"}], info_of("covid"))
    with pytest.raises(ValueError, match=r"no labelled 2D images \(\.png, .*\) .* model busi \(0 labelled"):
        model_studies([], info_of("busi"))


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
    from monailabel.tasks.infer.bundle import BundleInferTask
    from monailabel.tasks.train.bundle import BundleTrainTask

    from monai_medspike.apps.monailabel.app import MedSpikeInferTask, MedSpikeTrainTask

    assert MedSpikeInferTask.__bases__ == (BundleInferTask,) and MedSpikeTrainTask.__bases__ == (BundleTrainTask,)
