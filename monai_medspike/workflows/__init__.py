"""What the bundles run: the two-phase training (ANN teacher, then the aligned spiking student), evaluation and
inference, their inferer and post-processing, and the check of a run's settings."""

from __future__ import annotations

from .command_line import check_command_line, check_overrides
from .components import get_infer_postprocessing, get_inferer, get_postprocessing, written_mask
from .evaluation import PER_IMAGE_SCORES, Evaluation, Inference
from .training import (
    CACHES,
    PHASES,
    Phase,
    TwoPhaseTraining,
    load_resumable,
    make_dataset,
    publish_model,
    train_scalars,
    trained_epochs,
)

__all__ = [
    "CACHES",
    "PER_IMAGE_SCORES",
    "PHASES",
    "Evaluation",
    "Inference",
    "Phase",
    "TwoPhaseTraining",
    "check_command_line",
    "check_overrides",
    "get_infer_postprocessing",
    "get_inferer",
    "get_postprocessing",
    "load_resumable",
    "make_dataset",
    "publish_model",
    "train_scalars",
    "trained_epochs",
    "written_mask",
]
