"""Ignite handlers of monai_medspike."""

from __future__ import annotations

from .batch_norm import BatchNormRecalibration, recalibrate_batch_norm
from .best_metric import BestMetricState
from .firing_rate import FiringRateHandler, neuron_groups
from .teacher import TeacherLoader

__all__ = [
    "BatchNormRecalibration",
    "BestMetricState",
    "FiringRateHandler",
    "TeacherLoader",
    "neuron_groups",
    "recalibrate_batch_norm",
]
