"""A bundle's model exported by the commands of its README, as MONAI users run them: ONNX (MONAI's ``onnx_export``,
torch's default exporter) gives the torch network's logits in ONNX Runtime, TorchScript (``ckpt_export``, traced)
too, for both layouts; MONAI's default scripted export is refused in one line naming the traced one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from monai_medspike.checkpoints import load_model
from tests.bundles.helpers import REPO, bundle, readme_commands
from tests.helpers import SMALL, write_model

onnxruntime = pytest.importorskip("onnxruntime")  # the test extra installs it (pip install -e ".[test]")


def _model(tmp_path, layout: str):
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "kvasir" / "configs" / "train.json"))
    parser.update({**{k: list(v) if isinstance(v, tuple) else v for k, v in SMALL.items()}, "layout": layout})
    parser["output_root"] = str(tmp_path / "outputs")
    ckpt = write_model(tmp_path / "run" / "model.pt", parser)
    return ckpt, parser.get_parsed_content("image_size")


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["published", "spike_driven"])
def test_the_readme_onnx_command_gives_the_torch_networks_logits_in_onnx_runtime(tmp_path, layout):
    ckpt, (height, width) = _model(tmp_path, layout)
    command = readme_commands("kvasir", ckpt, tmp_path)["onnx_export"][3:]
    assert command[-2:] == ["--input_shape", f"[1, 3, {height}, {width}]"]
    if layout == "published":  # the shortest command, as the issue gives it: the shape from inference.json
        command = command[:-2]
        assert command == ["onnx_export", "network_def", "--filepath", str(tmp_path / "model.onnx"), "--ckpt_file",
                           str(ckpt), "--config_file", "bundles/kvasir/configs/inference.json"]  # fmt: skip
    bundle(*command)
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    net = load_model(ckpt)
    torch.manual_seed(0)
    for _ in range(3):
        x = torch.rand(1, 3, height, width)
        (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        with torch.no_grad():
            want = net(x).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        sure = np.abs(want) > 1e-3  # the masks agree wherever the logit is not at the threshold
        assert ((got > 0) == (want > 0))[sure].all() and sure.mean() > 0.99


@pytest.mark.slow
def test_the_readme_torchscript_command_runs_at_any_size_and_the_scripted_export_is_refused(tmp_path):
    ckpt, _ = _model(tmp_path, "spike_driven")
    commands = readme_commands("kvasir", ckpt, tmp_path)
    bundle(*commands["ckpt_export"][3:])
    traced, net = torch.jit.load(str(tmp_path / "model.ts")), load_model(ckpt)
    x = torch.rand(2, 3, 48, 80)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), net(x), rtol=1e-4, atol=1e-5)
    # MONAI's default ckpt_export scripts the network: one line naming the traced export, exit 2, no file
    scripted = [a for a in commands["ckpt_export"][3:] if a not in ("--use_trace", "True")]
    scripted[scripted.index("--filepath") + 1] = str(tmp_path / "scripted.ts")
    proc = bundle(*scripted, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "MedSpikeFormer cannot be scripted" in proc.stderr and "--use_trace True" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "scripted.ts").exists()
