"""Helpers of the bundle tests: the repository, running ``python -m monai.bundle``, run folders, export."""

from __future__ import annotations

import os
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


def export(configs: Path, ckpt: Path, ts_file: Path) -> Path:
    """MONAI's ``ckpt_export --use_trace`` of ``ckpt`` with the bundle's ``inference.json``, as the bundle READMEs
    give it: the network is built from the record of the ``--ckpt_file`` it exports, the weights are read under
    ``"model"`` (``--key_in_ckpt``), the trace shape comes from ``metadata.json``; returns ``ts_file``."""
    bundle(
        "ckpt_export", "network_def", "--filepath", str(ts_file), "--ckpt_file", str(ckpt),
        "--meta_file", str(configs / "metadata.json"), "--config_file", str(configs / "inference.json"),
        "--key_in_ckpt", "model", "--use_trace", "True",
    )  # fmt: skip
    return ts_file


def run_folder(root: Path, phase: str) -> Path:
    runs = sorted(root.glob(f"{phase}-*"))
    assert len(runs) == 1, runs
    return runs[0]
