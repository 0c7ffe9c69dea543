"""Evaluation and inference of a trained bundle, defined once for every bundle.

A bundle's ``evaluate.json`` (an overlay on ``train.json``) instantiates :class:`Evaluation` and its ``evaluating``
id calls :meth:`Evaluation.run`; its ``inference.json`` (standalone) instantiates :class:`Inference` from the ids
``network_def``, ``preprocessing``, ``inferer`` and ``postprocessing`` that MONAI Label's ``BundleInferTask``
reads as well.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from monai.handlers import (
    HausdorffDistance,
    IgniteMetricHandler,
    MeanDice,
    MeanIoUHandler,
    MetricsSaver,
    from_engine,
)

from monai_medspike.checkpoints import CheckpointError, load_weights
from monai_medspike.data.checks import load_datalist
from monai_medspike.handlers import ProgressLog, StatsHandler
from monai_medspike.metrics import PerImageScore
from monai_medspike.networks.utils import fold_for_inference
from monai_medspike.utils import stop_command_line

__all__ = ["PER_IMAGE_SCORES", "Evaluation", "Inference", "write_summary"]

logger = logging.getLogger(__name__)

#: the per-image scores of an evaluation (``dice`` is the key metric), each with MONAI's details per image
PER_IMAGE_SCORES = ("dice", "iou", "accuracy", "specificity", "sensitivity")
_METRIC_NAMES = ("dice", "miou", "accuracy", "specificity", "sensitivity")  # their names in the summary ("mIoU")


def write_summary(
    engine: Any, out_dir: str, extra: dict | None = None, label_names: list[str] | tuple[str, ...] | None = None
) -> str:
    """Write ``engine.state.metrics`` (and ``extra``) as ``<out_dir>/summary.json``; return the file path.

    With ``label_names`` (background first, as in the bundle's ``label_names``) the summary also holds
    ``per_class``: for each foreground class, the mean over images of every metric whose per-image details the
    engine kept (``engine.state.metric_details``, one column per foreground class). Images where a metric is not
    finite (e.g. HD95 with an empty mask) are left out of that mean and counted in ``<metric>_not_finite``.

    Raises:
        ValueError: a metric has a different number of classes than ``label_names`` names.
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    metrics = {
        k: (float(v) if isinstance(v, int | float) or hasattr(v, "item") else v)
        for k, v in engine.state.metrics.items()
    }
    summary = {"metrics": metrics, "images": len(engine.data_loader.dataset), **(extra or {})}
    if label_names is not None:
        summary["per_class"] = _per_class(getattr(engine.state, "metric_details", {}) or {}, list(label_names)[1:])
    path = folder / "summary.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    logger.info("evaluation summary written to %s: %s", path, metrics)
    return str(path)


def _per_class(details: dict[str, Any], foreground: list[str]) -> dict[str, dict[str, float | int | None]]:
    per_class: dict[str, dict[str, float | int | None]] = {name: {} for name in foreground}
    for metric, values in details.items():
        values = torch.as_tensor(values, dtype=torch.float64)
        values = values.reshape(values.shape[0], -1) if values.ndim else values.reshape(1, 1)
        if values.shape[1] != len(foreground):
            raise ValueError(
                f"metric {metric!r} has {values.shape[1]} classes but label_names names {len(foreground)} "
                f"foreground classes ({foreground}); make label_names match out_channels."
            )
        for column, name in enumerate(foreground):
            column_values = values[:, column]
            finite = torch.isfinite(column_values)
            per_class[name][metric] = float(column_values[finite].mean()) if finite.any() else None
            if not finite.all():
                per_class[name][f"{metric}_not_finite"] = int((~finite).sum())
    return per_class


def _loaded(network: torch.nn.Module, checkpoint: str) -> torch.nn.Module:
    """``network`` with the weights of ``checkpoint``; under ``python -m monai.bundle`` a checkpoint that does not fit
    ends the run with one line naming it."""
    try:
        return load_weights(network, checkpoint)
    except (CheckpointError, KeyError, FileNotFoundError) as error:
        stop_command_line(CheckpointError(error.args[0]) if isinstance(error, KeyError) else error)
        raise


def _loader(data: Sequence[dict], transform: Callable, num_workers: int) -> DataLoader:
    return DataLoader(Dataset(list(data), transform), batch_size=1, shuffle=False, num_workers=num_workers)


class Evaluation:
    """Score a trained network on a datalist split: per-image Dice, IoU, accuracy, specificity and sensitivity
    (``empty_score`` where a mask and its prediction are both empty), MONAI's mean Dice and IoU, and HD95.

    Writes ``<output_dir>/summary.json`` (the means, the split, the checkpoint and, per foreground class, the means
    over images) and MONAI's ``MetricsSaver`` files (``metrics.csv``, one ``<metric>_raw.csv`` per image score).

    Args:
        network: the network (``network_def``); ``checkpoint`` is loaded into it strictly.
        checkpoint: the ``model.pt`` to evaluate.
        datalist_file, split: the images and labels (``test`` by default).
        transforms: the evaluation transforms (the bundle's ``val_transforms``).
        inferer, postprocessing: as in training (``pred`` and ``label`` as discrete masks).
        out_channels: 1 (binary, the foreground is scored) or more (one-hot, the background is left out).
        label_names: class names, background first (for the per-class means).
        output_dir: the evaluation's folder.
        device, num_workers: where and with how many loader workers.
        empty_score: the per-image score of an image whose mask and prediction are both empty.
        dataset, data_options: the reader whose label rules the datalist is checked by
            (:func:`monai_medspike.data.checks.load_datalist`).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        checkpoint: str,
        datalist_file: str,
        transforms: Callable,
        inferer: Any,
        postprocessing: Callable,
        out_channels: int,
        label_names: Sequence[str],
        output_dir: str,
        device: torch.device | str,
        split: str = "test",
        num_workers: int = 0,
        empty_score: float = 1.0,
        dataset: str | None = None,
        data_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.checkpoint = str(checkpoint)
        self.split = split
        self.empty_score = float(empty_score)
        self.label_names = list(label_names)
        self.output_dir = str(output_dir)
        data = load_datalist(datalist_file, split, dataset, data_options)  # checked like a prepared one
        pair = from_engine(["pred", "label"])
        background = int(out_channels) == 1
        per_image = {
            name: IgniteMetricHandler(
                metric_fn=PerImageScore(score, empty_score=self.empty_score), output_transform=pair, save_details=True
            )
            for name, score in zip(_METRIC_NAMES, PER_IMAGE_SCORES, strict=True)
        }
        monai_metrics = {
            "monai_dice": MeanDice(include_background=background, output_transform=pair),
            "monai_iou": MeanIoUHandler(include_background=background, output_transform=pair),
            "hd95": HausdorffDistance(include_background=background, percentile=95, output_transform=pair),
        }
        details = [*per_image, *monai_metrics]
        self.evaluator = SupervisedEvaluator(
            device=torch.device(device),
            val_data_loader=_loader(data, transforms, num_workers),
            network=_loaded(network, self.checkpoint).to(device),
            inferer=inferer,
            postprocessing=postprocessing,
            key_val_metric={"dice": per_image.pop("dice")},
            additional_metrics={**per_image, **monai_metrics},
            val_handlers=[
                StatsHandler(iteration_log=False),
                ProgressLog("scored", "images"),
                MetricsSaver(
                    save_dir=self.output_dir,
                    metrics="*",
                    metric_details=details,
                    batch_transform=lambda batch: [item["image"].meta for item in batch],
                    summary_ops="*",
                ),
            ],
        )

    def run(self) -> str:
        """Evaluate; returns the path of ``summary.json``."""
        self.evaluator.run()
        extra = {"checkpoint": self.checkpoint, "split": self.split, "empty_score": self.empty_score}
        return write_summary(self.evaluator, self.output_dir, extra, label_names=self.label_names)


class Inference:
    """Segment images or volumes with a trained network and write one mask per input (by ``postprocessing``).

    Args:
        network: the network (``network_def``); ``checkpoint`` is loaded into it strictly.
        checkpoint: the ``model.pt`` to use.
        data: ``[{"image": path}, ...]`` (see :func:`monai_medspike.data.input_files`).
        preprocessing, inferer, postprocessing: the bundle's ids of the same names.
        device, num_workers: where and with how many loader workers.
        fold_batch_norm: fold the batch norms that follow convolutions into them after loading the weights
            (:func:`monai_medspike.networks.utils.fold_batch_norm`; the same masks up to float rounding, fewer passes
            over memory).
        output_dir, written: where ``postprocessing`` writes the masks and what it writes
            (:func:`monai_medspike.workflows.written_mask`), said in the log before the first input.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        checkpoint: str,
        data: Sequence[dict],
        preprocessing: Callable,
        inferer: Any,
        postprocessing: Callable,
        device: torch.device | str,
        num_workers: int = 0,
        fold_batch_norm: bool = False,
        output_dir: str | None = None,
        written: Mapping[str, Any] | None = None,
    ) -> None:
        network = _loaded(network, str(checkpoint)).to(device)
        if fold_batch_norm:
            fold_for_inference(network)
        self.evaluator = SupervisedEvaluator(
            device=torch.device(device),
            val_data_loader=_loader(data, preprocessing, num_workers),
            network=network,
            inferer=inferer,
            postprocessing=postprocessing,
            val_handlers=[StatsHandler(iteration_log=False), ProgressLog("segmented", "inputs")],
        )
        self.count, self.checkpoint, self.output_dir, self.written = len(data), str(checkpoint), output_dir, written

    def run(self) -> None:
        """Segment every input, saying first where the masks go."""
        if self.output_dir is not None:
            what = self.written or {}
            values = ", ".join(f"{v} {name}" for v, name in what.get("values", {}).items())
            logger.info(
                "segmenting %d input(s) with %s; writing %s to %s%s", self.count, self.checkpoint,
                what.get("file", "the masks"), self.output_dir, f" ({what.get('dtype')}: {values})" if values else "",
            )  # fmt: skip
        self.evaluator.run()
        if self.output_dir is not None:
            logger.info("wrote %d mask(s) to %s", self.count, self.output_dir)
