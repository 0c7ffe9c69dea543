"""Count MedSpikeFormer's parameters for the published configurations and write them as JSON.

Usage::

    python benchmarks/count_parameters.py [--out benchmarks/results/parameters.json]

The paper reports 1.7369 M parameters; the public code's "middle" model counts about 2.54 M, of which about
0.26 M sit in layers it builds but never uses (a pointwise convolution in every Q/K/V projection). This package
builds no unused layers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch.nn as nn

from monai_medspike.networks.nets import MedSpikeFormer

CONFIGS = {"small": (16, 32, 64, 128), "middle": (32, 64, 128, 256), "big": (64, 128, 256, 512)}
PAPER_M = 1.7369


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def breakdown(net: MedSpikeFormer) -> dict[str, int]:
    side = sum(count(stage.side_head) for stage in net.stages)
    return {
        "total": count(net),
        "encoder (without side heads)": sum(count(stage) for stage in net.stages) - side,
        "side mask heads (training only)": side,
        "decoder": count(net.decoders),
        "head": count(net.head),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/parameters.json"))
    parser.add_argument("--in-channels", type=int, default=3)
    parser.add_argument("--out-channels", type=int, default=1)
    args = parser.parse_args()

    results = {"paper_middle_M": PAPER_M, "configs": {}}
    for name, dims in CONFIGS.items():
        kwargs = {"in_channels": args.in_channels, "out_channels": args.out_channels, "embed_dims": dims}
        spiking = breakdown(MedSpikeFormer(**kwargs))
        ann = breakdown(MedSpikeFormer(spiking=False, **kwargs))
        results["configs"][name] = {"embed_dims": list(dims), "spiking": spiking, "ann_twin": ann}

    print(f"MedSpikeFormer parameters (in_channels={args.in_channels}, out_channels={args.out_channels})")
    print(f"{'config':<8} {'part':<34} {'spiking':>12} {'ANN twin':>12}")
    for name, entry in results["configs"].items():
        for part, value in entry["spiking"].items():
            print(f"{name:<8} {part:<34} {value:>12,} {entry['ann_twin'][part]:>12,}")
    middle = results["configs"]["middle"]["spiking"]["total"] / 1e6
    print(f"default (middle): {middle:.4f} M; paper: {PAPER_M} M; ratio {middle / PAPER_M:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
