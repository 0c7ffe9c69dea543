"""What the bundles run: the two-phase training (ANN teacher, then the aligned spiking student), evaluation and
inference, their inferer and post-processing, and the check of a run's settings."""

from __future__ import annotations

from .components import get_infer_postprocessing, get_inferer, get_postprocessing
from .evaluation import PER_IMAGE_SCORES, Evaluation, Inference
from .settings import SETTINGS, SettingsError, check_command_line, check_overrides, check_settings
from .training import (
    CACHES,
    PHASES,
    Phase,
    TwoPhaseTraining,
    load_resumable,
    make_dataset,
    publish_model,
    resolve_resume,
    trained_epochs,
)

__all__ = [
    "CACHES",
    "PER_IMAGE_SCORES",
    "PHASES",
    "SETTINGS",
    "Evaluation",
    "Inference",
    "Phase",
    "SettingsError",
    "TwoPhaseTraining",
    "check_command_line",
    "check_overrides",
    "check_settings",
    "get_infer_postprocessing",
    "get_inferer",
    "get_postprocessing",
    "load_resumable",
    "make_dataset",
    "publish_model",
    "resolve_resume",
    "trained_epochs",
]
