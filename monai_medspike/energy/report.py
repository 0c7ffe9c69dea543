"""The pieces of the energy report: a bundle's images and networks, operation counts, the comparison table."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from monai_medspike.metrics.spiking import E_AC, E_MAC, OperationReport, count_operations

__all__ = [
    "bundle_config",
    "bundle_images",
    "compare_networks",
    "comparison_rows",
    "load_or_calibrate",
    "markdown_table",
    "spike_input_rate",
    "teacher_of",
]


def bundle_config(bundle: Path, args: argparse.Namespace) -> Any:
    """The bundle's ``train.json`` with its ``evaluate.json`` overlay and the command's overrides: the network, the
    data and the image size are those of the student checkpoint (``--checkpoint``, else the bundle's newest trained
    student), read from its record; a given ``--layout`` that contradicts it is refused, a given ``--image_size`` is
    used with a note. Without a trained student: the bundle's defaults."""
    from monai.bundle import ConfigParser

    configs = [bundle / "configs" / name for name in ("train.json", "evaluate.json")]
    missing = [f"configs/{c.name}" for c in configs if not c.is_file()]
    if missing:
        raise FileNotFoundError(
            f"--bundle {bundle}: no {' or '.join(missing)} there; pass a bundle folder (bundles/<name>)."
        )
    parser = ConfigParser()
    parser.read_config([str(c) for c in configs])
    parser["bundle_root"] = str(bundle.resolve())
    if args.output_root:
        parser["output_root"] = str(Path(args.output_root).resolve())
    if args.checkpoint:
        parser["ckpt_path"] = str(Path(args.checkpoint).resolve())
    for key in ("dataset_dir", "datalist"):
        if getattr(args, key):
            parser[key] = str(Path(getattr(args, key)).resolve())
    if args.image_size:
        parser["image_size"] = list(args.image_size)
    if getattr(args, "layout", None):
        parser["layout"] = args.layout
    return parser


def bundle_images(parser: Any, count: int, split: str = "validation") -> torch.Tensor:
    """``count`` images ``(count, C, W, H)`` (MONAI's array axes) of a bundle's ``split`` through its evaluation
    transforms.

    Volumes give evenly spaced axial slices (the middle 80 %); images larger than ``image_size`` (no resizing, e.g.
    MoNuSeg) are centre-cropped to it.
    """
    from monai.transforms import ResizeWithPadOrCrop

    from monai_medspike.data import array_size
    from monai_medspike.data.checks import load_datalist

    if count < 1:
        raise ValueError(f"--images must be >= 1, got {count}.")
    size = array_size(parser.get_parsed_content("image_size"))  # (height, width) -> MONAI's array axes
    dataset, options = parser.get_parsed_content("dataset"), parser.get_parsed_content("data_options")
    entries = load_datalist(parser.get_parsed_content("datalist_file"), split, dataset, options)
    transforms = parser.get_parsed_content("val_transforms")
    crop = ResizeWithPadOrCrop(size)
    images: list[torch.Tensor] = []
    for entry in entries:
        image = torch.as_tensor(transforms(dict(entry))["image"])
        if image.ndim == 4:  # (C, H, W, D): axial slices
            depth = image.shape[-1]
            picks = torch.linspace(0.1 * (depth - 1), 0.9 * (depth - 1), max(1, min(count, depth))).round().long()
            slices = [image[..., int(z)] for z in picks.unique()]
        else:
            slices = [image]
        images += [torch.as_tensor(crop(s)) for s in slices]
        if len(images) >= count:
            break
    return torch.stack(images[:count]).float()


def load_or_calibrate(network: torch.nn.Module, checkpoint: str | None, images: torch.Tensor) -> str:
    """Load ``checkpoint`` into ``network``, or estimate its batch-norm statistics on ``images``; say which."""
    from monai_medspike.checkpoints import load_weights
    from monai_medspike.handlers import recalibrate_batch_norm

    if checkpoint:
        load_weights(network, checkpoint)
        return checkpoint
    # untrained: batch-norm statistics from the images themselves, so that the neurons see normalised inputs
    recalibrate_batch_norm(network, [images], num_batches=1)
    return "untrained (batch-norm statistics estimated on the images)"


def teacher_of(student: Any, output_root: str) -> str | None:
    """The teacher of the trained ``student`` (a :class:`~monai_medspike.checkpoints.TrainedModel`): the one its run
    trained beside it (``teacher-<run id>/model.pt`` in the run's output folder), the one its training was given,
    else the newest ``teacher-*/model.pt`` under ``output_root``; None when there is none."""
    from monai_medspike.runs import find_checkpoint

    recorded = student.settings() if student is not None else {}
    folders = [recorded.get("output_root"), output_root]
    candidates = [
        Path(f) / f"teacher-{recorded['run_id']}" / "model.pt" for f in folders if f and recorded.get("run_id")
    ]
    candidates += [Path(recorded["teacher_checkpoint"])] if recorded.get("teacher_checkpoint") else []
    found = next((c for c in candidates if c.is_file()), None)
    return str(found) if found else find_checkpoint(output_root, "teacher")


def compare_networks(
    networks: dict[str, torch.nn.Module], images: torch.Tensor, e_mac: float = E_MAC, e_ac: float = E_AC
) -> dict[str, OperationReport]:
    """:func:`count_operations` of each network on the same images."""
    return {name: count_operations(net, images, e_mac, e_ac) for name, net in networks.items()}


def comparison_rows(reports: dict[str, OperationReport], reference: str) -> list[dict[str, Any]]:
    """One row per network: MACs, SOPs, energy in mJ and energy relative to ``reference``."""
    base = reports[reference].energy
    return [
        {
            "network": name,
            "macs": r.macs,
            "sops": r.sops,
            "energy_mj": r.energy * 1e3,
            "energy_ratio": r.energy / base if base else float("nan"),
        }
        for name, r in reports.items()
    ]


def markdown_table(rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    """The comparison as a Markdown table with a line saying what was measured."""
    lines = [
        f"Per image, {info['images']} {info['dataset']} validation images at {info['image_size'][0]} x "
        f"{info['image_size'][1]}; student weights: {info['checkpoint']}. Energy = {info['e_mac'] * 1e12:.1f} pJ "
        f"x MACs + {info['e_ac'] * 1e12:.1f} pJ x SOPs. Overall student firing rate {info['firing_rate']:.4f}.",
        "",
        "| network | MACs (G) | SOPs (G) | energy (mJ) | energy / MedSpikeFormer |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['network']} | {row['macs'] / 1e9:.3f} | {row['sops'] / 1e9:.4f} | {row['energy_mj']:.3f} "
            f"| {row['energy_ratio']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def spike_input_rate(report: OperationReport) -> float:
    """Mean firing rate of the spike inputs, weighted by their dense operation counts."""
    spikes = [layer for layer in report.layers if layer.input == "spikes"]
    total = sum(layer.macs for layer in spikes)
    return sum(layer.sops for layer in spikes) / total if total else 0.0
