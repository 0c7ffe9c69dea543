"""Ignite handlers of monai_medspike."""

from __future__ import annotations

from .batch_norm import BatchNormRecalibration, recalibrate_batch_norm
from .checkpoint import BestModelSaver, ResumableCheckpoint, all_finite, save_atomic
from .divergence import DivergenceError, DivergenceGuard
from .firing_rate import FiringRateHandler, neuron_groups
from .progress import ProgressLog
from .stats import StatsHandler
from .teacher import TeacherLoader

__all__ = [
    "BatchNormRecalibration",
    "BestModelSaver",
    "DivergenceError",
    "DivergenceGuard",
    "FiringRateHandler",
    "ProgressLog",
    "ResumableCheckpoint",
    "StatsHandler",
    "TeacherLoader",
    "all_finite",
    "neuron_groups",
    "recalibrate_batch_norm",
    "save_atomic",
]
