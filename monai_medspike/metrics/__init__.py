"""Metrics of monai_medspike: the paper's per-image segmentation scores and the spiking analysis."""

from __future__ import annotations

from .segmentation import SCORES, PerImageScore
from .spiking import (
    E_AC,
    E_MAC,
    FiringRateMonitor,
    LayerOperations,
    OperationReport,
    count_operations,
    is_spike_tensor,
)

__all__ = [
    "E_AC",
    "E_MAC",
    "SCORES",
    "FiringRateMonitor",
    "LayerOperations",
    "OperationReport",
    "PerImageScore",
    "count_operations",
    "is_spike_tensor",
]
