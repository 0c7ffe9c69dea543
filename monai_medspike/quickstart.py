"""Train MedSpikeFormer for a few steps on generated images, the two-phase recipe end to end.

Phase 1 trains the ANN twin (``spiking=False``) as the teacher, its side heads by deep supervision; phase 2 trains
the spiking student with the frozen teacher through the distribution-alignment loss. Both phases use MONAI's
``SupervisedTrainer`` unchanged.
The images are generated in memory (bright blobs on a noisy background), so nothing is downloaded and no file is
written unless ``--save`` is given.

Usage::

    python -m monai_medspike.quickstart [--steps 40] [--size 64] [--batch_size 4] [--time_steps 4] [--device cpu]
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from monai.metrics import DiceMetric
from monai.utils import set_determinism

from monai_medspike.losses import SegmentationAlignmentLoss
from monai_medspike.networks.nets import DistributionAlignmentNet, MedSpikeFormer
from monai_medspike.utils import command_arguments

__all__ = ["main", "make_blobs"]

logger = logging.getLogger("monai_medspike.quickstart")


def make_blobs(count: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` single-channel ``size x size`` images in [0, 1] with 1-3 bright ellipses and their masks.

    Returns:
        images ``(count, 1, size, size)`` float32 and masks ``(count, 1, size, size)`` in {0, 1}.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = np.empty((count, 1, size, size), np.float32)
    masks = np.zeros((count, 1, size, size), np.float32)
    for i in range(count):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(0.2, 0.8, 2) * size
            ry, rx = rng.uniform(0.06, 0.2, 2) * size
            masks[i, 0][((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0] = 1.0
        images[i, 0] = 0.25 + 0.45 * masks[i, 0] + rng.normal(0.0, 0.12, (size, size))
    return torch.from_numpy(np.clip(images, 0.0, 1.0)), torch.from_numpy(masks)


def _batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> list[dict[str, torch.Tensor]]:
    return [
        {"image": images[i : i + batch_size], "label": labels[i : i + batch_size]}
        for i in range(0, len(images), batch_size)
    ]


def _train(network, loss, data, steps: int, device: torch.device, lr: float) -> float:
    params = [p for p in network.parameters() if p.requires_grad]
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=1,
        epoch_length=steps,
        train_data_loader=data,
        network=network,
        optimizer=torch.optim.Adam(params, lr=lr),
        loss_function=loss,
        decollate=False,
    )
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"].item()))
    trainer.run()
    return float(np.mean(losses[-max(1, steps // 3) :]))


@torch.no_grad()
def _dice(network: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> float:
    network.eval()
    metric = DiceMetric(include_background=True, reduction="mean")
    for batch in _batches(images, labels, 4):
        pred = (torch.sigmoid(network(batch["image"].to(device))) > 0.5).float()
        metric(pred, batch["label"].to(device))
    return float(metric.aggregate())


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m monai_medspike.quickstart", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="training steps per phase (default 40)")
    parser.add_argument("--size", type=int, default=64, help="image side, a multiple of 16 (default 64)")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--time_steps", type=int, default=4, help="spiking time steps T (default 4)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--save", type=Path, default=None, help="write the student's state_dict to this file")
    args = parser.parse_args(command_arguments(argv))
    if args.steps < 1 or args.batch_size < 1:
        parser.error("--steps and --batch_size must be >= 1")
    if args.size < 16 or args.size % 16:
        parser.error(f"--size must be a multiple of 16, got {args.size}")
    if args.save is not None and not args.save.parent.is_dir():
        parser.error(f"--save: folder {args.save.parent} does not exist")

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    set_determinism(seed=args.seed)
    images, labels = make_blobs(args.steps * args.batch_size, args.size, args.seed)
    val_images, val_labels = make_blobs(8, args.size, args.seed + 1)
    data = _batches(images, labels, args.batch_size)
    common = {"in_channels": 1, "out_channels": 1, "time_steps": args.time_steps}

    start = time.perf_counter()
    teacher = MedSpikeFormer(spiking=False, **common).to(device)
    # its side heads, the masks the student is aligned to, learn by deep supervision (lambda_side)
    side_supervised = DistributionAlignmentNet(teacher)
    teacher_loss = _train(side_supervised, SegmentationAlignmentLoss(lambda_align=0.0, lambda_side=1.0), data,
                          args.steps, device, args.lr)  # fmt: skip
    logger.info("phase 1 (ANN teacher, side heads supervised): %d steps, final loss %.4f", args.steps, teacher_loss)

    student = MedSpikeFormer(spiking=True, **common).to(device)
    pair = DistributionAlignmentNet(student, teacher)
    student_loss = _train(pair, SegmentationAlignmentLoss(lambda_align=1.0), data, args.steps, device, args.lr)
    logger.info("phase 2 (spiking student + alignment): %d steps, final loss %.4f", args.steps, student_loss)

    results = {
        "teacher_loss": teacher_loss,
        "student_loss": student_loss,
        "teacher_val_dice": _dice(teacher, val_images, val_labels, device),
        "student_val_dice": _dice(student, val_images, val_labels, device),
        "seconds": time.perf_counter() - start,
    }
    logger.info(
        "validation Dice: teacher %.3f, student %.3f (%.1f s on %s)",
        results["teacher_val_dice"],
        results["student_val_dice"],
        results["seconds"],
        device,
    )
    if args.save is not None:
        torch.save(student.state_dict(), args.save)
        logger.info("student weights written to %s", args.save)
    return results


if __name__ == "__main__":
    from monai_medspike.errors import run_command

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run_command(main)
