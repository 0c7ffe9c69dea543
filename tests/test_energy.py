"""python -m monai_medspike.energy on a bundle: per-layer table, comparison with the ANN twin and MONAI U-Nets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monai_medspike.energy.__main__ import main

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "name, layout", [("isic2018", "published"), ("covid", "published"), ("kvasir", "spike_driven")]
)
def test_energy_report_of_a_bundle(name, layout, tmp_path, capsys):
    out = tmp_path / "energy.json"
    md = tmp_path / "energy.md"
    args = ["--bundle", str(REPO / "bundles" / name), "--output_root", str(tmp_path / "outputs"), "--images", "2"]
    if layout != "published":
        args += ["--layout", layout]
    size = [32, 48] if name == "kvasir" else [32, 32]  # height, width, as every command takes it
    assert main([*args, "--image_size", *map(str, size), "--json", str(out), "--markdown", str(md)]) == 0
    text = capsys.readouterr().out
    assert "untrained" in text and "MONAI BasicUNet" in text and "total" in text
    report = json.loads(out.read_text())
    assert report["images"] == 2 and report["image_size"] == size
    rows = {row["network"]: row for row in report["comparison"]}
    spiking = f"MedSpikeFormer {layout} (spiking, T=4)"
    assert report["layout"] == layout and rows[spiking]["energy_ratio"] == 1.0
    for other in (f"MedSpikeFormer {layout} ANN twin (T=1)", "MONAI BasicUNet", "MONAI UNet", "MONAI SegResNet"):
        assert rows[other]["sops"] == 0 and rows[other]["macs"] > 0  # MACs only
        expected = rows[other]["energy_mj"] / rows[spiking]["energy_mj"]
        assert rows[other]["energy_ratio"] == pytest.approx(expected)
    layers = report["reports"][spiking]["layers"]
    assert {layer["input"] for layer in layers} == {"spikes", "real"}
    energy = sum(layer["energy"] for layer in layers)
    assert energy * 1e3 == pytest.approx(rows[spiking]["energy_mj"])
    # what a hardware user checks per layer: input firing rate, input elements, fan-out, SOPs
    for layer in layers:
        assert {"firing_rate", "inputs", "fan_out", "macs", "sops"} <= set(layer)
        if layer["input"] == "spikes":
            assert layer["sops"] == pytest.approx(layer["firing_rate"] * layer["inputs"] * layer["fan_out"])
    assert report["neuron_updates"] == report["reports"][spiking]["neuron_updates"] > 0
    real = [layer["name"] for layer in layers if layer["input"] == "real" and layer["kind"] != "matmul"]
    if layout == "spike_driven":
        assert real == ["stages.0.embed.module.0"]  # only the encoding multiplies
    else:
        assert len(real) > 10
    assert all(len(rates) == 4 for rates in report["firing_rates"].values())  # T = 4 per neuron layer
    assert "| MONAI UNet |" in md.read_text()


def test_a_folder_that_is_not_a_bundle_is_named(tmp_path, capsys):
    assert main(["--bundle", str(tmp_path)]) == 2
    assert f"--bundle {tmp_path}: no configs/train.json" in capsys.readouterr().err


def test_energy_counts_the_checkpoints_network_at_its_training_size(tmp_path, capsys):
    """A trained student carries its layout and size: energy counts that network on images of that size, and a
    ``--layout`` that contradicts it is refused in one line."""
    from monai.bundle import ConfigParser

    from tests.helpers import write_model

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "kvasir" / "configs" / "train.json"))
    parser.update({"image_size": [32, 32], "layout": "spike_driven", "embed_dims": [8, 8, 16, 16],
                   "output_root": str(tmp_path / "outputs")})  # fmt: skip
    model = write_model(tmp_path / "outputs" / "student-1" / "model.pt", parser)
    out = tmp_path / "energy.json"
    args = ["--bundle", str(REPO / "bundles" / "kvasir"), "--output_root", str(tmp_path / "outputs"), "--images", "1"]
    assert main([*args, "--checkpoint", str(model), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["checkpoint"] == str(model) and report["layout"] == "spike_driven"
    assert report["image_size"] == [32, 32]
    capsys.readouterr()
    assert main([*args, "--checkpoint", str(model), "--layout", "published"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: --layout 'published' contradicts the checkpoint {model}, which was trained with layout "
        "'spike_driven'; leave --layout out to use the checkpoint's."
    )
