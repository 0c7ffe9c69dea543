"""MONAI Label's stock ``BundleInferTask`` and ``BundleTrainTask`` on exported bundle folders, as they are.

No subclass and no constructor argument: what a MONAI Label user gets by pointing the stock bundle tasks at one of
these bundles. Runs in the MONAI Label environment (``constraints/make_monailabel_env.sh``); skipped elsewhere.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from monai_medspike.bundle import export_bundle
from tests.apps.studies import AFFINE, Studies, make_studies, needs_2d_label, read_config, segment, write_weights

pytest.importorskip("monailabel", reason="monailabel is installed only in the MONAI Label environment")
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask

pytestmark = pytest.mark.slow

TRAIN_REQUEST = {"model": "kvasir", "max_epochs": 1, "val_split": 0.5, "multi_gpu": False, "device": "cpu"}


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> dict[str, Path]:
    return make_studies(tmp_path_factory.mktemp("stock_studies"), polyps=4)


@pytest.fixture(scope="module")
def trained_kvasir(tmp_path_factory, studies) -> Path:
    """A kvasir bundle trained once through the stock ``BundleTrainTask`` on four labelled polyp images."""
    bundle = export_bundle("kvasir", tmp_path_factory.mktemp("stock_train") / "kvasir")
    task = BundleTrainTask(str(bundle), {})
    assert task.is_valid()
    polyps = [p for name, p in studies.items() if name.startswith("polyp")]
    assert task(dict(TRAIN_REQUEST), Studies(polyps)) == {}
    return bundle


def test_stock_train_task_publishes_the_student_as_models_model_pt(trained_kvasir):
    model = trained_kvasir / "models" / "model.pt"
    assert model.is_file()
    runs = sorted(p.name.split("-")[0] for p in (trained_kvasir / "outputs").iterdir() if p.is_dir())
    assert runs == ["student", "teacher"]  # one run of each phase, into the bundle's outputs/; no demo data made
    student = next((trained_kvasir / "outputs").glob("student-*/model.pt"))
    published, best = torch.load(model, weights_only=True), torch.load(student, weights_only=True)
    assert published["record"] == best["record"] and published["record"]["bundle"] == "kvasir"
    published, best = published["model"], best["model"]
    assert published.keys() == best.keys() and all(torch.equal(published[k], best[k]) for k in best)
    network = read_config(trained_kvasir).get_parsed_content("network_def")
    network.load_state_dict(published)  # strict: the weights fit the inference config's network


def test_stock_train_task_options_and_overridden_ids_exist_in_the_bundle(trained_kvasir):
    task = BundleTrainTask(str(trained_kvasir), {})
    assert task.config()["model_filename"] == ["model.pt"]
    parser = read_config(trained_kvasir, "train.json")
    for key in ("train#trainer#max_epochs", "train#dataset#data", "validate#dataset#data", "train#handlers"):
        assert parser.get(key, "missing") != "missing", key
    assert parser["run"] == "%training" and parser.get("network") == "@network_def"


@needs_2d_label
def test_stock_infer_task_segments_an_image_with_the_trained_weights(trained_kvasir, studies):
    task = BundleInferTask(str(trained_kvasir), {})
    assert task.is_valid()
    assert task.labels == {"polyp": 1} and task.dimension == 2
    image = studies["polyp0"]
    file, result = task({"image": str(image), "device": "cpu", "result_extension": ".png"})
    assert result["label_names"] == {"polyp": 1}
    mask = Image.open(file)
    assert mask.format == "PNG" and mask.size == Image.open(image).size
    values = np.asarray(mask)
    assert set(np.unique(values)) <= {0, 1}
    expected = np.asarray(segment(trained_kvasir, image)).reshape(Image.open(image).size)  # (width, height)
    np.testing.assert_array_equal(values, expected.T)


@needs_2d_label
def test_stock_infer_task_reloads_models_model_pt_when_it_changes(tmp_path, studies):
    bundle = export_bundle("kvasir", tmp_path / "kvasir")
    task = BundleInferTask(str(bundle), {})
    assert not task.is_valid()  # no models/model.pt yet: MONAI Label leaves the bundle out

    model = write_weights(bundle, logit=-20.0)
    task = BundleInferTask(str(bundle), {})
    request = {"image": str(studies["polyp1"]), "device": "cpu", "result_extension": ".png"}
    first = np.asarray(Image.open(task(dict(request))[0]))
    assert first.size and not first.any()  # every logit -20: background everywhere
    write_weights(bundle, logit=20.0)
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a newer file, whatever the clock's grain
    second = np.asarray(Image.open(task(dict(request))[0]))
    assert second.shape == first.shape and second.all()  # the new file was loaded by the same task


def test_stock_infer_task_returns_a_ct_label_volume_with_the_input_geometry(tmp_path, studies):
    bundle = export_bundle("covid", tmp_path / "covid")
    write_weights(bundle, logit=20.0)  # foreground everywhere: every voxel of the input must come back
    task = BundleInferTask(str(bundle), {})
    assert task.is_valid() and task.labels == {"infection": 1}
    file, _ = task({"image": str(studies["chest0"]), "device": "cpu"})
    assert file.endswith(".nii.gz")
    label, source = nib.load(file), nib.load(studies["chest0"])
    assert label.shape == source.shape
    np.testing.assert_allclose(label.affine, AFFINE, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(label.dataobj), 1)


def test_stock_infer_task_lists_the_bundle_version_and_description(tmp_path):
    bundle = export_bundle("covid", tmp_path / "covid")
    write_weights(bundle)
    info = BundleInferTask(str(bundle), {}).info()
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert info["version"] == metadata["version"] and info["description"] == metadata["description"]
