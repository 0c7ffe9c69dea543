"""Ignite handlers of monai_medspike."""

from __future__ import annotations

from .best_metric import BestMetricState
from .teacher import TeacherLoader

__all__ = ["BestMetricState", "TeacherLoader"]
