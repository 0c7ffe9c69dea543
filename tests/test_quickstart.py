from __future__ import annotations

import math

import pytest
import torch

from monai_medspike.networks.nets import MedSpikeFormer
from monai_medspike.quickstart import main, make_blobs


def test_blobs_are_deterministic_and_masks_match_bright_regions():
    images, masks = make_blobs(4, 32, seed=3)
    again, _ = make_blobs(4, 32, seed=3)
    assert torch.equal(images, again)
    assert images.shape == masks.shape == (4, 1, 32, 32)
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    assert images[masks == 1].mean() > images[masks == 0].mean() + 0.3


@pytest.mark.slow
def test_quickstart_trains_both_phases_and_saves_a_loadable_student(tmp_path):
    out = tmp_path / "student.pt"
    results = main(["--steps", "2", "--size", "32", "--batch_size", "2", "--time_steps", "2", "--save", str(out)])
    assert all(math.isfinite(v) for v in results.values())
    assert 0.0 <= results["student_val_dice"] <= 1.0
    net = MedSpikeFormer(in_channels=1, out_channels=1, time_steps=2)
    net.load_state_dict(torch.load(out))


@pytest.mark.parametrize("argv", [["--size", "40"], ["--steps", "0"], ["--save", "/nonexistent-dir/x.pt"]])
def test_quickstart_rejects_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert "error" in capsys.readouterr().err
