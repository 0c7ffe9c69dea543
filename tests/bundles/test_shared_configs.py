"""The configs the bundles share are written once (monai_medspike/bundle/shared) and kept in the bundles by sync."""

from __future__ import annotations

import json
import shutil

import pytest

import monai_medspike.bundle.sync as sync
from monai_medspike.bundle.__main__ import main
from tests.bundles.helpers import REPO

BUNDLES = ("busi", "covid", "isic2018", "kvasir", "monuseg")


def test_every_bundle_is_the_shared_configs_with_its_dataset_keys(capsys):
    assert main(["sync", "--check"]) == 0, capsys.readouterr()
    assert "5 bundles match" in capsys.readouterr().out
    for config in sync.SHARED_CONFIGS:
        shared = json.loads((sync.SHARED / config).read_text())
        for name in BUNDLES:
            own = json.loads((REPO / "bundles" / name / "configs" / config).read_text())
            assert {k: v for k, v in own.items() if k not in sync.DATASET_KEYS} == {
                k: v for k, v in shared.items() if k not in sync.DATASET_KEYS
            }, (name, config)


@pytest.fixture
def copies(tmp_path, monkeypatch):
    """The five bundles' configs and the shared configs, copied, with sync pointed at the copies."""
    shared = tmp_path / "shared"
    shutil.copytree(sync.SHARED, shared)
    monkeypatch.setattr(sync, "SHARED", shared)
    for name in BUNDLES:
        shutil.copytree(REPO / "bundles" / name / "configs", tmp_path / "bundles" / name / "configs")
    return tmp_path


def test_a_setting_added_once_reaches_every_bundle_and_keeps_their_dataset_keys(copies, capsys):
    train = copies / "shared" / "train.json"
    train.write_text(train.read_text().replace('    "num_heads": 4,\n', '    "num_heads": 4,\n    "new_key": 7,\n'))
    assert main(["sync", "--check", "--bundles", str(copies / "bundles")]) == 1
    assert capsys.readouterr().out.count("differs from the shared config") == 5
    assert main(["sync", "--bundles", str(copies / "bundles")]) == 0
    for name in BUNDLES:
        new = json.loads((copies / "bundles" / name / "configs" / "train.json").read_text())
        old = json.loads((REPO / "bundles" / name / "configs" / "train.json").read_text())
        assert new == {**old, "new_key": 7}
        keys = list(new)
        assert keys.index("new_key") == keys.index("num_heads") + 1
    assert main(["sync", "--check", "--bundles", str(copies / "bundles")]) == 0


def test_a_bundle_without_a_dataset_key_is_named_and_nothing_is_written(copies, capsys):
    train = copies / "shared" / "train.json"
    train.write_text(train.read_text().replace('    "num_heads": 4,\n', '    "num_heads": 4,\n    "new_key": 7,\n'))
    infer = copies / "bundles" / "monuseg" / "configs" / "inference.json"  # the last bundle: the others render first
    infer.write_text("".join(line for line in infer.read_text().splitlines(True) if '"demo_count"' not in line))
    before = {p: p.read_text() for p in (copies / "bundles").rglob("*.json")}
    assert main(["sync", "--bundles", str(copies / "bundles")]) == 2
    err = capsys.readouterr().err
    assert str(infer) in err and "'demo_count'" in err
    # the only optional dataset key: covid's slices_per_volume
    assert "slices_per_volume" not in (copies / "bundles" / "kvasir" / "configs" / "train.json").read_text()
    assert {p: p.read_text() for p in before} == before  # not even the bundles before it were rewritten


def test_a_dataset_key_the_shared_config_has_no_line_for_is_named(copies, capsys):
    train = copies / "shared" / "train.json"
    train.write_text("".join(line for line in train.read_text().splitlines(True) if '"demo_count"' not in line))
    assert main(["sync", "--bundles", str(copies / "bundles")]) == 2
    err = capsys.readouterr().err
    assert "['demo_count']" in err and "has no line for" in err
