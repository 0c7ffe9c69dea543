"""The spike-driven layout as a bundle setting: aligned two-phase training, inference, TorchScript export."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from monai_medspike.checkpoints import CheckpointError, load_weights
from monai_medspike.networks.nets import MedSpikeFormer
from tests.bundles.helpers import REPO, bundle, export, exported_network_output, run_folder

FAST = ["--epochs", "1", "--image_size", "[32, 32]", "--layout", "spike_driven"]


@pytest.mark.slow
def test_spike_driven_bundle_trains_aligned_infers_and_exports(tmp_path):
    configs = REPO / "bundles" / "kvasir" / "configs"
    out = tmp_path / "outputs"
    proc = bundle("run", "training", "--config_file", str(configs / "train.json"), "--output_root", str(out), *FAST)
    log = proc.stdout + proc.stderr
    teacher_pt, student_pt = (run_folder(out, phase) / "model.pt" for phase in ("teacher", "student"))
    # the teacher is the ANN twin of the same layout, and the student was aligned to it
    student = load_weights(MedSpikeFormer(in_channels=3, layout="spike_driven"), str(student_pt))
    load_weights(student.ann_twin(), str(teacher_pt))
    assert f"teacher loaded from {teacher_pt}" in log
    align = [float(v) for v in re.findall(r"train_align_loss: ([0-9.]+)", log)]
    assert align and all(v > 0 for v in align)
    with pytest.raises(CheckpointError, match="trained with layout='spike_driven' but the network has layout="):
        load_weights(MedSpikeFormer(in_channels=3), str(student_pt))

    # standalone inference.json: the layout and the size come from the checkpoint; masks back at the input size
    datalist = json.loads(next((out / "demo_data").glob("*.json")).read_text())
    args = ["--output_root", str(out), "--ckpt_path", str(student_pt), "--infer_name", "pred"]
    bundle("run", "inferring", "--config_file", str(configs / "inference.json"), *args)
    for entry in datalist["test"]:
        source = out / "demo_data" / entry["image"]
        mask = Image.open(out / "pred" / f"{source.stem}_seg.png")
        assert mask.size == Image.open(source).size
        assert set(np.unique(np.asarray(mask)).tolist()) <= {0, 255}
    # a layout that contradicts the checkpoint is refused in one line, before any weight is loaded
    wrong = bundle(
        "run", "inferring", "--config_file", str(configs / "inference.json"), "--output_root", str(out),
        "--ckpt_path", str(student_pt), "--infer_name", "wrong", "--layout", "published", check=False,
    )  # fmt: skip
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert wrong.stderr.strip().splitlines()[-1] == (
        f"error: --layout 'published' contradicts the checkpoint {student_pt}, which was trained with layout "
        "'spike_driven'; leave --layout out to use the checkpoint's."
    )
    assert not (out / "wrong").exists()

    # TorchScript export of the spike-driven network (built from the checkpoint) gives the eager outputs
    scripted = torch.jit.load(str(export(configs, student_pt, tmp_path / "model.ts")))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), exported_network_output(student_pt, x))


def test_a_bad_layout_is_refused_before_any_work(tmp_path):
    out = tmp_path / "outputs"
    proc = bundle(
        "run", "training", "--config_file", str(REPO / "bundles/kvasir/configs/train.json"), "--output_root",
        str(out), "--layout", "spikedriven", check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--layout 'spikedriven': must be one of published, spike_driven" in proc.stderr + proc.stdout
    assert not out.exists()
