from __future__ import annotations

import json

import pytest

from monai_medspike.data.__main__ import main
from tests.data import writers


def test_prepare_command_writes_and_prints_summary(tmp_path, capsys):
    root = writers.write_busi(tmp_path / "busi")
    out = tmp_path / "busi.json"
    argv = ["prepare", "busi", "--root", str(root), "--out", str(out), "--seed", "4", "--val_fraction", "0.15"]
    assert main([*argv, "--test-fraction", "0.3"]) == 0  # the older spelling is kept as an alias
    printed = capsys.readouterr().out
    assert f"wrote {out}: 7 busi samples" in printed
    assert "training" in printed and "validation" in printed and "test" in printed and "'benign'" in printed
    assert json.loads(out.read_text())["seed"] == 4
    # running again without --overwrite is refused and the file is kept
    assert main([*argv, "--seed", "5"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert json.loads(out.read_text())["seed"] == 4


def test_prepare_command_reports_bad_input_and_skip_bad(tmp_path, capsys):
    root = writers.write_kvasir(tmp_path / "k", n=5)
    (root / "Kvasir-SEG" / "masks" / "case3.jpg").unlink()
    out = tmp_path / "k.json"
    assert main(["prepare", "kvasir", "--root", str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "case3.jpg: image without mask" in err and not out.exists()
    assert main(["prepare", "kvasir", "--root", str(root), "--out", str(out), "--skip_bad"]) == 0
    assert "skipped 1:" in capsys.readouterr().out


def test_options_of_another_dataset_are_refused(tmp_path, capsys):
    root = writers.write_kvasir(tmp_path / "k")
    try:
        main(["prepare", "kvasir", "--root", str(root), "--out", str(tmp_path / "k.json"), "--exclude_normal"])
    except SystemExit as e:
        assert e.code == 2
    assert "--exclude_normal applies to busi only" in capsys.readouterr().err


def test_reader_options_reach_the_reader(tmp_path, capsys):
    root = writers.write_busi(tmp_path / "busi")
    out = tmp_path / "b.json"
    argv = ["prepare", "busi", "--root", str(root), "--out", str(out), "--exclude_normal", "--val_fraction", "0.2"]
    assert main(argv) == 0
    assert "5 busi samples" in capsys.readouterr().out


def test_your_own_image_folder_is_prepared_with_its_channels(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from monai_medspike.data import get_transforms

    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(5):
        mask = writers.disk(40, 48, 20, 24, 5 + i)
        Image.fromarray((mask * 100 + 50).astype(np.uint8), "L").save(root / "images" / f"s{i}.png")
        Image.fromarray(mask * 255, "L").save(root / "masks" / f"s{i}.png")
    out = tmp_path / "mine.json"
    assert main(["prepare", "folder", "--root", str(root), "--out", str(out), "--channels", "1"]) == 0
    datalist = json.loads(out.read_text())
    assert datalist["reader"]["channels"] == 1 and len(datalist["training"]) == 3
    entry = datalist["training"][0]
    item = get_transforms("folder", "eval", spatial_size=(32, 32), reader_options={"channels": 1})(
        {"image": str(tmp_path / entry["image"]), "label": str(tmp_path / entry["label"])}
    )
    assert item["image"].shape == (1, 32, 32) and set(item["label"].unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(SystemExit):
        main(["prepare", "kvasir", "--root", str(root), "--out", str(tmp_path / "k.json"), "--channels", "1"])
    assert "--channels applies to folder only" in capsys.readouterr().err
