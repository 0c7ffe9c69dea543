"""Firing rates, operations and energy per image of a bundle's network, against its ANN twin and MONAI networks.

Usage::

    python -m monai_medspike.energy --bundle bundles/covid [--checkpoint <student model.pt>] [--images 4]
        [--image_size 256 256] [--layout spike_driven] [--json energy.json] [--markdown energy.md]
        [--e_mac 4.6e-12] [--e_ac 0.9e-12]

The student is ``--checkpoint``, else the bundle's newest trained student (the newer of ``models/model.pt`` and
the newest ``student-*/model.pt``); its network, data and image size come from its record (a ``--layout`` that
contradicts it is refused; an ``--image_size`` is used, with a note). The images are the first ``--images`` of the
validation split of that data (CT volumes give evenly spaced axial slices). Without a trained student, the
bundle's untrained network with batch-norm statistics estimated on the images (the rates are then not those of a
trained model, and the output says so). MONAI's ``BasicUNet``, ``UNet`` and ``SegResNet``
(MACs only) are counted on the same images. ``--json`` carries every layer's input firing rate, input elements,
fan-out, MACs and SOPs, and the neuron updates, for checking the counts by hand.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from monai_medspike.energy.report import (
    bundle_config,
    bundle_images,
    compare_networks,
    comparison_rows,
    load_or_calibrate,
    markdown_table,
    spike_input_rate,
    teacher_of,
)
from monai_medspike.metrics.spiking import E_AC, E_MAC
from monai_medspike.networks.nets.medspikeformer import LAYOUTS
from monai_medspike.utils import command_arguments

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m monai_medspike.energy", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, help="bundle folder, e.g. bundles/covid")
    p.add_argument("--checkpoint", help="student (spiking) model.pt; default: the bundle's newest trained student")
    p.add_argument("--teacher_checkpoint", help="ANN-twin model.pt; default: the bundle's latest trained teacher")
    p.add_argument("--images", type=int, default=4, help="number of validation images (default 4)")
    p.add_argument("--image_size", type=int, nargs=2, metavar=("H", "W"), help="default: the bundle's image_size")
    p.add_argument("--layout", choices=LAYOUTS, help="default: the bundle's layout")
    p.add_argument("--dataset_dir", help="release folder to draw the images from (default: the demo data)")
    p.add_argument("--datalist", help="datalist to draw the images from")
    p.add_argument("--output_root", help="the bundle's output folder (default: <bundle>/outputs)")
    p.add_argument("--e_mac", type=float, default=E_MAC, help=f"joules per MAC (default {E_MAC})")
    p.add_argument("--e_ac", type=float, default=E_AC, help=f"joules per accumulate (default {E_AC})")
    p.add_argument("--top", type=int, default=15, help="layers shown in the table, largest energy first (0: all)")
    p.add_argument("--json", help="write every figure, per layer, to this JSON file")
    p.add_argument("--markdown", help="write the comparison table to this Markdown file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(command_arguments(argv))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        from monai.networks.nets import BasicUNet, SegResNet, UNet

        from monai_medspike.metrics import FiringRateMonitor

        bundle = Path(args.bundle)
        parser = bundle_config(bundle, args)
        student = parser.get_parsed_content("network_def")  # the checkpoint's network, checked against the options
        images = bundle_images(parser, args.images)
        teacher = parser.get_parsed_content("teacher_def")
        trained = parser.get_parsed_content("trained_model")
        student_ckpt = load_or_calibrate(student, str(trained.path) if trained.path else None, images)
        teacher_file = args.teacher_checkpoint or teacher_of(trained, parser.get_parsed_content("output_root"))
        teacher_ckpt = load_or_calibrate(teacher, teacher_file, images)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as err:
        from monai_medspike.utils import first_cause

        print(f"error: {str(first_cause(err)).splitlines()[0]}", file=sys.stderr)
        return 2
    channels_in, channels_out = images.shape[1], int(parser.get_parsed_content("out_channels"))
    time_steps = int(parser.get_parsed_content("time_steps"))
    layout = parser.get_parsed_content("layout")
    networks = {
        f"MedSpikeFormer {layout} (spiking, T={time_steps})": student,
        f"MedSpikeFormer {layout} ANN twin (T=1)": teacher,
        "MONAI BasicUNet": BasicUNet(spatial_dims=2, in_channels=channels_in, out_channels=channels_out),
        "MONAI UNet": UNet(2, channels_in, channels_out, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2),
        "MONAI SegResNet": SegResNet(
            spatial_dims=2, in_channels=channels_in, out_channels=channels_out, init_filters=16
        ),
    }
    with FiringRateMonitor(student) as monitor:
        reports = compare_networks(networks, images, args.e_mac, args.e_ac)
    spiking = next(iter(reports))
    rates = {name: r.tolist() for name, r in monitor.rates().items()}
    spikes, steps = monitor.totals()
    rows = comparison_rows(reports, spiking)
    info = {
        "bundle": str(bundle),
        "dataset": parser.get_parsed_content("dataset"),
        "layout": layout,
        "images": int(images.shape[0]),
        "image_size": list(images.shape[2:])[::-1],  # (height, width) of MONAI's (W, H) arrays
        "checkpoint": student_ckpt,
        "teacher_checkpoint": teacher_ckpt,
        "e_mac": args.e_mac,
        "e_ac": args.e_ac,
        "firing_rate": spikes / steps if steps else 0.0,
        "spike_input_rate": spike_input_rate(reports[spiking]),
        "neuron_updates": reports[spiking].neuron_updates,
    }
    print(f"{spiking}: per-layer operations per image (largest energy first)")
    print(reports[spiking].table(top=args.top or None))
    print(f"\nneurons fired {info['firing_rate']:.4f} of the time ({info['neuron_updates'] / 1e6:.1f} M neuron updates "
          f"per image, not in the energy); spike inputs of the counted layers: {info['spike_input_rate']:.4f}; "
          f"student weights: {student_ckpt}")  # fmt: skip
    print(f"\n{'network':<36} {'MACs':>12} {'SOPs':>12} {'energy (mJ)':>12} {'ratio':>7}")
    for row in rows:
        print(
            f"{row['network']:<36} {row['macs'] / 1e9:>11.3f}G {row['sops'] / 1e9:>11.4f}G "
            f"{row['energy_mj']:>12.3f} {row['energy_ratio']:>7.2f}"
        )
    if args.json:
        payload = {
            **info,
            "comparison": rows,
            "firing_rates": rates,
            "reports": {name: r.to_dict() for name, r in reports.items()},
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(rows, info))
    return 0


if __name__ == "__main__":
    from monai_medspike.errors import run_command

    sys.exit(run_command(main))
