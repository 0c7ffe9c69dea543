"""Ignite handlers of monai_medspike."""

from __future__ import annotations

from .best_metric import BestMetricState
from .firing_rate import FiringRateHandler, neuron_groups
from .teacher import TeacherLoader

__all__ = ["BestMetricState", "FiringRateHandler", "TeacherLoader", "neuron_groups"]
