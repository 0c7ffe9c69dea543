"""Comparisons on real data: several models x several seeds on one saved split, per-image scores at the training
and the original size, paired statistics against the spiking student, cost (parameters, time, energy).

``python -m monai_medspike.compare --help``; the figures it produced are in docs/results.md.
"""

from __future__ import annotations

from .models import MODELS, ModelSpec, jobs_for, model_spec
from .stats import bootstrap_interval, mean_std, paired_comparison, wilcoxon

__all__ = [
    "MODELS",
    "ModelSpec",
    "bootstrap_interval",
    "jobs_for",
    "mean_std",
    "model_spec",
    "paired_comparison",
    "wilcoxon",
]
