"""What the bundles run: the two-phase training (ANN teacher, then the aligned spiking student), its inferer and
post-processing, and the check of a run's settings."""

from __future__ import annotations

from .components import get_inferer, get_postprocessing
from .settings import SETTINGS, SettingsError, check_command_line, check_overrides, check_settings
from .training import (
    CACHES,
    PHASES,
    Phase,
    TwoPhaseTraining,
    load_resumable,
    make_dataset,
    resolve_resume,
    trained_epochs,
)

__all__ = [
    "CACHES",
    "PHASES",
    "SETTINGS",
    "Phase",
    "SettingsError",
    "TwoPhaseTraining",
    "check_command_line",
    "check_overrides",
    "check_settings",
    "get_inferer",
    "get_postprocessing",
    "load_resumable",
    "make_dataset",
    "resolve_resume",
    "trained_epochs",
]
