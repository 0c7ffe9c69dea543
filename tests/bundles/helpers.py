"""Helpers of the bundle tests: the repository, running ``python -m monai.bundle``, run folders, export."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: the checkout's bundles, discovered (each folder with a dataset record)
BUNDLES = tuple(p.parent.name for p in sorted(REPO.glob("bundles/*/dataset.json")))


def isolated(args: Sequence[str]) -> list[str]:
    """``args`` with ``--ckpt_dir <output_root>/models`` added when they move ``--output_root`` but not the
    published model: a test's training then publishes into its temporary folder, not into the checkout's bundle."""
    args = list(args)
    if "--output_root" in args and "--ckpt_dir" not in args:
        args += ["--ckpt_dir", str(Path(args[args.index("--output_root") + 1]) / "models")]
    return args


def bundle(*args: str, cwd: Path = REPO, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    command = [sys.executable, "-m", "monai.bundle", *(isolated(args) if args[:1] == ("run",) else args)]
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"monai.bundle {args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def readme_commands(name: str, ckpt: Path, out: Path) -> dict[str, list[str]]:
    """The export commands of bundle ``name``'s README (``{"ckpt_export": argv, "onnx_export": argv}``), as a user
    copies them, with ``<model.pt>`` replaced by ``ckpt`` and the output files put into ``out``."""
    from monai_medspike.bundle.sync import EXPORT_BEGIN, EXPORT_END, README

    text = (REPO / "bundles" / name / README).read_text()
    section = text[text.index(EXPORT_BEGIN) : text.index(EXPORT_END)]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    commands = {}
    for line in block.splitlines():
        argv = shlex.split(line)
        assert argv[:3] == ["python", "-m", "monai.bundle"], line
        argv = [str(ckpt) if a == "<model.pt>" else str(out / a) if a.startswith("model.") else a for a in argv]
        commands[argv[3]] = [sys.executable, *argv[1:]]
    return commands


def export(configs: Path, ckpt: Path, ts_file: Path) -> Path:
    """The TorchScript export of ``ckpt`` by the command of the bundle's README (MONAI's ``ckpt_export``, traced;
    the network built from the record of the ``--ckpt_file``); returns the file, ``ts_file``."""
    bundle(*readme_commands(configs.parent.name, ckpt, ts_file.parent)["ckpt_export"][3:])
    written = ts_file.parent / "model.ts"
    if written != ts_file:
        written.replace(ts_file)
    return ts_file


def run_folder(root: Path, phase: str) -> Path:
    runs = sorted(root.glob(f"{phase}-*"))
    assert len(runs) == 1, runs
    return runs[0]


def exported_network_output(ckpt: Path, x):
    """What the bundle's export of ``ckpt`` must compute for ``x``: the checkpoint's network as the export builds it
    on a CPU (channels-last: ``auto``), through the plain torch ops a graph capture runs. The network's fused kernels
    agree with those ops up to float rounding (tests/networks), but a trained spiking network can turn that rounding
    into a spike that fires in one and not the other, so the exported file is compared with its own path."""
    from unittest import mock

    import torch

    from monai_medspike.checkpoints import load_model

    net = load_model(ckpt, channels_last=True)
    with mock.patch("torch.compiler.is_compiling", lambda: True), torch.no_grad():
        return net(x)
