"""CT volume inference speed: slices per second through the covid bundle's inferer, against MONAI BasicUNet.

Usage::

    python benchmarks/ct_inference.py [--shape 512 512 64] [--image_size 256 256] [--repeats 3] [--device auto]
        [--sw_batch_size N] [--keep_freed_memory] [--out benchmarks/results/ct_inference.json]

A synthetic CT volume (HU, the given shape) is written as NIfTI to a temporary folder, read and preprocessed with
the covid bundle's inference transforms (HU window, axial slices resized to ``image_size``), then segmented with
the bundle's ``SliceInferer`` by (a) the bundle's network (MedSpikeFormer, untrained weights: the speed does not
depend on them) and (b) MONAI ``BasicUNet`` with the same inferer. Reading and preprocessing are timed once,
separately; inference is interleaved and repeated, medians reported. ``--sw_batch_size`` replaces the bundle's
choice of slices per batch; ``--keep_freed_memory`` calls :func:`monai_medspike.utils.keep_freed_memory` first
(glibc keeps freed memory for reuse: no page faults of fresh allocations).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from _bench import machine, median, pick_device, timed, write_json
from monai.bundle import ConfigParser
from monai.networks.nets import BasicUNet

from monai_medspike.data import get_transforms
from monai_medspike.utils import keep_freed_memory

REPO = Path(__file__).resolve().parents[1]


def run(args: argparse.Namespace) -> dict[str, Any]:
    kept = keep_freed_memory(args.keep_freed_memory)
    device = pick_device(args.device)
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "covid" / "configs" / "train.json"))
    parser["image_size"] = list(args.image_size)
    if args.sw_batch_size is not None:
        parser["sw_batch_size"] = args.sw_batch_size
    parser["device"] = f"$torch.device('{device}')"
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        hu = rng.normal(-600.0, 300.0, size=tuple(args.shape)).clip(-1024, 3071).astype(np.int16)
        path = Path(tmp) / "volume.nii.gz"
        nib.save(nib.Nifti1Image(hu, np.diag([0.7, 0.7, 1.5, 1.0])), str(path))
        transforms = get_transforms(
            parser.get_parsed_content("dataset"), "infer", spatial_size=args.image_size, resize=True
        )
        start = time.perf_counter()
        image = transforms({"image": str(path)})["image"]
        preprocess_s = time.perf_counter() - start
    volume = torch.as_tensor(image).unsqueeze(0).to(device)  # (1, 1, H, W, D)
    inferer = parser.get_parsed_content("inferer")
    networks = {
        "MedSpikeFormer (covid bundle)": parser.get_parsed_content("network_def").to(device).eval(),
        "MONAI BasicUNet": BasicUNet(spatial_dims=2, in_channels=1, out_channels=1).to(device).eval(),
    }

    def infer(net: torch.nn.Module):
        def step() -> None:
            with torch.no_grad():
                inferer(volume, net)

        return step

    for net in networks.values():
        infer(net)()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in networks}
    for _ in range(args.repeats):
        for name, net in networks.items():
            times[name].append(timed(infer(net), device))
    slices = int(args.shape[2])
    results = {
        name: {"median_s": median(t), "slices_per_s": slices / median(t), "times_s": t} for name, t in times.items()
    }
    first, second = list(results)
    return {
        "settings": vars(args),
        "machine": machine(device),
        "read_and_preprocess_s": preprocess_s,
        "inferer": type(inferer).__name__,
        "sw_batch_size": inferer.sw_batch_size,
        "freed_memory_kept": kept,
        "results": results,
        "ratio_time": results[first]["median_s"] / results[second]["median_s"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", type=int, nargs=3, default=[512, 512, 64], metavar=("X", "Y", "Z"))
    p.add_argument("--image_size", type=int, nargs=2, default=[256, 256], metavar=("H", "W"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--sw_batch_size", type=int, help="slices per batch (default: the covid bundle's choice)")
    p.add_argument("--keep_freed_memory", "--keep-freed-memory", action="store_true",
                   help="glibc keeps freed memory for reuse")  # fmt: skip
    p.add_argument("--out", help="JSON file (default benchmarks/results/ct_inference.json)")
    args = p.parse_args()
    payload = run(args)
    print(
        f"read + preprocess {payload['read_and_preprocess_s']:.2f} s "
        f"({payload['inferer']}, sw_batch_size {payload['sw_batch_size']})"
    )
    for name, r in payload["results"].items():
        print(f"{name:<32} {r['median_s']:8.2f} s  {r['slices_per_s']:7.2f} slices/s")
    print(f"time ratio MedSpikeFormer / BasicUNet: {payload['ratio_time']:.2f}")
    print(f"wrote {write_json(payload, args.out, 'ct_inference.json')}")


if __name__ == "__main__":
    main()
