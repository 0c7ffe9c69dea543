"""The bundles' configs are generated as data from each bundle's dataset record, the shared configs and the
settings declarations (``python -m monai_medspike.bundle sync``)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

import monai_medspike
import monai_medspike.bundle.sync as sync
from monai_medspike.bundle.__main__ import main
from monai_medspike.settings import SETTINGS, Setting, Whole
from tests.bundles.helpers import BUNDLES, REPO


def test_every_bundle_is_its_generated_configs(capsys):
    assert main(["sync", "--check"]) == 0, capsys.readouterr()
    assert f"{len(BUNDLES)} bundles match" in capsys.readouterr().out
    for name in BUNDLES:
        configs = sync.bundle_configs(REPO / "bundles" / name)
        assert sorted(configs) == sorted(sync.GENERATED)
        for file, content in configs.items():
            assert json.loads((REPO / "bundles" / name / "configs" / file).read_text()) == content, (name, file)


def test_the_shared_configs_are_valid_json_without_placeholders():
    for path in sync.SHARED.glob("*.json"):
        text = path.read_text()
        json.loads(text)
        assert "{bundle" not in text, path


def test_each_declared_setting_is_in_the_configs_that_hold_it_and_in_its_workflow_group():
    for name in BUNDLES:
        configs = sync.bundle_configs(REPO / "bundles" / name)
        train, inference, evaluate = (configs[f"{c}.json"] for c in ("train", "inference", "evaluate"))
        for setting in SETTINGS.values():
            if setting.name == "slices_per_volume" and name != "covid":
                continue
            assert (setting.name in train) == ("train" in setting.configs), (name, setting.name)
            assert (setting.name in inference) == ("inference" in setting.configs), (name, setting.name)
            if "evaluate" in setting.configs:
                assert setting.name in evaluate, (name, setting.name)
            if "train" in setting.configs and setting.group != "network":
                wired = "@train#trainer#max_epochs" if setting.name == "epochs" else f"@{setting.name}"
                assert train["workflow"][setting.group][setting.name] == wired
            if setting.carried and "train" in setting.configs:  # a resumed run's, unless given
                assert train[setting.name].startswith(f"$@resumed.setting('{setting.name}', ")
            if setting.carried and "inference" in setting.configs:  # the evaluated or served model's, unless given
                assert evaluate[setting.name].startswith(f"$@trained_model.setting('{setting.name}', ")
                assert inference[setting.name].startswith(f"$@trained_model.setting('{setting.name}', ")
        assert set(train["workflow"]) - {"_target_"} <= {
            "network_def", "teacher_def", "datalist_file", "train_transforms", "val_transforms", "inferer",
            "postprocessing", "data", "training", "run", "train_data", "val_data", "train_handlers",
        }  # fmt: skip


@pytest.fixture
def copies(tmp_path):
    """The checkout's bundle folders (records, READMEs, configs), copied."""
    for name in BUNDLES:
        shutil.copytree(REPO / "bundles" / name, tmp_path / "bundles" / name, symlinks=True)
    return tmp_path / "bundles"


def test_monai_labels_epochs_id_reaches_the_workflow():
    """MONAI Label's BundleTrainTask sets ``train#trainer#max_epochs``; --epochs sets it too."""
    from monai.bundle import ConfigParser

    for epochs, given in ((3, {"train#trainer#max_epochs": 3}), (4, {"epochs": 4}), (10, {})):
        parser = ConfigParser()
        parser.read_config(str(REPO / "bundles" / "kvasir" / "configs" / "train.json"))
        parser.update(given)
        assert parser.get_parsed_content("workflow#training")["epochs"] == epochs


def test_a_setting_declared_once_reaches_every_bundle_with_sync(copies, capsys, monkeypatch):
    from monai_medspike.settings import complete_group, settings_table

    new = Setting("warmup_epochs", "training", 2, "epochs of learning-rate warm-up", Whole(0), configs=("train",))
    monkeypatch.setitem(SETTINGS, new.name, new)
    assert complete_group("training", {}, config="train")["warmup_epochs"] == 2  # checked and defaulted
    assert "| `warmup_epochs` | training | epochs of learning-rate warm-up (train only) |" in settings_table()
    assert main(["sync", "--check", "--bundles", str(copies)]) == 1
    assert capsys.readouterr().out.count("train.json") == len(BUNDLES)
    assert main(["sync", "--bundles", str(copies)]) == 0
    for name in BUNDLES:
        train = json.loads((copies / name / "configs" / "train.json").read_text())
        assert train["warmup_epochs"] == 2 and train["workflow"]["training"]["warmup_epochs"] == "@warmup_epochs"
        assert "warmup_epochs" not in json.loads((copies / name / "configs" / "inference.json").read_text())
    assert main(["sync", "--check", "--bundles", str(copies)]) == 0


def test_a_hand_edited_config_is_named_and_sync_writes_it_back(copies, capsys):
    train = copies / "kvasir" / "configs" / "train.json"
    train.write_text(train.read_text().replace('"num_workers": 0', '"num_workers": 3'))
    assert main(["sync", "--check", "--bundles", str(copies)]) == 1
    assert str(train) in capsys.readouterr().out
    assert main(["sync", "--bundles", str(copies)]) == 0
    assert json.loads(train.read_text())["num_workers"] == 0


def test_every_bundle_readme_gives_the_export_commands_of_its_bundle_and_sync_keeps_them(copies, capsys):
    for name in BUNDLES:
        text = (REPO / "bundles" / name / sync.README).read_text()
        section = sync.export_section(sync.load_record(REPO / "bundles" / name))
        assert section in text, name
        channels = sync._value("in_channels", sync.load_record(REPO / "bundles" / name))
        assert f'--config_file bundles/{name}/configs/inference.json --input_shape "[1, {channels}, ' in section
        assert "ckpt_export network_def" in section and "--use_trace True" in section
    # a hand-edited command is named by --check and written back by sync; the rest of the README is kept
    readme = copies / "kvasir" / sync.README
    readme.write_text(readme.read_text().replace("--use_trace True", "--use_trace False") + "my own notes\n")
    assert main(["sync", "--check", "--bundles", str(copies)]) == 1
    assert str(readme) in capsys.readouterr().out
    assert main(["sync", "--bundles", str(copies)]) == 0
    assert "--use_trace True" in readme.read_text() and readme.read_text().endswith("my own notes\n")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"settings": {"epochz": 3}}, "settings ['epochz'] are not settings a bundle sets for itself"),
        ({"settings": {"epochs": 3}}, "settings ['epochs'] are not settings a bundle sets for itself"),
        ({"colour": "red"}, "unknown keys ['colour']"),
        ({"metadata": {"name": "x"}}, "metadata lacks"),
    ],
)
def test_a_wrong_dataset_record_is_named_and_nothing_is_written(copies, capsys, change, message):
    record = copies / "monuseg" / "dataset.json"  # the last bundle: the others generate first
    record.write_text(json.dumps({**json.loads(record.read_text()), **change}))
    before = {p: p.read_text() for p in copies.rglob("*.json")}
    assert main(["sync", "--bundles", str(copies)]) == 2
    err = capsys.readouterr().err
    assert str(record) in err and message in err
    assert {p: p.read_text() for p in before} == before


def test_metadata_is_generated_from_the_package_and_the_labels(copies):
    for name in BUNDLES:
        meta = sync.bundle_configs(copies / name)["metadata.json"]
        assert meta["version"] == monai_medspike.__version__ in meta["changelog"]
        assert meta["required_packages_version"]["monai_medspike"] == monai_medspike.__version__
        record = json.loads((copies / name / "dataset.json").read_text())
        assert meta["name"] == record["metadata"]["name"] and meta["eval_metrics"] == {}
    kvasir = sync.bundle_configs(copies / "kvasir")["metadata.json"]
    assert kvasir["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "polyp"}
    assert kvasir["inference_output"] == {
        "file": "<input name>_seg.png", "dtype": "uint8", "values": {"0": "background", "255": "polyp"}
    }  # fmt: skip
    covid = sync.bundle_configs(copies / "covid")["metadata.json"]
    assert covid["network_data_format"]["inputs"]["image"]["num_channels"] == 1
    assert covid["inference_output"]["file"] == "<input name>_seg.nii.gz"
    assert covid["inference_output"]["values"] == {"0": "background", "1": "infection"}
    # a result the record holds goes into eval_metrics
    record = copies / "kvasir" / "dataset.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "eval_metrics": {"mean_dice": 0.8}}))
    assert sync.bundle_configs(copies / "kvasir")["metadata.json"]["eval_metrics"] == {"mean_dice": 0.8}


def test_a_new_version_needs_its_changelog_line(copies, monkeypatch):
    monkeypatch.setattr(monai_medspike, "__version__", "9.9.9")
    with pytest.raises(ValueError, match=r"changelog has no entry for this version \(9.9.9\)"):
        sync.bundle_configs(copies / "kvasir")


def test_the_published_recipe_comes_from_the_declarations_and_the_record():
    for name in BUNDLES:
        recipe = sync.bundle_configs(REPO / "bundles" / name)["recipe_published.json"]
        declared = {s.name: s.published for s in SETTINGS.values() if s.published is not None}
        assert {k: v for k, v in recipe.items() if k in declared and k != "batch_size"} == {
            k: v for k, v in declared.items() if k != "batch_size"
        }
    assert sync.bundle_configs(REPO / "bundles" / "covid")["recipe_published.json"]["batch_size"] == 2
    assert sync.bundle_configs(REPO / "bundles" / "kvasir")["recipe_published.json"]["batch_size"] == 8


def test_dump_keeps_short_values_on_one_line():
    text = sync.dump({"a": [1, 2], "b": {"c": "@d"}, "net": {"_target_": "x", "y": 1}})
    assert '"a": [1, 2]' in text and '"b": {"c": "@d"}' in text and '"_target_": "x",\n' in text


def test_a_setting_of_another_group_is_named():
    with pytest.raises(ValueError, match="no 'epochs' \\(epochs belongs to the training group\\)"):
        from monai_medspike.settings import complete_group

        complete_group("data", {"epochs": 3})
    assert dataclasses.is_dataclass(SETTINGS["epochs"])
