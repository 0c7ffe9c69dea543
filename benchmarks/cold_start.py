"""First-use costs: the fused LIF kernel's build, ``run inferring`` and the MONAI Label server's first ``/infer``,
each with a cold kernel cache (an empty ``XDG_CACHE_HOME``: a fresh machine) and a warm one (the same folder again).

Usage::

    python benchmarks/cold_start.py [--shape 512 512 32] [--out benchmarks/results/cold_start.json]
    <MONAI Label env>/bin/python benchmarks/cold_start.py --server [--out benchmarks/results/cold_start_server.json]

The first form times ``python -m monai_medspike.warmup`` and the covid bundle's ``python -m monai.bundle run
inferring`` on one synthetic CT volume (NIfTI, the given shape) with untrained weights, each as a fresh process and
wall-clock from its start to its exit. The second runs in the MONAI Label environment (``bash
constraints/make_monailabel_env.sh`` prints its folder) and times a real server with the app, as the app's tests
start it: from launch until ``/info`` answers, then its first and second ``/infer`` of the covid volume.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from _bench import write_json
from monai.bundle import ConfigParser

REPO = Path(__file__).resolve().parents[1]
COVID = REPO / "bundles" / "covid" / "configs"


def _volume(path: Path, shape: tuple[int, int, int]) -> Path:
    hu = np.random.default_rng(0).normal(-600.0, 300.0, size=shape).clip(-1024, 3071).astype(np.int16)
    nib.save(nib.Nifti1Image(hu, np.diag([0.7, 0.7, 1.5, 1.0])), str(path))
    return path


def _timed_run(command: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds


def commands(args: argparse.Namespace) -> dict[str, Any]:
    """``warmup`` and ``run inferring``, cold then warm, in fresh processes."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        volume = _volume(root / "volume.nii.gz", tuple(args.shape))
        parser = ConfigParser()
        parser.read_config(str(COVID / "inference.json"))
        torch.manual_seed(0)
        torch.save(parser.get_parsed_content("network_def").state_dict(), root / "model.pt")
        infer = [sys.executable, "-m", "monai.bundle", "run", "inferring",
                 "--config_file", str(COVID / "inference.json"), "--ckpt_path", str(root / "model.pt"),
                 "--input", str(volume), "--output_root", str(root / "out")]  # fmt: skip
        warmup = [sys.executable, "-m", "monai_medspike.warmup"]
        for label, command in (("warmup", warmup), ("run inferring", infer)):
            cache = root / f"cache-{label.replace(' ', '-')}"
            env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
            times = {}
            for state in ("cold", "warm"):
                extra = ["--infer_name", state] if command is infer else []
                times[state] = _timed_run(command + extra, env, root)
            times["cold_minus_warm"] = times["cold"] - times["warm"]
            results[label] = times
    return results


def server(args: argparse.Namespace) -> dict[str, Any]:
    """A real MONAI Label server, cold then warm kernel cache: launch to ``/info``, first and second ``/infer``."""
    sys.path.insert(0, str(REPO))
    from tests.apps.test_monailabel_server import Server  # the app's own test harness (studies, bundles, weights)

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = root / "cache"
        saved = os.environ.get("XDG_CACHE_HOME")
        os.environ["XDG_CACHE_HOME"] = str(cache)  # the server's environment (Server copies os.environ)
        try:
            for state in ("cold", "warm"):
                start = time.perf_counter()
                srv = Server(root / state)
                try:
                    srv.wait_until_up()
                    up = time.perf_counter() - start
                    times = {"launch_to_info_s": up}
                    for request in ("first_infer_s", "second_infer_s"):
                        t = time.perf_counter()
                        response = srv.infer("covid", srv.paths["chest0"])  # the demo CT volume
                        if response.status_code != 200:
                            raise RuntimeError(f"/infer failed ({response.status_code}): {response.text[:500]}")
                        times[request] = time.perf_counter() - t
                    results[state] = times
                finally:
                    srv.stop()
        finally:
            if saved is None:
                os.environ.pop("XDG_CACHE_HOME", None)
            else:
                os.environ["XDG_CACHE_HOME"] = saved
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", type=int, nargs=3, default=[512, 512, 32], metavar=("X", "Y", "Z"))
    p.add_argument("--server", action="store_true", help="time the MONAI Label server (in its environment)")
    p.add_argument("--out", help="JSON file (default benchmarks/results/cold_start[_server].json)")
    args = p.parse_args()
    payload = {"settings": vars(args), "results": server(args) if args.server else commands(args)}
    for name, r in payload["results"].items():
        print(name, ", ".join(f"{k} {v:.2f} s" for k, v in r.items()))
    default = "cold_start_server.json" if args.server else "cold_start.json"
    print(f"wrote {write_json(payload, args.out, default)}")


if __name__ == "__main__":
    main()
