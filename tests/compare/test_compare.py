"""The comparison command: its statistics, its jobs, its scoring at the original size, and a tiny run end to end."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from monai_medspike.compare import MODELS, jobs_for, mean_std, paired_comparison, wilcoxon
from monai_medspike.compare.stats import bootstrap_interval
from tests.bundles.helpers import REPO


def test_statistics_against_hand_computed_examples():
    # all five differences positive: W- = 0; exact two-sided p = 2 * (1 / 2**5) = 0.0625
    assert wilcoxon([1.1, 1.2, 1.3, 1.4, 1.5], [1.0] * 5) == {"n": 5, "statistic": 0.0, "p_value": 0.0625}
    # differences 1, 2, 3, 4, -5: W- = 5; subsets of {1..5} with rank sum <= 5: {}, 1, 2, 3, 4, 5, 12, 13, 14, 23 = 10
    # of 32, so p = 2 * 10 / 32 = 0.625
    result = wilcoxon([1, 2, 3, 4, -5], [0, 0, 0, 0, 0])
    assert result["statistic"] == 5.0 and result["p_value"] == pytest.approx(0.625)
    # zero differences are dropped; none left: p = 1; a NaN pair is dropped
    assert wilcoxon([1.0, 2.0], [1.0, 2.0])["p_value"] == 1.0
    assert wilcoxon([1.0, math.nan, 3.0], [0.0, 0.0, 0.0])["n"] == 2
    with pytest.raises(ValueError, match="one length"):
        wilcoxon([1.0], [1.0, 2.0])
    assert mean_std([0.5, 0.7, 0.9]) == pytest.approx((0.7, 0.2))
    assert mean_std([0.4]) == (0.4, 0.0) and all(math.isnan(v) for v in mean_std([]))
    assert bootstrap_interval([0.25] * 10) == (0.25, 0.25)
    low, high = bootstrap_interval(list(np.linspace(-1, 1, 41)))
    assert -0.5 < low < 0.0 < high < 0.5
    # two seeds, three images: per-image means over seeds differ by +0.1, +0.2, +0.3 from the reference
    model = {0: [0.6, 0.7, 0.8], 1: [0.6, 0.7, 0.8]}
    reference = {0: [0.5, 0.5, 0.5], 1: [0.5, 0.5, 0.5]}
    paired = paired_comparison(model, reference)
    assert paired["mean_difference"] == pytest.approx(0.2) and paired["images_n"] == 3
    assert paired["images_p"] == pytest.approx(0.25)  # 3 positive differences: 2 / 2**3
    assert paired["seeds_n"] == 2 and paired["seeds_p"] == pytest.approx(0.5)
    assert 0.1 - 1e-9 <= paired["interval_low"] <= paired["interval_high"] <= 0.3 + 1e-9


def test_jobs_are_one_per_model_and_the_student_trains_its_teacher_once():
    jobs = jobs_for(["student", "teacher", "basicunet"])
    assert [(j.name, j.phase, j.rows) for j in jobs] == [
        ("student", "both", {"student": "student", "teacher": "teacher"}),
        ("basicunet", "teacher", {"teacher": "basicunet"}),
    ]
    assert [j.phase for j in jobs_for(["student_no_align", "teacher"])] == ["student", "teacher"]
    with pytest.raises(ValueError, match="unknown model 'vnet'.*basicunet"):
        jobs_for(["vnet"])
    with pytest.raises(ValueError, match="more than once"):
        jobs_for(["unet", "unet"])


def test_a_test_only_datalist_for_an_external_test_set():
    from monai_medspike.data.splits import split_groups

    assert set(split_groups(["a", "b", "b"], 0.0, 1.0, seed=0).values()) == {"test"}
    with pytest.raises(ValueError, match="val_fraction to 0"):
        split_groups(["a", "b"], 0.2, 1.0, seed=0)


class _AllForeground(torch.nn.Module):
    """Predicts foreground everywhere (logit +10), whatever the image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 1, *x.shape[2:]), 10.0) + 0 * x[:, :1]


def test_original_size_scores_use_the_stored_mask(tmp_path):
    """Kvasir-like images of odd sizes: at the original size, an all-foreground prediction scores against the mask
    as stored (sensitivity 1, Dice 2|G| / (|G| + H W)), not against the resized one."""
    from monai_medspike.compare.jobs import bundle_parser, score_images

    root = tmp_path / "Kvasir-SEG"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    entries = []
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(50, 70), (61, 45)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"p{i}.jpg")
        mask = np.zeros((h, w), np.uint8)
        mask[5 : 5 + 10 * (i + 1), 3:30] = 255
        Image.fromarray(mask).save(root / "masks" / f"p{i}.png")
        entries.append({"image": str(root / "images" / f"p{i}.jpg"), "label": str(root / "masks" / f"p{i}.png"),
                        "foreground": int((mask > 127).sum()), "pixels": h * w})  # fmt: skip
    parser = bundle_parser(REPO / "bundles" / "kvasir", {"image_size": [32, 32]})
    rows, seconds = score_images(_AllForeground(), parser, entries, torch.device("cpu"))
    assert seconds >= 0 and [r["image"] for r in rows] == ["p0.jpg", "p1.jpg"]
    for row, entry in zip(rows, entries, strict=True):
        expected = 2 * entry["foreground"] / (entry["foreground"] + entry["pixels"])
        assert row["dice_original"] == pytest.approx(expected, rel=1e-5)
        assert row["sensitivity_original"] == 1.0 and row["specificity_original"] == 0.0
        assert row["sensitivity_train"] == 1.0 and 0.0 < row["dice_train"] < 1.0


def _mtimes(out: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*/result.json")}


@pytest.mark.slow
def test_a_tiny_comparison_writes_every_output_and_resumes(tmp_path, caplog):
    import logging

    from monai_medspike.compare.__main__ import main

    caplog.set_level(logging.INFO, logger="monai_medspike.compare")
    out = tmp_path / "cmp"
    args = [
        "--bundle", str(REPO / "bundles" / "kvasir"), "--models", "student,basicunet", "--seeds", "0", "1",
        "--epochs", "1", "--image_size", "32", "32", "--set", "demo_count=10", "--out", str(out),
    ]  # fmt: skip
    assert main(args) == 0
    assert "finished 1 / 4 jobs (25%)" in caplog.text and "finished 4 / 4 jobs (100%)" in caplog.text  # progress
    split = json.loads((out / "datalist.json").read_text())
    tests = len(split["test"])
    assert sorted(_mtimes(out)) == ["basicunet-seed0", "basicunet-seed1", "student-seed0", "student-seed1"]
    for folder in (out / "runs").iterdir():
        model = folder.name.split("-seed")[0]
        with (folder / f"{model}.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == tests and {r["image"] for r in rows} == {Path(e["image"]).name for e in split["test"]}
        for row in rows:
            for size in ("train", "original"):
                assert 0.0 <= float(row[f"dice_{size}"]) <= 1.0 and 0.0 <= float(row[f"iou_{size}"]) <= 1.0
        (result,) = json.loads((folder / "result.json").read_text())["rows"]
        assert result["model"] == model and result["epochs"] == 1 and result["parameters"] > 0
        assert result["energy_mj"] > 0 and result["seconds_per_epoch"] > 0 and result["inference_seconds_per_image"] > 0
        if model == "student":  # the spiking student aligned to a teacher trained in the same job
            assert (folder / "teacher-run" / "model.pt").is_file() and result["sops_g"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["models"]) == ["student", "basicunet"]
    assert summary["info"]["command"] == "python -m monai_medspike.compare " + " ".join(args)  # rerunnable as written
    student, unet = summary["models"]["student"], summary["models"]["basicunet"]
    assert student["seeds"] == [0, 1] and 0.0 <= student["dice_train"]["mean"] <= 1.0
    assert student["dice_train"]["std"] >= 0.0 and "vs_student_dice_train" not in student
    paired = unet["vs_student_dice_train"]
    assert paired["images_n"] <= tests and paired["seeds_n"] <= 2
    assert paired["interval_low"] <= paired["mean_difference"] <= paired["interval_high"]
    report = (out / "results.md").read_text()
    assert "| student |" in report and "| basicunet |" in report and "p (images)" in report
    for plot in ("dice_boxplot.png", "dice_vs_energy.png"):
        assert Image.open(out / plot).size[0] > 100
    # the report again from the finished jobs alone: nothing of the command is typed again
    (out / "results.md").unlink()
    assert main(["--out", str(out), "--report_only"]) == 0
    assert (out / "results.md").read_text() == report
    assert list(json.loads((out / "summary.json").read_text())["models"]) == ["student", "basicunet"]

    # a rerun trains nothing; a removed result is trained again, alone, here in two processes
    before = _mtimes(out)
    caplog.clear()
    assert main(args) == 0
    assert _mtimes(out) == before and "4 finished, 0 to run" in caplog.text
    (out / "runs" / "basicunet-seed1" / "result.json").unlink()
    assert main([*args, "--jobs", "2"]) == 0
    after = _mtimes(out)
    assert after["basicunet-seed1"] != before["basicunet-seed1"]
    assert {k: v for k, v in after.items() if k != "basicunet-seed1"} == {
        k: v for k, v in before.items() if k != "basicunet-seed1"
    }


def test_bad_arguments_stop_before_any_work(tmp_path, capsys):
    from monai_medspike.compare.__main__ import main

    bundle = str(REPO / "bundles" / "kvasir")
    assert main(["--bundle", bundle, "--models", "student,vnet", "--out", str(tmp_path / "a")]) == 2
    assert "unknown model 'vnet'" in capsys.readouterr().err
    assert main(["--bundle", str(tmp_path), "--out", str(tmp_path / "b")]) == 2
    assert "no configs/train.json" in capsys.readouterr().err
    assert main(["--bundle", bundle, "--set", "epochs", "--out", str(tmp_path / "c")]) == 2
    assert "ID=VALUE" in capsys.readouterr().err
    assert main(["--bundle", bundle, "--set", "lambda_sid=0", "--epochs", "0", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "--lambda_sid: unknown setting" in err and "Did you mean --lambda_side" in err and "--epochs 0" in err
    assert not any((tmp_path / x).exists() for x in "acd")


BUNDLE_NETWORK = ("student", "student_no_align", "student_from_teacher")  # the bundle's own network, unchanged


@pytest.mark.parametrize("name", [n for n in MODELS if n not in BUNDLE_NETWORK])
def test_every_model_is_built_from_the_bundle_and_maps_an_image_to_its_mask(name):
    """What a job trains: the network of the model's phase, built by the bundle config with the model's overrides."""
    from monai_medspike.compare.jobs import bundle_parser

    spec = MODELS[name]
    parser = bundle_parser(REPO / "bundles" / "kvasir", {"image_size": [64, 64], **spec.overrides})
    networks = {}
    for phase in spec.rows:
        network = parser.get_parsed_content("network_def" if phase == "student" else "teacher_def").eval()
        with torch.no_grad():
            out = network(torch.rand(1, 3, 64, 64))
        assert tuple(torch.as_tensor(out).shape) == (1, 1, 64, 64)
        networks[phase] = network
    network = networks.get("student", network)
    if name == "student_spike_driven":
        assert spec.phase == "both" and network.spiking and network.layout == "spike_driven"
        assert not networks["teacher"].spiking and networks["teacher"].layout == "spike_driven"
    if name == "student_ssa":
        assert network.spiking and network._arguments["attention"] == "ssa"
    if name == "student_aa":
        assert network.spiking and list(network._arguments["interactions"]) == ["aa"]


def test_the_student_from_its_teacher_is_the_bundles_student_with_init_from_teacher():
    from monai_medspike.compare.jobs import bundle_parser

    spec = MODELS["student_from_teacher"]
    assert spec.phase == "both" and spec.rows == {"student": "student_from_teacher"}
    parser = bundle_parser(REPO / "bundles" / "kvasir", spec.overrides)
    assert parser["init_from_teacher"] is True
    assert parser["workflow"]["training"]["init_from_teacher"] == "@init_from_teacher"
    assert parser["workflow"]["_target_"] == "monai_medspike.workflows.TwoPhaseTraining"
    assert bundle_parser(REPO / "bundles" / "kvasir").get_parsed_content("init_from_teacher") is False


@pytest.mark.parametrize("page, count", [("results.md", 4), ("energy.md", 2)])
def test_every_comparison_command_in_the_docs_is_valid(page, count):
    """The commands docs/results.md and docs/energy.md give run as written: known options, models and settings."""
    import shlex

    from monai.bundle import ConfigParser

    from monai_medspike.compare.__main__ import DEFAULT_MODELS, _overrides, _parser

    text = (REPO / "docs" / page).read_text()
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", text, flags=re.S)).replace("\\\n", " ")
    blocks = re.sub(r"<[^>]+>", "PLACEHOLDER", blocks)  # <Kvasir-SEG release>
    commands = [line.split()[3:] for line in blocks.splitlines() if line.startswith("python -m monai_medspike.compare")]
    assert len(commands) >= count
    for argv in commands:
        args = _parser().parse_args(shlex.split(" ".join(argv)))
        jobs_for((args.models or DEFAULT_MODELS).split(","))
        config = ConfigParser.load_config_file(str(Path(REPO, args.bundle, "configs", "train.json")))
        for key in _overrides(args):
            assert key.split("#")[0] in config, f"--set {key}: {args.bundle} has no such setting"


def test_an_external_test_set_that_overlaps_the_training_split_is_refused(tmp_path):
    from monai_medspike.compare.jobs import prepare_split
    from monai_medspike.data import DataError

    pairs = []
    for i in range(4):
        Image.fromarray(np.full((32, 32, 3), 30 * i, np.uint8)).save(tmp_path / f"i{i}.jpg")
        mask = np.zeros((32, 32), np.uint8)
        mask[8:16, 8:16] = 255
        Image.fromarray(mask).save(tmp_path / f"m{i}.png")
        pairs.append({"image": f"i{i}.jpg", "label": f"m{i}.png"})
    datalist = tmp_path / "split.json"
    datalist.write_text(json.dumps({"training": pairs[:2], "validation": pairs[2:3], "test": pairs[3:]}))
    external = tmp_path / "external.json"
    external.write_text(json.dumps({"test": pairs[:1]}))  # an image the models train on
    with pytest.raises(DataError, match=r"--test_datalist .*external\.json: 1 test image\(s\) are in the training"):
        prepare_split(
            tmp_path / "out", REPO / "bundles" / "kvasir", datalist=str(datalist), test_datalist=str(external)
        )
    assert not (tmp_path / "out" / "datalist.json").exists()
