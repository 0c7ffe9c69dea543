"""CT volume inference speed: slices per second through the covid bundle's inferer, against MONAI BasicUNet.

Usage::

    python benchmarks/ct_inference.py [--shape 512 512 64] [--image_size 256 256] [--repeats 3] [--device auto]
        [--sw_batch_size N] [--no-keep_freed_memory] [--steps [--bfloat16]] [--checkpoint model.pt]
        [--out benchmarks/results/ct_inference.json]

A synthetic CT volume (HU, the given shape) is written as NIfTI to a temporary folder, read and preprocessed with
the covid bundle's inference transforms (HU window, axial slices resized to ``image_size``), then segmented with
the bundle's ``SliceInferer`` by (a) the bundle's network as ``run inferring`` builds it by default (MedSpikeFormer,
untrained weights: the speed does not depend on them; batch norms folded, the ``auto`` channels-last and precision
of :mod:`monai_medspike.speed`, glibc keeping freed memory), the headline ``ratio_time``, (b) the plain float32
network and (c) MONAI ``BasicUNet`` with the same inferer. Reading and preprocessing are timed once,
separately; inference is interleaved and repeated, medians reported. ``--sw_batch_size`` replaces the bundle's
choice of slices per batch; ``--no-keep_freed_memory`` leaves glibc's allocator as it is (by default
:func:`monai_medspike.utils.keep_freed_memory` is called first, as the bundles do: no page faults of fresh
allocations).

``--steps`` adds the inference optimisations one by one, each a case of the same run against the plain network:
batch norms folded into the convolutions (:func:`monai_medspike.networks.utils.fold_batch_norm`, what ``run
inferring`` and the MONAI Label app do), channels-last weights and activations (``channels_last``), both, and
both with 8 slices per batch (BasicUNet then also runs with 8); ``--bfloat16`` adds bfloat16 mixed precision
(``precision="bfloat16"``) alone and with all of them (BasicUNet stays float32). Every case reports how many
voxels of its mask differ from the plain network's (threshold 0.5 on the sigmoid, or argmax); ``--checkpoint``
loads trained weights into the MedSpikeFormer cases.
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

from monai_medspike import speed
from monai_medspike.checkpoints import load_weights
from monai_medspike.data import get_transforms
from monai_medspike.networks.utils import fold_for_inference
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
    parser["sw_batch_size"] = 8
    batched = parser.get_parsed_content("inferer", lazy=False)

    def spiking(channels_last: bool = False, fold: bool = False, precision: str = "float32") -> torch.nn.Module:
        parser["channels_last"] = channels_last
        parser["precision"] = precision
        torch.manual_seed(0)  # the same weights in every case
        net = parser.get_parsed_content("network_def", lazy=False)
        if args.checkpoint:
            load_weights(net, args.checkpoint)
        net = net.to(device).eval()
        if fold:
            fold_for_inference(net)
        return net

    torch.manual_seed(0)
    unet = BasicUNet(spatial_dims=2, in_channels=1, out_channels=1).to(device).eval()
    reference = "MedSpikeFormer, plain float32"
    # the headline: the network as inference.json builds it by default (batch norms folded, `auto` speed settings)
    default = {"channels_last": speed.channels_last("auto", device), "precision": speed.precision("auto", device)}
    bundle = "MedSpikeFormer, as the covid bundle's inference runs it"
    cases = {bundle: (spiking(fold=True, **default), inferer), reference: (spiking(), inferer),
             "MONAI BasicUNet": (unet, inferer)}  # fmt: skip
    if args.steps:
        cases["MedSpikeFormer, batch norms folded"] = (spiking(fold=True), inferer)
        cases["MedSpikeFormer, channels-last"] = (spiking(channels_last=True), inferer)
        cases["MedSpikeFormer, folded + channels-last"] = (spiking(channels_last=True, fold=True), inferer)
        if batched.sw_batch_size != inferer.sw_batch_size:
            cases["MedSpikeFormer, folded + channels-last, 8 slices per batch"] = (
                spiking(channels_last=True, fold=True),
                batched,
            )
            cases["MONAI BasicUNet, 8 slices per batch"] = (unet, batched)
        if args.bfloat16:
            bf16 = {"channels_last": True, "fold": True, "precision": "bfloat16"}
            cases["MedSpikeFormer, bfloat16"] = (spiking(precision="bfloat16"), inferer)
            cases["MedSpikeFormer, folded + channels-last + bfloat16"] = (spiking(**bf16), inferer)
            if batched.sw_batch_size != inferer.sw_batch_size:
                name = "MedSpikeFormer, folded + channels-last + bfloat16, 8 slices per batch"
                cases[name] = (spiking(**bf16), batched)

    def infer(net: torch.nn.Module, slice_inferer: Any):
        def step() -> torch.Tensor:
            with torch.no_grad():
                return slice_inferer(volume, net)

        return step

    masks = {}
    for name, (net, slice_inferer) in cases.items():
        out = infer(net, slice_inferer)()  # warm-up, and the mask compared with the plain network's
        masks[name] = out.argmax(1) if out.shape[1] > 1 else out[:, 0] > 0
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, (net, slice_inferer) in cases.items():
            times[name].append(timed(infer(net, slice_inferer), device))
    slices = int(args.shape[2])
    basic = {inferer.sw_batch_size: "MONAI BasicUNet", 8: "MONAI BasicUNet, 8 slices per batch"}
    results = {}
    for name, t in times.items():
        net, slice_inferer = cases[name]
        results[name] = {"median_s": median(t), "slices_per_s": slices / median(t), "times_s": t,
                         "sw_batch_size": slice_inferer.sw_batch_size}  # fmt: skip
        if name.startswith("MedSpikeFormer"):
            unet_name = basic.get(slice_inferer.sw_batch_size, "MONAI BasicUNet")
            unet_name = unet_name if unet_name in times else "MONAI BasicUNet"
            results[name]["ratio_to_basicunet"] = median(t) / median(times[unet_name])
            results[name]["speedup_over_plain"] = median(times[reference]) / median(t)
            results[name]["mask_voxels_differing"] = int((masks[name] != masks[reference]).sum())
            results[name]["mask_voxels"] = masks[name].numel()
    first, second = bundle, "MONAI BasicUNet"
    return {
        "settings": vars(args),
        "machine": machine(device),
        "bundle_default": {**default, "fold_batch_norm": True, "keep_freed_memory": kept},
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
    p.add_argument("--keep_freed_memory", "--keep-freed-memory", action=argparse.BooleanOptionalAction, default=True,
                   help="glibc keeps freed memory for reuse (the bundles' default; --no-keep_freed_memory: glibc's "
                        "own allocator)")  # fmt: skip
    p.add_argument("--steps", action="store_true",
                   help="also measure the inference optimisations one by one (folded batch norms, channels-last, "
                        "8 slices per batch)")  # fmt: skip
    p.add_argument(
        "--bfloat16",
        action="store_true",
        help="with --steps: also bfloat16 mixed precision (precision='bfloat16'), alone and with the others",
    )
    p.add_argument("--checkpoint", help="trained model.pt of the covid bundle (default: untrained weights)")
    p.add_argument("--out", help="JSON file (default benchmarks/results/ct_inference.json)")
    args = p.parse_args()
    payload = run(args)
    print(
        f"read + preprocess {payload['read_and_preprocess_s']:.2f} s "
        f"({payload['inferer']}, sw_batch_size {payload['sw_batch_size']})"
    )
    for name, r in payload["results"].items():
        extra = ""
        if "ratio_to_basicunet" in r:
            extra = (f"  x{r['ratio_to_basicunet']:.2f} BasicUNet, {r['speedup_over_plain']:.2f}x faster than plain, "
                     f"{r['mask_voxels_differing']} of {r['mask_voxels']} mask voxels differ")  # fmt: skip
        print(f"{name:<60} {r['median_s']:8.2f} s  {r['slices_per_s']:7.2f} slices/s{extra}")
    print(
        f"time ratio MedSpikeFormer as the bundle runs it / BasicUNet: {payload['ratio_time']:.2f} "
        f"({payload['bundle_default']}; {payload['machine']['cpu']})"
    )
    print(f"wrote {write_json(payload, args.out, 'ct_inference.json')}")


if __name__ == "__main__":
    main()
