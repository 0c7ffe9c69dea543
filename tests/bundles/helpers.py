"""Helpers of the bundle tests: the repository, running ``python -m monai.bundle``, run folders, export."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def isolated(args: Sequence[str]) -> list[str]:
    """``args`` with ``--ckpt_dir <output_root>/models`` added when they move ``--output_root`` but not the
    published model: a test's training then publishes into its temporary folder, not into the checkout's bundle."""
    args = list(args)
    if "--output_root" in args and "--ckpt_dir" not in args:
        args += ["--ckpt_dir", str(Path(args[args.index("--output_root") + 1]) / "models")]
    return args


def bundle(*args: str, cwd: Path = REPO, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "monai.bundle", *(isolated(args) if args[:1] == ("run",) else args)]
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"monai.bundle {args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def export(configs: Path, ckpt: Path, ts_file: Path, channels: int) -> Path:
    """``ckpt_export --use_trace`` of a bundle's network_def with ``ckpt`` at 32 x 32; returns ``ts_file``."""
    bundle(
        "ckpt_export", "network_def", "--filepath", str(ts_file), "--ckpt_file", str(ckpt),
        "--meta_file", str(configs / "metadata.json"), "--config_file", str(configs / "train.json"),
        "--key_in_ckpt", "model", "--use_trace", "True", "--input_shape", f"[1, {channels}, 32, 32]",
    )  # fmt: skip
    return ts_file


def run_folder(root: Path, phase: str) -> Path:
    runs = sorted(root.glob(f"{phase}-*"))
    assert len(runs) == 1, runs
    return runs[0]
